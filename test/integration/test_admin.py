"""The admin console (spec: /work/shared/spec/pgbouncer-interface.md 1c; doc/admin.md).

Every SHOW is checked for PgBouncer's column names and type OIDs, values against a known
state, and the process commands (PAUSE, RESUME, KILL, RECONNECT, WAIT_CLOSE, SHUTDOWN,
DISABLE, KILL_CLIENT, SET, RELOAD, SUSPEND) for what an operator sees. Console queries go
over the simple query protocol (psycopg's ClientCursor, or psql)."""

import re
import signal
import threading
import time

import psycopg
import pytest

import harness
import pgwire

T, I4, I8, N, B = 25, 23, 20, 1700, 17

SOCKET_COLS = [
    ("type", T), ("user", T), ("database", T), ("replication", T), ("state", T),
    ("addr", T), ("port", I4), ("local_addr", T), ("local_port", I4),
    ("connect_time", T), ("request_time", T), ("wait", I4), ("wait_us", I4),
    ("close_needed", I4), ("ptr", T), ("link", T), ("remote_pid", I4), ("tls", T),
    ("application_name", T), ("prepared_statements", I4), ("id", I8),
]
DEBUG_COLS = [(n, I4) for n in ("recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain",
                                "pkt_avail", "send_avail")]
STAT_NAMES = ["server_assignment_count", "xact_count", "query_count", "received", "sent",
              "xact_time", "query_time", "wait_time", "client_parse_count",
              "server_parse_count", "bind_count", "client_login_count"]

# Column names and types of every SHOW, from the spec (1c).
EXPECTED = {
    "STATS": [("database", T)]
    + [("total_" + n, N) for n in STAT_NAMES]
    + [("avg_" + {"received": "recv"}.get(n, n), N) for n in STAT_NAMES],
    "STATS_TOTALS": [("database", T)] + [(n, N) for n in [
        "server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
        "xact_time", "query_time", "wait_time", "client_parse_count", "server_parse_count",
        "bind_count", "client_login_count"]],
    "STATS_AVERAGES": [("database", T)] + [(n, N) for n in [
        "server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
        "xact_time", "query_time", "wait_time", "avg_client_parse_count",
        "avg_server_parse_count", "avg_bind_count"]],
    "TOTALS": [("name", T), ("value", N)],
    "SERVERS": SOCKET_COLS,
    "CLIENTS": SOCKET_COLS,
    "SOCKETS": SOCKET_COLS + DEBUG_COLS,
    "ACTIVE_SOCKETS": SOCKET_COLS + DEBUG_COLS,
    "POOLS": [("database", T), ("user", T)]
    + [(n, I4) for n in ["cl_active", "cl_waiting", "cl_active_cancel_req",
                         "cl_waiting_cancel_req", "sv_active", "sv_active_cancel",
                         "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
                         "maxwait", "maxwait_us"]]
    + [("pool_mode", T), ("load_balance_hosts", T)],
    "PEER_POOLS": [("peer_id", I4), ("cl_active_cancel_req", I4),
                   ("cl_waiting_cancel_req", I4), ("sv_active_cancel", I4), ("sv_login", I4)],
    "PEERS": [("peer_id", I4), ("host", T), ("port", I4), ("pool_size", I4)],
    "LISTS": [("list", T), ("items", I4)],
    "USERS": [("name", T), ("pool_size", T), ("reserve_pool_size", T), ("pool_mode", T),
              ("max_user_connections", I4), ("current_connections", I4),
              ("max_user_client_connections", I4), ("current_client_connections", I4)],
    "DATABASES": [("name", T), ("host", T), ("port", I4), ("database", T), ("force_user", T),
                  ("pool_size", I4), ("min_pool_size", I4), ("reserve_pool_size", I4),
                  ("server_lifetime", I4), ("pool_mode", T), ("load_balance_hosts", T),
                  ("max_connections", I4), ("current_connections", I4),
                  ("max_client_connections", I4), ("current_client_connections", I4),
                  ("paused", I4), ("disabled", I4)],
    "FDS": [("fd", I4), ("task", T), ("user", T), ("database", T), ("addr", T), ("port", I4),
            ("cancel", I8), ("link", I4), ("client_encoding", T), ("std_strings", T),
            ("datestyle", T), ("timezone", T), ("password", T), ("scram_client_key", B),
            ("scram_server_key", B)],
    "CONFIG": [("key", T), ("value", T), ("default", T), ("changeable", T)],
    "MEM": [("name", T), ("size", I4), ("used", I4), ("free", I4), ("memtotal", I4)],
    "DNS_HOSTS": [("hostname", T), ("ttl", I8), ("addrs", T)],
    "DNS_ZONES": [("zonename", T), ("serial", I8), ("count", I4)],
    "VERSION": [("version", T)],
    "STATE": [("key", T), ("value", T)],
}

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+$")
PTR_RE = re.compile(r"^0x[0-9a-f]+$")


def console(p, user="postgres", password=None):
    """A console session (simple query protocol), closed by the harness at stop."""
    return p.connect(user=user, password=password, dbname="pgbouncer",
                     cursor_factory=psycopg.ClientCursor)


def run(conn, query):
    """(column (name, type oid) list, rows as dicts, status) of one console query."""
    cur = conn.cursor()
    cur.execute(query, prepare=False)
    if not cur.description:
        return [], [], cur.statusmessage
    cols = [(d.name, d.type_code) for d in cur.description]
    names = [c[0] for c in cols]
    return cols, [dict(zip(names, r)) for r in cur.fetchall()], cur.statusmessage


def by_db(rows, db, key="database"):
    return [r for r in rows if r[key] == db]


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: SHOW columns added by later PgBouncer releases")
def test_every_show_has_pgbouncer_columns(pooler):
    p = pooler()
    a = p.connect()
    a.execute("SELECT 1")
    c = console(p)
    for what, expected in EXPECTED.items():
        cols, _, status = run(c, f"SHOW {what}")
        assert cols == expected, what
        assert status == "SHOW", what
    # SELECT is an alias of SHOW; trailing ';' and any case are accepted
    cols, rows, _ = run(c, "select version;")
    assert cols == EXPECTED["VERSION"]
    assert rows[0]["version"].startswith("sluice ")
    assert "PgBouncer 1.26.1 compatible" in rows[0]["version"]
    cols, _, _ = run(c, "  show\tPools ; ")
    assert cols == EXPECTED["POOLS"]


@pytest.mark.differs_from_pgbouncer_1_18("sluice only: SHOW VERSION names sluice")
def test_show_through_psql(pooler):
    p = pooler()
    rc, out, err = p.psql("-c", "SHOW POOLS", "-c", "SHOW VERSION", user="postgres",
                          dbname="pgbouncer")
    assert rc == 0, err
    assert "pgbouncer|pgbouncer|1|" in out
    assert "sluice" in out


def _known_state(pooler):
    """3 clients of appdb in session mode, 2 of them holding servers (a has run a 1000-byte
    result): (pooler, {app: (client port, backend pid)}, console, clients)."""
    p = pooler(pgbouncer={"pool_mode": "session"})
    a = p.connect(application_name="client_a")
    b = p.connect(application_name="client_b")
    idle = p.connect(application_name="client_idle")
    ids = {app: c.execute("SELECT inet_client_port(), pg_backend_pid()").fetchone()
           for app, c in (("client_a", a), ("client_b", b))}
    a.execute("SELECT repeat('x', 1000)").fetchone()
    return p, ids, console(p), (a, b, idle)


def test_known_state(pooler, pg):
    """Every SHOW says what the clients did (the columns PgBouncer 1.18 has too; the later
    ones: test_known_state_newer_columns)."""
    p, ids, c, conns = _known_state(pooler)

    pool = by_db(run(c, "SHOW POOLS")[1], "appdb")
    assert len(pool) == 1
    pool = pool[0]
    assert pool["user"] == "md5user"
    assert (pool["cl_active"], pool["cl_waiting"]) == (3, 0)
    assert (pool["sv_active"], pool["sv_idle"], pool["sv_used"], pool["sv_login"]) == (2, 0, 0, 0)
    assert (pool["maxwait"], pool["maxwait_us"]) == (0, 0)
    assert pool["pool_mode"] == "session"
    console_pool = by_db(run(c, "SHOW POOLS")[1], "pgbouncer")
    assert [(r["user"], r["cl_active"], r["pool_mode"]) for r in console_pool] == \
        [("pgbouncer", 1, "statement")]

    clients = by_db(run(c, "SHOW CLIENTS")[1], "appdb")
    servers = by_db(run(c, "SHOW SERVERS")[1], "appdb")
    assert len(clients) == 3 and len(servers) == 2
    by_app = {r["application_name"]: r for r in clients}
    assert set(by_app) == {"client_a", "client_b", "client_idle"}
    sv_by_pid = {r["remote_pid"]: r for r in servers}
    assert set(sv_by_pid) == {pid for _, pid in ids.values()}
    for app, (port, pid) in ids.items():
        cl, sv = by_app[app], sv_by_pid[pid]
        assert cl["type"] == "C" and sv["type"] == "S"
        assert cl["state"] == "active" and sv["state"] == "active"
        assert cl["link"] == sv["ptr"] and sv["link"] == cl["ptr"]
        assert sv["local_port"] == port  # the pooler's end of the server connection
        assert sv["addr"] == "127.0.0.1" and sv["port"] == pg.port
        assert sv["user"] == "md5user" and sv["database"] == "appdb"
    assert by_app["client_idle"]["link"] == ""
    for r in clients + servers:
        assert PTR_RE.match(r["ptr"]), r
        assert TIME_RE.match(r["connect_time"]) and TIME_RE.match(r["request_time"]), r
        assert r["close_needed"] == 0 and r["wait"] == 0
        assert r["tls"] == ""
    for r in clients:
        assert r["addr"] == "127.0.0.1" and r["local_port"] == p.port and r["user"] == "md5user"

    sockets = run(c, "SHOW SOCKETS")[1]
    states = sorted(r["state"] for r in by_db(sockets, "appdb"))
    assert states == ["cl_active"] * 3 + ["sv_active"] * 2

    db = {r["name"]: r for r in run(c, "SHOW DATABASES")[1]}
    assert db["appdb"]["current_connections"] == 2
    assert (db["appdb"]["host"], db["appdb"]["database"]) == ("127.0.0.1", "appdb")
    assert db["appdb"]["pool_size"] == 20
    assert (db["appdb"]["paused"], db["appdb"]["disabled"]) == (0, 0)
    assert db["pgbouncer"]["force_user"] == "pgbouncer"
    assert db["pgbouncer"]["pool_mode"] == "statement"

    users = {r["name"]: r for r in run(c, "SHOW USERS")[1]}
    assert "md5user" in users and "pgbouncer" in users

    lists = {r["list"]: r["items"] for r in run(c, "SHOW LISTS")[1]}
    assert lists["used_servers"] == 2 and lists["used_clients"] == 4
    assert lists["pools"] == 2  # appdb/md5user + the console

    stats = by_db(run(c, "SHOW STATS")[1], "appdb")[0]
    assert stats["total_query_count"] >= 3 and stats["total_xact_count"] >= 3
    assert stats["total_received"] > 0 and stats["total_sent"] > 1000
    assert stats["total_query_time"] > 0

    fds = run(c, "SHOW FDS")[1]
    tasks = sorted(r["task"] for r in fds if r["database"] == "appdb")
    assert tasks == ["client"] * 3 + ["server"] * 2
    # The listening sockets come first, as task "pooler": TCP on our port and the unix socket.
    pooler_rows = [r for r in fds if r["task"] == "pooler"]
    assert {r["addr"] for r in pooler_rows} == {"127.0.0.1", "unix"}
    assert all(r["port"] == p.port for r in pooler_rows)
    config = {r["key"]: r for r in run(c, "SHOW CONFIG")[1]}
    assert config["pool_mode"]["value"] == "session"
    assert config["listen_port"]["changeable"] == "no"
    mem = {r["name"]: r for r in run(c, "SHOW MEM")[1]}
    assert "client_cache" in mem and "server_cache" in mem
    for x in conns:
        x.close()


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: SHOW columns, lists and counters of later releases, SHOW STATE")
def test_known_state_newer_columns(pooler, pg):
    p, ids, c, conns = _known_state(pooler)
    pool = by_db(run(c, "SHOW POOLS")[1], "appdb")[0]
    assert pool["load_balance_hosts"] is None
    clients = by_db(run(c, "SHOW CLIENTS")[1], "appdb")
    servers = by_db(run(c, "SHOW SERVERS")[1], "appdb")
    # a logged-in client without a server is "idle" (PgBouncer 1.18: "active")
    assert {r["application_name"]: r["state"] for r in clients}["client_idle"] == "idle"
    for r in clients + servers:
        assert r["replication"] == "none"
        assert r["prepared_statements"] == 0
    ids_col = [r["id"] for r in clients + servers]
    assert len(set(ids_col)) == len(ids_col) and all(isinstance(i, int) and i > 0
                                                    for i in ids_col)
    db = {r["name"]: r for r in run(c, "SHOW DATABASES")[1]}
    assert db["appdb"]["current_client_connections"] == 3
    assert db["appdb"]["server_lifetime"] == 3600
    users = {r["name"]: r for r in run(c, "SHOW USERS")[1]}
    assert users["md5user"]["current_connections"] == 2
    assert users["md5user"]["current_client_connections"] == 3
    assert [r["list"] for r in run(c, "SHOW LISTS")[1]] == [
        "databases", "users", "peers", "pools", "peer_pools", "free_clients", "used_clients",
        "login_clients", "free_servers", "used_servers", "dns_names", "dns_zones",
        "dns_queries", "dns_pending"]
    stats = by_db(run(c, "SHOW STATS")[1], "appdb")[0]
    assert stats["total_client_login_count"] == 3
    assert stats["total_server_assignment_count"] == 2
    totals = {r["name"]: r["value"] for r in run(c, "SHOW TOTALS")[1]}
    assert list(totals)[:12] == ["total_" + n for n in [
        "server_assignment_count", "xact_count", "query_count", "client_bytes",
        "server_bytes", "xact_time", "query_time", "wait_time", "ps_client_parse_count",
        "ps_server_parse_count", "ps_bind_count", "client_login_count"]]
    assert list(totals)[12:] == ["avg_" + n[6:] for n in list(totals)[:12]]
    assert totals["total_client_login_count"] >= 3
    state = {r["key"]: r["value"] for r in run(c, "SHOW STATE")[1]}
    assert state == {"active": "yes", "paused": "no", "suspended": "no"}
    config = {r["key"]: r for r in run(c, "SHOW CONFIG")[1]}
    assert config["auth_user"]["value"] is None and config["auth_user"]["default"] is None
    mem = {r["name"]: r for r in run(c, "SHOW MEM")[1]}
    # Receive buffers: pkt_buf ones (each server connection keeps its own) and bulk ones
    # (only while a COPY or a big result streams).
    assert mem["iobuf_cache"]["size"] == 4096 and mem["iobuf_cache"]["used"] >= 2
    assert mem["bulk_iobuf_cache"]["size"] == 65536 and mem["bulk_iobuf_cache"]["used"] == 0
    for x in conns:
        x.close()


def _wait_s(row):
    return row["wait"] + row["wait_us"] / 1e6


def test_wait_counts_from_the_query_start(pooler):
    """SHOW CLIENTS wait/wait_us is PgBouncer's query_start clock: the time since the
    client's current request began, its time queued for a server included, back to 0 with
    the ReadyForQuery that ends it. So 0 for an idle client and for one idle in a
    transaction, the queueing time for a waiting client (SHOW POOLS maxwait too), the running
    time for an active query. A console session's row counts from its first query (PgBouncer
    never clears it there); server rows are 0."""
    p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": "1"})
    c = p.connect(user="postgres", dbname="pgbouncer", application_name="console",
                  cursor_factory=psycopg.ClientCursor)

    def clients():
        return {r["application_name"]: r for r in run(c, "SHOW CLIENTS")[1]}

    def pool():
        return by_db(run(c, "SHOW POOLS")[1], "appdb")[0]

    never = p.connect(application_name="never")  # logged in, no query yet
    idle = p.connect(application_name="idle")
    idle.execute("SELECT 1")
    intx = p.connect(application_name="intx")
    intx.execute("BEGIN")
    intx.execute("SELECT 1")  # holds the only server
    waiter = p.connect(application_name="waiter")
    t, box = harness.in_thread(lambda: waiter.execute("SELECT 2").fetchone())
    harness.wait_until(lambda: pool()["cl_waiting"] == 1, 10, what="the waiter queued")
    time.sleep(1.5)
    rows = clients()
    for app in ("never", "idle", "intx"):
        assert (rows[app]["wait"], rows[app]["wait_us"]) == (0, 0), app
    assert rows["waiter"]["state"] == "waiting"
    assert 1.0 <= _wait_s(rows["waiter"]) < 30
    assert 1.0 <= pool()["maxwait"] + pool()["maxwait_us"] / 1e6 < 30
    assert _wait_s(rows["console"]) >= 1.0  # its first query came before the sleep
    assert all((r["wait"], r["wait_us"]) == (0, 0) for r in run(c, "SHOW SERVERS")[1])

    intx.execute("COMMIT")
    t.join(10)
    assert box.get("result") == (2,), box
    rows = clients()
    assert (rows["waiter"]["wait"], rows["waiter"]["wait_us"]) == (0, 0)
    assert (pool()["maxwait"], pool()["maxwait_us"]) == (0, 0)

    sleeper = p.connect(application_name="sleeper")
    t, box = harness.in_thread(lambda: sleeper.execute("SELECT pg_sleep(2.5)").fetchone())
    harness.wait_until(lambda: clients()["sleeper"]["state"] == "active"
                       and clients()["sleeper"]["link"], 10, what="the sleeper running")
    time.sleep(1.5)
    rows = clients()
    assert 1.0 <= _wait_s(rows["sleeper"]) < 30
    assert (rows["idle"]["wait"], rows["idle"]["wait_us"]) == (0, 0)
    assert all((r["wait"], r["wait_us"]) == (0, 0) for r in run(c, "SHOW SERVERS")[1])
    t.join(10)
    assert "error" not in box, box
    rows = clients()
    assert (rows["sleeper"]["wait"], rows["sleeper"]["wait_us"]) == (0, 0)
    for x in (never, idle, intx, waiter, sleeper):
        x.close()


def test_query_and_xact_time_include_the_queueing(pooler):
    """SHOW STATS total_query_time and total_xact_time run, as PgBouncer counts them, from
    the first message of the query (of the transaction), time queued for a server included;
    total_wait_time counts the queueing on its own as well."""
    p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": "1"})
    holder = p.connect()
    holder.execute("BEGIN")
    holder.execute("SELECT 1")  # holds the only server
    waiter = p.connect()
    t, box = harness.in_thread(lambda: waiter.execute("SELECT 2").fetchone())
    c = p.connect(user="postgres", dbname="pgbouncer", cursor_factory=psycopg.ClientCursor)
    harness.wait_until(lambda: by_db(run(c, "SHOW POOLS")[1], "appdb")[0]["cl_waiting"] == 1,
                       10, what="the waiter queued")
    time.sleep(1.2)
    holder.execute("COMMIT")
    t.join(10)
    assert box.get("result") == (2,), box
    stats = by_db(run(c, "SHOW STATS")[1], "appdb")[0]
    assert stats["total_wait_time"] >= 1_000_000, stats
    # The waiter's one query (and its transaction) took its queueing time; the holder's
    # queries were quick, its transaction as long as the sleep.
    assert stats["total_query_time"] >= 1_000_000, stats
    assert stats["total_xact_time"] >= 2_000_000, stats
    for x in (holder, waiter, c):
        x.close()


def test_errors_keep_the_session(pooler):
    p = pooler()
    c = console(p)
    for q in ("foo bar baz", "SHOW", "SHOW FOO", "show pools extra", "SHOW POOLS; SHOW STATS"):
        with pytest.raises(psycopg.Error) as e:
            run(c, q)
        assert e.value.diag.severity == "ERROR"
        assert e.value.diag.sqlstate == "08P01"
        assert e.value.diag.message_primary == f"invalid command '{q}', use SHOW HELP;"
        assert run(c, "SHOW VERSION")[1]  # the session goes on
    # driver probes get fixed values; SET of them is ignored with a NOTICE
    notices = []
    c.add_notice_handler(lambda d: notices.append(d.message_primary))
    cols, rows, _ = run(c, "SHOW client_encoding")
    assert cols == [("client_encoding", T)] and rows == [{"client_encoding": "UTF-8"}]
    assert run(c, "SHOW DateStyle")[1] == [{"datestyle": "ISO"}]
    assert run(c, "SET client_encoding = 'UTF8'")[2] == "SET"
    assert notices == ["SET ignored"]
    notices.clear()
    run(c, "SHOW HELP")
    assert notices == ["Console usage"]
    for q, msg in (("PAUSE pgbouncer", "cannot pause admin db: pgbouncer"),
                   ("KILL pgbouncer", "cannot kill admin db: pgbouncer"),
                   ("DISABLE", "a database is required"),
                   ("RESUME", "pooler is not paused/suspended"),
                   ("RESUME appdb", "database appdb is not paused"),
                   ("SET no_such_setting = 1", "SET failed"),
                   ("RELOAD now", "invalid command 'RELOAD now', use SHOW HELP;")):
        with pytest.raises(psycopg.Error) as e:
            run(c, q)
        assert e.value.diag.message_primary == msg, q
        assert e.value.diag.severity == "ERROR"
    assert "ERROR unknown parameter: pgbouncer/no_such_setting\n" in p.log_text()
    assert run(c, "SHOW LISTS")[1]


def test_console_grammar_edges(pooler):
    """Queries at the edge of PgBouncer's regular expressions, and the admin-db refusals."""
    p = pooler()
    c = console(p)
    for q in ('SHOW "POOLS"', "SHOW pools\n", "  sHoW\tpOoLs ; ", "SHOW POOLS ;", "select pools;"):
        assert run(c, q)[2] == "SHOW", q
    for q in ("SHOW POOLS;;", "SHOW POOLS -- c", "SHOW 'pools'", "", " ", ";", "SHOW VERSION;SHOW VERSION",
              "SET default_pool_size = -1", "SET a = b = c", "SET foo", "SHUTDOWN now", "PAUSE a b"):
        with pytest.raises(psycopg.Error) as e:
            run(c, q)
        assert (e.value.diag.severity, e.value.diag.sqlstate, e.value.diag.message_primary) == \
            ("ERROR", "08P01", f"invalid command '{q}', use SHOW HELP;"), q
    for q, msg in (("SET default_pool_size = abc", "SET failed"),
                   ("SET pool_mode = bogus", "SET failed"),
                   ("SET application_name = 'x'", "SET failed"),
                   ("ENABLE", "a database is required"),
                   ("DISABLE pgbouncer", "cannot disable admin db: pgbouncer"),
                   ("RECONNECT pgbouncer", "cannot reconnect admin db: pgbouncer"),
                   ("WAIT_CLOSE pgbouncer", "cannot wait in admin db: pgbouncer")):
        with pytest.raises(psycopg.Error) as e:
            run(c, q)
        assert (e.value.diag.severity, e.value.diag.sqlstate, e.value.diag.message_primary) == \
            ("ERROR", "08P01", msg), q
    assert "ERROR unknown parameter: pgbouncer/application_name\n" in p.log_text()
    # SET keeps the key and value as typed in its tag; strings lose their quotes
    assert run(c, "SET default_pool_size TO 31")[2] == "SET default_pool_size=31"
    assert run(c, "SET server_reset_query = 'DISCARD ALL'")[2] == "SET server_reset_query=DISCARD ALL"
    config = {r["key"]: r for r in run(c, "SHOW CONFIG")[1]}
    assert config["default_pool_size"]["value"] == "31"
    assert config["server_reset_query"]["value"] == "DISCARD ALL"


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: KILL_CLIENT")
def test_kill_client_errors(pooler):
    p = pooler()
    c = console(p)
    for q, msg in (("KILL_CLIENT abc", "invalid client pointer supplied"),
                   ("KILL_CLIENT 987654321", "client not found")):
        with pytest.raises(psycopg.Error) as e:
            run(c, q)
        assert e.value.diag.message_primary == msg, q
        assert e.value.diag.severity == "ERROR"
    assert run(c, "SHOW STATE")[1]


ADMIN_ONLY = ("SHOW FDS", "PAUSE", "PAUSE appdb", "RESUME", "KILL appdb", "RECONNECT",
              "DISABLE appdb", "RELOAD", "SHUTDOWN", "SUSPEND", "WAIT_CLOSE",
              "SET default_pool_size = 3")


def _refused_to_stats_user(s, queries):
    for q in queries:
        with pytest.raises(psycopg.Error) as e:
            run(s, q)
        assert e.value.diag.message_primary == "admin access needed", q


def test_access_control(pooler):
    p = pooler(pgbouncer={"stats_users": "md5user"})
    s = console(p, user="md5user")
    assert by_db(run(s, "SHOW POOLS")[1], "pgbouncer")
    for what in ("POOLS", "CLIENTS", "SERVERS", "SOCKETS", "ACTIVE_SOCKETS", "STATS",
                 "STATS_TOTALS", "STATS_AVERAGES", "TOTALS", "LISTS", "USERS", "DATABASES",
                 "CONFIG", "MEM", "DNS_HOSTS", "DNS_ZONES", "VERSION"):
        assert run(s, f"SHOW {what}")[2] == "SHOW", what
    _refused_to_stats_user(s, ADMIN_ONLY)
    assert by_db(run(s, "SHOW DATABASES")[1], "appdb", key="name")[0]["paused"] == 0
    # a user in neither list cannot enter
    with pytest.raises(psycopg.OperationalError, match="not allowed"):
        console(p, user="scramuser")
    # same-UID "pgbouncer" over the unix socket: full access without a password
    r = harness.run_as_postgres([harness.pg_tool("psql"), "-X", "-At", "-h", p.dir, "-p",
                                 str(p.port), "-U", "pgbouncer", "-d", "pgbouncer",
                                 "-c", "SHOW LISTS", "-c", "RECONNECT"], timeout=30)
    assert r.returncode == 0, r.stderr
    assert "databases|" in r.stdout


def test_own_user_login_lines(pooler):
    """Same-UID "pgbouncer" over the unix socket: PgBouncer's access line comes before the
    login attempt, when the client has a user but no pool yet ("(nodb)" in its prefix)."""
    p = pooler()
    r = harness.run_as_postgres([harness.pg_tool("psql"), "-X", "-At", "-h", p.dir, "-p",
                                 str(p.port), "-U", "pgbouncer", "-d", "pgbouncer",
                                 "-c", "SHOW VERSION"], timeout=30)
    assert r.returncode == 0, r.stderr
    p.wait_for_log(r"LOG (C-0x[0-9a-f]+): \(nodb\)/pgbouncer@unix\(\d+\):\d+ pgbouncer access "
                   r"from unix socket\n[^\n]* LOG \1: pgbouncer/pgbouncer@unix\(\d+\):\d+ login "
                   r"attempt: db=pgbouncer user=pgbouncer tls=no\b")
    assert p.log_text().count("pgbouncer access from unix socket") == 1


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: SHOW PEER_POOLS, SHOW STATE and KILL_CLIENT")
def test_access_control_newer_commands(pooler):
    p = pooler(pgbouncer={"stats_users": "md5user"})
    s = console(p, user="md5user")
    for what in EXPECTED:
        if what == "FDS":
            continue
        assert run(s, f"SHOW {what}")[2] == "SHOW"
    _refused_to_stats_user(s, ("KILL_CLIENT 1",))
    assert run(s, "SHOW STATE")[1][0]["value"] == "yes"  # nothing was paused


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: the extra_float_digits probe, KILL without a database, and the "
    "console's access check after authentication")
def test_newer_console_behaviours(pooler):
    p = pooler()
    c = console(p)
    assert run(c, "SHOW extra_float_digits")[1] == [{"extra_float_digits": "2"}]
    assert run(c, "SET extra_float_digits = 3")[2] == "SET"
    a = p.connect()
    assert run(c, "KILL")[2] == "KILL"  # every database but the console's
    with pytest.raises(psycopg.OperationalError, match="database removed"):
        a.execute("SELECT 1")
    assert run(c, "RESUME appdb")[2] == "RESUME"  # each database stays paused on its own
    assert p.connect().execute("SELECT 1").fetchone() == (1,)
    # A user in neither list is asked for its password first, then refused.
    w = pgwire.Conn.open("127.0.0.1", p.port)
    w.send(pgwire.m.startup({"user": "scramuser", "database": "pgbouncer"}))
    first = w.read_msg()
    assert first.type == "R"
    w.close()
    with pytest.raises(psycopg.OperationalError, match="not allowed"):
        console(p, user="scramuser")


def test_pause_resume_under_pgbench(pooler, pg):
    init = harness.pgbench_start(["-i", "-q", "-s", "1"], pg.port)
    assert init.wait(120) == 0, init.stderr.read()
    p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": 4})
    bench = harness.pgbench_start(["-c", "8", "-j", "2", "-T", "6", "-n"], p.port)
    c = console(p)
    harness.wait_until(lambda: (by_db(run(c, "SHOW STATS")[1], "appdb") or [{}])[0]
                       .get("total_xact_count", 0) > 50, 20, what="pgbench traffic")
    assert run(c, "PAUSE")[2] == "PAUSE"  # answers once every server is released
    pool = by_db(run(c, "SHOW POOLS")[1], "appdb")[0]
    assert pool["sv_active"] == 0 and pool["sv_idle"] == 0
    assert not by_db(run(c, "SHOW SERVERS")[1], "appdb")
    harness.wait_until(lambda: by_db(run(c, "SHOW POOLS")[1], "appdb")[0]["cl_waiting"] > 0,
                       10, what="clients queued while paused")
    with pytest.raises(psycopg.Error, match="already suspended/paused"):
        run(c, "PAUSE")
    assert run(c, "RESUME")[2] == "RESUME"
    out, err = bench.communicate(timeout=60)
    assert bench.returncode == 0, out + err
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert failed and int(failed.group(1)) == 0, out
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    assert processed and int(processed.group(1)) > 0, out
    stats = by_db(run(c, "SHOW STATS")[1], "appdb")[0]
    assert stats["total_wait_time"] > 0  # clients waited during the pause


def test_console_tick_runs_only_while_needed(pooler):
    """The console's 100 ms tick (answering waiting commands, keeping a pause applied) runs
    only while there is such work: an idle pooler wakes for the janitor (three times a
    second), not ten times more for the tick. PAUSE starts it, RESUME lets it stop."""
    p = pooler()
    c = console(p)

    def wakeups(secs):  # each sleep in epoll_wait is one voluntary context switch
        before = int(harness.proc_status(p.pid, "voluntary_ctxt_switches")[0])
        time.sleep(secs)
        return int(harness.proc_status(p.pid, "voluntary_ctxt_switches")[0]) - before

    time.sleep(0.3)  # the login's own wake-ups are over
    assert wakeups(2.0) <= 12  # about 6 from the janitor; the tick alone would add 20
    assert run(c, "PAUSE")[2] == "PAUSE"
    assert wakeups(2.0) >= 16
    assert run(c, "RESUME")[2] == "RESUME"
    time.sleep(0.3)  # the next tick finds nothing to do and stops
    assert wakeups(2.0) <= 12


def test_pause_db_waits_for_transaction(pooler):
    p = pooler(pgbouncer={"pool_mode": "transaction"})
    a = p.connect()
    other = p.connect(dbname="postgres", user="postgres")
    a.execute("BEGIN")
    a.execute("SELECT 1")
    done = threading.Event()

    def pause():
        run(console(p), "PAUSE appdb")
        done.set()

    t = threading.Thread(target=pause, daemon=True)
    t.start()
    assert not done.wait(1.0)  # the open transaction holds the pause back
    c = console(p)
    assert {r["name"]: r["paused"] for r in run(c, "SHOW DATABASES")[1]}["appdb"] == 1
    assert other.execute("SELECT 2").fetchone() == (2,)  # other databases keep working
    a.execute("COMMIT")
    assert done.wait(10)
    t.join(5)
    assert run(c, "RESUME appdb")[2] == "RESUME"
    assert a.execute("SELECT 3").fetchone() == (3,)


def test_database_pause_outlives_global_resume(pooler):
    """As PgBouncer: PAUSE db (or KILL db) and the global PAUSE/RESUME are independent. A
    global RESUME neither needs nor lifts a database's own pause."""
    p = pooler()
    c = console(p)
    assert run(c, "PAUSE appdb")[2] == "PAUSE"
    with pytest.raises(psycopg.Error, match="pooler is not paused/suspended"):
        run(c, "RESUME")

    def paused():
        return {r["name"]: r["paused"] for r in run(c, "SHOW DATABASES")[1]}["appdb"]

    assert paused() == 1
    assert run(c, "PAUSE")[2] == "PAUSE"
    assert run(c, "RESUME")[2] == "RESUME"
    assert paused() == 1
    other = p.connect(dbname="postgres", user="postgres")
    assert other.execute("SELECT 1").fetchone() == (1,)  # the global pause is gone
    assert run(c, "RESUME appdb")[2] == "RESUME"
    assert paused() == 0
    assert p.connect().execute("SELECT 2").fetchone() == (2,)


def test_kill_frees_the_pools(pooler):
    """As PgBouncer (kill_pool()): KILL db closes the clients of db (FATAL 08P01 "database
    removed") and its servers and frees its pools: they leave SHOW POOLS, SHOW STATS and the
    pools count of SHOW LISTS. The database stays in SHOW DATABASES, paused. A new client of
    db makes a new pool (counters from 0) and waits in its login, as that pool has no server
    parameters to greet it with, until RESUME db."""
    p = pooler(pgbouncer={"pool_mode": "session"})
    a = pgwire.Conn.connect("127.0.0.1", p.port, user="md5user", password="md5pass",
                            database="appdb")
    assert a.scalar("SELECT 1") == "1"
    b = p.connect(user="postgres")  # a second pool of appdb
    other = p.connect(dbname="postgres", user="postgres")
    for x in (b, other):
        x.execute("SELECT 1")
    c = console(p)

    def lists():
        return {r["list"]: r["items"] for r in run(c, "SHOW LISTS")[1]}

    assert sorted(r["user"] for r in by_db(run(c, "SHOW POOLS")[1], "appdb")) == \
        ["md5user", "postgres"]
    assert by_db(run(c, "SHOW STATS")[1], "appdb")[0]["total_query_count"] >= 2
    pools = lists()["pools"]
    assert run(c, "KILL appdb")[2] == "KILL"
    err = a.read_msg()
    assert (err.type, err.error.get("S"), err.code, err.error.get("M")) == \
        ("E", "FATAL", "08P01", "database removed")
    a.wait_closed()
    with pytest.raises(psycopg.OperationalError, match="database removed"):
        b.execute("SELECT 1")
    assert not by_db(run(c, "SHOW POOLS")[1], "appdb")
    assert not by_db(run(c, "SHOW STATS")[1], "appdb")
    assert not by_db(run(c, "SHOW SERVERS")[1], "appdb")
    assert not by_db(run(c, "SHOW CLIENTS")[1], "appdb")
    assert lists()["pools"] == pools - 2
    db = {r["name"]: r for r in run(c, "SHOW DATABASES")[1]}["appdb"]
    assert (db["paused"], db["current_connections"]) == (1, 0)
    assert other.execute("SELECT 2").fetchone() == (2,)

    t, box = harness.in_thread(lambda: p.connect().execute("SELECT 3").fetchone())
    harness.wait_until(lambda: by_db(run(c, "SHOW CLIENTS")[1], "appdb"), 10,
                       what="the new client in SHOW CLIENTS")
    t.join(1.0)
    assert t.is_alive() and not box  # no server, and none is made while paused
    [cl] = by_db(run(c, "SHOW CLIENTS")[1], "appdb")
    assert (cl["state"], cl["wait"], cl["wait_us"]) == ("waiting", 0, 0)  # no query yet
    [pool] = by_db(run(c, "SHOW POOLS")[1], "appdb")
    assert (pool["user"], pool["cl_waiting"], pool["sv_active"], pool["sv_idle"]) == \
        ("md5user", 1, 0, 0)
    stats = by_db(run(c, "SHOW STATS")[1], "appdb")[0]
    assert (stats["total_query_count"], stats["total_xact_count"]) == (0, 0)
    assert run(c, "RESUME appdb")[2] == "RESUME"
    assert {r["name"]: r["paused"] for r in run(c, "SHOW DATABASES")[1]}["appdb"] == 0


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: a client arriving while a KILLed database is paused starts a server "
    "login that the pause closes at once (\"closing because: pause mode\"); counted as a "
    "failed connect, it holds the pool back for server_login_retry (15 s) after RESUME")
def test_resume_after_kill_serves_waiting_clients_at_once(pooler):
    p = pooler(pgbouncer={"pool_mode": "session"})
    c = console(p)
    assert p.connect().execute("SELECT 1").fetchone() == (1,)
    assert run(c, "KILL appdb")[2] == "KILL"
    t, box = harness.in_thread(lambda: p.connect().execute("SELECT 3").fetchone())
    harness.wait_until(lambda: by_db(run(c, "SHOW CLIENTS")[1], "appdb"), 10,
                       what="the new client in SHOW CLIENTS")
    assert run(c, "RESUME appdb")[2] == "RESUME"
    t.join(5)
    assert box.get("result") == (3,), box
    assert p.connect(connect_timeout=5).execute("SELECT 4").fetchone() == (4,)


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: KILL_CLIENT and the id column of SHOW CLIENTS")
def test_kill_and_kill_client(pooler):
    p = pooler()
    a = p.connect()
    b = p.connect()
    other = p.connect(dbname="postgres", user="postgres", application_name="victim")
    for x in (a, b, other):
        x.execute("SELECT 1")
    c = console(p)
    assert run(c, "KILL appdb")[2] == "KILL"
    for x in (a, b):
        with pytest.raises(psycopg.OperationalError, match="database removed"):
            x.execute("SELECT 1")
    assert other.execute("SELECT 2").fetchone() == (2,)
    assert not by_db(run(c, "SHOW SERVERS")[1], "appdb")
    assert not by_db(run(c, "SHOW CLIENTS")[1], "appdb")
    assert {r["name"]: r["paused"] for r in run(c, "SHOW DATABASES")[1]}["appdb"] == 1
    assert run(c, "RESUME appdb")[2] == "RESUME"
    assert p.connect().execute("SELECT 3").fetchone() == (3,)
    victim = [r for r in run(c, "SHOW CLIENTS")[1] if r["application_name"] == "victim"]
    assert len(victim) == 1
    assert run(c, f"KILL_CLIENT {victim[0]['id']}")[2] == "KILL_CLIENT"
    with pytest.raises(psycopg.OperationalError, match="admin forced disconnect"):
        other.execute("SELECT 1")
    # a console session may end itself
    own = p.connect(user="postgres", dbname="pgbouncer", application_name="console_self",
                    cursor_factory=psycopg.ClientCursor)
    me = [r for r in run(own, "SHOW CLIENTS")[1] if r["application_name"] == "console_self"]
    assert [r["database"] for r in me] == ["pgbouncer"]
    with pytest.raises(psycopg.OperationalError):
        run(own, f"KILL_CLIENT {me[0]['id']}")
    assert run(c, "SHOW VERSION")[1]


def test_reconnect_and_wait_close(pooler):
    p = pooler(pgbouncer={"pool_mode": "transaction"})
    a = p.connect()
    a.execute("BEGIN")
    pid1 = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    b = p.connect()
    assert b.execute("SELECT 1").fetchone() == (1,)  # its server goes back idle
    c = console(p)
    mark = p.log_mark()
    assert run(c, "RECONNECT appdb")[2] == "RECONNECT"
    # the idle server goes at once, with PgBouncer's reason
    p.wait_for_log(r"S-0x[0-9a-f]+: appdb/md5user@\S+ closing because: database configuration "
                   r"changed \(age=", since=mark)
    sv = by_db(run(c, "SHOW SERVERS")[1], "appdb")
    assert [(r["remote_pid"], r["close_needed"]) for r in sv] == [(pid1, 1)]
    done = threading.Event()
    t = threading.Thread(target=lambda: (run(console(p), "WAIT_CLOSE appdb"), done.set()),
                         daemon=True)
    t.start()
    assert not done.wait(1.0)  # the server is still in its transaction
    assert a.execute("SELECT pg_backend_pid()").fetchone()[0] == pid1
    a.execute("COMMIT")  # released -> closed
    assert done.wait(10)
    t.join(5)
    p.wait_for_log(r"S-0x[0-9a-f]+: appdb/md5user@\S+ closing because: close_needed \(age=",
                   since=mark)
    b.close()
    pid2 = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert pid2 != pid1
    assert [r["close_needed"] for r in by_db(run(c, "SHOW SERVERS")[1], "appdb")] == [0]


def test_disable_enable(pooler):
    p = pooler()
    c = console(p)
    assert run(c, "DISABLE appdb")[2] == "DISABLE"
    with pytest.raises(psycopg.OperationalError, match='database "appdb" is disabled'):
        p.connect()
    assert {r["name"]: r["disabled"] for r in run(c, "SHOW DATABASES")[1]}["appdb"] == 1
    assert run(c, "ENABLE appdb")[2] == "ENABLE"
    assert p.connect().execute("SELECT 1").fetchone() == (1,)


def test_set_of_a_restart_only_setting_changes_nothing(pooler):
    """As PgBouncer: the tag says SET, the value and the listener stay (no error, so scripts
    written for PgBouncer go on)."""
    p = pooler()
    c = console(p)
    before = {r["key"]: r["value"] for r in run(c, "SHOW CONFIG")[1]}
    assert run(c, "SET listen_port = 1")[2] == "SET listen_port=1"
    assert run(c, "SET unix_socket_dir = '/nonexistent'")[2] == \
        "SET unix_socket_dir=/nonexistent"
    after = {r["key"]: r["value"] for r in run(c, "SHOW CONFIG")[1]}
    assert after == before
    assert p.connect().execute("SELECT 1").fetchone() == (1,)


@pytest.mark.differs_from_pgbouncer_1_18(
    "sluice only: a NOTICE and a log line say that SET of a restart-only setting is ignored")
def test_set_of_a_restart_only_setting_says_so(pooler):
    p = pooler()
    c = console(p)
    notices = []
    c.add_notice_handler(lambda d: notices.append((d.severity, d.message_primary)))
    assert run(c, "SET listen_port = 1")[2] == "SET listen_port=1"
    assert notices == [("NOTICE", "listen_port can only be changed by a restart; SET ignored")]
    p.wait_for_log(r"WARNING SET listen_port ignored: it takes effect only at a restart\n")


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: RELOAD answering an error when the config does not load")
def test_set_and_reload(pooler):
    p = pooler()
    c = console(p)
    assert run(c, "SET default_pool_size = 7")[2] == "SET default_pool_size=7"
    assert run(c, "set query_timeout to '2.5'")[2] == "SET query_timeout=2.5"
    config = _config(c)
    assert config["default_pool_size"] == "7" and config["query_timeout"] == "2.5"
    assert {r["name"]: r["pool_size"] for r in run(c, "SHOW DATABASES")[1]}["appdb"] == 7
    with pytest.raises(psycopg.Error, match="SET failed"):
        run(c, "SET default_pool_size = 'many'")
    assert run(c, "RELOAD")[2] == "RELOAD"
    mark = p.log_mark()
    with open(p.ini_path, "a") as f:
        f.write("\n[pgbouncer]\nthis line is broken\n")
    with pytest.raises(psycopg.Error) as e:
        run(c, "RELOAD")
    assert e.value.diag.sqlstate == "F0000"
    assert e.value.diag.message_primary == "RELOAD failed, see logs for additional details"
    # PgBouncer's lines, which log collectors match
    p.wait_for_log(r"WARNING config file loading failed\n.*ERROR RELOAD Failed, see logs for "
                   r"more details\n", since=mark)
    assert run(c, "SHOW VERSION")[1]


def _config(c):
    return {r["key"]: r["value"] for r in run(c, "SHOW CONFIG")[1]}


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 matches ini keys exactly: Pool_Mode stops the load (\"unknown parameter: "
    "pgbouncer/Pool_Mode\", FATAL cannot load config file)")
def test_ini_keys_in_any_case(pooler):
    """sluice matches [pgbouncer] keys without regard to case, so every file PgBouncer loads
    still loads the same; SHOW CONFIG keeps the lower-case names. (Keys inside [databases]
    and [users] values are case-sensitive, in both.)"""
    p = pooler(pgbouncer={"Pool_Mode": "transaction", "DEFAULT_POOL_SIZE": "7"})
    config = _config(console(p))
    assert (config["pool_mode"], config["default_pool_size"]) == ("transaction", "7")
    assert "Pool_Mode" not in config


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 matches SET names exactly: SET Default_Pool_Size = 5 is ERROR \"SET failed\"")
def test_set_names_in_any_case(pooler):
    """Console SET takes a setting name in any case; the tag echoes it as typed."""
    p = pooler()
    c = console(p)
    assert run(c, "SET Default_Pool_Size = 5")[2] == "SET Default_Pool_Size=5"
    assert run(c, "SET POOL_MODE TO 'transaction'")[2] == "SET POOL_MODE=transaction"
    config = _config(c)
    assert (config["pool_mode"], config["default_pool_size"]) == ("transaction", "5")
    assert {r["name"]: r["pool_size"] for r in run(c, "SHOW DATABASES")[1]}["appdb"] == 5


def test_signals_pause_and_resume(pooler):
    p = pooler()
    c = console(p)
    p.signal(signal.SIGUSR1)
    p.wait_for_log(r"LOG got SIGUSR1, pausing all activity\n")
    with pytest.raises(psycopg.Error, match="already suspended/paused"):
        run(c, "PAUSE")
    mark = p.log_mark()
    p.signal(signal.SIGUSR1)
    p.wait_for_log(r"LOG got SIGUSR1, but already paused/suspended\n", since=mark)
    p.signal(signal.SIGUSR2)
    p.wait_for_log(r"LOG got SIGUSR2, continuing from PAUSE\n", since=mark)
    assert p.connect().execute("SELECT 1").fetchone() == (1,)
    mark = p.log_mark()
    p.signal(signal.SIGUSR2)
    p.wait_for_log(r"LOG got SIGUSR2, but not paused/suspended\n", since=mark)
    # SIGUSR2 also ends a SUSPEND (PgBouncer's log lines throughout)
    assert run(c, "SUSPEND")[2] == "SUSPEND"
    p.signal(signal.SIGUSR2)
    p.wait_for_log(r"LOG got SIGUSR2, continuing from SUSPEND\n", since=mark)
    assert p.connect().execute("SELECT 2").fetchone() == (2,)


def test_suspend_resume(pooler):
    p = pooler()
    a = p.connect()
    a.execute("SELECT 1")
    c = console(p)
    assert run(c, "SUSPEND")[2] == "SUSPEND"
    with pytest.raises(psycopg.Error, match="already suspended/paused"):
        run(c, "SUSPEND")
    assert run(c, "RESUME")[2] == "RESUME"
    assert a.execute("SELECT 2").fetchone() == (2,)
    assert p.connect().execute("SELECT 3").fetchone() == (3,)  # accepting again


def _raw_client(p):
    return pgwire.Conn.connect("127.0.0.1", p.port, user="md5user",
                               password=harness.PASSWORDS["md5user"], database="appdb")


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18's SUSPEND stops reading a client inside a transaction at once, so a "
    "client queued for its server waits until suspend_timeout and is closed")
def test_suspend_serves_the_queue_first(pooler):
    """A queued client holds the request it sent. SUSPEND (from an operator, or from a
    PgBouncer taking over) serves it before answering: the client inside a transaction goes
    on until its COMMIT releases the server the queue waits for, the queued request runs,
    and each client stops being read once quiet (a query sent after SUSPEND waits for
    RESUME). Nothing is lost."""
    p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": "1",
                          "suspend_timeout": "5"})
    a, b = _raw_client(p), _raw_client(p)
    a.query("BEGIN")
    assert a.scalar("SELECT 1") == "1"  # a holds the pool's only server
    b.send(pgwire.m.query("SELECT 42"))
    harness.wait_until(lambda: [r["cl_waiting"] for r in p.show("POOLS")
                                if r["database"] == "appdb"] == [1], 10, what="b queued")
    c = console(p)
    answer = []
    suspend = threading.Thread(target=lambda: answer.append(run(c, "SUSPEND")[2]))
    suspend.start()
    b.expect_nothing(0.5)  # still queued
    assert suspend.is_alive()  # SUSPEND waits for the queue
    a.query("COMMIT")  # a is still read: its transaction ends, the server goes to b
    assert [pgwire.parse_data_row(m.body) for m in b.read_until_rfq(timeout=10)
            if m.type == "D"] == [["42"]]
    suspend.join(10)
    assert answer == ["SUSPEND"]
    a.send(pgwire.m.query("SELECT 2"))
    b.send(pgwire.m.query("SELECT 3"))
    a.expect_nothing(0.5)  # both stopped: their queries wait in the kernel for RESUME
    b.expect_nothing(0.1)
    assert run(c, "RESUME")[2] == "RESUME"
    for conn, want in ((a, "2"), (b, "3")):
        assert [pgwire.parse_data_row(m.body) for m in conn.read_until_rfq(timeout=10)
                if m.type == "D"] == [[want]]


def test_suspend_timeout_with_a_queue_keeps_the_transaction(pooler):
    """A transaction that does not end within suspend_timeout keeps the client queued for
    its server waiting: at the timeout the queued client is closed (FATAL suspend_timeout,
    as PgBouncer) and the SUSPEND completes; the client inside the transaction is only
    stopped and goes on with it after RESUME."""
    p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": "1",
                          "suspend_timeout": "1"})
    a, b = _raw_client(p), _raw_client(p)
    a.query("BEGIN")
    a.query("CREATE TEMP TABLE t (x int)")
    b.send(pgwire.m.query("SELECT 42"))
    harness.wait_until(lambda: [r["cl_waiting"] for r in p.show("POOLS")
                                if r["database"] == "appdb"] == [1], 10, what="b queued")
    c = console(p)
    assert run(c, "SUSPEND")[2] == "SUSPEND"
    got = b.wait_closed(timeout=10)
    assert [m.error["M"] for m in got if m.type == "E"] == ["suspend_timeout"], got
    a.send(pgwire.m.query("INSERT INTO t VALUES (7)"))
    a.expect_nothing(0.3)
    assert run(c, "RESUME")[2] == "RESUME"
    a.read_until_rfq(timeout=10)
    assert a.scalar("SELECT x FROM t") == "7"  # the same transaction, on the same backend
    a.query("COMMIT")


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18's SUSPEND closes the clients queued for a server at suspend_timeout")
def test_suspend_and_resume_under_load(pooler, tmp_path):
    """SUSPEND and RESUME five times while pgbench -c 8 runs three-statement transactions
    through a pool of 2 (six clients queued at any moment): each SUSPEND serves the queue
    and answers, nothing moves while suspended, and pgbench ends with every client alive and
    no failed transaction."""
    p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": "2"})
    script = tmp_path / "xact.sql"
    script.write_text("BEGIN;\nSELECT 1;\nSELECT 2;\nCOMMIT;\n")
    bench = harness.pgbench_start(["-n", "-f", script, "-c", "8", "-j", "2", "-T", "6"],
                                  p.port)

    c = console(p)  # SUSPEND takes no new connection: the same session looks

    def xacts():
        return next((r["total_xact_count"] for r in run(c, "SHOW STATS")[1]
                     if r["database"] == "appdb"), 0)

    def queued():
        return sum(r["cl_waiting"] for r in run(c, "SHOW POOLS")[1]
                   if r["database"] == "appdb")

    try:
        for _ in range(5):
            harness.wait_until(lambda: queued() > 0, 10, what="clients queued")
            assert run(c, "SUSPEND")[2] == "SUSPEND"
            frozen = xacts()
            time.sleep(0.2)
            assert xacts() == frozen  # suspended: no transaction moves
            assert run(c, "RESUME")[2] == "RESUME"
            harness.wait_until(lambda: xacts() > frozen, 10, what="transactions after RESUME")
        out, err = bench.communicate(timeout=30)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.communicate()
    assert bench.returncode == 0, out + err + p.log_text()
    assert re.search(r"number of failed transactions: 0\b", out), out
    assert "aborted" not in out + err, out + err
    assert "suspend_timeout" not in p.log_text()


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: its FATAL goes inside the DataRow it was sending", strict=False)
def test_suspend_timeout_drops_a_client_that_does_not_read(pooler):
    """SUSPEND waits for every socket's pending output to be sent; a client that stops
    reading in the middle of a large result is closed after suspend_timeout and the SUSPEND
    completes. Everyone else goes on after RESUME. The client was sent part of a row, so it
    gets no FATAL (it would land inside the row): its stream ends there."""
    p = pooler(pgbouncer={"suspend_timeout": "1"})
    stuck = pgwire.Conn.connect("127.0.0.1", p.port, user="md5user",
                                password=harness.PASSWORDS["md5user"], database="appdb")
    # ~64 MiB of rows, never read: the kernel buffers fill, the rest waits in the pooler
    stuck.sock.sendall(pgwire.m.query(
        "SELECT repeat('x', 1048576) FROM generate_series(1, 64)"))

    harness.wait_until(p.output_held, 10, what="output waiting in the pooler for the client")
    c = console(p)
    t0 = time.monotonic()
    assert run(c, "SUSPEND")[2] == "SUSPEND"
    took = time.monotonic() - t0
    assert 0.9 <= took < 8, took
    # PgBouncer's lines: the server, then its client, which is told why
    p.wait_for_log(r"LOG S-0x[0-9a-f]+: appdb/md5user@127\.0\.0\.1:\d+ closing because: "
                   r"suspend_timeout \(age=\d+s\)\n.*LOG C-0x[0-9a-f]+: appdb/md5user@127\.0\.0\.1:"
                   r"\d+ closing because: suspend_timeout \(age=\d+s\)\n.*WARNING C-0x[0-9a-f]+: "
                   r"appdb/md5user@127\.0\.0\.1:\d+ pooler error: suspend_timeout\n")
    # whole messages (RowDescription, DataRows), then part of a DataRow made only of the
    # row's own bytes; had the stream stopped between messages, the FATAL would close it
    msgs, part = pgwire.split_stream(stuck.raw_until_closed(10))
    types = [t for t, _ in msgs]
    if part:
        assert types and set(types) <= {"T", "D"} and part[:1] == b"D", (types[-3:], part[:20])
        assert set(part[11:]) <= {ord("x")}, "not the row's own bytes after its start"
    else:
        assert types[-1] == "E" and pgwire.parse_error(msgs[-1][1])["M"] == "suspend_timeout"
    assert run(c, "RESUME")[2] == "RESUME"
    assert p.connect().execute("SELECT 1").fetchone() == (1,)
    stuck.sock.close()


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: SHOW STATE")
def test_show_state_follows_pause_and_suspend(pooler):
    p = pooler()
    c = console(p)

    def state():
        return {r["key"]: r["value"] for r in run(c, "SHOW STATE")[1]}

    assert state() == {"active": "yes", "paused": "no", "suspended": "no"}
    assert run(c, "PAUSE")[2] == "PAUSE"
    assert state() == {"active": "no", "paused": "yes", "suspended": "no"}
    assert run(c, "RESUME")[2] == "RESUME"
    assert run(c, "SUSPEND")[2] == "SUSPEND"
    assert state() == {"active": "no", "paused": "no", "suspended": "yes"}
    assert run(c, "RESUME")[2] == "RESUME"
    p.signal(signal.SIGUSR1)
    harness.wait_until(lambda: state()["paused"] == "yes", 10, what="SIGUSR1 pause")
    p.signal(signal.SIGUSR2)
    harness.wait_until(lambda: state()["active"] == "yes", 10, what="SIGUSR2 resume")


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: SHUTDOWN WAIT_FOR_CLIENTS")
def test_shutdown_wait_for_clients(pooler):
    p = pooler()
    a = p.connect()
    a.execute("SELECT 1")
    p.expect_exit = True
    assert p.admin("SHUTDOWN WAIT_FOR_CLIENTS") == []
    p.wait_for_log(r"SHUTDOWN WAIT_FOR_CLIENTS command issued")
    with pytest.raises(psycopg.OperationalError):
        p.connect()
    assert a.execute("SELECT 2").fetchone() == (2,)
    assert p.alive()
    a.close()
    harness.wait_until(lambda: not p.alive(), 15, what="exit after the last client left")
    assert p.returncode == 0, p.full_log()


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: parse and bind rates in the stats line")
def test_stats_log_line(pooler):
    p = pooler(pgbouncer={"stats_period": "1", "log_stats": "1"})
    a = p.connect()
    for _ in range(20):
        a.execute("SELECT 1")
    m = p.wait_for_log(r"LOG stats: (\d+) xacts/s, (\d+) queries/s, (\d+) client parses/s, "
                       r"(\d+) server parses/s, (\d+) binds/s, in (\d+) B/s, out (\d+) B/s, "
                       r"xact (\d+) us, query (\d+) us, wait (\d+) us", timeout=10)
    assert m


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: SHUTDOWN WAIT_FOR_SERVERS")
def test_shutdown_wait_for_servers(pooler):
    p = pooler(pgbouncer={"pool_mode": "transaction"})
    a = p.connect()
    a.execute("BEGIN")
    a.execute("SELECT 1")
    p.expect_exit = True
    assert p.admin("SHUTDOWN WAIT_FOR_SERVERS") == []
    p.wait_for_log(r"SHUTDOWN WAIT_FOR_SERVERS command issued")
    assert a.execute("SELECT 2").fetchone() == (2,)  # the open transaction may finish
    assert p.alive()
    a.execute("COMMIT")  # the last server is released (and closed): the process exits
    harness.wait_until(lambda: not p.alive(), 15, what="exit after the last server")
    assert p.returncode == 0, p.full_log()
    assert p.log_text().endswith("LOG server connections dropped, exiting\n"), p.full_log()


def test_shutdown_immediate(pooler):
    p = pooler()
    p.expect_exit = True
    with pytest.raises(psycopg.OperationalError):
        p.admin("SHUTDOWN")  # no answer: the connection closes with the process
    harness.wait_until(lambda: not p.alive(), 15, what="exit on SHUTDOWN")
    assert p.returncode == 0, p.full_log()


def test_idle_auto_database_leaves_show_databases(pooler):
    """An auto-database (from "*") without clients or servers drops out of SHOW DATABASES and
    the SHOW LISTS count at the next janitor pass, as PgBouncer moves it to its idle list,
    though it is only dropped after autodb_idle_timeout: its pool stays in SHOW POOLS, and a
    console command or a client naming it finds it again."""
    p = pooler(pgbouncer={"pool_mode": "session"})
    c = console(p)

    def names():
        return [r["name"] for r in run(c, "SHOW DATABASES")[1]]

    def listed():
        return {r["list"]: r["items"] for r in run(c, "SHOW LISTS")[1]}["databases"]

    configured = names()
    assert "template1" not in configured and listed() == len(configured)
    x = p.connect(user="postgres", dbname="template1")
    x.execute("SELECT 1")
    assert "template1" in names() and listed() == len(configured) + 1
    x.close()
    assert run(c, "RECONNECT template1")[2] == "RECONNECT"  # closes its idle server
    harness.wait_until(lambda: "template1" not in names(), 10, what="template1 left out")
    assert listed() == len(configured)
    assert ("template1", "postgres") in [(r["database"], r["user"])
                                         for r in run(c, "SHOW POOLS")[1]]
    # A console command registers a new one: PgBouncer's line, with the session's prefix.
    mark = p.log_mark()
    assert run(c, "PAUSE autop")[2] == "PAUSE"
    p.wait_for_log(r"LOG C-0x[0-9a-f]+: pgbouncer/postgres@127\.0\.0\.1:\d+ registered new "
                   r"auto-database: autop\n", since=mark)
    harness.wait_until(lambda: "autop" not in names(), 10, what="autop left out")
    assert run(c, "RESUME autop")[2] == "RESUME"  # still there, and still paused until now
    y = p.connect(user="postgres", dbname="template1")
    assert y.execute("SELECT 1").fetchone() == (1,)
    assert "template1" in names()


def test_console_counts_once_per_session(pooler):
    """PgBouncer counts a console session's first query only (one query, one transaction of
    the "pgbouncer" database): later queries of the session count nothing."""
    p = pooler()

    def counts(conn):
        row = by_db(run(conn, "SHOW STATS_TOTALS")[1], "pgbouncer")[0]
        return row["xact_count"], row["query_count"]

    c = console(p)
    assert counts(c) == (1, 1)
    for _ in range(3):
        run(c, "SHOW VERSION")
    assert counts(c) == (1, 1)
    d = console(p)
    run(d, "SHOW LISTS")
    run(d, "SHOW LISTS")
    assert counts(c) == (2, 2) and counts(d) == (2, 2)
    row = by_db(run(c, "SHOW STATS_TOTALS")[1], "pgbouncer")[0]
    assert (row["bytes_received"], row["bytes_sent"], row["query_time"]) == (0, 0, 0)
