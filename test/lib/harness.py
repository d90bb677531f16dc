"""Integration-test harness for sluice (and, for cross-checking, PgBouncer).

The binary under test comes from ``$SLUICE_BIN`` (the Makefile sets it to
build/sluice); when unset, ``<repo>/build/sluice`` is used if it exists.
``SLUICE_BIN=/usr/sbin/pgbouncer`` runs the same tests against PgBouncer.
``VALGRIND=1`` runs the binary under valgrind (longer start-up deadline).
``SLUICE_KEEP=1`` keeps the temp dirs of poolers for post-mortem reading.

PostgreSQL and the pooler refuse to run as root: when the harness runs as
root it starts them as the unprivileged user ``postgres`` via setpriv, in
temp dirs owned by that user. Every process is stopped by its pid.

Stable API (imported by test/integration, test/proto and test/lib/run_demo.py)
-----------------------------------------------------------------------------

Module functions and constants
    REPO                           repository root (Path)
    PASSWORDS                      {user: password} of the scratch cluster's users
    sluice_bin() -> str            the binary under test (raises if none)
    is_pgbouncer(path=None) -> bool  True when the binary is PgBouncer
    pg_bindir() -> str             PostgreSQL server bindir (initdb, postgres, pg_ctl, psql, pgbench)
    free_port() -> int             a free 127.0.0.1 port, held by a lock file under
                                   /tmp/sluice-test-ports/ until release_port(port)
                                   or process exit
    have_ipv6_loopback() -> bool   ::1 can be bound here
    lock_port(port, timeout=0) -> bool   take the lock of a fixed port (waits up to timeout)
    release_port(port)
    run_as_postgres(cmd, **kw) -> subprocess.CompletedProcess
                                   subprocess.run of cmd as user postgres
                                   (capture_output/text default True)
    as_postgres(cmd) -> list       cmd prefixed with setpriv when we are root
    chown_postgres(path)           recursive chown to postgres (no-op unless root)
    pid_alive(pid) -> bool         exists and is not a zombie
    proc_status(pid, field) -> list | None   the values of one /proc/PID/status line
                                   ("VmRSS", "Uid", ...); None when it or the process is gone
    wait_until(pred, timeout, interval=0.05, what='') -> value
                                   polls pred() until truthy; raises TimeoutError
    in_thread(fn, *args) -> (thread, box)   fn(*args) in a daemon thread; box gets
                                   'result' or 'error' when it ends
    make_ini(pgbouncer=None, databases=None, users=None, peers=None, extra='') -> str
                                   an ini template (placeholders below) from dicts layered
                                   over the defaults; a value of None deletes a default key
    DEFAULT_PGBOUNCER, DEFAULT_DATABASES   the default [pgbouncer] / [databases] dicts

    Template placeholders (plain text replacement, other braces untouched):
        {port}    pooler listen port          {dir}      pooler temp dir
        {pg_port} PostgreSQL port             {pg_host}  PostgreSQL host (127.0.0.1)
        {pg_socket_dir} PostgreSQL unix socket dir

class PgCluster(port=None)         one scratch cluster (initdb + pg_ctl start in __init__)
    .host ('127.0.0.1'), .port, .socket_dir, .bindir, .datadir, .dir, .logfile
    .passwords                     {user: password} for postgres, md5user, scramuser, scramonly
    .pid                           postmaster pid
    .secret(user) -> str|None      rolpassword from pg_authid
    .sql(query, params=None, db='postgres', timeout=60) -> list[tuple]   as superuser over
                                   the unix socket, bounded by statement_timeout
    .connect(db='postgres', user='postgres', **kw) -> psycopg.Connection   direct (autocommit)
    .log_text() -> str             server log
    .stop()                        pg_ctl stop -m fast, verifies the postmaster pid is gone
    .restart(mode='fast', down=0)  pg_ctl stop -m mode, down seconds with no server, start
    Users: md5user/md5pass (md5 secret), scramuser/scrampass (SCRAM),
    scramonly/scramonlypass (SCRAM, pg_hba forces scram-sha-256 from 127.0.0.1),
    postgres/postgrespass (superuser; trusted over the socket and 127.0.0.1).
    Database appdb owned by md5user, plus postgres.

class Pooler(pg, ini_text=None, *, userlist=None, userlist_extra=(), args=(), binary=None,
             port=None, start=True, wait_ready=True, ready_timeout=15, env=None,
             files=None, ini_name='pgbouncer.ini', as_invoker=False, **make_ini_kwargs)
    ini_text is a template (placeholders above); when None it is make_ini(**make_ini_kwargs).
    userlist: None = every cluster user with its plain password; else text or list of lines
    (written verbatim). userlist_extra: lines appended. files: {relative name: text} written
    into .dir as well (e.g. an hba file; subdirectories are created). ini_name: file name
    of the ini inside .dir (relative paths in it resolve against .dir, the cwd).
    as_invoker: run the binary as the harness's own user (root in CI) instead of postgres,
    for `-u postgres` tests. args: extra command-line flags before the ini path.
    The binary runs in the foreground with cwd=.dir, stdout+stderr to .dir/stderr.log.
    Readiness: TCP connect to 127.0.0.1:.port (or the unix socket when the ini has no
    listen_addr) succeeds and the log has "process up" (written after every listener and the
    pidfile) while the process is alive, within ready_timeout; otherwise PoolerError with
    the log.
    .port, .dir, .pid, .ini_path, .ini_text, .logfile, .binary, .proc, .returncode
    .start()                       (when start=False was given)
    .argv() -> list                binary + args + ini path (for run_as_postgres)
    .command() -> list             argv() prefixed for user postgres (what start() runs)
    .write_ini(ini_text=None, **make_ini_kwargs)  rewrite pgbouncer.ini (for reload tests)
    .write_userlist(userlist=None, extra=())
    .log_text() -> str             what this process wrote to the ini's logfile (the part
                                   since start(): an existing file is appended to), else
                                   captured stderr
    .stderr_text() -> str          captured stdout+stderr
    .log_mark() -> int             current length of log_text(), for wait_for_log(since=)
    .wait_for_log(regex, timeout=10, since=0) -> re.Match   poll; raises TimeoutError
                                   (at once if the process exited without writing it)
    .signal(sig), .reload() (SIGHUP)
    .alive() -> bool
    .stop(timeout=10) -> returncode   closes connections made by connect(), SIGTERM, waits,
                                   second SIGTERM, waits, then SIGKILL (then .killed = True)
    .cleanup()                     stop + remove .dir (unless SLUICE_KEEP=1)
    .connect(user='md5user', password=None, dbname='appdb', **kw) -> psycopg.Connection
                                   autocommit, to 127.0.0.1:.port; password defaults to the
                                   cluster password of user; kw go to psycopg.connect
    .admin(query, user='postgres', password=None) -> list[tuple]   simple-protocol query on
                                   the admin console (db pgbouncer)
    .show(what, **kw) -> list[dict]   SHOW <what> on the admin console, rows as dicts
    .output_held(database='appdb') -> list[dict]   SHOW SOCKETS rows of the database's
                                   servers holding input not yet passed on (a client that
                                   does not read)
    .footprint() -> dict           {fds, clients, servers}: open fds less one per server
                                   connection, SHOW MEM client/server slots in use less the
                                   console session and the servers
    .assert_footprint_back(before, timeout=15)   footprint() returns to before (leak check)
    .tool(name, *args, user='md5user', password=None, input=None, timeout=60, env=None)
          -> CompletedProcess   a client program (pg_dump, ...) -h 127.0.0.1 -p .port -U user
    .psql(*args, user='md5user', password=None, dbname='appdb', input=None, timeout=60,
          env=None) -> (rc, stdout, stderr)   psql -X -At -h 127.0.0.1 -p .port ... args
    .expect_exit                   set True when a test makes the process exit on purpose
                                   (the conftest then does not report the exit as a crash)
    .crashed() -> str|None         description when the process died on its own
                                   (nonzero exit or signal) before stop(), or crashed
                                   (SEGV/ABRT/...) even when expected or while stopping,
                                   or wrote a sanitizer report; else None
    .sanitizer_report() -> str|None  first ASan/UBSan/LSan/valgrind error line in stderr

class PoolerError(Exception)

class Forwarder(target_port, gated=False)   the network between the pooler and PostgreSQL:
             a TCP forwarder on 127.0.0.1:.port (a free_port()) to 127.0.0.1:target_port
    gated=True: connections are accepted at once but no byte passes either way until
    .open() (a server login held halfway).
    .accepted                      threading.Event: a connection came in
    .hold_replies_after(n)         from now on pass n more bytes from PostgreSQL (all
                                   connections together), then hold the rest; .replies_held
                                   is a threading.Event set once something is held
    .stop()                        refuse new connections and cut the existing ones (a
                                   server host going away); the port stays reserved
    .close()                       stop() and give the port back (use in finally:)

What the binary under test must do for this harness
    * run in the foreground without -d, as user postgres, with cwd = the pooler dir;
    * accept TCP on listen_addr:listen_port (or create the unix socket when there is no
      listen_addr) within 15 s of exec while staying alive: that is the readiness signal;
    * write its log lines both to stderr (unless -q) and to the ini's logfile;
    * on SIGTERM exit 0 once no client is connected (the harness closes its own client
      connections first); a second SIGTERM exits at once. A nonzero exit or a crash signal
      fails the test (PgBouncer binaries may exit 1: 1.18 does on SIGTERM).
"""

from __future__ import annotations

import atexit
import fcntl
import glob
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parents[2]
PORT_LOCK_DIR = Path("/tmp/sluice-test-ports")
TMP_ROOT = os.environ.get("SLUICE_TMP", "/tmp")
PG_USER = "postgres"

PASSWORDS = {
    "postgres": "postgrespass",
    "md5user": "md5pass",
    "scramuser": "scrampass",
    "scramonly": "scramonlypass",
}

# ---------------------------------------------------------------------------
# small helpers


def _is_root() -> bool:
    return os.geteuid() == 0


def _pg_ids() -> tuple[int, int]:
    pw = pwd.getpwnam(PG_USER)
    return pw.pw_uid, pw.pw_gid


def as_postgres(cmd: list[str]) -> list[str]:
    """cmd, prefixed so that it runs as user postgres when we are root.

    setpriv execs the command, so the pid of the Popen is the pid of cmd."""
    cmd = [str(c) for c in cmd]
    if not _is_root():
        return cmd
    return ["setpriv", f"--reuid={PG_USER}", f"--regid={PG_USER}", "--init-groups", "--"] + cmd


def _postgres_env(env: dict | None = None) -> dict:
    e = dict(os.environ if env is None else env)
    if _is_root():
        pw = pwd.getpwnam(PG_USER)
        e["HOME"] = pw.pw_dir
        e["USER"] = e["LOGNAME"] = PG_USER
    return e


def run_as_postgres(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("cwd", TMP_ROOT)
    kw["env"] = _postgres_env(kw.get("env"))
    return subprocess.run(as_postgres(cmd), **kw)


def chown_postgres(path) -> None:
    if not _is_root():
        return
    uid, gid = _pg_ids()
    path = str(path)
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            try:
                os.chown(os.path.join(root, n), uid, gid, follow_symlinks=False)
            except FileNotFoundError:
                pass


def make_tempdir(prefix: str) -> str:
    d = tempfile.mkdtemp(prefix=prefix, dir=TMP_ROOT)
    os.chmod(d, 0o755)
    chown_postgres(d)
    return d


def pgbench_argv(args, port: int) -> tuple[list[str], dict]:
    """pgbench as md5user on database appdb at 127.0.0.1:port with `args`: (argv, env)."""
    env = dict(os.environ, PGPASSWORD=PASSWORDS["md5user"], PGCONNECT_TIMEOUT="15")
    env.pop("PGPASSFILE", None)
    cmd = [pg_tool("pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "md5user"] \
        + [str(a) for a in args] + ["appdb"]
    return cmd, env


def pgbench_run(args, port: int, timeout: float) -> subprocess.CompletedProcess:
    """pgbench_argv's command run to its end (output captured as text)."""
    cmd, env = pgbench_argv(args, port)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def pgbench_start(args, port: int) -> subprocess.Popen:
    """pgbench_argv's command started (stdout and stderr piped, text)."""
    cmd, env = pgbench_argv(args, port)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, stdin=subprocess.DEVNULL)


def read_pidfile(path: str) -> int | None:
    """The pid a pidfile names, or None (no file yet, empty, or not a number)."""
    try:
        with open(path) as f:
            text = f.read().strip()
        return int(text) if text else None
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True when pid exists and is not a zombie (a daemon we did not fork may stay
    a zombie when pid 1 does not reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        state = stat.rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def proc_status(pid: int, field: str) -> list[str] | None:
    """The values of one /proc/PID/status line ("VmRSS" gives ["1234", "kB"]), or None when
    the process or the line is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name == field:
                    return rest.split()
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def in_thread(fn: Callable, *args) -> tuple[threading.Thread, dict]:
    """Run fn(*args) in a daemon thread; returns (thread, box) where box gets 'result' or
    'error' when it ends."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn(*args)
        except Exception as e:  # noqa: BLE001 - asserted by the caller
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def wait_until(pred: Callable, timeout: float, interval: float = 0.05, what: str = ""):
    """Poll pred() until it returns a truthy value (returned); TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or pred}")
        time.sleep(interval)


def _version_key(path: str):
    m = re.search(r"/(\d+)(?:\.(\d+))?/bin$", path)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)


_bindir_cache: str | None = None


def pg_bindir() -> str:
    """Directory holding initdb/postgres/pg_ctl: $PG_BINDIR, pg_config --bindir, or the
    newest /usr/lib/postgresql/*/bin."""
    global _bindir_cache
    if _bindir_cache:
        return _bindir_cache
    cands = []
    if os.environ.get("PG_BINDIR"):
        cands.append(os.environ["PG_BINDIR"])
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            cands.append(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    cands += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for c in cands:
        if all(os.access(os.path.join(c, b), os.X_OK) for b in ("initdb", "postgres", "pg_ctl")):
            _bindir_cache = c
            return c
    raise RuntimeError("PostgreSQL server binaries not found (tried %s); run `make deps`" % cands)


def pg_tool(name: str) -> str:
    """A client tool (psql, pgbench): from the server bindir, else from PATH."""
    p = os.path.join(pg_bindir(), name)
    if os.access(p, os.X_OK):
        return p
    w = shutil.which(name)
    if not w:
        raise RuntimeError(f"{name} not found")
    return w


def sluice_bin() -> str:
    b = os.environ.get("SLUICE_BIN")
    if b:
        b = os.path.abspath(b)  # the pooler runs from its own temp dir
        if not os.access(b, os.X_OK):
            raise RuntimeError(f"SLUICE_BIN={b} is not an executable")
        return b
    d = REPO / "build" / "sluice"
    if os.access(d, os.X_OK):
        return str(d)
    raise RuntimeError("no binary under test: build it with `make` or set SLUICE_BIN")


def is_pgbouncer(path: str | None = None) -> bool:
    return "pgbouncer" in os.path.basename(path or sluice_bin())


# ---------------------------------------------------------------------------
# ports

_held_ports: dict[int, int] = {}  # port -> lock fd
_port_mutex = threading.Lock()


def _bindable(port: int) -> bool:
    for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0")):
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def have_ipv6_loopback() -> bool:
    """True when ::1 can be bound here (a container may have no IPv6)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port() -> int:
    """A port that is bindable now, chosen below the kernel's ephemeral range (so
    outgoing connections cannot take it meanwhile), and held by an flock on
    /tmp/sluice-test-ports/<port> so concurrent test runs do not pick it too."""
    PORT_LOCK_DIR.mkdir(mode=0o1777, exist_ok=True)
    try:
        os.chmod(PORT_LOCK_DIR, 0o1777)
    except PermissionError:
        pass
    lo, hi = 20000, 32000
    try:
        eph_lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
        hi = min(hi, eph_lo - 1)
        lo = min(lo, hi - 2000)
    except (OSError, ValueError, IndexError):
        pass
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    with _port_mutex:
        for _ in range(500):
            port = rng.randint(lo, hi)
            if port in _held_ports:
                continue
            path = PORT_LOCK_DIR / str(port)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except PermissionError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            if not _bindable(port):
                os.close(fd)
                continue
            _held_ports[port] = fd
            return port
    raise RuntimeError("no free port found")


def lock_port(port: int, timeout: float = 0) -> bool:
    """Take the lock file of a fixed port (e.g. 6432 for make run and the compat ini),
    waiting up to timeout seconds for another holder. True when held; release_port()."""
    with _port_mutex:
        if port in _held_ports:
            return True
    PORT_LOCK_DIR.mkdir(mode=0o1777, exist_ok=True)
    fd = os.open(PORT_LOCK_DIR / str(port), os.O_RDWR | os.O_CREAT, 0o666)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return False
            time.sleep(0.1)
    with _port_mutex:
        _held_ports[port] = fd
    return True


def release_port(port: int) -> None:
    with _port_mutex:
        fd = _held_ports.pop(port, None)
    if fd is not None:
        os.close(fd)


def _tcp_ready(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _unix_ready(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


# processes still running at interpreter exit are stopped (e.g. after Ctrl-C)
_live: "weakref.WeakSet" = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for obj in list(_live):
        try:
            obj.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


# ---------------------------------------------------------------------------
# PostgreSQL


class PgCluster:
    host = "127.0.0.1"

    def __init__(self, port: int | None = None, max_connections: int = 300):
        __import__("psycopg")  # fail early when python3-psycopg is missing

        self.bindir = pg_bindir()
        self.dir = make_tempdir("sluice-pg-")
        self.datadir = os.path.join(self.dir, "data")
        self.socket_dir = self.dir
        self.logfile = os.path.join(self.dir, "postgres.log")
        self.port = port or free_port()
        self._own_port = port is None
        self.passwords = dict(PASSWORDS)
        self.pid: int | None = None
        self._stopped = False
        try:
            self._initdb(max_connections)
            self._start()
            self._create_roles()
        except BaseException:
            self.stop()
            raise
        _live.add(self)

    def _run(self, cmd, **kw):
        r = run_as_postgres(cmd, cwd=self.dir, **kw)
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def _initdb(self, max_connections: int) -> None:
        self._run([os.path.join(self.bindir, "initdb"), "-D", self.datadir, "-U", "postgres",
                   "-E", "UTF8", "--locale=C", "--no-sync", "--auth=trust"], timeout=120)
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write(f"""
# sluice test harness
listen_addresses = '127.0.0.1,::1'
port = {self.port}
unix_socket_directories = '{self.socket_dir}'
max_connections = {max_connections}
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
log_min_messages = warning
log_connections = off
""")
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as f:
            f.write("""# sluice test harness
local all all trust
host all postgres 127.0.0.1/32 trust
host all postgres ::1/128 trust
host all scramonly 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 md5
host all all ::1/128 md5
""")
        chown_postgres(self.dir)

    def _start(self) -> None:
        # own session: a Ctrl-C on the terminal (make run) must not reach the postmaster
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-l", self.logfile,
                   "-w", "-t", "60", "start"], timeout=90, start_new_session=True)
        with open(os.path.join(self.datadir, "postmaster.pid")) as f:
            self.pid = int(f.readline())

    def _create_roles(self) -> None:
        import psycopg

        with psycopg.connect(host=self.socket_dir, port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as c:
            c.execute("SET password_encryption = 'md5'")
            c.execute("CREATE ROLE md5user LOGIN PASSWORD 'md5pass'")
            c.execute("SET password_encryption = 'scram-sha-256'")
            c.execute("CREATE ROLE scramuser LOGIN PASSWORD 'scrampass'")
            c.execute("CREATE ROLE scramonly LOGIN PASSWORD 'scramonlypass'")
            c.execute("ALTER ROLE postgres PASSWORD 'postgrespass'")
            c.execute("CREATE DATABASE appdb OWNER md5user")
            c.execute("GRANT ALL ON DATABASE appdb TO scramuser, scramonly")
        with psycopg.connect(host=self.socket_dir, port=self.port, user="postgres",
                             dbname="appdb", autocommit=True) as c:
            c.execute("GRANT ALL ON SCHEMA public TO PUBLIC")

    def connect(self, db: str = "postgres", user: str = "postgres", **kw):
        """Direct psycopg connection (autocommit) over the unix socket, bypassing the pooler."""
        import psycopg

        kw.setdefault("autocommit", True)
        kw.setdefault("connect_timeout", 10)
        return psycopg.connect(host=self.socket_dir, port=self.port, user=user, dbname=db, **kw)

    def sql(self, query: str, params=None, db: str = "postgres",
            timeout: float = 60) -> list[tuple]:
        """Run one statement as superuser; statement_timeout = timeout seconds so that a
        lock held by a forgotten connection fails the test instead of hanging it."""
        with self.connect(db, options=f"-c statement_timeout={int(timeout * 1000)}") as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else []

    def secret(self, user: str) -> str | None:
        rows = self.sql("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (user,))
        return rows[0][0] if rows else None

    def log_text(self) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            if os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
                run_as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir,
                                 "-m", "fast", "-w", "-t", "60", "stop"], cwd=self.dir, timeout=90)
            if self.pid:
                try:
                    wait_until(lambda: not pid_alive(self.pid), 30, what="postmaster exit")
                except TimeoutError:
                    os.kill(self.pid, signal.SIGKILL)
                    wait_until(lambda: not pid_alive(self.pid), 10, what="postmaster kill")
        finally:
            if self._own_port:
                release_port(self.port)
            if os.environ.get("SLUICE_KEEP") != "1":
                shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self, mode: str = "fast", down: float = 0) -> None:
        """Stops the server (pg_ctl stop -m mode: fast, or immediate, which is what a crash
        looks like to clients), leaves it down for `down` seconds, starts it again."""
        run_as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m", mode,
                         "-w", "-t", "60", "stop"], cwd=self.dir, timeout=90)
        old = self.pid
        wait_until(lambda: not pid_alive(old), 30, what="postmaster exit")
        time.sleep(down)
        self._start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()



# ---------------------------------------------------------------------------
# a forwarder between the pooler and PostgreSQL

class Forwarder:
    """A TCP forwarder on 127.0.0.1 to a PostgreSQL port: the network between the pooler
    and the server, which a test can hold up, stall mid-reply or cut (see the module
    docstring). One thread per direction of each connection."""

    def __init__(self, target_port: int, gated: bool = False):
        self.target_port = target_port
        self.port = free_port()
        self.lsock = socket.create_server(("127.0.0.1", self.port))
        self.accepted = threading.Event()
        self.replies_held = threading.Event()
        self._gate = threading.Event()
        if not gated:
            self._gate.set()
        self._lock = threading.Lock()
        self._budget: int | None = None  # bytes from the server still passed; None: all
        self._socks: list[socket.socket] = []
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            with self._lock:
                if self._stopped:
                    c.close()
                    return
                self._socks.append(c)
            self.accepted.set()
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket):
        self._gate.wait()
        try:
            s = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            c.close()
            return
        s.settimeout(None)
        with self._lock:
            if self._stopped:
                s.close()
                return
            self._socks.append(s)
        threading.Thread(target=self._pump, args=(s, c, True), daemon=True).start()
        self._pump(c, s, False)

    def _pump(self, a: socket.socket, b: socket.socket, from_server: bool):
        try:
            while data := a.recv(65536):
                if from_server:
                    with self._lock:
                        if self._budget is not None:
                            n = min(len(data), self._budget)
                            self._budget -= n
                            if n < len(data):
                                self.replies_held.set()
                            data = data[:n]
                if data:
                    b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def open(self):
        self._gate.set()

    def hold_replies_after(self, n: int):
        with self._lock:
            self._budget = n

    def stop(self):
        with self._lock:
            self._stopped = True
            socks, self._socks = self._socks, []
        self._gate.set()
        try:
            # shutdown() stops the listening at once and wakes the blocked accept(); a
            # close() alone would leave the socket listening until accept() returned.
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        for x in socks:
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            x.close()

    def close(self):
        self.stop()
        release_port(self.port)

# ---------------------------------------------------------------------------
# ini generation

DEFAULT_PGBOUNCER = {
    "listen_addr": "127.0.0.1",
    "listen_port": "{port}",
    "unix_socket_dir": "{dir}",
    "auth_type": "md5",
    "auth_file": "{dir}/userlist.txt",
    "logfile": "{dir}/pooler.log",
    "pidfile": "{dir}/pooler.pid",
    "admin_users": "postgres",
}

DEFAULT_DATABASES = {
    "postgres": "host={pg_host} port={pg_port}",
    "appdb": "host={pg_host} port={pg_port}",
    "*": "host={pg_host} port={pg_port}",
}


def _section(name: str, defaults: dict | None, overrides: dict | None) -> str:
    items = dict(defaults or {})
    for k, v in (overrides or {}).items():
        if v is None:
            items.pop(k, None)
        else:
            items[k] = v
    lines = [f"[{name}]"] + [f"{k} = {v}" for k, v in items.items()]
    return "\n".join(lines) + "\n"


def make_ini(pgbouncer: dict | None = None, databases: dict | None = None,
             users: dict | None = None, peers: dict | None = None, extra: str = "") -> str:
    """ini template text: [databases] (defaults + databases), [users], [peers] when given,
    [pgbouncer] (defaults + pgbouncer), then `extra` verbatim. Values are strings or numbers;
    None removes a default key."""
    parts = [_section("databases", DEFAULT_DATABASES, databases)]
    if users:
        parts.append(_section("users", None, users))
    if peers:
        parts.append(_section("peers", None, peers))
    parts.append(_section("pgbouncer", DEFAULT_PGBOUNCER, pgbouncer))
    if extra:
        parts.append(extra)
    return "\n".join(parts)


def _ini_value(ini: str, key: str) -> str | None:
    """Last value of key in the [pgbouncer] section (good enough for our own templates)."""
    val = None
    section = None
    for line in ini.splitlines():
        s = line.strip()
        if not s or s[0] in ";#":
            continue
        if s.startswith("[") and s.endswith("]"):
            section = s[1:-1].strip().lower()
            continue
        if section == "pgbouncer":
            m = re.match(r"([A-Za-z0-9_.\-*]+)\s*=\s*(.*)$", s)
            if m and m.group(1).lower() == key:
                val = m.group(2).strip()
    return val


# ---------------------------------------------------------------------------
# the pooler


class PoolerError(Exception):
    pass


class Pooler:
    def __init__(self, pg: PgCluster | None, ini_text: str | None = None, *,
                 userlist=None, userlist_extra: Iterable[str] = (), args: Iterable[str] = (),
                 binary: str | None = None, port: int | None = None, start: bool = True,
                 wait_ready: bool = True, ready_timeout: float = 15, env: dict | None = None,
                 files: dict | None = None, ini_name: str = "pgbouncer.ini",
                 as_invoker: bool = False, **make_ini_kwargs):
        self.pg = pg
        self.as_invoker = as_invoker
        self.binary = binary or sluice_bin()
        self.args = list(args)
        self.env = env
        self.valgrind = os.environ.get("VALGRIND") == "1"
        self.ready_timeout = ready_timeout * (6 if self.valgrind else 1)
        self.dir = make_tempdir("sluice-pooler-")
        self.port = port or free_port()
        self._own_port = port is None
        self.ini_path = os.path.join(self.dir, ini_name)
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.proc: subprocess.Popen | None = None
        self.expect_exit = False
        self.killed = False
        self._stopping = False
        self._conns: list = []
        self._conns_lock = threading.Lock()
        self.ini_text = ""
        self.logfile: str | None = None
        self._log_base = 0
        self.write_ini(ini_text, **make_ini_kwargs)
        self.write_userlist(userlist, userlist_extra)
        for name, text in (files or {}).items():
            self.write_file(name, text)
        _live.add(self)
        if start:
            self.start(wait_ready=wait_ready)

    # -- files

    def substitute(self, text: str) -> str:
        pg_port = str(self.pg.port) if self.pg else "5432"
        pg_host = self.pg.host if self.pg else "127.0.0.1"
        pg_sock = self.pg.socket_dir if self.pg else "/tmp"
        for k, v in (("{port}", str(self.port)), ("{pg_port}", pg_port), ("{pg_host}", pg_host),
                     ("{pg_socket_dir}", pg_sock), ("{dir}", self.dir)):
            text = text.replace(k, v)
        return text

    def write_file(self, name: str, text: str) -> str:
        path = os.path.join(self.dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(self.substitute(text))
        chown_postgres(self.dir)
        return path

    def write_ini(self, ini_text: str | None = None, **make_ini_kwargs) -> None:
        if ini_text is None:
            ini_text = make_ini(**make_ini_kwargs)
        elif make_ini_kwargs:
            raise TypeError("give either ini_text or make_ini keyword arguments")
        self.ini_text = self.substitute(ini_text)
        tmp = self.ini_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.ini_text)
        chown_postgres(tmp)
        os.replace(tmp, self.ini_path)
        lf = _ini_value(self.ini_text, "logfile")
        if lf:
            self.logfile = lf if os.path.isabs(lf) else os.path.join(self.dir, lf)
        else:
            self.logfile = None

    def write_userlist(self, userlist=None, extra: Iterable[str] = ()) -> None:
        if userlist is None:
            pw = self.pg.passwords if self.pg else dict(PASSWORDS)
            lines = [f'"{u}" "{p}"' for u, p in pw.items()]
        elif isinstance(userlist, str):
            lines = userlist.splitlines()
        else:
            lines = list(userlist)
        lines += list(extra)
        self.write_file("userlist.txt", "\n".join(lines) + "\n")

    # -- process

    def argv(self) -> list[str]:
        """binary + args + ini path (valgrind-wrapped under VALGRIND=1), not yet prefixed
        for user postgres: give it to run_as_postgres()."""
        cmd = [self.binary] + self.args + [self.ini_path]
        if self.valgrind:
            cmd = ["valgrind", "-q", "--error-exitcode=99", "--leak-check=no"] + cmd
        return cmd

    def command(self) -> list[str]:
        """argv() prefixed to run as user postgres (what start() runs)."""
        return self.argv() if self.as_invoker else as_postgres(self.argv())

    def _env(self) -> dict:
        e = _postgres_env(self.env)
        # sanitizer builds (SANITIZE=1): die loudly by SIGABRT so a crash is never mistaken
        # for a clean exit; the report lands in stderr.log
        e.setdefault("ASAN_OPTIONS", "abort_on_error=1:disable_coredump=1")
        e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:abort_on_error=1")
        return e

    def start(self, wait_ready: bool = True, wrapper: Iterable[str] = (), **popen_kw) -> None:
        """wrapper: a command the pooler's command line is appended to (it must exec it, so
        that the pid stays the pooler's); popen_kw: more subprocess.Popen arguments."""
        if self.proc is not None:
            raise PoolerError("already started")
        try:
            self._log_base = os.path.getsize(self.logfile) if self.logfile else 0
        except OSError:
            self._log_base = 0
        out = open(self.stderr_path, "ab")
        try:
            self.proc = subprocess.Popen(list(wrapper) + self.command(), cwd=self.dir,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=self._env(),
                                         start_new_session=True, **popen_kw)
        finally:
            out.close()
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout: float | None = None) -> None:
        timeout = self.ready_timeout if timeout is None else timeout
        listen = _ini_value(self.ini_text, "listen_addr")
        sockdir = _ini_value(self.ini_text, "unix_socket_dir")
        if listen:
            host = "127.0.0.1" if listen.strip() in ("*", "0.0.0.0", "") else \
                listen.split(",")[0].strip()
            if host == "::":
                host = "::1"

            def probe():
                return _tcp_ready(host, self.port)
        elif sockdir:
            path = os.path.join(sockdir, f".s.PGSQL.{self.port}")

            def probe():
                return _unix_ready(path)
        else:
            raise PoolerError("ini has neither listen_addr nor unix_socket_dir")
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise PoolerError(f"{self.binary} exited with {self.describe_rc()} during "
                                  f"start-up\n{self.full_log()}")
            if probe() and self._up_logged():
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise PoolerError(f"{self.binary} not accepting connections on port "
                                  f"{self.port} (or no \"process up\" line) after {timeout}s"
                                  f"\n{self.full_log()}")
            time.sleep(0.05)

    def _up_logged(self) -> bool:
        """The first listener accepts before the others, the pidfile and the start-up lines
        exist: "process up" (sluice and PgBouncer alike) comes after them all, just before the
        loop runs. True once it is in the log, or when there is no log to read it from."""
        if not self.logfile and ({"-q", "--quiet"} & set(self.args)):
            return True
        return "LOG process up: " in self.log_text()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def describe_rc(self, rc: int | None = None) -> str:
        if self.proc is None and rc is None:
            return "not started by the harness"
        rc = self.returncode if rc is None else rc
        if rc is None:
            return "still running"
        if rc < 0:
            try:
                return f"signal {signal.Signals(-rc).name}"
            except ValueError:
                return f"signal {-rc}"
        return f"exit code {rc}"

    def sanitizer_report(self) -> str | None:
        """The first sanitizer/valgrind error line in the captured stderr, if any."""
        m = re.search(r"^.*(ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
                      r"ERROR: UndefinedBehaviorSanitizer|==\d+== Invalid (read|write)).*$",
                      self.stderr_text(), re.M)
        return m.group(0) if m else None

    def crashed(self) -> str | None:
        """Why the process died on its own (nonzero exit or a signal before stop()), or a
        sanitizer report in its stderr; else None. With expect_exit set, only a death by a
        crash signal (SEGV, ABRT, BUS, FPE, ILL) or a sanitizer report counts."""
        if self.proc is None:
            return None
        san = self.sanitizer_report()
        if san:
            return f"{self.binary} reported: {san}"
        rc = self.proc.poll()
        if rc is None:
            return None
        if self.expect_exit or self._stopping:
            if rc < 0 and -rc in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS,
                                  signal.SIGFPE, signal.SIGILL):
                return f"{self.binary} crashed: {self.describe_rc(rc)}"
            return None
        if rc == 0:
            return f"{self.binary} exited (code 0) during the test"
        return f"{self.binary} died during the test: {self.describe_rc(rc)}"

    def signal(self, sig: int) -> None:
        if not self.alive():
            raise PoolerError(f"cannot signal: process {self.describe_rc()}")
        os.kill(self.proc.pid, sig)

    def reload(self) -> None:
        self.signal(signal.SIGHUP)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

    def stop(self, timeout: float = 10) -> int | None:
        """Stop by pid: SIGTERM, bounded wait, SIGTERM again (immediate exit while
        shutting down), bounded wait, SIGKILL. Returns the exit status (negative = signal)."""
        self.close_connections()
        if self.proc is None:
            self._release()
            return None
        if self.proc.poll() is None:
            self._stopping = True
            for sig in (signal.SIGTERM, signal.SIGTERM):
                try:
                    os.kill(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if self.proc.poll() is None:
                self.killed = True
                self.proc.kill()
                self.proc.wait(30)
        self._release()
        return self.proc.returncode

    def _release(self) -> None:
        if self._own_port:
            release_port(self.port)
            self._own_port = False

    def cleanup(self) -> None:
        self.stop()
        if os.environ.get("SLUICE_KEEP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    # -- logs

    def _read(self, path: str | None, offset: int = 0) -> str:
        if not path:
            return ""
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            return ""

    def stderr_text(self) -> str:
        return self._read(self.stderr_path)

    def log_text(self) -> str:
        """What this process wrote to the ini's logfile (an existing file is appended to:
        only the part written since start() is returned), else captured stderr."""
        if self.logfile and os.path.exists(self.logfile):
            return self._read(self.logfile, self._log_base)
        return self.stderr_text()

    def log_mark(self) -> int:
        return len(self.log_text())

    def full_log(self) -> str:
        parts = []
        if self.logfile and os.path.exists(self.logfile):
            parts.append(f"--- {self.logfile} ---\n{self._read(self.logfile, self._log_base)}")
        parts.append(f"--- {self.stderr_path} (stdout+stderr) ---\n{self.stderr_text()}")
        return "\n".join(parts)

    def wait_for_log(self, regex: str, timeout: float = 10, since: int = 0) -> re.Match:
        """Poll the log for regex (from offset since); TimeoutError after timeout, or as
        soon as the process has exited without having written it."""
        rx = re.compile(regex, re.M)
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc is not None and self.proc.poll() is not None
            m = rx.search(self.log_text(), since)
            if m:
                return m
            if exited:
                raise TimeoutError(f"log line /{regex}/ not seen; process exited with "
                                   f"{self.describe_rc()}\n{self.full_log()}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"log line /{regex}/ not seen within {timeout}s\n"
                                   f"{self.full_log()}")
            time.sleep(0.05)

    # -- clients

    def _password(self, user: str, password: str | None) -> str | None:
        if password is not None:
            return password
        if self.pg:
            return self.pg.passwords.get(user)
        return PASSWORDS.get(user)

    def connect(self, user: str = "md5user", password: str | None = None,
                dbname: str = "appdb", **kw):
        import psycopg

        kw.setdefault("connect_timeout", 15)
        kw.setdefault("autocommit", True)
        pw = self._password(user, password)
        if pw is not None:
            kw["password"] = pw
        conn = psycopg.connect(host="127.0.0.1", port=self.port, user=user, dbname=dbname, **kw)
        with self._conns_lock:
            self._conns = [c for c in self._conns if not c.closed]
            self._conns.append(conn)
        return conn

    def admin(self, query: str, user: str = "postgres", password: str | None = None) -> list[tuple]:
        """One simple-protocol query on the admin console (database pgbouncer)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=user, dbname="pgbouncer",
                             password=self._password(user, password), autocommit=True,
                             connect_timeout=15, cursor_factory=psycopg.ClientCursor) as c:
            cur = c.cursor()
            cur.execute(query, prepare=False)
            return cur.fetchall() if cur.description else []

    def show(self, what: str, **kw) -> list[dict]:
        import psycopg

        user = kw.get("user", "postgres")
        with psycopg.connect(host="127.0.0.1", port=self.port, user=user, dbname="pgbouncer",
                             password=self._password(user, kw.get("password")), autocommit=True,
                             connect_timeout=15, cursor_factory=psycopg.ClientCursor) as c:
            cur = c.cursor()
            cur.execute(f"SHOW {what}", prepare=False)
            cols = [d.name for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    def output_held(self, database: str = "appdb") -> list[dict]:
        return [r for r in self.show("SOCKETS") if r["database"] == database
                and r["type"] == "S" and r["recv_pos"] > 0]

    def footprint(self) -> dict:
        """What the pooler holds beyond its server connections: open fds less one per server,
        and SHOW MEM's client and server slots in use less the console session asking and
        the servers. Once its clients have left it is what it was before they came: a leaked
        socket, client or server object shows here (PgBouncer has the same SHOW MEM rows)."""
        servers = sum(r["sv_active"] + r["sv_idle"] + r["sv_used"] + r["sv_tested"]
                      + r["sv_login"] for r in self.show("POOLS"))
        mem = {r["name"]: r["used"] for r in self.show("MEM")}
        fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        return {"fds": fds - servers, "clients": mem["client_cache"] - 1,
                "servers": mem["server_cache"] - servers}

    def assert_footprint_back(self, before: dict, timeout: float = 15) -> None:
        """footprint() returns to before (a closed socket may take the pooler a turn)."""
        last = {}

        def back():
            last["now"] = self.footprint()
            return last["now"] == before
        try:
            wait_until(back, timeout)
        except TimeoutError:
            assert last["now"] == before, "the pooler holds more than before"

    def tool(self, name: str, *args, user: str = "md5user", password: str | None = None,
             input: str | None = None, timeout: float = 60,
             env: dict | None = None) -> subprocess.CompletedProcess:
        """A PostgreSQL client program (psql, pg_dump, vacuumdb, ...) run against this
        pooler over TCP as `user`, the password in PGPASSWORD; output captured as text."""
        e = dict(os.environ)
        for k in ("PGPASSFILE", "PGSERVICE", "PGDATABASE", "PGOPTIONS"):
            e.pop(k, None)
        e["PGCONNECT_TIMEOUT"] = "15"
        pw = self._password(user, password)
        if pw is not None:
            e["PGPASSWORD"] = pw
        else:
            e.pop("PGPASSWORD", None)
        e.update(env or {})
        cmd = [pg_tool(name), "-h", "127.0.0.1", "-p", str(self.port), "-U", user] + \
            [str(a) for a in args]
        return subprocess.run(cmd, input=input, capture_output=True, text=True,
                              timeout=timeout, env=e,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def psql(self, *args, user: str = "md5user", password: str | None = None,
             dbname: str = "appdb", input: str | None = None, timeout: float = 60,
             env: dict | None = None) -> tuple[int, str, str]:
        r = self.tool("psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", dbname, *args,
                      user=user, password=password, input=input, timeout=timeout, env=env)
        return r.returncode, r.stdout, r.stderr
