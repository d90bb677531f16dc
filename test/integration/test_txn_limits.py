"""Timeouts and limits in transaction mode, with PgBouncer's error texts (spec 1d): query,
wait, idle, transaction and login timeouts; server idle timeout, lifetime, login retry,
check query and reset; pool sizes, reserve pool, per-db/per-user server and client caps;
round robin; statement mode; cancels.

Timeouts are short (1-3 s); every wait is bounded; the tests assert what happens, never
how long it took."""

import re
import signal
import socket
import struct
import threading
import time

import psycopg
import pytest

import harness
import pgwire

TXN = {"pool_mode": "transaction"}


def _connect(p, **kw):
    """A psycopg client that never prepares statements on its own (psycopg does after 5
    executions of a query): these tests are about limits, not the prepared-statement
    cache."""
    kw.setdefault("prepare_threshold", None)
    return p.connect(**kw)


def _cfg(**kw):
    d = dict(TXN)
    d.update({k: str(v) for k, v in kw.items()})
    return d


def _fatal_before_close(c, timeout=15):
    """Messages a pgwire client receives until the pooler closes it; returns the
    ErrorResponse fields of the last error."""
    msgs = c.wait_closed(timeout=timeout)
    errors = [m.error for m in msgs if m.type == "E"]
    assert errors, f"closed without an ErrorResponse: {pgwire.render_detail(msgs)}"
    return errors[-1]


def _server_pids(pg, db="appdb", users=("md5user",)):
    rows = pg.sql("SELECT pid FROM pg_stat_activity WHERE datname = %s AND usename = ANY(%s)",
                  (db, list(users)))
    return {r[0] for r in rows}


def _server_then_client(p, reason):
    """A timeout of running work closes the server, then its client, both logging the reason
    (PgBouncer's lines and order)."""
    line = r"-0x[0-9a-f]+: \S+ closing because: " + re.escape(reason) + r" \(age="
    p.wait_for_log("C" + line)
    log = p.log_text()
    server, client = re.search("S" + line, log), re.search("C" + line, log)
    assert server and server.start() < client.start(), log


# ---------------------------------------------------------------------------
# client-side timeouts


def test_query_timeout(pooler, pg):
    p = pooler(pgbouncer=_cfg(query_timeout=1))
    a = _connect(p)
    b = _connect(p)
    pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    with pytest.raises(psycopg.OperationalError, match="query timeout"):
        a.execute("SELECT pg_sleep(10)")
    with pytest.raises(psycopg.OperationalError):
        a.execute("SELECT 1")  # the connection is gone
    assert a.closed
    _server_then_client(p, "query timeout")
    # the pooler keeps serving the others, on another server: the one that ran the query
    # was closed with it, not handed on (PostgreSQL itself notices only when pg_sleep ends)
    assert b.execute("SELECT 41 + 1, pg_backend_pid()").fetchone()[0] == 42
    assert b.execute("SELECT pg_backend_pid()").fetchone()[0] != pid
    with _connect(p) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_query_wait_timeout(pooler, pg):
    p = pooler(pgbouncer=_cfg(default_pool_size=1, query_wait_timeout=1))
    a = _connect(p)
    a.execute("BEGIN")
    a.execute("SELECT 1")  # a holds the only server
    b = _connect(p)
    with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
        b.execute("SELECT 1")
    p.wait_for_log(r"closing because: query_wait_timeout")
    # a was not disturbed
    assert a.execute("SELECT 2").fetchone() == (2,)
    a.execute("COMMIT")
    with _connect(p) as c:
        assert c.execute("SELECT 3").fetchone() == (3,)


def test_query_timeout_counts_time_in_the_queue(pooler, pg):
    """query_timeout covers a query still waiting for a server too: the queued client is
    closed with "query_timeout" (PgBouncer's client-side text) long before
    query_wait_timeout. The session holding the server is not touched: it runs no query."""
    p = pooler(pgbouncer=_cfg(pool_mode="session", default_pool_size=1, query_timeout=1,
                              query_wait_timeout=30))
    a = _connect(p)
    a.execute("SELECT 1")  # a's session holds the only server
    b = _connect(p)
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="query_timeout"):
        b.execute("SELECT 1")
    assert time.monotonic() - started < 20  # not query_wait_timeout's 30 s
    p.wait_for_log(r"C-\S+: appdb/md5user@\S+ closing because: query_timeout \(age=")
    time.sleep(1.5)  # a is idle past query_timeout: still served
    assert a.execute("SELECT 2").fetchone() == (2,)


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: query_wait_notify")
def test_query_wait_notify(pooler, pg):
    p = pooler(pgbouncer=_cfg(default_pool_size=1, query_wait_timeout=20, query_wait_notify=1))
    a = _connect(p)
    a.execute("BEGIN")
    a.execute("SELECT 1")
    b = _connect(p)
    notices = []
    b.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.message_primary)))
    t, box = harness.in_thread(lambda: b.execute("SELECT 'served'").fetchone())
    harness.wait_until(lambda: notices, 15, what="query_wait_notify NOTICE")
    assert notices[0] == ("NOTICE", "No server connection available in postgres backend, "
                                    "client being queued")
    assert t.is_alive()  # still queued
    a.execute("COMMIT")  # the server frees up: b is served
    t.join(15)
    assert not t.is_alive()
    assert box == {"result": ("served",)}


def test_client_idle_timeout(pooler, pg):
    p = pooler(pgbouncer=_cfg(client_idle_timeout=1))
    c = pgwire.Conn.connect(port=p.port, user="md5user", password="md5pass", database="appdb")
    try:
        assert c.scalar("SELECT 1") == "1"
        err = _fatal_before_close(c)
        assert (err.get("S"), err.get("C"), err.get("M")) == \
            ("FATAL", "08P01", "client_idle_timeout")
    finally:
        c.close()
    # read once, no polling: as PgBouncer, both lines are written before the socket closes
    assert re.search(r"closing because: client_idle_timeout \(age=\d+s\)\n.*WARNING C-0x[0-9a-f]+: "
                     r"\S+ pooler error: client_idle_timeout\n", p.log_text()), p.log_text()


def test_idle_transaction_timeout(pooler, pg):
    pg.sql("DROP TABLE IF EXISTS lim_idle_tx", db="appdb")
    pg.sql("CREATE TABLE lim_idle_tx (x int)", db="appdb")
    pg.sql("ALTER TABLE lim_idle_tx OWNER TO md5user", db="appdb")
    p = pooler(pgbouncer=_cfg(default_pool_size=1, idle_transaction_timeout=1))
    c = pgwire.Conn.connect(port=p.port, user="md5user", password="md5pass", database="appdb")
    try:
        c.query("BEGIN; INSERT INTO lim_idle_tx VALUES (1)")
        assert c.status == "T"
        err = _fatal_before_close(c)
        assert (err.get("S"), err.get("C"), err.get("M")) == \
            ("FATAL", "08P01", "idle transaction timeout")
    finally:
        c.close()
    _server_then_client(p, "idle transaction timeout")
    # the transaction did not survive, and the single-server pool is usable again
    with _connect(p) as d:
        assert d.execute("SELECT count(*) FROM lim_idle_tx").fetchone() == (0,)
        assert d.execute("SELECT pg_current_xact_id_if_assigned() IS NULL").fetchone() == (True,)


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: transaction_timeout")
def test_transaction_timeout(pooler, pg):
    p = pooler(pgbouncer=_cfg(default_pool_size=1, transaction_timeout=1))
    c = pgwire.Conn.connect(port=p.port, user="md5user", password="md5pass", database="appdb")
    try:
        # a single-statement transaction never hits it
        assert c.scalar("SELECT 1") == "1"
        # a transaction that is busy (not idle) the whole time does
        c.query("BEGIN")
        c.send(pgwire.m.query("SELECT pg_sleep(8)"))
        err = _fatal_before_close(c)
        assert (err.get("S"), err.get("C"), err.get("M")) == \
            ("FATAL", "08P01", "transaction timeout")
    finally:
        c.close()
    _server_then_client(p, "transaction timeout")
    with _connect(p) as d:
        assert d.execute("SELECT 1").fetchone() == (1,)


def test_client_login_timeout(pooler, pg):
    # tcp_defer_accept stays on (the default): the kernel hands a silent connection over after
    # about a second, as under PgBouncer, and the timeout then closes it with an error
    p = pooler(pgbouncer=_cfg(client_login_timeout=1))
    silent = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    partial = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    partial.sendall(pgwire.m.startup({"user": "md5user", "database": "appdb"})[:6])
    no_password = pgwire.Conn.open(port=p.port)
    no_password.send(pgwire.m.startup({"user": "md5user", "database": "appdb"}))
    try:
        auth = no_password.read_msg()
        assert auth.type == "R"  # asked for a password, which never comes
        for s in (silent, partial):
            s.settimeout(15)
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break  # closed by the pooler
                data += chunk
            assert b"client_login_timeout" in data
        err = _fatal_before_close(no_password)
        assert (err.get("S"), err.get("M")) == ("FATAL", "client_login_timeout")
    finally:
        silent.close()
        partial.close()
        no_password.close()
    # each is logged as PgBouncer does, the silent one too: the close and the error sent;
    # the two without a startup packet have no database or user yet
    closes = r"LOG C-0x[0-9a-f]+: (\S+)@\S+ closing because: client_login_timeout \(age=\d+s\)"
    errors = r"WARNING C-0x[0-9a-f]+: (\S+)@\S+ pooler error: client_login_timeout\n"
    harness.wait_until(lambda: len(re.findall(errors, p.log_text())) == 3, 10,
                       what="three client_login_timeout errors logged")
    log = p.log_text()
    for rx in (closes, errors):
        assert sorted(re.findall(rx, log)) == \
            ["(nodb)/(nouser)", "(nodb)/(nouser)", "appdb/md5user"], log
    # a real client still gets in
    with _connect(p) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_first_client_of_a_dead_server_gets_query_wait_timeout(pooler, pg):
    """The pool's server refuses connections from the start: the first client has logged in
    and waits for a server to learn the welcome parameters from. query_wait_timeout ends the
    wait before client_login_timeout, with PgBouncer 1.18's message."""
    port = harness.free_port()
    try:
        p = pooler(databases={"downdb": f"host=127.0.0.1 port={port} dbname=appdb"},
                   pgbouncer=_cfg(query_wait_timeout=2, client_login_timeout=30,
                                  server_login_retry=1))
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
            _connect(p, dbname="downdb", connect_timeout=20)
        assert time.monotonic() - t0 < 10
        p.wait_for_log(r"downdb/md5user@127\.0\.0\.1:\d+ closing because: query_wait_timeout")
    finally:
        harness.release_port(port)


# ---------------------------------------------------------------------------
# server lifetime and health


def test_server_idle_timeout(pooler, pg):
    p = pooler(pgbouncer=_cfg(server_idle_timeout=1))
    with _connect(p) as c:
        pid1 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        p.wait_for_log(r"S-\S+: appdb/md5user@\S+ closing because: server idle timeout", 15)
        harness.wait_until(lambda: pid1 not in _server_pids(pg), 10, what="backend closed")
        pid2 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert pid2 != pid1


def test_log_disconnections_off_silences_servers_too(pooler, pg):
    """log_disconnections=0 hides every 'closing because' line, servers' as well as clients'
    (PgBouncer gates both); log_connections=0 hides 'login attempt' and 'new connection'."""
    p = pooler(pgbouncer=_cfg(server_idle_timeout=1, log_disconnections=0, log_connections=0))
    with _connect(p) as c:
        pid1 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        harness.wait_until(lambda: pid1 not in _server_pids(pg), 15, what="idle server closed")
        assert c.execute("SELECT 1").fetchone() == (1,)
    # the client has closed and the second server has gone idle-timeout too
    harness.wait_until(lambda: not _server_pids(pg), 15, what="second idle server closed")
    log = p.log_text()
    for phrase in ("closing because", "login attempt", "new connection to server"):
        assert phrase not in log, log


def test_server_lifetime(pooler, pg):
    p = pooler(pgbouncer=_cfg(server_lifetime=1, server_idle_timeout=0))
    with _connect(p) as c:
        pid1 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        p.wait_for_log(r"S-\S+: appdb/md5user@\S+ closing because: server lifetime over", 15)
        harness.wait_until(lambda: pid1 not in _server_pids(pg), 10, what="backend closed")
        pid2 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert pid2 != pid1


def test_server_lifetime_applies_to_busy_server_on_release(pooler, pg):
    """A server that outlives server_lifetime while in use is closed when released, not in
    the middle of its transaction."""
    p = pooler(pgbouncer=_cfg(server_lifetime=1, server_idle_timeout=0, default_pool_size=1))
    with _connect(p) as c:
        c.execute("BEGIN")
        pid1 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        c.execute("SELECT pg_sleep(1.5)")
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid1
        c.execute("COMMIT")
        p.wait_for_log(r"closing because: server lifetime over", 15)
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] != pid1


def test_server_lifetime_zero_uses_each_server_once(pooler, pg):
    """server_lifetime = 0: a server is closed when released, every transaction gets a new
    one (PgBouncer's "use once")."""
    p = pooler(pgbouncer=_cfg(server_lifetime=0, default_pool_size=1))
    with _connect(p) as c:
        pids = [c.execute("SELECT pg_backend_pid()").fetchone()[0] for _ in range(3)]
    assert len(set(pids)) == 3, pids
    p.wait_for_log(r"closing because: server lifetime over")


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: server_lifetime in [databases]")
def test_database_server_lifetime_on_release(pooler, pg):
    """The [databases] entry's server_lifetime applies when a busy server is released too,
    not only to idle ones in the janitor; 0 there means the global value."""
    p = pooler(pgbouncer=_cfg(server_idle_timeout=0, default_pool_size=1),
               databases={"appdb": "host={pg_host} port={pg_port} server_lifetime=1",
                          "zero": "host={pg_host} port={pg_port} dbname=appdb server_lifetime=0"})
    with _connect(p) as c:
        c.execute("BEGIN")
        pid1 = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        c.execute("SELECT pg_sleep(1.2)")
        c.execute("COMMIT")
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] != pid1
    with _connect(p, dbname="zero") as c:  # global 3600 s: the same server throughout
        pids = {c.execute("SELECT pg_backend_pid()").fetchone()[0] for _ in range(3)}
        assert len(pids) == 1
    assert {r["name"]: r["server_lifetime"] for r in p.show("DATABASES")}["zero"] == 3600


_LIFETIME_CLOSE = re.compile(r"^\S+ (\d\d):(\d\d):(\d\d\.\d+) .* closing because: server lifetime over",
                             re.M)


def test_server_lifetime_closes_are_spread(pooler, pg):
    """Servers opened together are not all closed together when their lifetime ends: at most
    one per server_lifetime / pool_size (here 2 s / 4), as PgBouncer spaces them, so a pool
    does not reconnect all at once."""
    p = pooler(pgbouncer=_cfg(pool_mode="session", default_pool_size=4, server_lifetime=2,
                              server_idle_timeout=0))
    clients = [_connect(p) for _ in range(4)]
    for c in clients:
        c.execute("SELECT 1")
    for c in clients:
        c.close()
    harness.wait_until(lambda: len(_LIFETIME_CLOSE.findall(p.log_text())) == 4, 20,
                       what="four lifetime closes")
    times = [int(h) * 3600 + int(m) * 60 + float(sec)
             for h, m, sec in _LIFETIME_CLOSE.findall(p.log_text())]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g >= 0.45 for g in gaps), gaps


def test_lowered_pool_size_closes_extra_servers(pooler, pg):
    """SET default_pool_size below the servers a pool holds: the janitor closes the unused
    extra ones ("too many servers in the pool") instead of keeping them until their
    lifetime ends."""
    p = pooler(pgbouncer=_cfg(pool_mode="session", default_pool_size=3, server_idle_timeout=0))
    clients = [_connect(p) for _ in range(3)]
    for c in clients:
        c.execute("SELECT 1")
    for c in clients:
        c.close()
    harness.wait_until(lambda: len(_server_pids(pg)) == 3, 10, what="three servers")
    p.admin("SET default_pool_size = 1")
    harness.wait_until(lambda: len(_server_pids(pg)) == 1, 10, what="two servers closed")
    assert len(re.findall(r"closing because: too many servers in the pool", p.log_text())) == 2
    with _connect(p) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_database_min_pool_size_keeps_idle_servers(pooler, pg):
    """The [databases] entry's min_pool_size holds against server_idle_timeout: the servers it
    keeps are not closed as idle (and reopened by the min_pool_size upkeep, over and
    over)."""
    p = pooler(pgbouncer=_cfg(server_idle_timeout=1),
               databases={"appdb": "host={pg_host} port={pg_port} min_pool_size=2"})
    with _connect(p) as c:
        c.execute("SELECT 1")
        harness.wait_until(lambda: len(_server_pids(pg)) == 2, 10, what="min_pool_size servers")
        before = _server_pids(pg)
        time.sleep(2.5)  # well past server_idle_timeout, several janitor passes
        assert _server_pids(pg) == before
        assert "server idle timeout" not in p.log_text()


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: min_pool_size servers for a forced-user database before any client")
def test_min_pool_size_of_forced_user_database_before_any_client(pooler, pg):
    """A forced-user database's min_pool_size servers are opened at start-up, before any
    client connects (a warm pool after a restart), and the first client uses one."""
    p = pooler(pgbouncer=_cfg(min_pool_size=2),
               databases={"forced": "host={pg_host} port={pg_port} dbname=appdb user=md5user"})
    harness.wait_until(lambda: len(_server_pids(pg)) == 2, 10, what="servers with no client")
    before = _server_pids(pg)
    with _connect(p, dbname="forced") as c:
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] in before


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: pool_idle_timeout")
def test_pool_idle_timeout_frees_the_pool(pooler, pg):
    """A pool with no client and no server for pool_idle_timeout is freed with PgBouncer
    1.26's line and leaves SHOW POOLS; the next client creates it again. A pool in use is
    kept."""
    p = pooler(pgbouncer=_cfg(pool_idle_timeout=1, server_idle_timeout=1))
    keep = _connect(p, dbname="postgres")  # its pool stays: a client is in it
    keep.execute("SELECT 1")
    with _connect(p) as c:
        c.execute("SELECT 1")
    p.wait_for_log(r"LOG cleaning up idle pool for user md5user on db appdb because: pool idle "
                   r"timeout\n", 15)
    pools = {(r["database"], r["user"]) for r in p.show("POOLS")}
    assert ("appdb", "md5user") not in pools and ("postgres", "md5user") in pools
    with _connect(p) as c:
        assert c.execute("SELECT 2").fetchone() == (2,)
    assert ("appdb", "md5user") in {(r["database"], r["user"]) for r in p.show("POOLS")}
    assert keep.execute("SELECT 3").fetchone() == (3,)
    assert "on db postgres" not in p.log_text()
    keep.close()


def test_server_dying_under_its_client(pooler, pg):
    """The backend of a session in use is terminated: the client gets PostgreSQL's 57P01, then
    FATAL "server conn crashed?"; the log has the server's line before the client's, as
    PgBouncer writes them."""
    p = pooler(pgbouncer=_cfg(pool_mode="session"))
    a = _connect(p)
    pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    mark = p.log_mark()
    pg.sql("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError, match=r"server conn crashed\?"):
        harness.wait_until(lambda: a.execute("SELECT 1") and False, 10)
    pre = r"-0x[0-9a-f]+: appdb/md5user@127\.0\.0\.1:\d+ "
    p.wait_for_log(r"LOG S" + pre + r"closing because: server conn crashed\? \(age=\d+s\)\n"
                   r".*LOG C" + pre + r"closing because: server conn crashed\? \(age=\d+s\)\n"
                   r".*WARNING C" + pre + r"pooler error: server conn crashed\?", since=mark)
    assert _connect(p).execute("SELECT 2").fetchone() == (2,)


@pytest.mark.parametrize("how", ["server_lost", "kill"])
@pytest.mark.parametrize("where", [
    pytest.param("mid_row", marks=pytest.mark.differs_from_pgbouncer_1_18(
        "PgBouncer 1.18 bug: its FATAL goes after the part of the DataRow, inside it")),
    "between_messages"])
def test_reply_cut_short_never_gets_an_error_inside_a_message(pooler, pg, how, where):
    """The server's reply stops partway (the network stalls) and then the server is lost,
    or the console KILLs the database. The client has been sent what arrived, as it arrived.
    If that ends inside a message (here 10 bytes short of a DataRow's end), an ErrorResponse
    after it would be read as the rest of that row, and then garbage; the pooler must only
    close the connection, as PostgreSQL's own stream would end. If it ends between
    messages, the client gets the FATAL as usual."""
    fw = harness.Forwarder(pg.port)
    try:
        p = pooler(databases={"fwdb": f"host=127.0.0.1 port={fw.port} dbname=appdb"},
                   pgbouncer=_cfg(default_pool_size=1))
        c = pgwire.Conn.connect("127.0.0.1", p.port, user="md5user", database="fwdb",
                                password="md5pass")
        sql = "SELECT repeat('x', 5000) AS r"
        c.send(pgwire.m.query(sql))
        full = [(msg.type, msg.body) for msg in c.read_until_rfq()]
        assert [t for t, _ in full] == ["T", "D", "C", "Z"]
        wire = [t.encode() + struct.pack("!I", len(b) + 4) + b for t, b in full]
        upto = len(wire[0]) + len(wire[1]) - (10 if where == "mid_row" else 0)
        expected = b"".join(wire)[:upto]
        fw.hold_replies_after(upto)
        c.send(pgwire.m.query(sql))
        got = b""
        c.sock.settimeout(10)
        while len(got) < upto:
            data = c.sock.recv(65536)
            assert data, f"closed after {len(got)} of {upto} bytes"
            got += data
        assert got == expected
        assert fw.replies_held.wait(10)
        mark = p.log_mark()
        if how == "server_lost":
            fw.stop()
            reason = "server conn crashed?"
        else:
            p.admin("KILL fwdb")
            reason = "database removed"
        tail = c.raw_until_closed(10)
        c.close()
        p.wait_for_log(r"C-\S+: fwdb/md5user@\S+ closing because: " + re.escape(reason),
                       10, since=mark)
        if where == "mid_row":
            assert tail == b"", f"after a part of a DataRow the client was sent {tail!r}"
        else:
            msgs, part = pgwire.split_stream(tail)
            assert [t for t, _ in msgs] == ["E"] and not part, f"not one ErrorResponse: {tail!r}"
            fields = pgwire.parse_error(msgs[0][1])
            assert (fields["S"], fields["M"]) == ("FATAL", reason)
        if how == "kill":
            p.admin("RESUME fwdb")
        assert _connect(p).execute("SELECT 2").fetchone() == (2,)
    finally:
        fw.close()


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: its FATAL goes inside the DataRow it was sending", strict=False)
def test_killed_while_not_reading_rows_gets_no_error_inside_a_row(pooler):
    """A client stops reading a result of many rows of uneven sizes; its socket fills, and
    the pooler has sent part of what it holds (a send the socket took only in part, ending
    anywhere in a row). The pooler is stopped (SIGSTOP), the client empties its socket, and
    KILL is sent; then the pooler goes on, with room in the client's socket. What the client
    reads must be whole, correct rows, then either the end of the stream inside a row (no
    FATAL there) or, between rows, the FATAL."""
    p = pooler(pgbouncer=_cfg(default_pool_size=1))
    c = pgwire.Conn.connect("127.0.0.1", p.port, user="md5user", database="appdb",
                            password="md5pass")
    c.sock.sendall(pgwire.m.query(
        "SELECT repeat(chr(97 + g % 26), g % 301) FROM generate_series(1, 400000) g"))

    harness.wait_until(p.output_held, 20, what="output waiting in the pooler for the client")
    console = pgwire.Conn.connect("127.0.0.1", p.port, user="postgres", database="pgbouncer",
                                  password=harness.PASSWORDS["postgres"])
    p.signal(signal.SIGSTOP)
    try:
        rest = b""
        c.sock.settimeout(0.5)
        try:
            while data := c.sock.recv(1 << 20):
                rest += data
        except TimeoutError:
            pass
        console.send(pgwire.m.query("KILL appdb"))
    finally:
        p.signal(signal.SIGCONT)
    assert [m.type for m in console.read_until_rfq()][-2:] == ["C", "Z"]
    msgs, part = pgwire.split_stream(rest + c.raw_until_closed(20))
    c.close()
    console.close()
    p.admin("RESUME appdb")
    types = [t for t, _ in msgs]
    rows = [body for t, body in msgs if t == "D"]
    assert types[0] == "T" and len(rows) > 1000, (types[:3], len(rows))

    def row(g):  # DataRow g as the server sends it
        value = chr(97 + g % 26).encode() * (g % 301)
        return b"D" + struct.pack("!ihi", 10 + len(value), 1, len(value)) + value
    for g, body in enumerate(rows, 1):
        assert body == row(g)[5:], f"row {g} is wrong"
    if part:
        assert set(types[1:]) == {"D"}, types[-3:]
        assert row(len(rows) + 1).startswith(part), f"the cut row is not its own: {part[-60:]!r}"
    else:
        assert set(types[1:-1]) == {"D"} and types[-1] == "E", types[-3:]
        assert pgwire.parse_error(msgs[-1][1])["M"] == "database removed"
    assert _connect(p).execute("SELECT 2").fetchone() == (2,)


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: the server's message after \"got packet 'E' from server when not "
    "linked\"")
def test_idle_server_terminated(pooler, pg):
    """An idle server's backend is terminated: PostgreSQL's FATAL arrives with no client
    linked. PgBouncer's lines (with the server's message added to the warning), and the next
    query runs on a new server."""
    p = pooler(pgbouncer=_cfg())
    a = _connect(p)
    pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    mark = p.log_mark()
    pg.sql("SELECT pg_terminate_backend(%s)", (pid,))
    pre = r"S-0x[0-9a-f]+: appdb/md5user@127\.0\.0\.1:\d+ "
    p.wait_for_log(r"WARNING " + pre + r"got packet 'E' from server when not linked: "
                   r"terminating connection due to administrator command\n"
                   r"(.*\n)?.*LOG " + pre + r"closing because: server conn crashed\? \(age=\d+s\)\n",
                   since=mark)
    assert a.execute("SELECT pg_backend_pid()").fetchone()[0] != pid


@pytest.mark.differs_from_pgbouncer_1_18(
    'not in PgBouncer 1.18: the cached error in "server login has been failing"')
def test_server_login_retry_cached_server_error(pooler, pg):
    """Server login fails with an ErrorResponse: the client waiting gets it, the next
    client within server_login_retry gets the cached error; later, service resumes."""
    pg.sql("DROP DATABASE IF EXISTS retrydb")
    pg.sql("CREATE DATABASE retrydb OWNER md5user")
    try:
        p = pooler(databases={"retrydb": "host={pg_host} port={pg_port}"},
                   pgbouncer=_cfg(server_login_retry=3, query_wait_timeout=10))
        a = _connect(p, dbname="retrydb")
        pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
        pg.sql("ALTER DATABASE retrydb ALLOW_CONNECTIONS false")
        mark = p.log_mark()
        pg.sql("SELECT pg_terminate_backend(%s)", (pid,))
        p.wait_for_log(r"S-\S+: retrydb/md5user@\S+ closing because", 10, since=mark)
        text = 'database "retrydb" is not currently accepting connections'
        # the client whose query needs a new server gets the server's own error
        with pytest.raises(psycopg.OperationalError, match=text):
            a.execute("SELECT 1")
        # the next one, within server_login_retry, gets the cached error at once
        with pytest.raises(psycopg.OperationalError) as ei:
            with _connect(p, dbname="retrydb") as b:
                b.execute("SELECT 1")
        assert f"server login has been failing, cached error: {text} (server_login_retry)" \
            in str(ei.value)
        # the database comes back: after the retry delay new clients are served again
        pg.sql("ALTER DATABASE retrydb ALLOW_CONNECTIONS true")

        def served():
            try:
                with _connect(p, dbname="retrydb") as c:
                    return c.execute("SELECT 'back'").fetchone() == ("back",)
            except psycopg.OperationalError:
                return False

        harness.wait_until(served, 20, interval=0.5, what="retrydb served again")
    finally:
        pg.sql("UPDATE pg_database SET datallowconn = true WHERE datname = 'retrydb'")
        pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
               "WHERE datname = 'retrydb'")
        harness.wait_until(lambda: not pg.sql("SELECT 1 FROM pg_stat_activity "
                                              "WHERE datname = 'retrydb'"), 10)
        pg.sql("DROP DATABASE IF EXISTS retrydb")


def test_server_refusing_more_logins_leaves_the_pool_serving(pooler, pg):
    """PostgreSQL refuses a pool's new server logins (here the role's CONNECTION LIMIT; in
    production its max_connections, taken by other poolers) while the pool already has
    servers: the refusal is logged, and the clients waiting in the queue are not told it.
    They are served by the servers the pool has, as their clients release them (PgBouncer
    kills the queue only while the pool has no server)."""
    pg.sql("DROP ROLE IF EXISTS limiteduser")
    pg.sql("SET password_encryption = 'md5'; "
           "CREATE ROLE limiteduser LOGIN CONNECTION LIMIT 3 PASSWORD 'limitedpass'")
    try:
        p = pooler(pgbouncer=_cfg(default_pool_size=8, server_login_retry=1,
                                  query_wait_timeout=30),
                   userlist_extra=['"limiteduser" "limitedpass"'])
        stop = threading.Event()
        errors, served = [], [0] * 8

        def work(i):
            with _connect(p, user="limiteduser", password="limitedpass") as c:
                while not stop.is_set():
                    try:
                        c.execute("SELECT pg_sleep(0.01)")
                        served[i] += 1
                    except psycopg.Error as e:
                        errors.append(str(e))
                        return
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        # the pool's first server, before the rush: a refusal while a pool has no server
        # fails its queue (PgBouncer's rule too), and 8 logins at once could see one first
        with _connect(p, user="limiteduser", password="limitedpass") as c:
            c.execute("SELECT 1")
        mark = p.log_mark()
        for t in threads:
            t.start()
        try:
            # later PgBouncer's line (1.18: "ERROR S: login failed: FATAL: ...")
            p.wait_for_log(r"(WARNING server login failed: FATAL |ERROR S: login failed: "
                           r'FATAL: )too many connections for role "limiteduser"', 20,
                           since=mark)
            harness.wait_until(lambda: min(served) >= 20 or errors, 60,
                               what="every client served 20 times")
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert not errors, errors[:3]
        assert pg.sql("SELECT count(*) FROM pg_stat_activity "
                      "WHERE usename = 'limiteduser'")[0][0] <= 3
    finally:
        pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
               "WHERE usename = 'limiteduser'")
        harness.wait_until(lambda: not pg.sql("SELECT 1 FROM pg_stat_activity "
                                              "WHERE usename = 'limiteduser'"), 10)
        pg.sql("DROP ROLE IF EXISTS limiteduser")


@pytest.mark.differs_from_pgbouncer_1_18(
    'not in PgBouncer 1.18: the cached error in "server login has been failing"')
def test_server_login_retry_connect_failed(pooler, pg):
    """The server host stops accepting connections. Spec 1d: nothing is sent at once; the
    pool remembers the reason, and a client that needs a server within server_login_retry
    gets `server login has been failing, cached error: connect failed (server_login_retry)`;
    a client already queued fails with that or with query_wait_timeout."""
    proxy = harness.Forwarder(pg.port)
    try:
        p = pooler(databases={"proxdb": f"host=127.0.0.1 port={proxy.port} dbname=appdb"},
                   pgbouncer=_cfg(server_login_retry=5, query_wait_timeout=2))
        a = _connect(p, dbname="proxdb")
        assert a.execute("SELECT 1").fetchone() == (1,)
        mark = p.log_mark()
        proxy.stop()
        p.wait_for_log(r"S-\S+: proxdb/md5user@\S+ closing because", 10, since=mark)
        with pytest.raises(psycopg.OperationalError) as first:
            a.execute("SELECT 1")
        assert "query_wait_timeout" in str(first.value) or \
            "server login has been failing, cached error: connect failed " \
            "(server_login_retry)" in str(first.value), str(first.value)
        with pytest.raises(psycopg.OperationalError) as second:
            with _connect(p, dbname="proxdb") as b:
                b.execute("SELECT 1")
        assert "server login has been failing, cached error: connect failed " \
            "(server_login_retry)" in str(second.value)
    finally:
        proxy.close()


def test_server_check_query_every_time(pooler, pg):
    p = pooler(pgbouncer=_cfg(default_pool_size=1, server_check_delay=0,
                              server_check_query="select 1"))
    a = _connect(p)
    b = _connect(p)
    pids = set()
    for i in range(20):
        c = a if i % 2 else b
        with c.transaction():
            row = c.execute("SELECT %s::int, pg_backend_pid()", (i,)).fetchone()
        assert row[0] == i
        pids.add(row[1])
    assert len(pids) == 1
    a.close()
    b.close()


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: protocol-level prepared statements in transaction mode "
    "(max_prepared_statements)")
def test_server_reset_query_always(pooler, pg):
    p = pooler(pgbouncer=_cfg(default_pool_size=1, server_reset_query_always=1))
    default = pg.sql("SHOW work_mem", db="appdb")[0][0]
    assert default != "17MB"
    a = p.connect()  # psycopg's default preparing: prepare=True below is honoured
    b = p.connect()
    a.execute("SET work_mem = '17MB'")
    a.execute("PREPARE leaked AS SELECT 1")
    pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert b.execute("SELECT pg_backend_pid()").fetchone()[0] == pid  # same server
    assert b.execute("SHOW work_mem").fetchone()[0] == default
    assert b.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
    # protocol-level prepared statements survive the DISCARD ALL (re-prepared as needed)
    for i in range(8):
        c = a if i % 2 else b
        assert c.execute("SELECT %s::int * 3", (i,), prepare=True).fetchone() == (i * 3,)
    a.close()
    b.close()


# ---------------------------------------------------------------------------
# pool sizes and limits


def test_min_pool_size(pooler, pg):
    p = pooler(pgbouncer=_cfg(default_pool_size=5, min_pool_size=3))
    with _connect(p) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        harness.wait_until(lambda: len(_server_pids(pg)) >= 3, 15,
                           what="min_pool_size servers")
        # without load, and no more than the minimum
        time.sleep(0.5)
        assert len(_server_pids(pg)) == 3


def test_reserve_pool(pooler, pg):
    p = pooler(pgbouncer=_cfg(default_pool_size=1, reserve_pool_size=1, reserve_pool_timeout=1,
                              query_wait_timeout=4))
    a = _connect(p)
    a.execute("BEGIN")
    pid_a = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    b = _connect(p)
    t, box = harness.in_thread(lambda: b.execute("SELECT pg_backend_pid()").fetchone()[0])
    t.join(20)
    assert not t.is_alive()
    assert "error" not in box, box
    assert box["result"] != pid_a  # served by a reserve connection
    # logged as PgBouncer does, once, naming the client that waited
    taken = re.findall(r"WARNING C-0x[0-9a-f]+: appdb/md5user@127\.0\.0\.1:\d+ "
                       r"taking connection from reserve_pool\n", p.log_text())
    assert len(taken) == 1, p.log_text()
    # never more than pool + reserve: with both busy, a third client waits and gives up
    b.execute("BEGIN")
    b.execute("SELECT 1")
    c = _connect(p)
    with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
        c.execute("SELECT 1")
    assert len(_server_pids(pg)) == 2
    a.execute("COMMIT")
    b.execute("COMMIT")
    a.close()
    b.close()


def _sample_max(pred_count, stop, out):
    while not stop.is_set():
        out.append(pred_count())
        stop.wait(0.05)


def _concurrent_txns(p, targets, sleep=0.3):
    """One client per (user, dbname) in targets, all at once, each running a transaction
    that holds its server for `sleep` seconds. Returns the list of errors."""
    errors = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(targets), timeout=15)

    def run(user, dbname):
        try:
            with _connect(p, user=user, dbname=dbname) as c:
                barrier.wait()
                with c.transaction():
                    c.execute("SELECT pg_sleep(%s)", (sleep,))
                    assert c.execute("SELECT current_user").fetchone() == (user,)
        except Exception as e:  # noqa: BLE001 - asserted by the caller
            with lock:
                errors.append(f"{user}@{dbname}: {e!r}")

    threads = [threading.Thread(target=run, args=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return errors


def _limited_run(pg, p, count_sql, phases, limit):
    """Run each phase of concurrent transactions (see _concurrent_txns) while a thread
    samples count_sql (servers open in PostgreSQL); every transaction must succeed and the
    count must never exceed limit."""
    def count():
        return pg.sql(count_sql)[0][0]

    stop = threading.Event()
    seen = []
    sampler = threading.Thread(target=_sample_max, args=(count, stop, seen), daemon=True)
    sampler.start()
    try:
        for name, targets in phases:
            errors = _concurrent_txns(p, targets)
            assert errors == [], f"phase {name!r}: {errors}"
    finally:
        stop.set()
        sampler.join(10)
    assert seen and max(seen) <= limit
    assert count() <= limit


def test_max_user_connections(pooler, pg):
    """At most max_user_connections servers for a user, across its databases. When the
    cap is reached by idle servers of one pool, another pool of that user still gets a
    server (PgBouncer evicts an idle one: objects.c evict_user_connection)."""
    p = pooler(pgbouncer=_cfg(default_pool_size=10, max_user_connections=2,
                              query_wait_timeout=5, client_login_timeout=10))
    _limited_run(pg, p, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'md5user'", [
        ("appdb only", [("md5user", "appdb")] * 4),  # leaves 2 idle appdb servers
        ("then postgres", [("md5user", "postgres")] * 2),
        ("both", [("md5user", "appdb")] * 3 + [("md5user", "postgres")] * 3),
    ], 2)


def test_max_db_connections(pooler, pg):
    """At most max_db_connections servers for a database, across its users; as above, a
    second user's pool is not starved by the first user's idle servers (evict_connection)."""
    p = pooler(pgbouncer=_cfg(default_pool_size=10, max_db_connections=2,
                              query_wait_timeout=5, client_login_timeout=10))
    _limited_run(pg, p, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'appdb' "
                        "AND usename IN ('md5user', 'scramuser')", [
        ("md5user only", [("md5user", "appdb")] * 4),  # leaves 2 idle md5user servers
        ("then scramuser", [("scramuser", "appdb")] * 2),
        ("both", [("md5user", "appdb")] * 3 + [("scramuser", "appdb")] * 3),
    ], 2)


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: max_db_client_connections")
def test_max_db_client_connections(pooler, pg):
    p = pooler(pgbouncer=_cfg(max_db_client_connections=2))
    a = _connect(p)
    b = _connect(p, user="scramuser")
    with pytest.raises(psycopg.OperationalError,
                       match=r"client connections exceeded \(max_db_client_connections\)"):
        _connect(p)
    # another database is not affected
    with _connect(p, dbname="postgres") as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    a.close()
    harness.wait_until(lambda: _try_connect(p), 10, what="a slot after a client left")
    assert b.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: max_user_client_connections")
def test_max_user_client_connections(pooler, pg):
    p = pooler(pgbouncer=_cfg(max_user_client_connections=2))
    a = _connect(p)
    b = _connect(p, dbname="postgres")
    with pytest.raises(psycopg.OperationalError,
                       match=r"client connections exceeded \(max_user_client_connections\)"):
        _connect(p)
    with _connect(p, user="scramuser") as c:  # another user is not affected
        assert c.execute("SELECT 1").fetchone() == (1,)
    a.close()
    harness.wait_until(lambda: _try_connect(p), 10, what="a slot after a client left")
    assert b.execute("SELECT 1").fetchone() == (1,)


def _try_connect(p, **kw):
    try:
        with p.connect(**kw) as c:
            return c.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


def test_max_client_conn(pooler, pg):
    p = pooler(pgbouncer=_cfg(max_client_conn=3, default_pool_size=1))
    conns = [_connect(p) for _ in range(3)]
    with pytest.raises(psycopg.OperationalError,
                       match=r"no more connections allowed \(max_client_conn\)"):
        _connect(p)
    # all three share the one server, in turn
    for i, c in enumerate(conns):
        assert c.execute("SELECT %s::int", (i,)).fetchone() == (i,)
    # the admin console is exempt
    assert p.admin("SHOW VERSION")
    conns[0].close()
    harness.wait_until(lambda: _try_connect(p), 10, what="a slot after a client left")


@pytest.mark.parametrize("round_robin", [1, 0])
def test_server_round_robin(pooler, pg, round_robin):
    p = pooler(pgbouncer=_cfg(default_pool_size=2, server_round_robin=round_robin))
    a = _connect(p)
    b = _connect(p)
    # two servers: both clients inside a transaction at once
    a.execute("BEGIN")
    b.execute("BEGIN")
    both = {a.execute("SELECT pg_backend_pid()").fetchone()[0],
            b.execute("SELECT pg_backend_pid()").fetchone()[0]}
    assert len(both) == 2
    a.execute("COMMIT")
    b.execute("COMMIT")
    pids = [a.execute("SELECT pg_backend_pid()").fetchone()[0] for _ in range(8)]
    if round_robin:
        assert all(x != y for x, y in zip(pids, pids[1:])), pids
        assert set(pids) == both
    else:
        assert len(set(pids)) == 1, pids  # LIFO: the most recently released server
    a.close()
    b.close()


def test_statement_mode(pooler, pg):
    p = pooler(pgbouncer={"pool_mode": "statement", "default_pool_size": 1})
    a = _connect(p)
    b = _connect(p)
    # single statements, simple and extended protocol, interleaved on one server
    for i in range(5):
        assert a.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        assert b.execute("SELECT 'b' || %s", (str(i),)).fetchone() == (f"b{i}",)
    with pytest.raises(psycopg.OperationalError,
                       match="transaction blocks not allowed in statement pooling mode"):
        a.execute("BEGIN")
    assert a.closed or a.broken
    # b is unaffected and the pool still works
    assert b.execute("SELECT 1").fetchone() == (1,)
    with _connect(p) as c:
        assert c.execute("SELECT 2").fetchone() == (2,)
    b.close()


# ---------------------------------------------------------------------------
# cancel


def test_cancel_in_transaction_mode(pooler, pg):
    p = pooler(pgbouncer=_cfg(default_pool_size=1))
    conn = _connect(p)
    other = _connect(p)
    watcher = pg.connect()

    def cancel_when_running():
        for _ in range(400):
            row = watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = "
                                  "'md5user' AND state = 'active' AND query LIKE "
                                  "'SELECT pg_sleep(30)%'").fetchone()
            if row[0]:
                conn.cancel()
                return True
            time.sleep(0.05)
        return False

    t, box = harness.in_thread(cancel_when_running)
    with pytest.raises(psycopg.errors.QueryCanceled) as ei:
        conn.execute("SELECT pg_sleep(30)")
    t.join(30)
    assert box.get("result") is True
    assert ei.value.sqlstate == "57014"
    assert "canceling statement due to user request" in str(ei.value)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    assert other.execute("SELECT 2").fetchone() == (2,)
    # inside a transaction too
    conn.execute("BEGIN")
    t, box = harness.in_thread(cancel_when_running)
    with pytest.raises(psycopg.errors.QueryCanceled):
        conn.execute("SELECT pg_sleep(30)")
    t.join(30)
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        conn.execute("SELECT 1")
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT 3").fetchone() == (3,)
    watcher.close()


def test_late_cancel_never_hits_another_client(pooler, pg):
    """A cancel of A's must never cancel B's query on the same (only) server. Even rounds:
    A's cancel is sent right after A's query finished, while B starts its query. Odd
    rounds: the cancel races with the end of A's short query (sent 0-90 ms into it), and B
    starts as soon as A has its answer. A may or may not be cancelled; B never is."""
    p = pooler(pgbouncer=_cfg(default_pool_size=1))
    a = _connect(p)
    b = _connect(p)
    failures = []
    for i in range(20):
        if i % 2 == 0:
            assert a.execute("SELECT %s::int", (i,)).fetchone() == (i,)
            t, box = harness.in_thread(lambda: b.execute("SELECT pg_sleep(0.3), 'b-done'").fetchone())
            a.cancel()
            t.join(30)
            assert not t.is_alive()
        else:
            delay = 0.01 * (i // 2)
            canceller, _ = harness.in_thread(lambda: (time.sleep(delay), a.cancel()))
            try:
                a.execute("SELECT pg_sleep(0.05)")
            except psycopg.errors.QueryCanceled:
                pass  # the cancel was in time for A: fine
            box = {}
            try:
                box["result"] = b.execute("SELECT pg_sleep(0.3), 'b-done'").fetchone()
            except Exception as e:  # noqa: BLE001 - collected below
                box["error"] = e
            canceller.join(30)
            assert not canceller.is_alive()
        if "error" in box:
            failures.append(f"round {i}: {box['error']!r}")
            b.close()
            b = _connect(p)
        else:
            assert box["result"][1] == "b-done"
    assert failures == []
    # both clients are fine afterwards
    assert a.execute("SELECT 'a-done'").fetchone() == ("a-done",)
    assert b.execute("SELECT 'b-done'").fetchone() == ("b-done",)
    a.close()
    b.close()
