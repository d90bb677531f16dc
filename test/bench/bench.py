#!/usr/bin/python3
"""make bench: sluice side by side with PgBouncer and a direct connection.

    make bench                          full run (about 26 minutes on 2 cores)
    make bench BENCH_ARGS=--quick       figures 1, 2 and 4, short runs (about 3½ minutes)
    /usr/bin/python3 test/bench/bench.py --help

One run starts a scratch PostgreSQL (test/lib/harness.py PgCluster, tuned: fsync off,
synchronous_commit off, larger shared_buffers), PgBouncer (/usr/sbin/pgbouncer) and sluice
($SLUICE_BIN, else build/sluice), both poolers with the same generated pgbouncer.ini
(transaction mode, default_pool_size=20, md5 auth, max_client_conn=10000), and measures:

  1. pgbench -S (scale 10, initialised directly), -M simple/extended/prepared, at -c 1 and
     -c 64 -j 2: TPS, average and p99 latency (from pgbench's per-transaction logs).
     -M prepared is not run through PgBouncer 1.18 (it cannot pool named statements).
  2. pooler CPU per transaction: utime+stime from /proc/PID/stat over each figure-1 run,
     divided by its transactions; instructions per transaction under
     `valgrind --tool=callgrind` (counters zeroed, fixed -t runs of t and 3t
     transactions, (Ir(3t) - Ir(t)) / 2t: client logins cancel out); -c 1 again with
     pgbench, the pooler, the byte relay and PostgreSQL on one CPU (informational: no
     wake-up crosses CPUs, so repetitions agree within a few percent).
  3. syscalls and epoll_ctl calls per transaction at -c 16 and -c 64
     (strace -c -f -p PID, same t / 3t difference).
  4. RSS per idle client: VmRSS before and with N idle clients (startup + md5 auth done).
  5. COPY of 1 GiB in and out through the pooler: MB/s against direct, pooler peak RSS
     (VmHWM after resetting it via /proc/PID/clear_refs, plus sampling).
  6. connection churn: pgbench -C -S -c 16 -j 2: connections per second, pooler CPU per
     connection.
  7. TLS from the client: pgbench -S -c 64 -j 2 with PGSSLMODE=require through a second
     PgBouncer and sluice with client_tls_sslmode=require (a generated certificate, same ini
     otherwise): TPS and pooler CPU per transaction.

Runs are interleaved (direct, PgBouncer, sluice, direct, ...; in figure 1 the modes too) and
repeated; the table shows median (min-max). The results go to test/bench/results/<timestamp>[-quick].md with the
machine facts, a .json with every raw figure, and a .png chart (gnuplot). Everything the
bench starts it stops by pid, also on Ctrl-C or SIGTERM. Only 127.0.0.1 is used.
doc/bench.md explains every figure and target.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import glob
import hashlib
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import idle_clients  # noqa: E402
import tlsutil  # noqa: E402

PGBOUNCER = "/usr/sbin/pgbouncer"
TARGETS = ("direct", "pgbouncer", "sluice")
POOLERS = ("pgbouncer", "sluice")
LABEL = {"direct": "direct", "pgbouncer": "PgBouncer", "sluice": "sluice", "relay": "byte relay"}
USER, PASSWORD, DB = "md5user", "md5pass", "appdb"
MODES = ("simple", "extended", "prepared")
# The floor of figure 2 at -c 1: test/bench/relay.cpp (RELAY_BIN, built by `make bench`) moves
# bytes between pgbench and PostgreSQL with the same system calls as a pooler and no other work.
RELAY_MODES = ("simple", "extended")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# tools the bench needs beyond `make deps` (binary -> Debian package)
TOOLS = {"gnuplot": "gnuplot-nox", "strace": "strace", "valgrind": "valgrind",
         "callgrind_control": "valgrind", "pgbench": "postgresql-client"}


class Interrupted(Exception):
    pass


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------
# small helpers


def ensure_tools(need_pgbouncer: bool = True) -> None:
    missing = sorted({pkg for b, pkg in TOOLS.items() if not shutil.which(b)})
    if need_pgbouncer and not os.access(PGBOUNCER, os.X_OK):
        missing.append("pgbouncer")
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"bench: missing packages {' '.join(missing)}; run as root: "
                 f"apt-get install -y {' '.join(missing)}")
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)


def proc_cpu_secs(pid: int) -> float:
    """utime + stime of pid (and its threads) from /proc/PID/stat, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def proc_sched_ns(pid: int) -> int:
    """Precise on-CPU time (ns) of all threads, /proc/PID/task/*/schedstat (cross-check)."""
    total = 0
    for p in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(p) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def proc_switches(pid: int) -> tuple[int, int]:
    """Context switches of pid's threads so far: (voluntary, involuntary). A voluntary one is
    a sleep (waiting for input), an involuntary one a preemption (often by a process it
    had just woken)."""
    vol = invol = 0
    for p in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(p) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        invol += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return vol, invol


def process_tree(root: int) -> list[int]:
    """root and every process below it (one pass over /proc)."""
    children: dict[int, list[int]] = {}
    for st in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(st) as f:
                rest = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(rest[1]), []).append(int(st.split("/")[2]))
        except (OSError, ValueError, IndexError):
            pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def spawn_relay(binary: str, pg_port: int, log_path: str,
                uring: bool = False) -> tuple[subprocess.Popen, int, bool]:
    """Starts the byte relay (test/bench/relay.cpp; uring: its io_uring mode) in front of
    PostgreSQL on pg_port and waits up to 10 s for it to listen. Returns the process, its port
    and whether it listens (False: it exited, see proc.poll(), or the wait timed out). The
    caller stops it."""
    port = harness.free_port()
    # In a session of its own, as the poolers and PostgreSQL are: with autogroup on (the
    # kernel default) each session is a scheduling group, and a relay left in pgbench's
    # group is woken and preempted differently from a pooler (probes, -c 1 on one CPU:
    # 18.2 against 19.9 us/txn, 1.2 against 1.8 sleeps per transaction).
    with open(log_path, "w") as logf:
        proc = subprocess.Popen([binary] + (["--uring"] if uring else []) +
                                [str(port), str(pg_port)], stdin=subprocess.DEVNULL,
                                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)

    def listening():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return proc.poll() is not None  # died: stop waiting
    try:
        harness.wait_until(listening, 10, what="byte relay listening")
    except TimeoutError:
        return proc, port, False
    return proc, port, proc.poll() is None


def set_affinity(pids, cpus: set) -> None:
    """Every thread of every pid onto cpus; processes gone meanwhile are skipped."""
    for pid in pids:
        for task in glob.glob(f"/proc/{pid}/task/*"):
            try:
                os.sched_setaffinity(int(task.rsplit("/", 1)[1]), cpus)
            except (OSError, ValueError):
                pass


def proc_status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def cpu_snapshot(roots: set) -> dict:
    """Clock ticks: the machine's busy time (user+nice+system over all CPUs), steal, the
    total, and the CPU used by the process trees under roots (utime+stime+cutime+cstime of
    every live member: reaped children are in their parent's cutime, so nothing counts
    twice). busy - ours = what other processes on the machine used meanwhile."""
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    procs = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            procs[int(d)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
        except (OSError, ValueError, IndexError):
            continue
    ours = 0
    for pid, (_, ticks) in procs.items():
        p, hops = pid, 0
        while p and p not in roots and hops < 64:
            p, hops = procs.get(p, (0, 0))[0], hops + 1
        if p in roots:
            ours += ticks
    return {"busy": cpu[0] + cpu[1] + cpu[2], "steal": cpu[7] if len(cpu) > 7 else 0,
            "total": sum(cpu[:8]), "ours": ours, "t": time.monotonic()}


def cpu_delta(a: dict, b: dict) -> dict:
    total = max(1, b["total"] - a["total"])
    foreign = max(0, (b["busy"] - a["busy"]) - (b["ours"] - a["ours"]))
    return {"secs": b["t"] - a["t"], "foreign_cpu_secs": foreign / CLK_TCK,
            "foreign_pct": 100.0 * foreign / total,
            "steal_pct": 100.0 * (b["steal"] - a["steal"]) / total}


def summarize(vals):
    vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
            "n": len(vals)}


def fmt_num(v: float | None) -> str:
    if v is None:
        return "—"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 0.01:
        return f"{v:.3f}"
    if a == 0:
        return "0"
    return f"{v:.4f}"


def fmt_cell(s) -> str:
    if s is None:
        return "—"
    if isinstance(s, str):
        return s
    if s["n"] > 1 and s["min"] != s["max"]:
        return f"{fmt_num(s['median'])} ({fmt_num(s['min'])}–{fmt_num(s['max'])})"
    return fmt_num(s["median"])


def fmt_ratio(v: float, thr: float | None = None) -> str:
    """A ratio with two decimals, or three where two would print the target's own value
    (0.903 against a target of 0.9 is a MISS; "0.90×" would not say why)."""
    if thr is not None and v != thr and f"{v:.2f}" == f"{thr:.2f}":
        return f"{v:.3f}×"
    return f"{v:.2f}×"


def first_error(text: str) -> str:
    for line in text.splitlines():
        if re.search(r"error|abort|fatal|FATAL|ERROR", line):
            return line.strip()[:240]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:240] if lines else "(no output)"


def normalize_log_line(line: str) -> str:
    s = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \S+ \[\d+\] ", "", line)
    s = re.sub(r"0x[0-9a-fA-F]+", "0x…", s)
    s = re.sub(r"\d+", "N", s)
    return s.strip()


# ---------------------------------------------------------------------------
# the bench


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="sluice-bench-", dir=harness.TMP_ROOT)
        os.chmod(self.work, 0o755)
        # run a private copy: a rebuild of build/sluice during the run must not mix binaries
        self.sluice_src = harness.sluice_bin()
        st = os.stat(self.sluice_src)
        self.sluice_built = datetime.datetime.fromtimestamp(st.st_mtime).astimezone() \
            .isoformat(timespec="seconds")
        self.sluice = os.path.join(self.work, "sluice")
        shutil.copy2(self.sluice_src, self.sluice)
        os.chmod(self.sluice, 0o755)
        with open(self.sluice, "rb") as f:
            self.sluice_sha = hashlib.sha256(f.read()).hexdigest()[:16]
        self.pg: harness.PgCluster | None = None
        self.poolers: dict[str, harness.Pooler] = {}
        self.extra_procs: list[subprocess.Popen] = []
        self.events: list[str] = []           # notable things, for the report
        self.log_lines: dict[str, dict] = {"pgbouncer": {}, "sluice": {}}
        self.raw: dict = {}                   # every measurement, for the .json
        self.rows: list[dict] = []            # the table
        self.t_start = time.monotonic()
        self.interrupted = False
        self.ini_settings = {
            "pool_mode": "transaction",
            "default_pool_size": 20,
            "max_client_conn": 10000,
            "auth_type": "md5",
            "log_connections": 0,
            "log_disconnections": 0,
        }
        self.ini = harness.make_ini(pgbouncer=self.ini_settings)
        # figure 7: the same plus TLS from the clients (the server leg stays plain)
        self.tls_ini = harness.make_ini(pgbouncer={
            **self.ini_settings,
            "client_tls_sslmode": "require",
            "client_tls_cert_file": "{dir}/server.crt",
            "client_tls_key_file": "{dir}/server.key",
            "server_tls_sslmode": "disable",
        })
        self.certs: tlsutil.Certs | None = None
        self.relay_bin = os.environ.get("RELAY_BIN")
        self.relay: subprocess.Popen | None = None
        self.relay_port: int | None = None
        self.relay_failed = False             # said why in an event; not tried again
        self._reads: tuple[str, str] | None = None  # sluice_reads()

    # -- lifecycle ------------------------------------------------------------

    def event(self, msg: str) -> None:
        log("NOTE: " + msg.splitlines()[0])
        self.events.append(msg)

    def start_pg(self) -> None:
        a = self.args
        log("starting scratch PostgreSQL")
        self.pg = harness.PgCluster(max_connections=400)
        self.pg.sql("ALTER SYSTEM SET shared_buffers = '256MB'")
        self.pg.sql("ALTER SYSTEM SET max_wal_size = '4GB'")
        self.pg.sql("ALTER SYSTEM SET checkpoint_timeout = '30min'")
        self.pg.sql("ALTER SYSTEM SET autovacuum = off")
        self.pg.sql("ALTER SYSTEM SET log_min_messages = 'warning'")
        r = harness.run_as_postgres([os.path.join(self.pg.bindir, "pg_ctl"), "-D",
                                     self.pg.datadir, "-l", self.pg.logfile, "-w", "-t", "60",
                                     "-m", "fast", "restart"], cwd=self.pg.dir, timeout=120,
                                    start_new_session=True)
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {r.stdout}{r.stderr}")
        with open(os.path.join(self.pg.datadir, "postmaster.pid")) as f:
            self.pg.pid = int(f.readline())
        log(f"initialising pgbench tables, scale {a.scale} (directly)")
        r = self.pgbench(self.pg.port, ["-i", "-q", "-s", str(a.scale)], timeout=900)
        if r["rc"] != 0:
            raise RuntimeError("pgbench -i failed: " + r["stderr"][-2000:])
        n = self.pg.sql("SELECT count(*) FROM pgbench_branches", db=DB)[0][0]
        if n != a.scale:
            raise RuntimeError(f"pgbench -i made {n} branches, expected {a.scale}")
        self.pg.sql("VACUUM ANALYZE", db=DB, timeout=600)
        self.pg.sql("CHECKPOINT")

    def start_pooler(self, target: str, callgrind: bool = False,
                     tls: bool = False) -> harness.Pooler:
        binary = PGBOUNCER if target == "pgbouncer" else self.sluice
        if callgrind:
            # Under valgrind every system call is dear, and sluice would choose to read
            # through io_uring: the same read path as the pooler measured natively.
            env = None
            if target == "sluice":
                path = self.sluice_reads()[0]
                env = {"SLUICE_PROACTOR": "1"} if path == "io_uring" else \
                    {"SLUICE_NO_PROACTOR": "1"} if path == "epoll" else None
            p = harness.Pooler(self.pg, self.ini, binary="valgrind",
                               args=["--tool=callgrind", "--callgrind-out-file=callgrind.out.%p",
                                     binary], ready_timeout=120, env=env)
        elif tls:
            if self.certs is None:
                self.certs = tlsutil.make_certs("sluice-bench-tls-")
            c = self.certs
            p = harness.Pooler(self.pg, self.tls_ini, binary=binary,
                               files={"server.crt": c.text(c.server_crt),
                                      "server.key": c.text(c.server_key)})
        else:
            p = harness.Pooler(self.pg, self.ini, binary=binary)
            if target == "sluice" and self._reads is None:
                m = re.search(r"sockets are read through (epoll|io_uring)[^\n]*", p.log_text())
                self._reads = (m.group(1), m.group(0)) if m else \
                    ("?", "no start-up line about it")
        p.bench_label = target + (" (callgrind)" if callgrind else " (TLS)" if tls else "")
        return p

    def stop_pooler(self, p: harness.Pooler | None) -> None:
        if p is None:
            return
        self.check_crash(p)
        self.harvest_log(p)
        try:
            rc = p.stop()
            if p.killed:
                self.event(f"{p.bench_label} did not exit on SIGTERM and was killed")
            elif rc is not None and rc < 0:
                self.event(f"{p.bench_label} exited by {p.describe_rc(rc)} when stopped")
        finally:
            p.cleanup()

    def check_crash(self, p: harness.Pooler) -> bool:
        why = p.crashed()
        if why and not getattr(p, "crash_reported", False):
            p.crash_reported = True
            tail = "\n".join(p.full_log().splitlines()[-25:])
            self.event(f"{p.bench_label} died: {why}\n```\n{tail}\n```")
        return bool(why)

    def harvest_log(self, p: harness.Pooler) -> None:
        if getattr(p, "harvested", False):
            return
        p.harvested = True
        key = "pgbouncer" if p.bench_label.startswith("pgbouncer") else "sluice"
        text = p.log_text() + "\n" + p.stderr_text()
        seen = self.log_lines[key]
        for line in text.splitlines():
            if not re.search(r"WARNING|ERROR|FATAL|PANIC|assert|closing because|"
                             r"[Ss]egmentation|Invalid (read|write)", line):
                continue
            k = normalize_log_line(line)
            if k in seen:
                seen[k]["count"] += 1
            else:
                seen[k] = {"count": 1, "example": line.strip()[:400]}

    def pooler(self, target: str, tls: bool = False) -> harness.Pooler:
        """The long-lived pooler of target (its TLS twin for figure 7: key "<target>+tls"),
        restarted (and the death reported) if it died."""
        key = target + ("+tls" if tls else "")
        p = self.poolers.get(key)
        if p is not None and p.alive():
            return p
        if p is not None:
            self.check_crash(p)
            self.harvest_log(p)
            p.cleanup()
            self.event(f"{p.bench_label} restarted after it died")
        p = self.poolers[key] = self.start_pooler(target, tls=tls)
        return p

    def sluice_reads(self) -> tuple[str, str]:
        """How the plain sluice reads its sockets, from its start-up line (src/net/loop.cpp):
        ("epoll" or "io_uring", the line), or ("?", why not known)."""
        if self._reads is None:
            self.pooler("sluice")  # start_pooler() reads the line
        return self._reads or ("?", "no start-up line about it")

    def port_of(self, target: str, tls: bool = False) -> int:
        if target == "direct":
            return self.pg.port
        if target == "relay":
            return self.relay_port
        return self.pooler(target, tls).port

    def relay_off(self, why: str) -> bool:
        """The byte relay cannot run: one event, and it is not tried again."""
        self.event(why)
        self.relay_failed = True
        return False

    def start_relay(self) -> bool:
        """Starts the byte relay once; False (and one event) when it cannot run."""
        if self.relay_failed:
            return False
        if self.relay is not None and self.relay.poll() is None:
            return True
        if self.relay is not None:
            return self.relay_off(f"the byte relay exited (rc {self.relay.returncode}); "
                                  f"not restarted")
        if not self.relay_bin or not os.access(self.relay_bin, os.X_OK):
            return self.relay_off("no byte relay (RELAY_BIN; `make bench` builds it): the "
                                  "floor at -c 1 is not measured")
        log_path = os.path.join(self.work, "relay.log")
        self.relay, self.relay_port, up = spawn_relay(self.relay_bin, self.pg.port, log_path)
        self.extra_procs.append(self.relay)
        if self.relay.poll() is not None:
            return self.relay_off(f"the byte relay did not start (rc {self.relay.returncode}): "
                                  f"{Path(log_path).read_text()[-500:]}")
        if not up:
            return self.relay_off("the byte relay did not listen within 10 s; the floor is "
                                  "not measured")
        return True

    def cleanup(self) -> None:
        for proc in self.extra_procs:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        for p in list(self.poolers.values()):
            try:
                self.stop_pooler(p)
            except Exception as e:  # noqa: BLE001 - keep stopping the rest
                log(f"stopping {p.bench_label}: {e}")
        self.poolers.clear()
        if self.pg is not None:
            self.pg.stop()
        if self.certs is not None:
            tlsutil.remove_certs(self.certs)
        shutil.rmtree(self.work, ignore_errors=True)

    def elapsed(self) -> str:
        s = int(time.monotonic() - self.t_start)
        return f"{s // 60}m{s % 60:02d}s"

    # -- pgbench --------------------------------------------------------------

    def pgbench(self, port: int, args: list, timeout: float, env: dict | None = None,
                cpus: set | None = None) -> dict:
        extra_env = env
        env = dict(os.environ, PGPASSWORD=PASSWORD, PGCONNECT_TIMEOUT="20")
        env.pop("PGPASSFILE", None)
        env.update(extra_env or {})
        cmd = [harness.pg_tool("pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", USER] + \
            [str(a) for a in args] + [DB]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                               stdin=subprocess.DEVNULL, cwd=self.work,
                               preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus
                               else None)
            out, err, rc = r.stdout, r.stderr, r.returncode
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else \
                (e.stdout or "")
            err = (e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else
                   (e.stderr or "")) + f"\npgbench timed out after {timeout}s"
            rc = -999
        res = {"rc": rc, "stdout": out, "stderr": err}
        m = re.search(r"number of transactions actually processed: (\d+)", out)
        res["txns"] = int(m.group(1)) if m else 0
        m = re.search(r"number of failed transactions: (\d+)", out)
        res["failed"] = int(m.group(1)) if m else 0
        m = re.search(r"^tps = ([\d.]+)", out, re.M)
        res["tps"] = float(m.group(1)) if m else None
        m = re.search(r"latency average = ([\d.]+) ms", out)
        res["lat_avg_ms"] = float(m.group(1)) if m else None
        res["ok"] = rc == 0 and res["failed"] == 0 and res["txns"] > 0
        if not res["ok"]:
            res["error"] = first_error(err) if err.strip() else first_error(out)
        return res

    def read_latency_logs(self, prefix: str) -> dict:
        lat = []
        for path in glob.glob(prefix + ".*"):
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[2].isdigit():
                        lat.append(int(parts[2]))
            os.unlink(path)
        if not lat:
            return {"avg_ms": None, "p99_ms": None, "samples": 0}
        lat.sort()
        p99 = lat[max(0, math.ceil(0.99 * len(lat)) - 1)]
        return {"avg_ms": sum(lat) / len(lat) / 1000.0, "p99_ms": p99 / 1000.0,
                "samples": len(lat)}

    def run_select(self, target: str, mode: str, clients: int, duration: int,
                   extra: tuple = (), logs: bool = True, tls: bool = False,
                   cpus: set | None = None) -> dict:
        """One pgbench -S run against target, with the pooler's CPU over it. tls: through the
        TLS twin of the pooler, pgbench with PGSSLMODE=require (figure 7). cpus: pgbench runs
        on these CPUs only (the one-core runs of figure 2)."""
        port = self.port_of(target, tls)
        jobs = min(2, clients)
        args = ["-n", "-S", "-M", mode, "-c", clients, "-j", jobs, "-T", duration] + list(extra)
        prefix = os.path.join(self.work, f"lat-{target}-{mode}-{clients}")
        if logs:
            args += ["-l", f"--log-prefix={prefix}", f"--sampling-rate={self.args.sampling}"]
        p = None if target in ("direct", "relay") else self.pooler(target, tls)
        pid = p.pid if p else (self.relay.pid if target == "relay" else None)
        cpu0 = proc_cpu_secs(pid) if pid else None
        ns0 = proc_sched_ns(pid) if pid else None
        sw0 = proc_switches(pid) if pid else None
        r = self.pgbench(port, args, timeout=duration + 120,
                         env=tlsutil.ssl_env("require") if tls else None, cpus=cpus)
        if pid and harness.pid_alive(pid):
            r["cpu_secs"] = proc_cpu_secs(pid) - cpu0
            r["sched_secs"] = (proc_sched_ns(pid) - ns0) / 1e9
            sw1 = proc_switches(pid)
            r["sleeps"], r["preemptions"] = sw1[0] - sw0[0], sw1[1] - sw0[1]
        if logs:
            r.update(self.read_latency_logs(prefix))
        if r["ok"] and pid and "cpu_secs" in r:
            r["cpu_us_per_txn"] = r["cpu_secs"] * 1e6 / r["txns"]
            r["sched_us_per_txn"] = r["sched_secs"] * 1e6 / r["txns"]
            r["sleeps_per_txn"] = r["sleeps"] / r["txns"]
            r["preemptions_per_txn"] = r["preemptions"] / r["txns"]
        if p is not None:
            self.check_crash(p)
        r.pop("stdout", None)
        if r["ok"]:
            r.pop("stderr", None)
        else:
            r["stderr"] = r["stderr"][-3000:]
        return r

    # -- figure 1 + 2a: pgbench -S ------------------------------------------------

    def warm_up(self) -> None:
        log("warming up every target (pgbench -S -c 64, fills the server pools)")
        for t in TARGETS:
            r = self.run_select(t, "simple", 64, self.args.warmup, logs=False)
            if not r["ok"]:
                self.event(f"warm-up through {t} failed: {r.get('error')}")

    def fig1(self) -> None:
        """Per client count, each repetition runs every mode through every target (modes and
        targets interleaved), so that a drift of the machine hits the modes alike too: the
        prepared / extended ratio compares runs seconds apart, not a minute."""
        a = self.args
        res = self.raw.setdefault("fig1", {})
        for clients in (1, 64):
            for rep in range(a.reps):
                for mode in MODES:
                    targets = [t for t in TARGETS if not (mode == "prepared" and t == "pgbouncer")]
                    # --quick leaves the relay to the one-CPU runs (its floor there is the
                    # steadier one), which keeps a quick run near three minutes.
                    if clients == 1 and mode in RELAY_MODES and not a.quick \
                            and self.start_relay():
                        targets.append("relay")
                    key = f"{mode}/c{clients}"
                    res.setdefault(key, {t: [] for t in targets})
                    for t in targets:
                        r = self.run_select(t, mode, clients, a.duration)
                        res[key].setdefault(t, []).append(r)
                        if not r["ok"]:
                            if rep == 0 or r["error"] != res[key][t][0].get("error"):
                                self.event(f"pgbench -S -M {mode} -c {clients} through {t} "
                                           f"failed (rc {r['rc']}): {r['error']}")
                    desc = "  ".join(
                        f"{t}={res[key][t][-1]['tps']:.0f}" if res[key][t][-1]["ok"] else
                        f"{t}=FAILED" for t in targets)
                    log(f"fig1 {key} rep {rep + 1}/{a.reps}: tps {desc}")

    # -- figure 2, one core: -c 1 with everything on one CPU ---------------------------

    def fig2_one_core(self) -> None:
        """-c 1 again with pgbench, the pooler (or the byte relay) and every PostgreSQL
        process on one CPU, as in a container given one. At -c 1 on two CPUs each message
        wakes a process that may be on either, and which it is moves a run's CPU per
        transaction by up to a quarter (figure 1's min-max); on one CPU no wake-up crosses to
        the other, and repetitions agree within a few percent. No target: the view in which a
        change of a microsecond per transaction shows."""
        a = self.args
        res = self.raw.setdefault("one_core", {})
        everywhere = os.sched_getaffinity(0)
        core = {max(everywhere)}
        for t in POOLERS:
            self.pooler(t)
        targets = list(POOLERS) + (["relay"] if self.start_relay() else [])
        pids = [self.poolers[t].pid for t in POOLERS] + \
            ([self.relay.pid] if "relay" in targets else [])
        try:
            set_affinity(pids + process_tree(self.pg.pid), core)
            for rep in range(a.one_core_reps):
                for mode in RELAY_MODES:
                    runs = res.setdefault(f"{mode}/c1", {t: [] for t in targets})
                    for t in targets:
                        r = self.run_select(t, mode, 1, a.one_core_duration, logs=False,
                                            cpus=core)
                        runs[t].append(r)
                        if not r["ok"] and rep == 0:
                            self.event(f"pgbench -S -M {mode} -c 1 on one CPU through {t} "
                                       f"failed (rc {r['rc']}): {r['error']}")
                    desc = "  ".join(f"{t}={runs[t][-1].get('cpu_us_per_txn', 0):.1f}"
                                     for t in targets)
                    log(f"one core -M {mode} rep {rep + 1}/{a.one_core_reps}: CPU µs/txn "
                        f"{desc}")
        finally:
            # backends forked meanwhile inherited the one CPU: the whole tree again
            set_affinity(pids + process_tree(self.pg.pid), everywhere)

    # -- figure 2b: callgrind -------------------------------------------------------

    def callgrind_dump_total(self, p: harness.Pooler, before: set) -> int:
        r = harness.run_as_postgres(["callgrind_control", "-d", str(p.pid)], timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"callgrind_control -d failed: {r.stdout}{r.stderr}")
        pat = os.path.join(p.dir, f"callgrind.out.{p.pid}.*")
        new = harness.wait_until(lambda: sorted(set(glob.glob(pat)) - before), 30,
                                 what="callgrind dump file")
        path = new[-1]

        def total():
            with open(path) as f:
                for line in f:
                    if line.startswith("summary:"):
                        return int(line.split()[1])
            return None
        v = harness.wait_until(total, 30, what="callgrind summary line")
        before.add(path)
        return v

    def fig2_callgrind(self) -> None:
        a = self.args
        res = self.raw.setdefault("callgrind", {})
        configs = [("simple", 1, a.cg_t1), ("simple", 64, a.cg_t64), ("extended", 64, a.cg_t64)]
        for target in POOLERS:
            log(f"callgrind: starting {target} under valgrind --tool=callgrind")
            p = None
            try:
                p = self.start_pooler(target, callgrind=True)
                w = self.pgbench(p.port, ["-n", "-S", "-c", 64, "-j", 2, "-t", 5], timeout=300)
                if not w["ok"]:
                    self.event(f"callgrind warm-up through {target} failed: {w.get('error')}")
                dumps: set = set()
                for mode, clients, t in configs:
                    key = f"{mode}/c{clients}"
                    # Several t / 3t pairs: the pooler's own timers (a janitor pass, a stats
                    # line) may fall into one run of a pair and move its difference by a
                    # hundred instructions per transaction; the median of the pairs does
                    # not move.
                    pairs = []
                    for _ in range(a.cg_pairs):
                        irs = {}
                        for n in (t, 3 * t):
                            z = harness.run_as_postgres(
                                ["callgrind_control", "-z", str(p.pid)], timeout=120)
                            if z.returncode != 0:
                                raise RuntimeError(
                                    f"callgrind_control -z: {z.stdout}{z.stderr}")
                            r = self.pgbench(p.port, ["-n", "-S", "-M", mode, "-c", clients,
                                                      "-j", min(2, clients), "-t", n],
                                             timeout=900)
                            irs[n] = (self.callgrind_dump_total(p, dumps), r)
                        (ir1, r1), (ir3, r3) = irs[t], irs[3 * t]
                        pair = {"ir_t": ir1, "ir_3t": ir3, "txns_t": r1["txns"],
                                "txns_3t": r3["txns"], "ok": r1["ok"] and r3["ok"]}
                        if pair["ok"]:
                            pair["ir_per_txn"] = (ir3 - ir1) / (r3["txns"] - r1["txns"])
                            pair["ir_per_txn_incl_login"] = ir3 / r3["txns"]
                        else:
                            pair["error"] = r1.get("error") or r3.get("error")
                        pairs.append(pair)
                    good = [q["ir_per_txn"] for q in pairs if q["ok"]]
                    entry = {"t": t, "clients": clients, "pairs": pairs, "ok": bool(good)}
                    if good:
                        entry["ir_per_txn"] = statistics.median(good)
                        entry["ir_per_txn_pairs"] = good
                        log(f"callgrind {target} {key}: {entry['ir_per_txn']:.0f} Ir/txn "
                            f"(pairs: {', '.join(f'{v:.0f}' for v in good)})")
                    else:
                        entry["error"] = pairs[0]["error"]
                        self.event(f"callgrind run -M {mode} -c {clients} through {target} "
                                   f"failed: {entry['error']}")
                    res.setdefault(key, {})[target] = entry
            except Exception as e:  # noqa: BLE001 - report, go on with the next target
                self.event(f"callgrind measurement of {target} failed: {e}")
            finally:
                self.stop_pooler(p)

    # -- figure 3: strace -------------------------------------------------------------

    def strace_counts(self, pid: int, port: int, clients: int, t: int) -> tuple[dict, dict]:
        out = os.path.join(self.work, f"strace-{pid}-{clients}-{t}.txt")
        proc = subprocess.Popen(["strace", "-c", "-f", "-q", "-p", str(pid), "-o", out],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        self.extra_procs.append(proc)
        try:
            def traced():
                with open(f"/proc/{pid}/status") as f:
                    return "TracerPid:\t0\n" not in f.read()
            harness.wait_until(traced, 20, what="strace attached")
            r = self.pgbench(port, ["-n", "-S", "-M", "simple", "-c", clients, "-j", 2,
                                    "-t", t], timeout=900)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
            self.extra_procs.remove(proc)
        counts = {}
        with open(out) as f:
            for line in f:
                # % time, seconds, usecs/call, calls, [errors], syscall
                tok = line.split()
                if len(tok) >= 5 and re.match(r"^[\d.]+$", tok[0]) and tok[-1] != "total":
                    counts[tok[-1]] = int(tok[3])
                    if len(tok) >= 6:
                        counts[tok[-1] + " (errors)"] = int(tok[4])
        return counts, r

    def fig3_strace(self) -> None:
        a = self.args
        res = self.raw.setdefault("strace", {})
        for clients, t in ((16, a.st_t16), (64, a.st_t64)):
            key = f"c{clients}"
            res[key] = {}
            for target in POOLERS:
                p = self.pooler(target)
                try:
                    c1, r1 = self.strace_counts(p.pid, p.port, clients, t)
                    c3, r3 = self.strace_counts(p.pid, p.port, clients, 3 * t)
                except Exception as e:  # noqa: BLE001
                    self.event(f"strace of {target} at -c {clients} failed: {e}")
                    continue
                entry = {"t": t, "txns_t": r1["txns"], "txns_3t": r3["txns"],
                         "ok": r1["ok"] and r3["ok"], "calls_t": c1, "calls_3t": c3}
                if entry["ok"]:
                    d = r3["txns"] - r1["txns"]
                    tot = sum(v for k, v in c3.items() if "(" not in k) - \
                        sum(v for k, v in c1.items() if "(" not in k)
                    ep = c3.get("epoll_ctl", 0) - c1.get("epoll_ctl", 0)
                    # the t / 3t difference can come out a hair below zero (a login-time
                    # call more in the t run): report 0 then, the raw counts stay in the json
                    entry["syscalls_per_txn"] = max(0.0, tot / d)
                    entry["epoll_ctl_per_txn"] = max(0.0, ep / d)
                    entry["per_txn_by_call"] = {
                        k: (c3.get(k, 0) - c1.get(k, 0)) / d for k in sorted(set(c1) | set(c3))}
                    log(f"strace {target} -c {clients}: {tot / d:.2f} syscalls/txn, "
                        f"{ep / d:.4f} epoll_ctl/txn")
                else:
                    entry["error"] = r1.get("error") or r3.get("error")
                    self.event(f"strace run through {target} at -c {clients} failed: "
                               f"{entry['error']}")
                res[key][target] = entry
                self.check_crash(p)

    # -- figure 4: idle clients -----------------------------------------------------------

    def fig4_idle(self) -> None:
        a = self.args
        n = a.idle_clients
        res = self.raw.setdefault("idle", {"clients": n, "pgbouncer": [], "sluice": []})
        for rep in range(a.idle_reps):
            for target in POOLERS:
                p = None
                try:
                    p = self.start_pooler(target)
                    # one login and one query first: the pool and its server exist
                    import pgwire
                    with pgwire.Conn.connect("127.0.0.1", p.port, user=USER, password=PASSWORD,
                                             database=DB) as c:
                        c.query("SELECT 1")
                    time.sleep(0.5)
                    rss0 = proc_status_kib(p.pid, "VmRSS")
                    r = asyncio.run(idle_clients.hold(
                        "127.0.0.1", p.port, n, USER, PASSWORD, DB,
                        lambda: proc_status_kib(p.pid, "VmRSS")))
                    rss1 = r["result"]
                    time.sleep(1.0)
                    alive = p.alive()
                    rss2 = proc_status_kib(p.pid, "VmRSS") if alive else None
                    entry = {"rss_before_kib": rss0, "rss_open_kib": rss1,
                             "rss_after_close_kib": rss2, "opened": r["opened"],
                             "failed": r["failed"], "errors": r["errors"],
                             "login_secs": r["login_secs"],
                             "logins_per_sec": r["opened"] / r["login_secs"]
                             if r["login_secs"] else None}
                    if r["opened"]:
                        entry["kib_per_client"] = (rss1 - rss0) / r["opened"]
                    if r["failed"]:
                        self.event(f"{target}: {r['failed']} of {n} idle clients could not log "
                                   f"in: {r['errors']}")
                    res[target].append(entry)
                    log(f"idle {target} rep {rep + 1}: {n} clients, RSS {rss0} -> {rss1} KiB "
                        f"({entry.get('kib_per_client', float('nan')):.3f} KiB/client), "
                        f"after close {rss2} KiB")
                except Exception as e:  # noqa: BLE001
                    self.event(f"idle-client measurement of {target} failed: {e}")
                finally:
                    self.stop_pooler(p)

    # -- figure 5: COPY -------------------------------------------------------------------

    def make_copy_file(self) -> tuple[str, int]:
        path = os.path.join(self.work, "copy.tsv")
        target = self.args.copy_mib * 1024 * 1024
        payload = ("sluice-copy-" * 90)[:1000]
        written = 0
        i = 0
        with open(path, "w") as f:
            while written < target:
                chunk = "".join(f"{j}\t{payload}\n" for j in range(i, i + 10000))
                i += 10000
                f.write(chunk)
                written += len(chunk)
        return path, written

    def psql_copy(self, port: int, sql: str, stdin_path: str | None) -> tuple[float, str]:
        env = dict(os.environ, PGPASSWORD=PASSWORD, PGCONNECT_TIMEOUT="20")
        env.pop("PGPASSFILE", None)
        cmd = [harness.pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
               "-p", str(port), "-U", USER, "-d", DB, "-c", sql]
        fin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
        try:
            t0 = time.monotonic()
            r = subprocess.run(cmd, stdin=fin, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=env, timeout=1800)
            secs = time.monotonic() - t0
        finally:
            if stdin_path:
                fin.close()
        err = r.stderr.decode(errors="replace").strip()
        return secs, (err if r.returncode != 0 else "")

    def copy_in_sql(self) -> str:
        # By default the server parses every row and keeps none (doc/bench.md, figure 5): storing
        # 1 GiB means allocating 1 GiB of page cache, whose cost in this kind of virtual machine
        # swings direct COPY IN between 150 and 300 MB/s, whoever sends the bytes.
        if self.args.copy_store_rows:
            return "COPY copy_dst FROM STDIN"
        return "COPY copy_dst FROM STDIN WHERE id < 0"

    def fig5_copy(self) -> None:
        a = self.args
        log(f"COPY: writing a {a.copy_mib} MiB data file")
        path, size = self.make_copy_file()
        self.pg.sql("CREATE UNLOGGED TABLE copy_src (id bigint, payload text)", db=DB)
        self.pg.sql("CREATE UNLOGGED TABLE copy_dst (id bigint, payload text)", db=DB)
        self.pg.sql("ALTER TABLE copy_src OWNER TO md5user", db=DB)
        self.pg.sql("ALTER TABLE copy_dst OWNER TO md5user", db=DB)
        secs, err = self.psql_copy(self.pg.port, "COPY copy_src FROM STDIN", path)
        if err:
            raise RuntimeError(f"loading copy_src failed: {err}")
        self.pg.sql("VACUUM ANALYZE copy_src", db=DB, timeout=600)
        res = self.raw.setdefault("copy", {"bytes": size, "in_sql": self.copy_in_sql(),
                                            "in": {t: [] for t in TARGETS},
                                            "out": {t: [] for t in TARGETS}})
        for rep in range(a.copy_reps):
            for direction in ("in", "out"):
                for t in TARGETS:
                    if direction == "in":
                        self.pg.sql("TRUNCATE copy_dst", db=DB)
                        sql, src = self.copy_in_sql(), path
                    else:
                        sql, src = "COPY copy_src TO STDOUT", None
                    # The previous COPY IN left up to shared_buffers of dirty pages; written
                    # out here, they are not charged to whichever target runs next.
                    self.pg.sql("CHECKPOINT", timeout=600)
                    port = self.port_of(t)
                    pid = None if t == "direct" else self.poolers[t].pid
                    peak = {"max": 0}
                    stop = threading.Event()
                    if pid:
                        try:
                            with open(f"/proc/{pid}/clear_refs", "w") as f:
                                f.write("5")  # reset VmHWM to the current RSS
                        except OSError:
                            pass

                        def sample():
                            while not stop.is_set():
                                try:
                                    peak["max"] = max(peak["max"],
                                                      proc_status_kib(pid, "VmRSS"))
                                except (OSError, KeyError):
                                    return
                                stop.wait(0.02)
                        th = threading.Thread(target=sample, daemon=True)
                        th.start()
                        cpu0 = proc_cpu_secs(pid)
                    secs, err = self.psql_copy(port, sql, src)
                    entry = {"secs": secs, "ok": not err}
                    if pid:
                        stop.set()
                        th.join()
                        if harness.pid_alive(pid):
                            entry["cpu_secs"] = proc_cpu_secs(pid) - cpu0
                            entry["vmhwm_kib"] = proc_status_kib(pid, "VmHWM")
                        entry["sampled_peak_kib"] = peak["max"]
                        entry["peak_kib"] = max(entry.get("vmhwm_kib", 0), peak["max"])
                        self.check_crash(self.poolers[t])
                    if err:
                        entry["error"] = err[:500]
                        self.event(f"COPY {direction} through {t} failed: {err[:300]}")
                    else:
                        entry["mb_per_sec"] = size / 1e6 / secs
                    res[direction][t].append(entry)
                    log(f"COPY {direction} {t} rep {rep + 1}: "
                        + (f"{entry['mb_per_sec']:.0f} MB/s" if entry["ok"] else "FAILED")
                        + (f", peak RSS {entry['peak_kib'] / 1024:.1f} MiB" if pid else ""))
        self.pg.sql("DROP TABLE copy_src, copy_dst", db=DB)
        os.unlink(path)

    # -- figure 6: connection churn ----------------------------------------------------

    def fig6_churn(self) -> None:
        a = self.args
        res = self.raw.setdefault("churn", {t: [] for t in TARGETS})
        for rep in range(a.reps):
            for t in TARGETS:
                r = self.run_select(t, "simple", 16, a.churn_duration, extra=("-C",),
                                    logs=False)
                if r["ok"]:
                    r["conns_per_sec"] = r["txns"] / a.churn_duration
                    if "cpu_secs" in r:
                        r["cpu_us_per_conn"] = r["cpu_secs"] * 1e6 / r["txns"]
                else:
                    self.event(f"pgbench -C through {t} failed: {r['error']}")
                res[t].append(r)
            log(f"churn rep {rep + 1}: " + "  ".join(
                f"{t}={res[t][-1].get('conns_per_sec', 0):.0f}/s" for t in TARGETS))

    # -- figure 7: TLS from the client ---------------------------------------------------

    def fig7_tls(self) -> None:
        """pgbench -S -M simple -c 64 -j 2 with PGSSLMODE=require through PgBouncer and
        sluice started with client_tls_sslmode=require; they are stopped at the end."""
        a = self.args
        res = self.raw.setdefault("tls", {t: [] for t in POOLERS})
        try:
            for t in POOLERS:
                w = self.run_select(t, "simple", 64, a.warmup, logs=False, tls=True)
                if not w["ok"]:
                    self.event(f"TLS warm-up through {t} failed: {w.get('error')}")
            for rep in range(a.reps):
                for t in POOLERS:
                    r = self.run_select(t, "simple", 64, a.duration, logs=False, tls=True)
                    if not r["ok"] and (rep == 0 or r["error"] != res[t][0].get("error")):
                        self.event(f"pgbench -S -c 64 over TLS through {t} failed "
                                   f"(rc {r['rc']}): {r['error']}")
                    res[t].append(r)
                log(f"tls rep {rep + 1}/{a.reps}: " + "  ".join(
                    f"{t}={res[t][-1]['tps']:.0f} tps, "
                    f"{res[t][-1].get('cpu_us_per_txn', float('nan')):.1f} µs/txn"
                    if res[t][-1]["ok"] else f"{t}=FAILED" for t in POOLERS))
        finally:
            for t in POOLERS:
                self.stop_pooler(self.poolers.pop(t + "+tls", None))

    # -- the table ----------------------------------------------------------------------

    def add_row(self, fig: str, metric: str, vals: dict, target: tuple | None = None,
                sluice_cell: str | None = None) -> None:
        """vals: {target: summary | str}; target: (kind, threshold, text) with kind one of
        pgb_le, pgb_ge, direct_ge (ratio of medians), abs_le, abs_lt, abs_ge (sluice median)."""
        def med(t):
            v = vals.get(t)
            return v["median"] if isinstance(v, dict) else None
        s, b, d = med("sluice"), med("pgbouncer"), med("direct")
        r_b = s / b if s is not None and b else None
        r_d = s / d if s is not None and d else None
        result = ""
        if target:
            kind, thr, _ = target
            if s is None:
                result = "MISS (sluice failed)" if isinstance(vals.get("sluice"), str) else "n/a"
            elif kind.startswith("pgb"):
                result = "n/a" if r_b is None else \
                    ("PASS" if (r_b <= thr if kind == "pgb_le" else r_b >= thr) else "MISS")
            elif kind == "direct_ge":
                result = "n/a" if r_d is None else ("PASS" if r_d >= thr else "MISS")
            elif kind == "abs_le":
                result = "PASS" if s <= thr else "MISS"
            elif kind == "abs_lt":
                result = "PASS" if s < thr else "MISS"
            elif kind == "abs_ge":
                result = "PASS" if s >= thr else "MISS"
        self.rows.append({
            "fig": fig, "metric": metric,
            "cells": {t: fmt_cell(vals.get(t)) for t in TARGETS},
            "sluice_cell": sluice_cell,
            "r_pgb": r_b, "r_direct": r_d,
            "target": target[2] if target else "", "result": result,
            # the threshold each ratio is judged against (fmt_ratio shows which side it is on)
            "thr_pgb": target[1] if target and target[0].startswith("pgb") else None,
            "thr_direct": target[1] if target and target[0] == "direct_ge" else None,
            "medians": {"direct": d, "pgbouncer": b, "sluice": s},
        })

    @staticmethod
    def vals_from(runs: dict, field: str) -> dict:
        out = {}
        for t, lst in runs.items():
            ok = [r for r in lst if r.get("ok") and r.get(field) is not None]
            if ok:
                out[t] = summarize([r[field] for r in ok])
            elif lst:
                errs = [r.get("error") for r in lst if r.get("error")]
                out[t] = "FAILED" if errs else "—"
        return out

    def build_table(self) -> None:
        f1 = self.raw.get("fig1", {})
        for clients in (1, 64):
            for mode in MODES:
                key = f"{mode}/c{clients}"
                if key not in f1:
                    continue
                runs = dict(f1[key])
                if mode == "prepared":
                    runs["pgbouncer"] = []
                cl = f"-M {mode} -c {clients}"
                tgt = None
                if clients == 64 and mode in ("simple", "extended"):
                    tgt = ("pgb_ge", 1.05, "≥ 1.05× PgBouncer")
                v = self.vals_from(runs, "tps")
                if mode == "prepared":
                    v["pgbouncer"] = "n/a (1.18)"
                self.add_row("1", f"TPS {cl}", v, tgt)
                for field, name in (("avg_ms", "avg latency ms"), ("p99_ms", "p99 latency ms")):
                    v = self.vals_from(runs, field)
                    if mode == "prepared":
                        v["pgbouncer"] = "n/a"
                    self.add_row("1", f"{name} {cl}", v)
            # prepared vs extended through sluice
            pk, ek = f"prepared/c{clients}", f"extended/c{clients}"
            if pk in f1 and ek in f1:
                p = self.vals_from({"s": f1[pk]["sluice"]}, "tps").get("s")
                e = self.vals_from({"s": f1[ek]["sluice"]}, "tps").get("s")
                if isinstance(p, dict) and isinstance(e, dict):
                    ratio = p["median"] / e["median"]
                    v = {"sluice": {"median": ratio, "min": ratio, "max": ratio, "n": 1}}
                    cell = f"{ratio:.2f}×"
                else:
                    v = {"sluice": "FAILED"}
                    cell = "FAILED (-M prepared)" if not isinstance(p, dict) else "FAILED"
                # at -c 1 the lone client keeps getting the same server back, so named
                # statements work without a cache: only -c 64 tests the target
                self.add_row("1", f"sluice TPS prepared ÷ extended -c {clients}", v,
                             ("abs_ge", 1.3, "≥ 1.3×") if clients == 64 else None,
                             sluice_cell=cell)
        # figure 2a: CPU per transaction
        for clients in (1, 64):
            for mode in MODES:
                key = f"{mode}/c{clients}"
                if key not in f1:
                    continue
                runs = {t: f1[key][t] for t in POOLERS if t in f1[key]}
                v = self.vals_from(runs, "cpu_us_per_txn")
                v["direct"] = "—"
                if mode == "prepared":
                    v["pgbouncer"] = "n/a"
                tgt = None
                if mode != "prepared":
                    tgt = ("pgb_le", 0.75, "≤ 0.75× PgBouncer") if clients == 64 else \
                        ("pgb_le", 0.9, "≤ 0.9× PgBouncer")
                self.add_row("2", f"pooler CPU µs/txn -M {mode} -c {clients}", v, tgt)
        oc = self.raw.get("one_core", {})
        for mode in RELAY_MODES:
            runs = oc.get(f"{mode}/c1")
            if runs:
                v = self.vals_from({t: runs[t] for t in POOLERS if t in runs}, "cpu_us_per_txn")
                v["direct"] = "—"
                self.add_row("2", f"pooler CPU µs/txn -M {mode} -c 1, one CPU", v)
        cg = self.raw.get("callgrind", {})
        for key, per in cg.items():
            mode, c = key.split("/")
            v = {"direct": "—"}
            for t in POOLERS:
                e = per.get(t)
                if e and e.get("ok"):
                    v[t] = summarize(e.get("ir_per_txn_pairs", [e["ir_per_txn"]]))
                elif e:
                    v[t] = "FAILED"
            self.add_row("2", f"callgrind Ir/txn -M {mode} -c {c[1:]}", v,
                         ("pgb_le", 0.5, "≤ 0.5× PgBouncer"))
        st = self.raw.get("strace", {})
        for key, per in st.items():
            c = key[1:]
            for field, name, tgt in (
                    ("syscalls_per_txn", "syscalls/txn",
                     ("abs_le", 4.2, "≤ 4.2") if c == "64" else None),
                    ("epoll_ctl_per_txn", "epoll_ctl/txn",
                     ("abs_lt", 0.01, "< 0.01") if c == "64" else None)):
                v = {"direct": "—"}
                for t in POOLERS:
                    e = per.get(t)
                    if e and e.get("ok"):
                        v[t] = summarize([e[field]])
                    elif e:
                        v[t] = "FAILED"
                self.add_row("3", f"{name} -c {c}", v, tgt)
        idle = self.raw.get("idle")
        if idle:
            v = {"direct": "—"}
            for t in POOLERS:
                v[t] = summarize([e.get("kib_per_client") for e in idle[t]]) or "FAILED"
            self.add_row("4", f"RSS KiB per idle client ({idle['clients']} clients)", v,
                         ("abs_le", 0.6, "≤ 0.6 KiB"))
            v = {"direct": "—"}
            for t in POOLERS:
                v[t] = summarize([e.get("rss_open_kib", 0) / 1024 for e in idle[t]
                                  if e.get("rss_open_kib")]) or "—"
            self.add_row("4", f"RSS MiB with {idle['clients']} idle clients", v)
        cp = self.raw.get("copy")
        if cp:
            for direction in ("in", "out"):
                runs = cp[direction]
                v = self.vals_from(runs, "mb_per_sec")
                size = "1 GiB" if cp["bytes"] > 1e9 else f"{cp['bytes'] / 2**20:.0f} MiB"
                if direction == "in" and "WHERE" in cp.get("in_sql", ""):
                    size += ", rows parsed, not kept"
                self.add_row("5", f"COPY {direction} MB/s ({size})", v,
                             ("direct_ge", 0.97, "≥ 0.97× direct"))
                pk = {t: summarize([r.get("peak_kib", 0) / 1024 for r in runs[t]
                                    if r.get("peak_kib")]) or "—" for t in POOLERS}
                pk["direct"] = "—"
                self.add_row("5", f"pooler peak RSS MiB, COPY {direction}", pk,
                             ("abs_lt", 32, "< 32 MiB"))
        ch = self.raw.get("churn")
        if ch:
            self.add_row("6", "connections/s (pgbench -C -S -c 16)",
                         self.vals_from(ch, "conns_per_sec"))
            v = self.vals_from({t: ch[t] for t in POOLERS}, "cpu_us_per_conn")
            v["direct"] = "—"
            self.add_row("6", "pooler CPU µs per new connection", v,
                         ("pgb_le", 0.8, "≤ 0.8× PgBouncer"))
        tl = self.raw.get("tls")
        if tl:
            v = self.vals_from(tl, "tps")
            v["direct"] = "—"
            self.add_row("7", "TPS over TLS -M simple -c 64", v)
            v = self.vals_from(tl, "cpu_us_per_txn")
            v["direct"] = "—"
            self.add_row("7", "pooler CPU µs/txn over TLS -M simple -c 64", v)

    def floor_markdown(self) -> list[str]:
        """The byte relay's CPU per transaction at -c 1 beside the poolers' (same runs), from
        figure 1 and from the one-CPU runs of figure 2."""
        out = []
        sources = set()
        for source, where in (("fig1", ""), ("one_core", ", one CPU")):
            for mode in RELAY_MODES:
                runs = self.raw.get(source, {}).get(f"{mode}/c1", {})
                if not runs.get("relay"):
                    continue
                sources.add(source)
                v = self.vals_from({t: runs.get(t, []) for t in ("relay", "pgbouncer", "sluice")},
                                   "cpu_us_per_txn")
                med = {t: v[t]["median"] if isinstance(v.get(t), dict) else None for t in v}
                r, b, s = med.get("relay"), med.get("pgbouncer"), med.get("sluice")
                out.append(f"| -M {mode}{where} | {fmt_cell(v.get('relay'))} | "
                           f"{fmt_cell(v.get('pgbouncer'))} | {fmt_cell(v.get('sluice'))} | "
                           + (fmt_ratio(r / b) if r and b else "") + " | "
                           + (fmt_ratio(s / r) if r and s else "") + " | "
                           + (fmt_ratio(s / b) if s and b else "") + " |")
        if not out:
            return []
        which = []
        if "fig1" in sources:
            which.append("the rows without a mark are figure 1's runs (the target is 0.9× "
                         "PgBouncer)")
        if "one_core" in sources:
            which.append("the rows marked one CPU are figure 2's runs with pgbench, the "
                         "pooler and PostgreSQL on one CPU, where no wake-up crosses to the "
                         "other CPU and the repetitions agree closely")
        if self.args.quick:
            which.append("a --quick run leaves the relay out of figure 1")
        which_text = "; ".join(which)
        return ["## The floor at -c 1: a byte relay", "",
                "Pooler CPU µs per transaction at -c 1, beside test/bench/relay.cpp: a relay "
                "that moves bytes between pgbench and PostgreSQL with the system calls a pooler "
                "makes per message (epoll_wait, recv, send) and no work of its own (no "
                "protocol, no auth, no pool). What it costs is the kernel's part, which no "
                "pooler built this way can go below. " + which_text[:1].upper()
                + which_text[1:] + ".", "",
                "| mode | byte relay | PgBouncer | sluice | relay ÷ PgBouncer | "
                "sluice ÷ relay | sluice ÷ PgBouncer |",
                "|---|---:|---:|---:|---:|---:|---:|"] + out + [""]

    def switches_markdown(self) -> list[str]:
        """Sleeps and preemptions of each pooler (and the relay) per transaction, from the runs
        of figures 1 and 6: what the kernel's share at -c 1 and per new connection follows."""
        cases = [("fig1", f"{m}/c{c}", f"-M {m} -c {c}, per transaction")
                 for c in (1, 64) for m in RELAY_MODES] + \
            [("churn", None, "pgbench -C -c 16, per new connection")]
        targets = ("pgbouncer", "sluice", "relay")
        rows = []
        for source, key, label in cases:
            runs = self.raw.get(source, {})
            runs = runs.get(key, {}) if key else runs
            cells = {}
            for t in targets:
                ok = [r for r in runs.get(t, []) if r.get("ok") and "sleeps_per_txn" in r]
                if ok:
                    cells[t] = (f"{statistics.median(r['sleeps_per_txn'] for r in ok):.2f} + "
                                f"{statistics.median(r['preemptions_per_txn'] for r in ok):.2f}")
            if cells.get("pgbouncer") or cells.get("sluice"):
                rows.append((label, cells))
        if not rows:
            return []
        cols = [t for t in targets if any(t in c for _, c in rows)]
        return ["## Sleeps and preemptions", "",
                "Context switches of each pooler, from the runs above (medians), as voluntary "
                "+ involuntary: the pooler went to sleep waiting for input, or a process took "
                "its CPU (often one it had just woken). From /proc/PID/task/*/status. Each "
                "switch back in costs the pooler microseconds of kernel time, whatever it does "
                "in user space (doc/bench.md, \"Sleeps and preemptions\").", "",
                "| run | " + " | ".join(LABEL[t] for t in cols) + " |",
                "|---|" + "---:|" * len(cols)] + \
            [f"| {label} | " + " | ".join(c.get(t, "") for t in cols) + " |"
             for label, c in rows] + [""]

    def table_markdown(self) -> str:
        out = ["| fig | metric | direct | PgBouncer | sluice | sluice ÷ PgBouncer | "
               "sluice ÷ direct | target | result |",
               "|---|---|---:|---:|---:|---:|---:|---|---|"]
        for r in self.rows:
            sl = r["sluice_cell"] or r["cells"]["sluice"]
            rb = "" if r["sluice_cell"] or not r["r_pgb"] else \
                fmt_ratio(r["r_pgb"], r.get("thr_pgb"))
            rd = "" if r["sluice_cell"] or not r["r_direct"] else \
                fmt_ratio(r["r_direct"], r.get("thr_direct"))
            res = r["result"]
            if res.startswith("PASS"):
                res = "**PASS**"
            elif res.startswith("MISS"):
                res = f"**{res}**"
            out.append(f"| {r['fig']} | {r['metric']} | {r['cells']['direct']} | "
                       f"{r['cells']['pgbouncer']} | {sl} | {rb} | {rd} | {r['target']} | "
                       f"{res} |")
        return "\n".join(out)

    # -- chart ------------------------------------------------------------------------

    def chart(self, png: str) -> str | None:
        f1 = self.raw.get("fig1")
        if not f1 or not shutil.which("gnuplot"):
            return None
        d = tempfile.mkdtemp(prefix="chart-", dir=self.work)
        tps_rows, cpu_rows = [], []
        for clients in (1, 64):
            for mode in MODES:
                key = f"{mode}/c{clients}"
                if key not in f1:
                    continue
                label = f"{mode}\\n-c {clients}"
                row, crow = [f'"{label}"'], [f'"{label}"']
                for t in TARGETS:
                    s = self.vals_from({t: f1[key].get(t, [])}, "tps").get(t)
                    row += [f"{s[k]:.1f}" for k in ("median", "min", "max")] \
                        if isinstance(s, dict) else ["NaN"] * 3
                for t in POOLERS:
                    s = self.vals_from({t: f1[key].get(t, [])}, "cpu_us_per_txn").get(t)
                    crow += [f"{s[k]:.3f}" for k in ("median", "min", "max")] \
                        if isinstance(s, dict) else ["NaN"] * 3
                tps_rows.append(" ".join(row))
                cpu_rows.append(" ".join(crow))
        with open(os.path.join(d, "tps.dat"), "w") as f:
            f.write("\n".join(tps_rows) + "\n")
        with open(os.path.join(d, "cpu.dat"), "w") as f:
            f.write("\n".join(cpu_rows) + "\n")
        gp = f"""
set terminal pngcairo size 1200,1000 font "sans,10"
set output "{png}"
set datafile missing "NaN"
set style data histograms
set style histogram errorbars gap 2 lw 1
set style fill solid 0.8 border -1
set grid ytics
set key top left
set yrange [0:*]
set bmargin 4
set tmargin 3
set multiplot layout 2,1 title "pgbench -S, transaction pooling (median, bars min-max; missing = not run or failed)"
set title "TPS by query mode and clients"
set ylabel "transactions/s"
plot "{d}/tps.dat" using 2:3:4:xtic(1) title "direct" lc rgb "#7f7f7f", \\
     "" using 5:6:7 title "PgBouncer" lc rgb "#1f77b4", \\
     "" using 8:9:10 title "sluice" lc rgb "#d62728"
set title "pooler CPU per transaction (utime+stime / transactions)"
set ylabel "CPU µs / transaction"
plot "{d}/cpu.dat" using 2:3:4:xtic(1) title "PgBouncer" lc rgb "#1f77b4", \\
     "" using 5:6:7 title "sluice" lc rgb "#d62728"
unset multiplot
"""
        with open(os.path.join(d, "chart.gp"), "w") as f:
            f.write(gp)
        r = subprocess.run(["gnuplot", os.path.join(d, "chart.gp")], capture_output=True,
                           text=True, timeout=120)
        if r.returncode != 0 or not os.path.exists(png):
            self.event(f"gnuplot failed: {r.stderr.strip()[:500]}")
            return None
        return png

    # -- report -------------------------------------------------------------------------

    def machine_facts(self) -> list[str]:
        cpu = "?"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        cpu = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        mem = "?"
        try:
            with open("/proc/meminfo") as f:
                mem = f"{int(f.readline().split()[1]) / 2**20:.1f} GiB"
        except (OSError, ValueError, IndexError):
            pass

        def ver(cmd):
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
                return (r.stdout or r.stderr).strip().splitlines()[0]
            except (OSError, IndexError, subprocess.SubprocessError):
                return "?"
        return [
            f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
            f"- CPU: {cpu}, {os.cpu_count()} cores; memory {mem}",
            f"- kernel: {platform.system()} {platform.release()} ({platform.machine()})",
            f"- PostgreSQL: {ver([os.path.join(harness.pg_bindir(), 'postgres'), '--version'])}"
            f"; pgbench: {ver([harness.pg_tool('pgbench'), '--version'])}",
            f"- PgBouncer: {ver([PGBOUNCER, '--version'])} ({PGBOUNCER})",
            f"- sluice: {ver([self.sluice, '--version'])} ({self.sluice_src}, built "
            f"{self.sluice_built}, sha256 {self.sluice_sha}…; the run used a copy of it)",
            f"- valgrind: {ver(['valgrind', '--version'])}; strace: {ver(['strace', '-V'])}",
            f"- sluice's read path (its start-up line; callgrind ran the same): "
            f"{(self._reads or ('?', 'sluice not started'))[1]}",
        ]

    def settings_text(self) -> str:
        a = self.args
        f = a.figures
        parts = [f"mode {'--quick' if a.quick else 'full'}",
                 "figures " + ",".join(str(x) for x in sorted(f)),
                 f"scale {a.scale}", f"reps {a.reps}"]
        if 1 in f:
            parts.append(f"pgbench -T {a.duration}s per run (warm-up {a.warmup}s), latency "
                         f"log sampling {a.sampling}")
        if 2 in f:
            parts.append(f"-c 1 on one CPU -T {a.one_core_duration}s × {a.one_core_reps}; "
                         f"callgrind -t {a.cg_t1} (-c 1) / {a.cg_t64} (-c 64) and 3×, "
                         f"{a.cg_pairs} pairs")
        if 3 in f:
            parts.append(f"strace -t {a.st_t16} (-c 16) / {a.st_t64} (-c 64) and 3×")
        if 4 in f:
            parts.append(f"idle clients {a.idle_clients} × {a.idle_reps}")
        if 5 in f:
            parts.append(f"COPY {a.copy_mib} MiB × {a.copy_reps} (in: `{self.copy_in_sql()}`)")
        if 6 in f:
            parts.append(f"churn -T {a.churn_duration}s")
        if 7 in f:
            parts.append(f"TLS pgbench -T {a.duration}s (warm-up {a.warmup}s)")
        return "; ".join(parts)

    def write_report(self) -> Path:
        a = self.args
        outdir = Path(a.out)
        outdir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = outdir / (stamp + ("-quick" if a.quick else ""))
        self.build_table()
        table = self.table_markdown()
        png = self.chart(str(base) + ".png")
        misses = [r for r in self.rows if r["result"].startswith("MISS")]
        passes = [r for r in self.rows if r["result"].startswith("PASS")]
        md = [f"# sluice bench {stamp}{' (quick)' if a.quick else ''}", ""]
        if self.interrupted:
            md += ["**Interrupted: partial results.**", ""]
        md += ["## Machine", ""] + self.machine_facts() + [
            f"- settings: {self.settings_text()}",
            f"- wall time: {self.elapsed()}", "",
            "## Results", "",
            "Cells: median (min–max) over the repetitions; ratios are of medians. "
            "See doc/bench.md for what each figure means.", "", table, ""]
        md += ["## Targets", "",
               f"{len(passes)} PASS, {len(misses)} MISS.", ""]
        for r in misses:
            md.append(f"- MISS: {r['metric']} — sluice {r['sluice_cell'] or r['cells']['sluice']}"
                      + (f", {fmt_ratio(r['r_pgb'], r.get('thr_pgb'))} PgBouncer"
                         if r["r_pgb"] else "")
                      + (f", {fmt_ratio(r['r_direct'], r.get('thr_direct'))} direct"
                         if r["r_direct"] and
                         r["target"].endswith("direct") else "")
                      + f" (target {r['target']})")
        md.append("")
        md += self.floor_markdown()
        md += self.switches_markdown()
        st = self.raw.get("strace")
        if st:
            md += ["## Figure 3 detail: calls per transaction by syscall", "",
                   "(t / 3t difference; `(errors)` = calls that failed, e.g. EAGAIN)", ""]
            for key, per in st.items():
                for t, e in per.items():
                    if e.get("per_txn_by_call"):
                        calls = ", ".join(f"{k} {v:.3f}" for k, v in
                                          e["per_txn_by_call"].items() if abs(v) >= 0.0005)
                        md.append(f"- {LABEL[t]} -c {key[1:]}: {calls}")
            md.append("")
        if png:
            md += ["## Chart", "", f"![TPS and CPU per transaction]({Path(png).name})", ""]
        load = self.raw.get("load")
        if load:
            md += ["## Machine load during the run", "",
                   "CPU used by processes outside the bench (the machine's busy time minus "
                   "the bench's own process trees and PostgreSQL's), and CPU time stolen by "
                   "the hypervisor, as a share of all CPU time during each figure.", "",
                   "| figure | seconds | other processes | steal |", "|---|---:|---:|---:|"]
            for what, d in load.items():
                md.append(f"| {what} | {d['secs']:.0f} | {d['foreign_cpu_secs']:.1f} CPU-s "
                          f"({d['foreign_pct']:.1f}%) | {d['steal_pct']:.1f}% |")
            md.append("")
        md += ["## Events", ""]
        md += [f"- {e}" for e in self.events] if self.events else ["- none"]
        md.append("")
        for key, label in (("sluice", "sluice"), ("pgbouncer", "PgBouncer")):
            lines = self.log_lines[key]
            md += [f"## {label} log: warnings and errors (deduplicated)", ""]
            if not lines:
                md += ["none", ""]
                continue
            md.append("```")
            for _, v in sorted(lines.items(), key=lambda kv: -kv[1]["count"])[:25]:
                md.append(f"{v['count']:>6} × {v['example']}")
            md += ["```", ""]
        md += ["## Generated pgbouncer.ini (both poolers; {port}/{dir}/{pg_port} filled in "
               "per process)", "", "```ini", self.ini.strip(), "```", ""]
        if "tls" in self.raw:
            md += ["Figure 7 ran a second PgBouncer and sluice with this one (server.crt and "
                   "server.key: a certificate for localhost made with openssl):", "", "```ini",
                   self.tls_ini.strip(), "```", ""]
        text = "\n".join(md)
        (base.with_suffix(".md")).write_text(text)
        with open(base.with_suffix(".json"), "w") as f:
            json.dump({"settings": vars(a), "events": self.events, "raw": self.raw,
                       "rows": self.rows}, f, indent=1, default=str)
        print()
        print(table)
        print()
        for r in misses:
            print(f"MISS: {r['metric']} (target {r['target']})")
        print(f"\nresults: {base.with_suffix('.md')}" + (f"\nchart:   {png}" if png else ""))
        return base.with_suffix(".md")

    # -- main ---------------------------------------------------------------------------

    def run(self) -> None:
        a = self.args
        self.start_pg()
        for t in POOLERS:
            self.poolers[t] = self.start_pooler(t)
        self.warm_up()
        steps = [(1, "pgbench -S", self.fig1), (2, "one core", self.fig2_one_core),
                 (2, "callgrind", self.fig2_callgrind),
                 (3, "strace", self.fig3_strace), (6, "churn", self.fig6_churn),
                 (7, "tls", self.fig7_tls), (5, "copy", self.fig5_copy),
                 (4, "idle", self.fig4_idle)]
        for num, name, fn in steps:
            if num not in a.figures:
                continue
            log(f"--- {name} (elapsed {self.elapsed()})")
            snap = cpu_snapshot(self.roots())
            try:
                fn()
            except (KeyboardInterrupt, Interrupted):
                raise
            except Exception as e:  # noqa: BLE001 - one figure failing must not lose the rest
                self.event(f"figure {name} aborted: {e}\n```\n{traceback.format_exc()[-1500:]}"
                           f"\n```")
            finally:
                self.note_load(f"fig {num} ({name})", snap)

    def roots(self) -> set:
        r = {os.getpid()}
        if self.pg is not None and self.pg.pid:
            r.add(self.pg.pid)
        return r

    def note_load(self, what: str, snap: dict) -> None:
        d = cpu_delta(snap, cpu_snapshot(self.roots()))
        self.raw.setdefault("load", {})[what] = d
        if d["foreign_pct"] >= 5 or d["steal_pct"] >= 5:
            self.event(f"during {what} other processes used {d['foreign_cpu_secs']:.0f} CPU-s "
                       f"({d['foreign_pct']:.0f}% of the machine) and the hypervisor stole "
                       f"{d['steal_pct']:.0f}%: its figures are disturbed")


def wait_for_quiet(limit: float) -> None:
    """Wait (up to limit seconds) until the rest of the machine uses under 15% of the CPU,
    measured over 3 s: a compile or a test suite running beside the bench skews every
    figure. The run goes ahead anyway after the limit; the report shows the load."""
    deadline = time.monotonic() + limit
    said = False
    while True:
        a = cpu_snapshot({os.getpid()})
        time.sleep(3)
        d = cpu_delta(a, cpu_snapshot({os.getpid()}))
        if d["foreign_pct"] < 15:
            if said:
                log(f"machine quiet ({d['foreign_pct']:.0f}% busy), starting")
            return
        if time.monotonic() >= deadline:
            log(f"machine still busy ({d['foreign_pct']:.0f}% of the CPU used by other "
                f"processes); starting anyway, the report will show the load")
            return
        if not said:
            log(f"machine busy ({d['foreign_pct']:.0f}% of the CPU used by other processes);"
                f" waiting up to {limit:.0f}s for it to calm down")
            said = True


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="figures 1, 2 and 4 only, short runs, 1000 idle clients (~3.5 min)")
    ap.add_argument("--figures", default=None,
                    help="comma-separated figure numbers to run (default: all; quick: 1,2,4)")
    ap.add_argument("--reps", type=int, help="repetitions of each pgbench run")
    ap.add_argument("--duration", type=int, help="pgbench -T seconds for figure 1")
    ap.add_argument("--scale", type=int, default=10, help="pgbench scale (default 10)")
    ap.add_argument("--idle-clients", type=int, help="idle clients for figure 4")
    ap.add_argument("--copy-mib", type=int, default=1024, help="COPY size in MiB (1024)")
    ap.add_argument("--copy-store-rows", action="store_true",
                    help="COPY IN stores its rows (default: the server parses them and keeps none)")
    ap.add_argument("--out", default=str(HERE / "results"), help="results directory")
    ap.add_argument("--wait-idle", type=float, default=None,
                    help="wait up to this many seconds for other processes to stop using "
                         "the CPU before starting (default 60 quick, 300 full; 0 = don't)")
    a = ap.parse_args(argv)
    q = a.quick
    a.figures = {int(x) for x in a.figures.split(",")} if a.figures else \
        ({1, 2, 4} if q else {1, 2, 3, 4, 5, 6, 7})
    a.reps = a.reps or (3 if q else 5)
    if a.wait_idle is None:
        a.wait_idle = 60 if q else 300
    a.duration = a.duration or (3 if q else 10)
    a.warmup = 1 if q else 3
    a.idle_clients = a.idle_clients or (1000 if q else 5000)
    a.idle_reps = 2 if q else 3
    a.copy_reps = 5  # a COPY takes seconds; its MB/s varies by ±10 % from run to run
    a.churn_duration = 3 if q else 10
    a.one_core_duration = 2 if q else 5  # figure 2 on one CPU: steadier, shorter runs
    a.one_core_reps = 2 if q else a.reps
    a.sampling = 0.2
    a.cg_t1 = 1000 if q else 2000       # -c 1: t and 3t transactions
    a.cg_t64 = 25 if q else 50          # -c 64: t and 3t per client
    a.cg_pairs = 3                      # t / 3t pairs per callgrind figure (median)
    a.st_t16 = 250 if q else 500
    a.st_t64 = 60 if q else 150
    return a


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    ensure_tools()
    try:  # 5,000 idle clients need fds here and in the poolers (they inherit the limit)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = max(soft, min(hard if hard != resource.RLIM_INFINITY else 65536, 65536))
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile < args.idle_clients + 500:
        sys.exit(f"bench: ulimit -n is {nofile}; {args.idle_clients} idle clients need more")

    def on_term(signum, frame):
        raise Interrupted(f"signal {signum}")
    # a shell starts background jobs with SIGINT ignored; Ctrl-C / kill -INT must still stop us
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    wait_for_quiet(args.wait_idle)
    b = Bench(args)
    log(f"sluice {b.sluice}; PgBouncer {PGBOUNCER}; work dir {b.work}")
    rc = 0
    try:
        b.run()
    except (KeyboardInterrupt, Interrupted) as e:
        b.interrupted = True
        log(f"interrupted ({type(e).__name__}); stopping everything")
        rc = 130
    except Exception as e:  # noqa: BLE001
        b.event(f"bench aborted: {e}\n```\n{traceback.format_exc()[-2000:]}\n```")
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            for t in POOLERS:
                p = b.poolers.get(t)
                if p is not None:
                    b.check_crash(p)
                    b.harvest_log(p)
            if b.raw:
                b.write_report()
        finally:
            b.cleanup()
            log(f"done in {b.elapsed()}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
