"""pgbouncer-compat.ini at the top of the repo (a real-world pgbouncer.ini) loads unchanged.

The file and every relative file it references (%include, auth_file, auth_hba_file, ...) are
copied into a temp dir with the same relative layout; the binary runs there as user postgres
with cwd = that dir (PgBouncer resolves %include against the working directory), so relative
logfile/pidfile/unix_socket_dir paths land in the temp dir; absolute ones (the Debian
/var/run/postgresql, /var/log/postgresql) are used as they are. It listens on its own
listen_port (6432), serialized with `make run` and other test runs by the port lock file. It
must start, listen, and on SIGTERM exit and remove its pidfile and unix socket. Its servers
(10.20.x.x) are never contacted: no client logs in."""

import os
import re
import socket

import pytest

import harness

COMPAT = os.path.join(harness.REPO, "pgbouncer-compat.ini")
FILE_KEYS = {"auth_file", "auth_hba_file", "auth_ident_file", "client_tls_ca_file",
             "client_tls_cert_file", "client_tls_key_file", "server_tls_ca_file",
             "server_tls_cert_file", "server_tls_key_file", "resolv_conf"}


def _settings(text):
    """[pgbouncer] key -> value (last wins), and %include targets, of one file."""
    section, out, includes = None, {}, []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("%include"):
            includes.append(s.split(None, 1)[1].strip())
            continue
        if not s or s[0] in ";#":
            continue
        m = re.match(r"\[(.+)\]$", s)
        if m:
            section = m.group(1).strip().lower()
            continue
        kv = re.match(r"([A-Za-z0-9_.\-*]+)\s*=\s*(.*)$", s)
        if kv and section == "pgbouncer":
            out[kv.group(1).lower()] = kv.group(2).strip()
    return out, includes


def _collect(rel, files, settings):
    """Read repo file rel and, recursively, the relative files it references."""
    if rel in files:
        return
    path = os.path.join(harness.REPO, rel)
    assert os.path.exists(path), f"{rel} (referenced by the compat ini) is missing"
    with open(path) as f:
        text = f.read()
    files[rel] = text
    s, includes = _settings(text)
    settings.update(s)
    for inc in includes:
        if not os.path.isabs(inc):
            _collect(inc, files, settings)
    for key in FILE_KEYS & s.keys():
        v = s[key].strip("'\"")
        if v and not os.path.isabs(v) and os.path.exists(os.path.join(harness.REPO, v)):
            files.setdefault(v, open(os.path.join(harness.REPO, v)).read())


def _path(base, value):
    value = value.strip("'\"")
    if not value:
        return None
    return value if os.path.isabs(value) else os.path.join(base, value)


def _remove_stale_pidfile(path):
    try:
        pid = int(open(path).read().strip() or 0)
    except (FileNotFoundError, ValueError):
        pid = 0
    if os.path.exists(path):
        assert not (pid and harness.pid_alive(pid)), \
            f"{path} belongs to running process {pid}: another pooler uses the compat paths"
        os.unlink(path)


def _prepare_absolute_paths(settings):
    """The compat ini may use the Debian locations (/var/run/postgresql for the socket and
    pidfile, /var/log/postgresql for the log). They are used as they are: the directories
    must exist and be writable by user postgres (postgresql-common creates them; when one
    is missing and we are root it is created the way its tmpfiles.d entry would). A stale
    pidfile from an earlier crashed run is removed; a live one fails the test."""
    dirs = []
    for key in ("logfile", "pidfile"):
        v = settings.get(key, "").strip("'\"")
        if os.path.isabs(v):
            dirs.append(os.path.dirname(v))
    sockdir = settings.get("unix_socket_dir", "/tmp").strip("'\"")
    if os.path.isabs(sockdir):
        dirs.append(sockdir)
    for d in dirs:
        if not os.path.isdir(d) and os.geteuid() == 0:
            os.makedirs(d, mode=0o2775, exist_ok=True)
            harness.chown_postgres(d)
        assert os.path.isdir(d), f"{d} (from the compat ini) does not exist"
        r = harness.run_as_postgres(["test", "-w", d])
        assert r.returncode == 0, f"{d} (from the compat ini) is not writable by postgres"
    pidfile = settings.get("pidfile", "").strip("'\"")
    if os.path.isabs(pidfile):
        _remove_stale_pidfile(pidfile)


def _accepts(port, addr):
    host = "127.0.0.1" if addr in ("*", "0.0.0.0", "") else addr.split(",")[0].strip()
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: settings of later releases in pgbouncer-compat.ini "
    "(load_balance_hosts, ...)")
def test_compat_ini_loads_unchanged(pooler):
    assert os.path.exists(COMPAT), "pgbouncer-compat.ini missing at the repo top"
    files, settings = {}, {}
    _collect("pgbouncer-compat.ini", files, settings)
    port = int(settings.get("listen_port", "6432"))
    _prepare_absolute_paths(settings)
    # tests and `make run` that use this fixed port serialize on its lock file
    assert harness.lock_port(port, timeout=120), \
        f"port {port} is held by another test run or `make run` ({harness.PORT_LOCK_DIR})"
    p = None
    try:
        assert not _accepts(port, "127.0.0.1"), f"port {port} already in use"
        text = files.pop("pgbouncer-compat.ini")
        p = pooler(text, port=port, files=files, ini_name="pgbouncer-compat.ini",
                   userlist=None, wait_ready=False)
        # the harness must not have changed a byte of the referenced files
        for rel, content in list(files.items()) + [("pgbouncer-compat.ini", text)]:
            with open(os.path.join(p.dir, rel)) as f:
                assert f.read() == content, f"{rel} differs from the repo copy"
        listen = settings.get("listen_addr", "")
        sockdir = settings.get("unix_socket_dir", "/tmp")
        sock = os.path.join(_path(p.dir, sockdir), f".s.PGSQL.{port}") if sockdir else None

        def up():
            if not p.alive():
                return True
            if listen:
                return _accepts(port, listen)
            return sock is not None and os.path.exists(sock)

        harness.wait_until(up, 15, what="compat ini pooler to listen")
        assert p.alive(), f"exited with {p.describe_rc()}:\n{p.full_log()}"
        out = p.full_log()
        assert "cannot load config file" not in out
        assert not re.search(r"\bFATAL\b", out), out
        p.stop()
        # it cleans up after itself: no pidfile, no unix socket left behind
        pidfile = _path(p.dir, settings.get("pidfile", ""))
        if pidfile:
            assert not os.path.exists(pidfile), f"{pidfile} left behind"
        if sock and os.path.dirname(sock) != p.dir:
            assert not os.path.exists(sock), f"{sock} left behind"
    finally:
        if p is not None:
            p.stop()
            pidfile = _path(p.dir, settings.get("pidfile", ""))
            if pidfile and os.path.isabs(settings.get("pidfile", "")):
                _remove_stale_pidfile(pidfile)
        harness.release_port(port)
