#!/usr/bin/python3
"""`make run`: a scratch PostgreSQL and the pooler in front of it, until Ctrl-C.

    SLUICE_BIN=build/sluice /usr/bin/python3 test/lib/run_demo.py [--port 6432] [--config etc/sluice.ini]

The pooler's ini is etc/sluice.ini (when present) with the settings that must point at
this scratch setup rewritten: listen_addr/listen_port, unix_socket_dir, logfile, pidfile,
auth_file (a userlist of the scratch cluster's users), and every [databases] entry's
host/port. Without etc/sluice.ini a minimal built-in template is used.

Prints (flushed, one per line) the lines tests look for:
    postgres dir: <dir>      postgres pid: <pid>
    pooler dir: <dir>        pooler pid: <pid>
    psql -h 127.0.0.1 -p <port> -U md5user appdb      (password md5pass)
    ready
then waits for SIGINT/SIGTERM (or the pooler dying), stops both processes by pid,
removes the temp dirs and exits 0 (1 if the pooler died on its own).
"""

import argparse
import os
import re
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

FALLBACK_TEMPLATE = """\
[databases]
appdb = host=127.0.0.1 port={pg_port}
postgres = host=127.0.0.1 port={pg_port}
* = host=127.0.0.1 port={pg_port}

[pgbouncer]
pool_mode = session
auth_type = md5
admin_users = postgres
stats_users = md5user
default_pool_size = 20
max_client_conn = 100
"""

# [pgbouncer] keys replaced by run_demo (None: removed)
FORCED = {
    "listen_addr": "127.0.0.1",
    "listen_port": "{port}",
    "unix_socket_dir": "{dir}",
    "logfile": "{dir}/pooler.log",
    "pidfile": "{dir}/pooler.pid",
    "auth_file": "{dir}/userlist.txt",
    "user": None,  # we already run as the unprivileged user
    "syslog": None,
}


def _rewrite_db_value(value: str) -> str:
    """host/port of a [databases] entry -> the scratch cluster."""
    v = value
    if re.search(r"(^|\s)host\s*=", v):
        v = re.sub(r"(^|\s)host\s*=\s*('[^']*'|\S*)", r"\1host={pg_host}", v)
    else:
        v = "host={pg_host} " + v
    if re.search(r"(^|\s)port\s*=", v):
        v = re.sub(r"(^|\s)port\s*=\s*\S*", r"\1port={pg_port}", v)
    else:
        v = v.rstrip() + " port={pg_port}"
    return v


def adapt_template(text: str, repo: str, files: dict) -> str:
    """Rewrite a sluice.ini/pgbouncer.ini for the scratch setup (see module doc).
    Relative auth_hba_file/%include files found under repo are copied into `files`."""
    out = []
    section = None
    seen = set()
    hba_text = None

    def flush_forced():
        for k, v in FORCED.items():
            if v is not None and k not in seen:
                out.append(f"{k} = {v}")

    for line in text.splitlines():
        s = line.strip()
        if s.startswith("%include"):
            inc = s.split(None, 1)[1].strip() if len(s.split(None, 1)) > 1 else ""
            src = inc if os.path.isabs(inc) else os.path.join(repo, inc)
            if os.path.exists(src):
                files[os.path.basename(src)] = adapt_template(open(src).read(), repo, files)
                out.append(f"%include {{dir}}/{os.path.basename(src)}")
            else:
                print(f"run_demo: warning: include {inc} not found, dropped", flush=True)
            continue
        m = re.match(r"\[(.+)\]$", s)
        if m:
            if section == "pgbouncer":
                flush_forced()
            section = m.group(1).strip().lower()
            out.append(line)
            continue
        if not s or s[0] in ";#":
            out.append(line)
            continue
        kv = re.match(r"('[^']*'|[A-Za-z0-9_.\-*]+)\s*=\s*(.*)$", s)
        if not kv:
            out.append(line)
            continue
        key, value = kv.group(1), kv.group(2)
        if section == "pgbouncer":
            k = key.lower()
            if k in FORCED:
                seen.add(k)
                if FORCED[k] is not None:
                    out.append(f"{k} = {FORCED[k]}")
                continue
            if k == "auth_hba_file":
                src = value if os.path.isabs(value) else os.path.join(repo, value)
                if os.path.exists(src):
                    hba_text = open(src).read()
                    files["hba.conf"] = hba_text
                    out.append("auth_hba_file = {dir}/hba.conf")
                    continue
            out.append(line)
        elif section == "databases":
            out.append(f"{key} = {_rewrite_db_value(value)}")
        else:
            out.append(line)
    if section == "pgbouncer":
        flush_forced()
    elif "[pgbouncer]" not in text.lower():
        out.append("[pgbouncer]")
        flush_forced()
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=int(os.environ.get("SLUICE_PORT", "6432")))
    ap.add_argument("--config", default=os.path.join(harness.REPO, "etc", "sluice.ini"))
    opts = ap.parse_args()

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    if os.path.exists(opts.config):
        files: dict = {}
        template = adapt_template(open(opts.config).read(), str(harness.REPO), files)
        source = opts.config
    else:
        files = {}
        template = adapt_template(FALLBACK_TEMPLATE, str(harness.REPO), files)
        source = "built-in template"

    pg = pooler = None
    rc = 0
    if not harness.lock_port(opts.port):
        print(f"run_demo: warning: port {opts.port} is locked by a test run "
              f"({harness.PORT_LOCK_DIR}); starting anyway", flush=True)
    try:
        print(f"run_demo: starting PostgreSQL ({harness.pg_bindir()})", flush=True)
        pg = harness.PgCluster()
        print(f"postgres dir: {pg.dir}", flush=True)
        print(f"postgres pid: {pg.pid}", flush=True)
        print(f"run_demo: starting {harness.sluice_bin()} with {source} "
              f"on 127.0.0.1:{opts.port}", flush=True)
        pooler = harness.Pooler(pg, template, port=opts.port, files=files)
        print(f"pooler dir: {pooler.dir}", flush=True)
        print(f"pooler pid: {pooler.pid}", flush=True)
        print(f"pooler log: {pooler.logfile}", flush=True)
        print("", flush=True)
        print("Connect with (password md5pass):", flush=True)
        print(f"psql -h 127.0.0.1 -p {opts.port} -U md5user appdb", flush=True)
        print(f"Admin console: PGPASSWORD=postgrespass psql -h 127.0.0.1 -p {opts.port} "
              f"-U postgres pgbouncer", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        print("ready", flush=True)
        while not stop.wait(0.2):
            if not pooler.alive():
                print(f"run_demo: pooler exited ({pooler.describe_rc()}); log:\n"
                      f"{pooler.full_log()}", flush=True)
                rc = 1
                break
    except Exception as e:  # noqa: BLE001 - report and clean up
        print(f"run_demo: {e}", file=sys.stderr, flush=True)
        rc = 1
    finally:
        # a second Ctrl-C while cleaning up must not leave processes behind
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        print("run_demo: stopping", flush=True)
        if pooler is not None:
            pooler.cleanup()
        if pg is not None:
            pg.stop()
        print("run_demo: stopped", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
