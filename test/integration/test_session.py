"""Session pooling: server reuse, reset between clients, many clients over a small pool,
cancel, max_client_conn."""

import socket
import threading

import psycopg
import pytest

import harness
import pgwire


def test_same_backend_after_reconnect(pooler):
    p = pooler(pgbouncer={"default_pool_size": 1})
    with p.connect() as c:
        pid1 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    with p.connect() as c:
        pid2 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert pid1 == pid2
    # psql goes through the same server too
    rc, out, err = p.psql("-c", "SELECT pg_backend_pid()")
    assert (rc, err) == (0, "") and int(out) == pid1


def test_set_does_not_leak_to_next_client(pooler, pg):
    p = pooler(pgbouncer={"default_pool_size": 1})
    default = pg.sql("SHOW work_mem", db="appdb")[0][0]
    assert default != "17MB"
    with p.connect() as c:
        c.execute("SET work_mem = '17MB'")
        c.execute("PREPARE leaked AS SELECT 1")
        c.execute("CREATE TEMP TABLE leaked_tmp (x int)")
        assert c.execute("SHOW work_mem").fetchone()[0] == "17MB"
        pid1 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    with p.connect() as c:
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid1  # same server
        assert c.execute("SHOW work_mem").fetchone()[0] == default  # DISCARD ALL ran
        assert c.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM pg_class WHERE relname = 'leaked_tmp'"
                         ).fetchone()[0] == 0


def test_200_clients_over_pool_of_5(pooler, pg):
    p = pooler(pgbouncer={"default_pool_size": 5, "max_client_conn": 300})
    n = 200
    results = [None] * n
    errors = []
    backend_pids = set()
    lock = threading.Lock()
    start = threading.Barrier(n, timeout=60)

    def client(i):
        try:
            start.wait()
            with p.connect(connect_timeout=60) as c:
                pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
                a = c.execute("SELECT %s::int * 2", (i,)).fetchone()[0]
                b = c.execute("SELECT count(*) FROM generate_series(1, %s)", (i + 1,)
                              ).fetchone()[0]
                results[i] = (a, b)
                with lock:
                    backend_pids.add(pid)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            with lock:
                errors.append(f"client {i}: {e!r}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "clients still running after 120 s"
    assert errors == []
    assert results == [(2 * i, i + 1) for i in range(n)]
    assert 1 <= len(backend_pids) <= 5
    servers = pg.sql("SELECT count(*) FROM pg_stat_activity "
                     "WHERE usename = 'md5user' AND datname = 'appdb'")[0][0]
    assert servers <= 5


def test_cancel_running_query(pooler, pg):
    p = pooler()
    conn = p.connect()
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    watcher = pg.connect()  # directly to PostgreSQL
    cancelled = threading.Event()

    def cancel_when_running():
        # wait (bounded) until the backend is really inside pg_sleep, then cancel
        for _ in range(400):
            row = watcher.execute(
                "SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            if row and row[0] == "active" and "pg_sleep" in row[1]:
                conn.cancel()
                cancelled.set()
                return
            threading.Event().wait(0.05)

    t = threading.Thread(target=cancel_when_running, daemon=True)
    t.start()
    # pg_sleep(30) bounds the test even if the cancel is lost
    with pytest.raises(psycopg.errors.QueryCanceled) as ei:
        conn.execute("SELECT pg_sleep(30)")
    t.join(30)
    assert cancelled.is_set()
    assert ei.value.sqlstate == "57014"
    assert "canceling statement due to user request" in str(ei.value)
    # the client and its server survive the cancel
    assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    assert conn.execute("SELECT 1").fetchone() == (1,)
    p.wait_for_log(r"C-0x[0-9a-f]+: \S+ closing because: successfully sent cancel request "
                   r"\(age=0s\)")
    conn.close()
    watcher.close()


def test_cancel_request_outcomes_logged(pooler):
    """A CancelRequest that cancels nothing logs PgBouncer's reason for each case."""
    p = pooler()
    idle = pgwire.Conn.connect(port=p.port, user="md5user", password="md5pass", database="appdb")
    console = pgwire.Conn.connect(port=p.port, user="postgres",
                                  password=harness.PASSWORDS["postgres"], database="pgbouncer")
    try:
        wrong_key = bytes(b ^ 0xFF for b in idle.backend_key)
        cases = ((idle.backend_pid, idle.backend_key, "cancel request for idle client"),
                 (console.backend_pid, console.backend_key, "cancel request for console client"),
                 (idle.backend_pid, wrong_key, "failed cancel request"))
        for pid, key, reason in cases:
            mark = p.log_mark()
            with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
                s.sendall(pgwire.m.cancel_request(pid, key))
                assert s.recv(16) == b""  # no answer, as from PostgreSQL
            p.wait_for_log(r"closing because: " + reason + r" \(age=0s\)", since=mark)
        # neither session was disturbed
        assert idle.scalar("SELECT 1") == "1"
        assert console.query("SHOW VERSION")
    finally:
        idle.close()
        console.close()


def test_max_client_conn(pooler):
    p = pooler(pgbouncer={"max_client_conn": 2})
    a = p.connect()
    b = p.connect()
    assert a.execute("SELECT 1").fetchone() == (1,)
    rc, out, err = p.psql("-c", "SELECT 1")
    assert rc != 0
    assert "FATAL:  no more connections allowed (max_client_conn)" in err
    with pytest.raises(psycopg.OperationalError,
                       match=r"no more connections allowed \(max_client_conn\)"):
        p.connect()
    p.wait_for_log(r"no more connections allowed \(max_client_conn\)")
    # a slot frees up when a client leaves
    a.close()
    rc = None
    for _ in range(200):  # the close is asynchronous for the pooler; poll, bounded
        rc, out, err = p.psql("-c", "SELECT 1")
        if rc == 0:
            break
        threading.Event().wait(0.05)
    assert (rc, out) == (0, "1\n"), err
    assert b.execute("SELECT 1").fetchone() == (1,)


def test_max_client_conn_counts_console_sessions(pooler):
    """As PgBouncer: a console session takes a slot of max_client_conn, and the console is
    never refused for lack of one."""
    p = pooler(pgbouncer={"max_client_conn": 2})
    with p.connect() as a:
        console = psycopg.connect(host="127.0.0.1", port=p.port, user="postgres",
                                  dbname="pgbouncer", password=harness.PASSWORDS["postgres"],
                                  autocommit=True, connect_timeout=15)
        with pytest.raises(psycopg.OperationalError,
                           match=r"no more connections allowed \(max_client_conn\)"):
            p.connect()
        # full, yet a second console session gets in
        assert p.show("VERSION", user="postgres")
        assert a.execute("SELECT 1").fetchone() == (1,)
        console.close()  # its slot comes back (the close is asynchronous for the pooler)
        harness.wait_until(lambda: p.psql("-c", "SELECT 1")[0] == 0, 10,
                           what="the console's slot to come back")
