"""Online restart (`-R`, "takeover"), as PgBouncer does it.

A second process started as `<binary> -R same.ini` while the first one runs connects to the
first one's unix socket (<unix_socket_dir>/.s.PGSQL.<port>) as user "pgbouncer" on the
console, sends SUSPEND, then SHOW FDS (each DataRow carries the matching socket by
SCM_RIGHTS: the listeners, the clients, the servers), rebuilds every connection from those
rows, sends SHUTDOWN, waits for the old pidfile to disappear, writes its own and serves on.
The old process exits without closing what it handed over. Clients notice nothing: same
socket, same server backend, same cancel key.

How the tests run the second process: _take_over() makes a harness Pooler for it that
shares the old one's directory, ini, port and logfile (so the conftest stops it, reports a
crash and attaches its log like any pooler), with its own stderr file, which therefore holds
only the new process's lines. The old Pooler is marked expect_exit: its exit is the point.
The cross-program tests hand sessions between Debian's PgBouncer 1.18 and the binary under
test in both directions, which is what makes a switch (and a switch back) possible without
dropping a client.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import psycopg
import pytest

import harness
import tlsutil

PGBOUNCER = "/usr/sbin/pgbouncer"

# What the new process logs, in this order, during a takeover (PgBouncer's texts; the
# launching connection's own lines come with its S- prefix).
TAKEOVER_LINES = [
    r"LOG takeover_init: launching connection\n",
    r"LOG S-0x[0-9a-f]+: pgbouncer/pgbouncer@unix:{port} login OK, sending SUSPEND\n",
    r"LOG SUSPEND finished, sending SHOW FDS\n",
    r"LOG got pooler socket: 127\.0\.0\.1:{port}\n",
    r"LOG got pooler socket: unix:{port}\n",
    r"LOG SHOW FDS finished\n",
    r"LOG disko over, going background\n",
    r"LOG sending SHUTDOWN;\n",
    r"LOG waiting for old pidfile to go away\n",
    r"LOG old process killed, resuming work\n",
]

# The takeover's last line, then the one written after the pidfile: a test that reads the
# pidfile (or connects) once it has seen only the first races the new process.
TAKEN_OVER = r"LOG old process killed, resuming work\n(?:.*\n)*?.*LOG process up: "

FDS_COLUMNS = ["fd", "task", "user", "database", "addr", "port", "cancel", "link",
               "client_encoding", "std_strings", "datestyle", "timezone", "password",
               "scram_client_key", "scram_server_key"]


# ---------------------------------------------------------------------------
# helpers


def _pidfile(p):
    return os.path.join(p.dir, "pooler.pid")


def _wait_for_text(read, regex, alive, timeout=15, what="", log=lambda: ""):
    """Poll read() until regex matches; TimeoutError after timeout, or at once when alive()
    turned false before the text appeared. log() is added to the error."""
    rx = re.compile(regex, re.M)
    deadline = time.monotonic() + timeout
    while True:
        gone = not alive()  # before reading: a line written just before exiting counts
        m = rx.search(read())
        if m:
            return m
        if gone or time.monotonic() >= deadline:
            why = "the process exited" if gone else f"not within {timeout}s"
            raise TimeoutError(f"/{regex}/ not seen ({what}): {why}\n{log()}")
        time.sleep(0.05)


def _both_logs(old, new):
    return (f"=== old process ({old.binary}, pid {old.pid}, {old.describe_rc()})\n"
            f"{old.full_log()}\n=== new process ({new.binary}, pid {new.pid}, "
            f"{new.describe_rc()})\n{new.stderr_text()}")


_successors = 0


def _successor(pooler, old, binary=None, args=("-R",)):
    """A not yet started Pooler for `<binary> -R <old's ini>`: it runs in old's directory on
    old's port with old's ini and logfile, and writes its stdout+stderr to a file of its own.
    Made by the pooler fixture, so teardown stops it (after old, whose stop closes the
    clients old.connect() made) and attaches its log to a failure report."""
    global _successors
    new = pooler(start=False, **({"binary": binary} if binary else {}))
    # the fixture gave it a directory and port of its own, which it does not need
    new._release()
    shutil.rmtree(new.dir, ignore_errors=True)
    _successors += 1
    new.dir, new.port, new.ini_path = old.dir, old.port, old.ini_path
    new.ini_text, new.logfile = old.ini_text, old.logfile
    new.stderr_path = os.path.join(old.dir, f"stderr-takeover-{_successors}.log")
    new.args = list(args)
    return new


def _take_over(pooler, old, binary=None):
    """Start `<binary> -R` over the running `old` and wait until it has taken over: it logged
    "old process killed, resuming work", then "process up" (its pidfile is written between
    the two), and old exited. Returns the new Pooler."""
    old.expect_exit = True
    new = _successor(pooler, old, binary)
    new.start(wait_ready=False)
    _wait_for_text(new.stderr_text, TAKEN_OVER, new.alive,
                   what="the takeover to finish", log=lambda: _both_logs(old, new))
    harness.wait_until(lambda: not old.alive(), 10, what="the old process to exit")
    return new


def _assert_old_gone(old, new):
    """The old process exited by itself with status 0 and the pidfile names the new one."""
    assert not harness.pid_alive(old.pid)
    assert old.returncode == 0, _both_logs(old, new)
    assert harness.read_pidfile(_pidfile(new)) == new.pid, _both_logs(old, new)
    assert new.alive(), _both_logs(old, new)


def _unix_connect(p, user="md5user", dbname="appdb"):
    return psycopg.connect(host=p.dir, port=p.port, user=user, dbname=dbname,
                           password=harness.PASSWORDS[user], autocommit=True,
                           connect_timeout=15)


def _backend_pid(conn):
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def _servers(p):
    """{remote_pid: SHOW SERVERS row} of the appdb pool."""
    return {r["remote_pid"]: r for r in p.show("SERVERS") if r["database"] == "appdb"}


def _fresh_table(pg, name):
    pg.sql(f"DROP TABLE IF EXISTS {name}", db="appdb")
    pg.sql(f"CREATE TABLE {name} (x int)", db="appdb")
    pg.sql(f"GRANT ALL ON {name} TO PUBLIC", db="appdb")


# ---------------------------------------------------------------------------
# session mode


def test_session_client_survives_takeover(pooler):
    """A session client keeps its socket, its backend and its session state (a TEMP table)
    across `-R`; the old process exits 0, the pidfile names the new one, both listeners
    (TCP and unix) serve new logins, and both processes log PgBouncer's takeover lines."""
    old = pooler(pgbouncer={"pool_mode": "session"})
    c = old.connect()
    backend = _backend_pid(c)
    c.execute("CREATE TEMP TABLE kept (x int)")
    c.execute("INSERT INTO kept VALUES (1), (2)")
    assert harness.read_pidfile(_pidfile(old)) == old.pid

    new = _take_over(pooler, old)
    _assert_old_gone(old, new)

    # the pre-existing client: same backend, same session
    assert _backend_pid(c) == backend
    assert c.execute("SELECT sum(x) FROM kept").fetchone()[0] == 3
    c.execute("INSERT INTO kept VALUES (3)")
    assert c.execute("SELECT count(*) FROM kept").fetchone()[0] == 3

    # new logins over both inherited listeners
    t = new.connect()
    assert t.execute("SELECT 1").fetchone()[0] == 1
    assert _backend_pid(t) != backend
    with _unix_connect(new) as u:
        assert u.execute("SELECT 2").fetchone()[0] == 2
    assert new.psql("-c", "SELECT 3")[:2] == (0, "3\n")
    # the console of the new process sees the carried client, linked to its server
    clients = [r for r in new.show("CLIENTS") if r["database"] == "appdb"]
    assert len(clients) == 2 and all(r["state"] == "active" for r in clients), clients
    assert {backend, _backend_pid(t)} <= set(_servers(new))
    t.close()

    # the new process's lines, in order
    log = new.stderr_text()
    pos = 0
    for line in TAKEOVER_LINES:
        m = re.compile(line.format(port=old.port)).search(log, pos)
        assert m, f"/{line}/ missing (or out of order) in\n{log}"
        pos = m.end()
    assert "old process not found" not in log
    # the old process's side
    old_log = old.stderr_text()
    assert "LOG SUSPEND command issued\n" in old_log, old_log
    assert "LOG SHUTDOWN command issued\n" in old_log, old_log
    assert old_log.index("SUSPEND command issued") < old_log.index("SHUTDOWN command issued")
    # it did not close the sessions it handed over, nor remove the unix socket
    assert "closing because" not in old_log.split("SUSPEND command issued")[1], old_log
    assert os.path.exists(os.path.join(old.dir, f".s.PGSQL.{old.port}"))
    c.close()


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: after a takeover its cancel often has no effect (it forwards one "
    "that PostgreSQL ignores; depends on the keys)", strict=False)
def test_cancel_key_survives_takeover(pooler, pg):
    """A cancel request sent to the new process with the cancel key a client got from the
    old one cancels that client's running query (the server's key was carried too)."""
    old = pooler(pgbouncer={"pool_mode": "session"})
    c = old.connect()
    backend = _backend_pid(c)
    new = _take_over(pooler, old)
    _assert_old_gone(old, new)

    outcome = {}

    def sleeper():
        try:
            c.execute("SELECT pg_sleep(30)")
            outcome["result"] = "completed"
        except Exception as e:  # noqa: BLE001 - reported below
            outcome["error"] = e

    th = threading.Thread(target=sleeper, daemon=True)
    th.start()
    try:
        harness.wait_until(lambda: pg.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND "
                                          "state = 'active' AND query LIKE '%%pg_sleep%%'",
                                          (backend,)),
                           10, what="pg_sleep running on the carried backend")
        c.cancel()  # libpq's cancel request: the key from the old process's BackendKeyData
        th.join(10)
    finally:
        cancelled_by_us = th.is_alive()
        if cancelled_by_us:  # the cancel did not work: do not wait 30 s for the sleep
            pg.sql("SELECT pg_cancel_backend(%s)", (backend,))
            th.join(10)
    assert not cancelled_by_us, f"the cancel request had no effect\n{_both_logs(old, new)}"
    err = outcome.get("error")
    assert isinstance(err, psycopg.errors.QueryCanceled), \
        f"{outcome}\n{_both_logs(old, new)}"
    assert err.sqlstate == "57014"
    assert "canceling statement due to user request" in str(err)
    # the client carries on, on the same backend
    assert _backend_pid(c) == backend
    c.close()


def test_takeover_twice(pooler):
    """The new process can be taken over in turn (its inherited unix socket takes console
    logins, and what it rebuilt is handed on again): a session survives two restarts."""
    first = pooler(pgbouncer={"pool_mode": "session"})
    c = first.connect()
    backend = _backend_pid(c)
    c.execute("CREATE TEMP TABLE kept AS SELECT 5 AS x")
    second = _take_over(pooler, first)
    _assert_old_gone(first, second)
    assert _backend_pid(c) == backend
    third = _take_over(pooler, second)
    _assert_old_gone(second, third)
    assert _backend_pid(c) == backend
    assert c.execute("SELECT x FROM kept").fetchone()[0] == 5
    assert "LOG SHUTDOWN command issued\n" in second.stderr_text()
    n = third.connect()
    assert n.execute("SELECT 1").fetchone()[0] == 1
    c.close()
    n.close()


# ---------------------------------------------------------------------------
# transaction mode


def test_transaction_idle_client_survives_takeover(pooler):
    """A client between transactions (no server of its own) keeps working."""
    old = pooler(pgbouncer={"pool_mode": "transaction"})
    c = old.connect()
    c.execute("SELECT 1")
    new = _take_over(pooler, old)
    _assert_old_gone(old, new)
    assert c.execute("SELECT 41 + 1").fetchone()[0] == 42
    with c.transaction():
        assert c.execute("SELECT 'x'").fetchone()[0] == "x"
    c.close()


def test_transaction_open_transaction_carried(pooler, pg):
    """A client inside a transaction keeps its linked server: it goes on after the takeover
    in the same backend and transaction, and its COMMIT makes every row visible."""
    _fresh_table(pg, "takeover_txn")
    old = pooler(pgbouncer={"pool_mode": "transaction"})
    c = old.connect()
    c.execute("BEGIN")
    backend = _backend_pid(c)
    c.execute("INSERT INTO takeover_txn VALUES (1)")
    xid = c.execute("SELECT txid_current()").fetchone()[0]
    new = _take_over(pooler, old)
    _assert_old_gone(old, new)

    # the new process shows the client linked to the same server
    clients = [r for r in new.show("CLIENTS") if r["database"] == "appdb"]
    assert [r["state"] for r in clients] == ["active"], clients
    servers = _servers(new)
    assert list(servers) == [backend] and servers[backend]["state"] == "active", servers
    assert servers[backend]["link"] == clients[0]["ptr"]

    assert _backend_pid(c) == backend
    assert c.execute("SELECT txid_current()").fetchone()[0] == xid
    assert pg.sql("SELECT count(*) FROM takeover_txn", db="appdb") == [(0,)]
    c.execute("INSERT INTO takeover_txn VALUES (2)")
    c.execute("COMMIT")
    assert pg.sql("SELECT x FROM takeover_txn ORDER BY x", db="appdb") == [(1,), (2,)]
    assert c.execute("SELECT 1").fetchone()[0] == 1
    c.close()
    pg.sql("DROP TABLE takeover_txn", db="appdb")


def test_transaction_idle_servers_carried(pooler, pg):
    """Idle servers move too: the new process lists the same backends (remote_pid and local
    port), a query reuses one of them, and PostgreSQL saw no new connection."""
    old = pooler(pgbouncer={"pool_mode": "transaction"})
    a, b = old.connect(), old.connect()
    # two transactions at once: two servers, both idle afterwards
    a.execute("BEGIN")
    b.execute("BEGIN")
    pids = {_backend_pid(a), _backend_pid(b)}
    a.execute("COMMIT")
    b.execute("COMMIT")
    before = _servers(old)
    assert set(before) == pids and len(pids) == 2, before
    harness.wait_until(lambda: all(r["state"] == "idle" for r in _servers(old).values()), 5,
                       what="both servers idle")
    ports = {pid: r["local_port"] for pid, r in before.items()}

    def same_backends():
        """PostgreSQL's md5user backends on appdb are exactly ours (polled: backends of an
        earlier test's pooler may take a moment to go; a new one of ours would not)."""
        def check():
            rows = pg.sql("SELECT pid, client_port FROM pg_stat_activity "
                          "WHERE datname = 'appdb' AND usename = 'md5user'")
            return dict(rows) == ports
        harness.wait_until(check, 5, what=f"md5user backends on appdb to be {ports}")

    same_backends()

    new = _take_over(pooler, old)
    _assert_old_gone(old, new)
    after = _servers(new)
    assert {pid: r["local_port"] for pid, r in after.items()} == ports, after
    # idle, and good for reuse (not marked to be closed)
    assert all(r["state"] == "idle" and r["close_needed"] == 0 for r in after.values()), after

    # the carried clients reuse the carried idle servers: no new backend
    assert _backend_pid(a) in pids
    a.execute("BEGIN")
    b.execute("BEGIN")
    assert {_backend_pid(a), _backend_pid(b)} == pids
    a.execute("COMMIT")
    b.execute("COMMIT")
    assert set(_servers(new)) == pids
    same_backends()
    # (a new login may open a server of its own: PgBouncer 1.18 does, even with both
    # carried servers idle; presumably for the server parameters of its welcome message,
    # which the takeover does not carry)
    n = new.connect()
    assert n.execute("SELECT 1").fetchone()[0] == 1
    for x in (a, b, n):
        x.close()


# ---------------------------------------------------------------------------
# starting modes


def test_reboot_without_old_process(pooler):
    """-R with nobody on the unix socket: PgBouncer's line, then a normal start."""
    p = pooler(args=["-R"])
    p.wait_for_log(r"LOG old process not found, try to continue normally\n")
    assert "takeover_init" not in p.log_text()
    assert harness.read_pidfile(_pidfile(p)) == p.pid
    c = p.connect()
    assert c.execute("SELECT 1").fetchone()[0] == 1
    with _unix_connect(p) as u:
        assert u.execute("SELECT 2").fetchone()[0] == 2
    c.close()


def test_reboot_with_stale_socket_file(pooler):
    """-R where the unix socket file is left over from a dead process (connection refused):
    no old process, a normal start on a fresh socket."""
    p = pooler(args=["-R"], start=False)
    path = os.path.join(p.dir, f".s.PGSQL.{p.port}")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # the file stays, nobody listens
    harness.chown_postgres(p.dir)
    p.start()
    p.wait_for_log(r"LOG old process not found, try to continue normally\n")
    with _unix_connect(p) as u:
        assert u.execute("SELECT 2").fetchone()[0] == 2


def _processes_with_args(*args):
    """Pids whose command line holds every one of args (exact words), from /proc."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                words = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if all(a in words for a in args) and harness.pid_alive(int(d)):
            pids.append(int(d))
    return pids


def test_reboot_daemon(pooler):
    """`-R -d`, as Debian's init script `restart` runs it: the command returns once the new
    process has gone to the background, the old process goes away, the pidfile gets the new
    pid and a client of the old process still works. The daemon is killed by the pid of its
    pidfile at the end."""
    old = pooler(pgbouncer={"pool_mode": "session"})
    old.expect_exit = True
    c = old.connect()
    backend = _backend_pid(c)
    pidfile = _pidfile(old)
    out_path = os.path.join(old.dir, "reboot-daemon.out")
    daemon = None
    try:
        with open(out_path, "w") as out:
            r = harness.run_as_postgres([old.binary, "-R", "-d", old.ini_path], cwd=old.dir,
                                        capture_output=False, stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        timeout=30)
        assert r.returncode == 0, open(out_path).read()
        def new_pid():
            pid = harness.read_pidfile(pidfile)
            return pid if pid not in (None, old.pid) else None
        daemon = harness.wait_until(new_pid, 15, what="the new pid in the pidfile")
        harness.wait_until(lambda: not old.alive(), 10, what="the old process to exit")
        assert old.returncode == 0, old.full_log()
        assert harness.pid_alive(daemon)
        assert os.getsid(daemon) != os.getsid(0), "the daemon should leave our session"
        assert _backend_pid(c) == backend
        assert old.psql("-c", "SELECT 1")[:2] == (0, "1\n")
        # the lines are in the logfile: those up to "going background" with the pid of the
        # launching process, the rest with the daemon's (its stderr is gone)
        tag = rf"^\S+ \S+ \S+ \[{daemon}\] "
        log = harness.wait_until(
            lambda: re.search(tag + r"LOG old process killed, resuming work$", old.log_text(),
                              re.M) and old.log_text(), 10, what="the daemon's resume line")
        for line in (r"LOG SHOW FDS finished", r"LOG disko over, going background"):
            assert re.search(r"^\S+ \S+ \S+ \[\d+\] " + line + "$", log, re.M), log
        for line in (r"LOG sending SHUTDOWN;", r"LOG waiting for old pidfile to go away"):
            assert re.search(tag + line + "$", log, re.M), log
        assert re.search(rf"\[{old.pid}\] LOG SHUTDOWN command issued$", log, re.M), log
        c.close()
        # a plain SIGTERM ends the daemon (clients gone), and it removes its pidfile
        os.kill(daemon, signal.SIGTERM)
        harness.wait_until(lambda: not harness.pid_alive(daemon), 15, what="daemon exit")
        harness.wait_until(lambda: not os.path.exists(pidfile), 10, what="pidfile removal")
    finally:
        c.close()
        # whatever is left of what this test started: the daemon (by its pidfile, or, when
        # it failed before writing it, by its command line, which names our temp ini)
        left = {daemon, harness.read_pidfile(pidfile)} | \
            set(_processes_with_args("-R", old.ini_path))
        for pid in left - {None, old.pid}:
            if harness.pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
                harness.wait_until(lambda: not harness.pid_alive(pid), 10, what="daemon kill")


# ---------------------------------------------------------------------------
# between PgBouncer and the binary under test


@pytest.mark.parametrize("direction", ["from_pgbouncer", "to_pgbouncer"])
def test_cross_program_takeover(pooler, sluice_bin, direction):
    """from_pgbouncer: Debian's PgBouncer hands its sessions to the binary under test (the
    migration); to_pgbouncer: back (the rollback). A session client keeps its backend and
    its TEMP table; new logins work. Against PgBouncer itself both are pgbouncer to
    pgbouncer."""
    old_bin, new_bin = (PGBOUNCER, sluice_bin) if direction == "from_pgbouncer" \
        else (sluice_bin, PGBOUNCER)
    old = pooler(binary=old_bin, pgbouncer={"pool_mode": "session"})
    c = old.connect()
    backend = _backend_pid(c)
    c.execute("CREATE TEMP TABLE kept AS SELECT 7 AS x")
    new = _take_over(pooler, old, binary=new_bin)
    _assert_old_gone(old, new)
    assert _backend_pid(c) == backend
    assert c.execute("SELECT x FROM kept").fetchone()[0] == 7
    n = new.connect()
    assert n.execute("SELECT 1").fetchone()[0] == 1
    assert set(_servers(new)) == {backend, _backend_pid(n)}
    assert "LOG SHUTDOWN command issued\n" in old.stderr_text()
    c.close()
    n.close()


# ---------------------------------------------------------------------------
# SHOW FDS itself


def test_show_fds_over_tcp(pooler):
    """SHOW FDS from an admin over TCP (so no descriptors ride along): the listeners as task
    "pooler", then clients and servers with their links, cancel keys (the 8 key bytes as a
    big-endian int8: the pid in the high half) and session parameters. The console's own
    connection is not listed."""
    p = pooler(pgbouncer={"pool_mode": "session"})
    c = p.connect()
    backend = _backend_pid(c)
    idle = p.connect()
    idle_backend = _backend_pid(idle)
    idle.close()  # its server stays, idle and unlinked
    harness.wait_until(lambda: len(p.show("CLIENTS")) == 2, 5, what="the second client gone")

    with psycopg.connect(host="127.0.0.1", port=p.port, user="postgres", dbname="pgbouncer",
                         password=harness.PASSWORDS["postgres"], autocommit=True,
                         connect_timeout=15, cursor_factory=psycopg.ClientCursor) as admin:
        cur = admin.cursor()
        cur.execute("SHOW FDS", prepare=False)
        assert [d.name for d in cur.description] == FDS_COLUMNS
        rows = [dict(zip(FDS_COLUMNS, r)) for r in cur.fetchall()]

    tasks = [r["task"] for r in rows]
    assert tasks[:2] == ["pooler", "pooler"] and sorted(tasks[2:]) == \
        ["client", "server", "server"], rows
    assert {(r["addr"], r["port"]) for r in rows[:2]} == {("127.0.0.1", p.port),
                                                          ("unix", p.port)}
    assert all(r["user"] is None and r["database"] is None for r in rows[:2])
    assert not any(r["database"] == "pgbouncer" for r in rows), rows
    assert len({r["fd"] for r in rows}) == len(rows)

    client = next(r for r in rows if r["task"] == "client")
    servers = {r["cancel"] >> 32: r for r in rows if r["task"] == "server"}
    assert set(servers) == {backend, idle_backend}, rows
    server = servers[backend]
    client_port = next(r["port"] for r in p.show("CLIENTS") if r["database"] == "appdb")
    assert (client["user"], client["database"], client["addr"], client["port"]) == \
        ("md5user", "appdb", "127.0.0.1", client_port)
    # the key the client was given (libpq reports its first half as a signed pid)
    assert client["cancel"] >> 32 == c.info.backend_pid & 0xFFFFFFFF
    assert client["link"] == server["fd"] and server["link"] == client["fd"]
    assert servers[idle_backend]["link"] == 0
    assert (server["user"], server["database"], server["addr"], server["port"]) == \
        ("md5user", "appdb", p.pg.host, p.pg.port)
    for r in (client, server):
        assert r["client_encoding"] == c.info.parameter_status("client_encoding")
        assert r["std_strings"] == "on"
        assert r["datestyle"] == c.info.parameter_status("DateStyle")
        assert r["timezone"] == c.info.parameter_status("TimeZone")
        assert r["scram_client_key"] is None and r["scram_server_key"] is None
    c.close()


# ---------------------------------------------------------------------------
# under load


def _finish(proc, timeout):
    """(returncode, stdout + stderr) of a Popen, killed when it outlives timeout."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n(killed after {timeout}s)"
    return proc.returncode, out + err


def _xacts(p):
    """total_xact_count of appdb in SHOW STATS (0 before the first transaction)."""
    return next((r["total_xact_count"] for r in p.show("STATS") if r["database"] == "appdb"),
                0)


CLIENTS, SECONDS, TAKEOVER_AT = 8, 5, 2.0


def _takeover_under_load(pooler, pg, settings, bench_args, old_bin=None, new_bin=None):
    """TPC-B pgbench, -c 8 for 5 s in transaction mode, and `-R` about 2 s in: every session
    is carried (SUSPEND waits for each client to be quiet between messages), so no
    transaction fails and no client is aborted; the old process exits, the new one ran the
    rest of the load. Returns pgbench's output."""
    rc, out = _finish(harness.pgbench_start(["-i", "-q", "-s", "1"], pg.port), 120)  # directly
    assert rc == 0, out
    old = pooler(pgbouncer={"pool_mode": "transaction", **settings},
                 **({"binary": old_bin} if old_bin else {}))
    started = time.monotonic()
    bench = harness.pgbench_start(bench_args + ["-c", str(CLIENTS), "-j", "2", "-T", str(SECONDS),
                                       "-n"], old.port)
    try:
        harness.wait_until(lambda: _xacts(old) > 50, 10, what="pgbench traffic")
        time.sleep(max(0.0, TAKEOVER_AT - (time.monotonic() - started)))
        assert bench.poll() is None, _finish(bench, 1)[1]
        new = _take_over(pooler, old, binary=new_bin)
        took = time.monotonic() - started
        _assert_old_gone(old, new)
        # every pgbench connection was carried (they all logged in at the start)
        clients = [r for r in new.show("CLIENTS") if r["database"] == "appdb"]
        assert len(clients) == CLIENTS, (clients, _both_logs(old, new))
        rc, out = _finish(bench, SECONDS + 30)
    finally:
        if bench.poll() is None:
            _finish(bench, 0.1)
    assert took < SECONDS - 1, f"the takeover ended {took:.1f}s into a {SECONDS}s run"
    assert rc == 0, f"{out}\n{_both_logs(old, new)}"
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert failed and int(failed.group(1)) == 0, f"{out}\n{_both_logs(old, new)}"
    assert "aborted" not in out, f"{out}\n{_both_logs(old, new)}"
    assert re.search(rf"number of clients: {CLIENTS}\b", out), out
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    assert processed and int(processed.group(1)) > 0, out
    # the rest of the run went through the new process (its stats start at zero)
    assert _xacts(new) > 0
    n = new.connect()
    assert n.execute("SELECT count(*) FROM pgbench_branches").fetchone()[0] == 1
    n.close()
    return out


@pytest.mark.parametrize("direction", ["same", "from_pgbouncer", "to_pgbouncer"])
def test_takeover_under_load(pooler, pg, sluice_bin, direction):
    """`-R` in the middle of a pgbench run (TPC-B, simple protocol, -c 8): 0 failed
    transactions, no aborted client; also from Debian's PgBouncer to the binary under test
    and back (against PgBouncer itself every direction is PgBouncer to PgBouncer)."""
    old_bin, new_bin = {"same": (None, None), "from_pgbouncer": (PGBOUNCER, sluice_bin),
                        "to_pgbouncer": (sluice_bin, PGBOUNCER)}[direction]
    _takeover_under_load(pooler, pg, {}, [], old_bin, new_bin)


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: max_prepared_statements (the statement cache)")
def test_takeover_under_load_prepared_statements(pooler, pg):
    """The same with -M prepared over the statement cache: pgbench prepares each command
    once per connection and then only sends Bind/Execute with its name, so each client's
    prepared statements must move with it (a lost one would fail a transaction with
    "prepared statement ... does not exist"). default_pool_size=3 keeps clients queued, so
    some move with a held Bind naming one of their statements."""
    out = _takeover_under_load(pooler, pg, {"max_prepared_statements": 100,
                                            "default_pool_size": 3}, ["-M", "prepared"])
    assert re.search(r"query mode: prepared\b", out), out


@pytest.mark.differs_from_pgbouncer_1_18(
    "sluice only: PgBouncer's SUSPEND holds queued clients until suspend_timeout and closes "
    "them (FATAL suspend_timeout)")
@pytest.mark.parametrize("direction", ["same", "to_pgbouncer"])
def test_takeover_under_load_queued_clients(pooler, pg, sluice_bin, direction):
    """With default_pool_size=2 six of the eight pgbench clients wait in the queue at any
    moment, each holding the request it sent. same: the new process gets those bytes with
    the socket (pending_input) and serves them first. to_pgbouncer: PgBouncer 1.18 cannot
    take such bytes, so SUSPEND serves the queue before it answers (each client is stopped
    once its request went out). Either way none of them is lost."""
    new_bin = PGBOUNCER if direction == "to_pgbouncer" else None
    out = _takeover_under_load(pooler, pg, {"default_pool_size": 2}, [], sluice_bin, new_bin)
    assert re.search(r"query mode: simple\b", out), out


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: the new login gets a server beyond default_pool_size")
def test_new_login_when_the_carried_pool_is_full(pooler):
    """A pool taken over has servers but not the parameters a new client's welcome needs
    (they come with a server login): with default_pool_size=1 and the one server idle, a new
    client gets it replaced by a fresh login (sluice logs PgBouncer's "db not fully initialized
    after reboot" for the one it closes); the carried client goes on too."""
    old = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": 1})
    c = old.connect()
    c.execute("SELECT 1")
    c.commit()
    new = _take_over(pooler, old)
    _assert_old_gone(old, new)
    with new.connect(connect_timeout=5) as n:
        assert n.execute("SELECT 2").fetchone()[0] == 2
    assert c.execute("SELECT 3").fetchone()[0] == 3
    # the pool stayed within its size
    assert len([r for r in new.show("SERVERS") if r["database"] == "appdb"]) == 1


@pytest.mark.differs_from_pgbouncer_1_18(
    "sluice only: PgBouncer hands over no pool parameters, so the first new login to a taken "
    "over pool needs a fresh server login")
def test_carried_pool_welcomes_without_a_server_login(pooler):
    """Between sluice processes a server's row carries its pool's welcome parameters: a new
    client of the taken-over pool is welcomed with the same parameters the old process sent
    and gets the carried server itself (no "db not fully initialized" replacement)."""
    old = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": 1})
    with old.connect() as first:
        backend = _backend_pid(first)
        first.commit()
        welcome = {name: first.info.parameter_status(name)
                   for name in ("server_version", "server_encoding", "integer_datetimes",
                                "IntervalStyle", "is_superuser", "session_authorization")}
    assert all(welcome.values()), welcome
    new = _take_over(pooler, old)
    _assert_old_gone(old, new)
    with new.connect(connect_timeout=5) as n:
        assert {name: n.info.parameter_status(name) for name in welcome} == welcome
        assert _backend_pid(n) == backend
    assert "db not fully initialized" not in new.log_text()
    assert list(_servers(new)) == [backend]


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: the new login gets a server beyond default_pool_size")
def test_pool_parameters_not_carried_from_pgbouncer(pooler, sluice_bin):
    """From PgBouncer (no pool parameters in its rows) sluice falls back to PgBouncer's way: a
    new login to the full pool replaces the idle carried server ("db not fully initialized
    after reboot") and the pool stays within its size."""
    old = pooler(binary=PGBOUNCER, pgbouncer={"pool_mode": "transaction", "default_pool_size": 1})
    with old.connect() as first:
        backend = _backend_pid(first)
        first.commit()
    new = _take_over(pooler, old, sluice_bin)
    _assert_old_gone(old, new)
    with new.connect(connect_timeout=5) as n:
        assert n.info.parameter_status("server_version")
        assert _backend_pid(n) != backend
    assert "db not fully initialized after reboot" in new.log_text()
    assert len(_servers(new)) == 1


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: the new login often gets a server beyond default_pool_size instead "
    "of waiting", strict=False)
def test_new_login_waits_for_the_carried_session(pooler):
    """Session mode, default_pool_size=1, the one server in a carried session: a new client
    waits, and when the session ends its server makes room for the login the new client's
    welcome needs."""
    old = pooler(pgbouncer={"pool_mode": "session", "default_pool_size": 1})
    c = old.connect()
    backend = _backend_pid(c)
    new = _take_over(pooler, old)
    _assert_old_gone(old, new)
    result = {}

    def late_client():
        try:
            with new.connect(connect_timeout=15) as n:
                result["value"] = n.execute("SELECT 4").fetchone()[0]
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = e

    th = threading.Thread(target=late_client, daemon=True)
    th.start()
    harness.wait_until(lambda: any(r["database"] == "appdb" and r["cl_waiting"] == 1
                                   for r in new.show("POOLS")), 10, what="the queued login")
    assert _backend_pid(c) == backend
    c.close()
    th.join(15)
    assert result.get("value") == 4, (result, new.log_text())
    assert len([r for r in new.show("SERVERS") if r["database"] == "appdb"]) == 1


@pytest.mark.differs_from_pgbouncer_1_18(
    "sluice only: PgBouncer's SUSPEND waits suspend_timeout for a client in the middle of its "
    "login and closes it with FATAL suspend_timeout")
def test_client_logging_in_is_told(pooler):
    """A client in the middle of its login (asked for its password) cannot move: the old
    process tells it why it goes (FATAL "pooler is shutting down", PgBouncer's words for a
    login it refuses then) instead of just closing, and the takeover does not wait for it."""
    old = pooler(pgbouncer={"pool_mode": "session"})
    s = socket.create_connection(("127.0.0.1", old.port), timeout=10)
    try:
        body = b"user\0md5user\0database\0appdb\0\0"
        s.sendall((8 + len(body)).to_bytes(4, "big") + (196608).to_bytes(4, "big") + body)
        assert s.recv(1) == b"R"  # the password request
        s.recv(64)
        started = time.monotonic()
        new = _take_over(pooler, old)
        _assert_old_gone(old, new)
        assert time.monotonic() - started < 5
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data[:1] == b"E", data
        assert b"SFATAL\0" in data and b"Mpooler is shutting down\0" in data, data
    finally:
        s.close()


@pytest.mark.differs_from_pgbouncer_1_18(
    "sluice only: PgBouncer's SUSPEND stops a server in the middle of its reset query")
def test_server_running_reset_query_moves_when_done(pooler, pg):
    """A server still running server_reset_query when the takeover starts finishes it
    (SUSPEND waits for it) and moves as an idle server instead of being closed with the old
    process."""
    old = pooler(pgbouncer={"pool_mode": "session",
                            "server_reset_query": "SELECT pg_sleep(0.5)"})
    c = old.connect()
    backend = _backend_pid(c)
    c.close()
    harness.wait_until(lambda: pg.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND "
                                      "query LIKE '%%pg_sleep(0.5)%%' AND state = 'active'",
                                      (backend,)), 5, what="the reset query running")
    new = _take_over(pooler, old)
    _assert_old_gone(old, new)
    servers = _servers(new)
    assert list(servers) == [backend] and servers[backend]["state"] == "idle", servers
    # (the first new client gets a fresh login, for the pool's parameters; the carried
    # server stays in the pool beside it)
    with new.connect() as n:
        assert n.execute("SELECT 1").fetchone()[0] == 1
    assert backend in _servers(new)
    old_lines = [ln for ln in old.full_log().splitlines() if f"[{old.pid}]" in ln]
    assert not [ln for ln in old_lines if "closing because" in ln and "S-" in ln], old_lines


# ---------------------------------------------------------------------------
# a takeover the old process refuses, or holds up


def _console(p):
    """An admin console session on p (closed by p.stop())."""
    return p.connect(user="postgres", dbname="pgbouncer", cursor_factory=psycopg.ClientCursor)


def _console_cmd(console, query):
    cur = console.cursor()
    cur.execute(query, prepare=False)
    return cur.statusmessage


def test_failed_takeover_leaves_old_running(pooler):
    """The old process is PAUSEd by an admin: the new one's SUSPEND gets "already
    suspended/paused", it logs PgBouncer's "old bouncer sent" line with that error and a
    FATAL line, and exits 1. The old process keeps its pid, pidfile, sockets and clients:
    a query sent meanwhile waits for the pause, runs after RESUME, and new logins work.
    (SUSPEND instead of PAUSE would not make the takeover fail: see the next test.)"""
    old = pooler(pgbouncer={"pool_mode": "transaction"})
    c = old.connect()
    c.execute("SELECT 1")
    console = _console(old)
    assert _console_cmd(console, "PAUSE") == "PAUSE"

    new = _successor(pooler, old)
    new.expect_exit = True
    new.start(wait_ready=False)
    harness.wait_until(lambda: not new.alive(), 15, what="the new process to give up")
    log = new.stderr_text()
    assert new.returncode == 1, _both_logs(old, new)
    # PgBouncer 1.18: "ERROR old bouncer sent: ERROR: already suspended/paused", then
    # "FATAL @src/takeover.c:294 in function takeover_parse_data(): something failed"
    m = re.search(rf"^\S+ \S+ \S+ \[{new.pid}\] ERROR old bouncer sent: ERROR: already "
                  r"suspended/paused\n\S+ \S+ \S+ \[\d+\] FATAL (.+: )?something failed\n",
                  log, re.M)
    assert m, _both_logs(old, new)
    assert re.search(r"LOG S-0x[0-9a-f]+: pgbouncer/pgbouncer@unix:\d+ login OK, sending "
                     r"SUSPEND\n", log[:m.start()]), log
    assert "SUSPEND finished" not in log and "SHUTDOWN" not in log, log
    # the old process refused, and is untouched
    old_log = old.stderr_text()
    assert "ERROR already suspended/paused\n" in old_log, old_log
    assert "SHUTDOWN command issued" not in old_log, old_log
    assert old.alive() and harness.read_pidfile(_pidfile(old)) == old.pid, _both_logs(old, new)
    assert os.path.exists(os.path.join(old.dir, f".s.PGSQL.{old.port}"))

    # still paused: a query of the old client waits ...
    outcome = {}

    def query():
        try:
            outcome["result"] = c.execute("SELECT 42").fetchone()[0]
        except Exception as e:  # noqa: BLE001 - reported below
            outcome["error"] = e

    th = threading.Thread(target=query, daemon=True)
    th.start()
    try:
        harness.wait_until(lambda: any(r["database"] == "appdb" and r["cl_waiting"] == 1
                                       for r in old.show("POOLS")), 5,
                           what="the query queued by the pause")
        assert not outcome
        # ... and runs after RESUME
        assert _console_cmd(console, "RESUME") == "RESUME"
        th.join(10)
    finally:
        if th.is_alive():
            c.cancel()
            th.join(10)
    assert outcome == {"result": 42}, f"{outcome}\n{_both_logs(old, new)}"
    assert c.execute("SELECT 2").fetchone()[0] == 2
    n = old.connect()
    assert n.execute("SELECT 3").fetchone()[0] == 3
    with _unix_connect(old) as u:
        assert u.execute("SELECT 4").fetchone()[0] == 4
    assert old.alive() and harness.read_pidfile(_pidfile(old)) == old.pid
    n.close()
    c.close()


@pytest.mark.parametrize("how", ["resume", "admin_disconnects"])
def test_takeover_waits_for_suspended_old(pooler, how):
    """An old process SUSPENDed by an admin does not take new connections, so the new one
    waits for its console login (neither fails). Once the admin sends RESUME, or goes away
    ("admin disappeared when suspended, doing RESUME"), the takeover goes through: the
    client is carried, the admin's console session is not (it is not a pool client)."""
    old = pooler(pgbouncer={"pool_mode": "session"})
    c = old.connect()
    backend = _backend_pid(c)
    console = _console(old)
    assert _console_cmd(console, "SUSPEND") == "SUSPEND"
    old.expect_exit = True
    new = _successor(pooler, old)
    new.start(wait_ready=False)
    _wait_for_text(new.stderr_text, r"LOG takeover_init: launching connection\n", new.alive,
                   what="the takeover to start", log=lambda: _both_logs(old, new))
    time.sleep(1)
    assert new.alive() and old.alive(), _both_logs(old, new)
    assert "login OK" not in new.stderr_text(), _both_logs(old, new)

    if how == "resume":
        assert _console_cmd(console, "RESUME") == "RESUME"
    else:
        console.close()
    _wait_for_text(new.stderr_text, TAKEN_OVER, new.alive,
                   what="the takeover to finish", log=lambda: _both_logs(old, new))
    harness.wait_until(lambda: not old.alive(), 10, what="the old process to exit")
    _assert_old_gone(old, new)
    old_log = old.stderr_text()
    if how == "resume":
        assert "LOG RESUME command issued\n" in old_log, old_log
        with pytest.raises(psycopg.OperationalError):
            _console_cmd(console, "SHOW VERSION")
    else:
        assert "LOG admin disappeared when suspended, doing RESUME\n" in old_log, old_log
    assert old_log.index("SUSPEND command issued") < old_log.index("SHUTDOWN command issued")
    assert _backend_pid(c) == backend
    n = new.connect()
    assert n.execute("SELECT 1").fetchone()[0] == 1
    n.close()
    c.close()


# ---------------------------------------------------------------------------
# TLS


@pytest.fixture(scope="module")
def certs():
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    c = tlsutil.make_certs()
    yield c
    tlsutil.remove_certs(c)


def test_tls_client_not_carried(pooler, pg, certs):
    """TLS state cannot be handed over, so neither program hands over a TLS client (nor its
    server): it loses its connection when the old process exits (its next query fails),
    while a plain client connected at the same time keeps its backend."""
    old = pooler(pgbouncer={"pool_mode": "session", "client_tls_sslmode": "allow",
                            "client_tls_cert_file": "{dir}/server.crt",
                            "client_tls_key_file": "{dir}/server.key"},
                 files=tlsutil.pooler_files(certs))
    plain = old.connect(sslmode="disable")
    tls = old.connect(sslmode="require")
    assert not plain.pgconn.ssl_in_use and tls.pgconn.ssl_in_use
    plain_backend, tls_backend = _backend_pid(plain), _backend_pid(tls)

    new = _take_over(pooler, old)
    _assert_old_gone(old, new)
    assert _backend_pid(plain) == plain_backend
    assert plain.execute("SELECT 5").fetchone()[0] == 5
    with pytest.raises(psycopg.OperationalError):
        tls.execute("SELECT 6")
    assert tls.closed or tls.broken
    # the new process knows only the plain client and its server; the TLS client's server
    # was not handed over either, and closed with the old process
    clients = [r for r in new.show("CLIENTS") if r["database"] == "appdb"]
    assert [r["tls"] for r in clients] == [""], clients
    assert list(_servers(new)) == [plain_backend]
    harness.wait_until(lambda: not pg.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                          (tls_backend,)), 5,
                       what="the TLS client's backend to end")
    # and TLS logins work on the new process
    t = new.connect(sslmode="require")
    assert t.pgconn.ssl_in_use and t.execute("SELECT 7").fetchone()[0] == 7
    t.close()
    plain.close()
