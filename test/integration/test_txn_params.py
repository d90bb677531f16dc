"""Client parameters in transaction mode: several clients share one server, and each keeps
seeing its own application_name, TimeZone, DateStyle, IntervalStyle and client_encoding,
whether they came in the startup packet, in `options`, or from a SET outside a
transaction."""

import os
import re

import psycopg
import pytest

import pgwire

TXN1 = {"pool_mode": "transaction", "default_pool_size": 1}
SETTINGS = ("application_name", "TimeZone", "DateStyle", "IntervalStyle", "client_encoding")
TS = "'2020-01-01 00:00:00+00'::timestamptz::text"
IV = "'1 day 2 hours'::interval::text"
SHOW_ALL = ("SELECT pg_backend_pid(), " +
            ", ".join(f"current_setting('{s}')" for s in SETTINGS) + f", {TS}, {IV}")

ALPHA = {"application_name": "alpha", "TimeZone": "UTC", "DateStyle": "ISO, MDY",
         "IntervalStyle": "postgres", "client_encoding": "UTF8"}
BETA = {"application_name": "beta", "TimeZone": "America/New_York", "DateStyle": "SQL, DMY",
        "IntervalStyle": "iso_8601", "client_encoding": "LATIN1"}
GAMMA = {"application_name": "gamma", "TimeZone": "Europe/Berlin",
         "DateStyle": "Postgres, MDY", "IntervalStyle": "sql_standard",
         "client_encoding": "UTF8"}
# how '2020-01-01 00:00:00+00' and '1 day 2 hours' render under each
RENDER = {"alpha": ("2020-01-01 00:00:00+00", "1 day 02:00:00"),
          "beta": ("31/12/2019 19:00:00 EST", "P1DT2H"),
          "gamma": ("Wed Jan 01 01:00:00 2020 CET", "1 2:00:00")}


def _show(conn):
    """(backend pid, {setting: value}, timestamp text, interval text), in one transaction,
    for a psycopg connection."""
    with conn.transaction():
        row = conn.execute(SHOW_ALL).fetchone()
    return row[0], dict(zip(SETTINGS, row[1:6])), row[6], row[7]


def _show_raw(c):
    """Same for a pgwire connection (a simple-query transaction block)."""
    rows = c.query(f"BEGIN; {SHOW_ALL}; COMMIT")
    row = rows[0]
    return int(row[0]), dict(zip(SETTINGS, row[1:6])), row[6], row[7]


def _raw(p, params):
    return pgwire.Conn.connect(port=p.port, user="md5user", password="md5pass",
                               database="appdb", params=params)


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: IntervalStyle as a tracked parameter")
def test_startup_parameters_replayed(pooler, pg):
    """Values sent in the startup packet follow each client onto the shared server."""
    p = pooler(pgbouncer=TXN1)
    a = _raw(p, ALPHA)
    b = _raw(p, BETA)
    try:
        for conn, want in ((a, ALPHA), (b, BETA)):  # what each was told at login
            for k, v in want.items():
                assert conn.parameters.get(k) == v, (want["application_name"], k)
        pids = set()
        for _ in range(5):  # interleaved transactions, all on the one server
            for conn, want in ((a, ALPHA), (b, BETA), (a, ALPHA), (a, ALPHA), (b, BETA)):
                pid, vals, ts, iv = _show_raw(conn)
                pids.add(pid)
                assert vals == want
                assert (ts, iv) == RENDER[want["application_name"]]
        assert len(pids) == 1
    finally:
        a.close(terminate=True)
        b.close(terminate=True)


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: IntervalStyle as a tracked parameter")
def test_welcome_carries_each_clients_values(pooler, pg):
    """The welcome's ParameterStatus values are the client's own, and the pool's for the
    rest, whatever the clients before it sent (sluice builds it once per distinct set of
    values and reuses it)."""
    p = pooler(pgbouncer=TXN1)
    server_tz = pg.sql("SHOW TimeZone")[0][0]
    conns = []
    try:
        for want in (ALPHA, BETA, ALPHA, {}, BETA, {}):
            c = _raw(p, want)
            conns.append(c)
            for k in SETTINGS:
                if k in want:
                    assert c.parameters.get(k) == want[k], (want, k)
            if not want:  # nothing of its own: the server's defaults, nobody else's values
                assert c.parameters.get("TimeZone") == server_tz
                assert c.parameters.get("application_name", "") == ""
                assert c.parameters.get("DateStyle") == "ISO, MDY"
            pid, vals, ts, iv = _show_raw(c)
            for k, v in want.items():
                assert vals[k] == v, (want, k)
    finally:
        for c in conns:
            c.close(terminate=True)


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: the options startup parameter")
def test_parameters_in_options(pooler, pg):
    """`options=-c name=value` for tracked parameters (libpq's PGOPTIONS, psycopg's options=)
    is accepted and replayed like startup-packet values (spec 1a, client startup packet)."""
    p = pooler(pgbouncer=TXN1)
    a = p.connect(application_name="alpha",
                  options="-c TimeZone=UTC -c DateStyle=ISO,MDY -c IntervalStyle=postgres")
    b = p.connect(application_name="beta", client_encoding="LATIN1",
                  options="-c TimeZone=America/New_York --DateStyle=SQL,DMY "
                          "-c IntervalStyle=iso_8601")
    c = _raw(p, GAMMA)
    try:
        pids = set()
        for _ in range(3):
            for conn, want in ((a, ALPHA), (b, BETA)):
                pid, vals, ts, iv = _show(conn)
                pids.add(pid)
                assert vals == want
                assert (ts, iv) == RENDER[want["application_name"]]
                assert conn.info.parameter_status("TimeZone") == want["TimeZone"]
            pid, vals, ts, iv = _show_raw(c)
            pids.add(pid)
            assert vals == GAMMA
            assert (ts, iv) == RENDER["gamma"]
        assert len(pids) == 1
    finally:
        c.close(terminate=True)


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: the options startup parameter")
def test_parameter_sent_on_its_own_wins_over_options(pooler, pg):
    """PostgreSQL applies `options` first and the parameters sent on their own after it, so
    those win (`PGOPTIONS='-c application_name=x' psql` runs as psql, whose application_name
    is sent on its own); within `options` the last -c of a name wins. Compared with a direct
    connection."""
    p = pooler(pgbouncer=TXN1)
    cases = [({"options": "-c application_name=fromopt", "application_name": "direct"},
              "application_name"),
             ({"options": "-c client_encoding=LATIN1", "client_encoding": "UTF8"},
              "client_encoding"),
             ({"options": "-c TimeZone=UTC -c TimeZone=Asia/Tokyo"}, "TimeZone"),
             ({"options": "-c TimeZone=Asia/Tokyo", "TimeZone": "Europe/Berlin"}, "TimeZone")]
    for params, name in cases:
        got = []
        for port in (pg.port, p.port):
            c = pgwire.Conn.connect(port=port, user="md5user", password="md5pass",
                                    database="appdb", params=params)
            got.append((c.parameters[name], c.query(f"BEGIN; SHOW {name}; COMMIT")[0][0]))
            c.close(terminate=True)
        assert got[1] == got[0], params


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: the options startup parameter")
def test_unknown_parameter_in_options_refused(pooler):
    """A parameter in options that is neither tracked nor in ignore_startup_parameters:
    PgBouncer's WARNING with the value, then the FATAL to the client."""
    p = pooler(pgbouncer=TXN1)
    with pytest.raises(psycopg.OperationalError,
                       match="unsupported startup parameter in options: work_mem"):
        p.connect(options="-c work_mem=64MB")
    p.wait_for_log(r"WARNING C-0x[0-9a-f]+: \(nodb\)/\(nouser\)@127\.0\.0\.1:\d+ unsupported "
                   r"startup parameter in options: work_mem=64MB\n")


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: IntervalStyle as a tracked parameter")
def test_set_outside_transaction_follows_the_client(pooler, pg):
    p = pooler(pgbouncer=TXN1)
    defaults = {s: pg.sql(f"SHOW {s}", db="appdb")[0][0] for s in SETTINGS[1:]}
    a = p.connect(application_name="alpha")
    b = p.connect(application_name="beta", client_encoding="LATIN1")
    b.execute("SET TimeZone = 'America/New_York'")  # autocommit: outside a transaction
    b.execute("SET DateStyle = 'SQL, DMY'")
    b.execute("SET IntervalStyle = 'iso_8601'")
    want_a = dict(defaults, application_name="alpha", client_encoding="UTF8")
    pid_a, vals, _, _ = _show(a)
    assert vals == want_a
    pid, vals, ts, iv = _show(b)
    assert pid == pid_a  # one shared server
    assert vals == BETA
    assert (ts, iv) == RENDER["beta"]

    a.execute("SET TimeZone = 'Asia/Tokyo'")
    a.execute("SET application_name = 'alpha2'")
    assert a.info.parameter_status("TimeZone") == "Asia/Tokyo"
    # b uses the server in between, with its own values
    pid, vals, ts, _ = _show(b)
    assert pid == pid_a
    assert vals == BETA
    assert ts == "31/12/2019 19:00:00 EST"
    # a's SET followed it to its next transaction
    pid, vals, ts, _ = _show(a)
    assert pid == pid_a
    assert vals == dict(want_a, TimeZone="Asia/Tokyo", application_name="alpha2")
    assert ts.endswith("+09")
    # a SET of b's does not leak into a's transactions
    b.execute("SET DateStyle = 'German'")
    b.execute("SET IntervalStyle = 'sql_standard'")
    pid, vals, _, _ = _show(a)
    assert vals == dict(want_a, TimeZone="Asia/Tokyo", application_name="alpha2")
    pid, vals, ts, iv = _show(b)
    assert vals == dict(BETA, DateStyle="German, DMY", IntervalStyle="sql_standard")
    assert (ts, iv) == ("31.12.2019 19:00:00 EST", "1 2:00:00")
    # a SET inside a committed transaction sticks too (it is session state)
    with a.transaction():
        a.execute("SET TimeZone = 'Europe/Lisbon'")
    _show(b)
    assert _show(a)[1]["TimeZone"] == "Europe/Lisbon"
    # SET LOCAL does not outlive its transaction
    with a.transaction():
        a.execute("SET LOCAL TimeZone = 'Pacific/Auckland'")
        assert a.execute("SHOW TimeZone").fetchone()[0] == "Pacific/Auckland"
    _show(b)
    assert _show(a)[1]["TimeZone"] == "Europe/Lisbon"
    # nor does a SET in a rolled-back transaction
    try:
        with a.transaction():
            a.execute("SET TimeZone = 'Africa/Cairo'")
            a.execute("SELECT 1/0")
    except psycopg.errors.DivisionByZero:
        pass
    _show(b)
    assert _show(a)[1]["TimeZone"] == "Europe/Lisbon"
    assert _show(b)[1]["TimeZone"] == "America/New_York"
    a.close()
    b.close()


def test_next_client_does_not_inherit_settings(pooler, pg):
    """A client that sets things and leaves: the next client on that server sees the
    server's defaults, not the leftovers."""
    p = pooler(pgbouncer=TXN1)
    defaults = {s: pg.sql(f"SHOW {s}", db="appdb")[0][0] for s in SETTINGS[1:]}
    assert defaults["TimeZone"] != "Asia/Tokyo"
    a = p.connect(application_name="alpha")
    a.execute("SET TimeZone = 'Asia/Tokyo'")
    a.execute("SET DateStyle = 'German'")
    a.execute("SET application_name = 'leftover'")
    pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    a.close()
    with p.connect(application_name="next") as c:
        pid2, vals, _, _ = _show(c)
        assert pid2 == pid
        assert vals == dict(defaults, application_name="next", client_encoding="UTF8")


def test_application_name_add_host(pooler):
    """application_name_add_host: the client's application_name (else "app") gets " - " and
    its address, PgBouncer's text: host:port over TCP, unix(<pid>@<host name>):<port> over
    the unix socket. The server, SHOW CLIENTS and the client's ParameterStatus all see it,
    and in transaction mode each client keeps its own on a shared server."""
    p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": 1,
                          "application_name_add_host": 1})
    q = "SELECT current_setting('application_name')"
    with p.connect(application_name="myapp") as a, p.connect() as b:
        ports = {r["application_name"]: r["port"] for r in p.show("CLIENTS")
                 if r["database"] == "appdb"}
        name_a = next(n for n in ports if n.startswith("myapp - "))
        assert name_a == f"myapp - 127.0.0.1:{ports[name_a]}"
        name_b = next(n for n in ports if n.startswith("app - "))
        assert name_b == f"app - 127.0.0.1:{ports[name_b]}"
        assert a.execute(q).fetchone() == (name_a,)
        assert b.execute(q).fetchone() == (name_b,)
        assert a.execute(q).fetchone() == (name_a,)  # same server, its own name back
        assert a.info.parameter_status("application_name") == name_a
    with psycopg.connect(host=p.dir, port=p.port, user="md5user", password="md5pass",
                         dbname="appdb", application_name="ux") as u:
        name = u.execute(q).fetchone()[0]
        assert re.fullmatch(rf"ux - unix\({os.getpid()}@\S+\):{p.port}", name), name


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 treats an empty application_name as unset: the client gets the previous "
    "client's")
def test_no_application_name_is_a_value_too(pooler, pg):
    """A client that sent no application_name has "" (the server's own), and so has one that
    SET it to '': neither inherits the name the previous client left on the shared server,
    in its own queries or in pg_stat_activity."""
    p = pooler(pgbouncer=TXN1)
    named = p.connect(application_name="beta")
    plain = p.connect()
    emptied = p.connect(application_name="gamma")
    emptied.execute("SET application_name = ''")
    for c in (plain, emptied):
        named.execute("SELECT 1")  # the server last ran with "beta"
        with c.transaction():
            pid, name = c.execute("SELECT pg_backend_pid(), current_setting('application_name')"
                                  ).fetchone()
            seen = pg.sql(f"SELECT application_name FROM pg_stat_activity WHERE pid = {pid}")
        assert name == ""
        assert seen == [("",)]
        assert c.info.parameter_status("application_name") == ""
    assert named.execute("SHOW application_name").fetchone()[0] == "beta"


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18: RESET ALL / DISCARD ALL give the server's values, not the client's")
def test_reset_gives_back_the_startup_values(pooler, pg):
    """RESET ALL (asyncpg's pool runs it at every release), DISCARD ALL and RESET of one
    parameter bring back what the client sent at startup, as on a direct connection, and
    the client is told only what changed for it; a client in between on the same server
    keeps its own values throughout."""
    p = pooler(pgbouncer=TXN1)
    a = _raw(p, ALPHA | {"TimeZone": "Asia/Tokyo"})
    b = _raw(p, BETA)
    direct = _raw(pg, ALPHA | {"TimeZone": "Asia/Tokyo"})

    def run(c, sql):
        """The reply's ParameterStatus pairs (as a set: PostgreSQL has its own order) and its
        rows without the backend pid."""
        c.send(pgwire.m.query(sql))
        msgs = c.read_until_rfq(1)
        status = sorted(pgwire.parse_parameter_status(x.body) for x in msgs if x.type == "S")
        rows = [pgwire.parse_data_row(x.body)[1:] for x in msgs if x.type == "D"]
        return status, rows

    try:
        in_block = False
        for sql in ("SET TimeZone = 'Europe/Berlin'", "SET application_name = 'changed'",
                    "SET DateStyle = 'German'", "RESET ALL", SHOW_ALL,
                    "SET TimeZone = 'Europe/Berlin'", "DISCARD ALL", SHOW_ALL,
                    "SET TimeZone = 'Europe/Berlin'", "SET application_name = 'changed'",
                    "RESET TimeZone", SHOW_ALL, "BEGIN", "RESET ALL", SHOW_ALL, "COMMIT",
                    "BEGIN", "SET TimeZone = 'Europe/Berlin'", "RESET ALL", "ROLLBACK",
                    SHOW_ALL):
            want = run(direct, sql)
            got = run(a, sql)
            assert got == want, sql
            in_block = sql == "BEGIN" or (in_block and sql not in ("COMMIT", "ROLLBACK"))
            if not in_block:  # b in between on the same server, with its own values
                pid, vals, ts, iv = _show_raw(b)
                assert vals == BETA and (ts, iv) == RENDER["beta"]
        _, vals, ts, _ = _show_raw(a)
        assert vals == ALPHA | {"TimeZone": "Asia/Tokyo"}
        assert ts.endswith("+09")
    finally:
        for c in (a, b, direct):
            c.close(terminate=True)


def test_new_default_reaches_new_clients(pooler, pg):
    """ALTER ROLE ... SET TimeZone after the pool's first login: once the pool opens a new
    server (here after RECONNECT), a new client is welcomed with the new default and runs
    with it, as on a direct connection; a client from before keeps the value it was given,
    as a direct session would."""
    p = pooler(pgbouncer=TXN1)
    old_tz = pg.sql("SHOW TimeZone", db="appdb")[0][0]
    assert old_tz != "Pacific/Auckland"
    before = _raw(p, {"application_name": "before"})
    assert before.parameters["TimeZone"] == old_tz
    pg.sql("ALTER ROLE md5user SET TimeZone = 'Pacific/Auckland'")
    try:
        p.admin("RECONNECT appdb")
        after = _raw(p, {"application_name": "after"})
        assert after.parameters["TimeZone"] == "Pacific/Auckland"
        assert _show_raw(after)[1]["TimeZone"] == "Pacific/Auckland"
        assert _show_raw(before)[1]["TimeZone"] == old_tz
        assert _show_raw(after)[1]["TimeZone"] == "Pacific/Auckland"
        after.close(terminate=True)
        before.close(terminate=True)
    finally:
        pg.sql("ALTER ROLE md5user RESET TimeZone")


def test_values_with_backslashes_survive_standard_conforming_strings_off(pooler, pg):
    """The SETs that carry a client's values to a server are literals that mean the same
    whatever the server's standard_conforming_strings: another client left it off, and the
    next client's application_name holds backslashes (and a quote); no WARNING either."""
    p = pooler(pgbouncer=TXN1)
    off = p.connect(application_name="off")
    off.execute("SET standard_conforming_strings = off")
    name = "C:\\tmp\\new o'brien"
    notices = []
    c = p.connect(application_name=name)
    c.add_notice_handler(lambda n: notices.append(n.message_primary))
    for _ in range(2):
        off.execute("SELECT 1")  # the server last ran with standard_conforming_strings off
        with c.transaction():
            assert c.execute("SHOW application_name").fetchone()[0] == name
            assert c.execute("SHOW standard_conforming_strings").fetchone()[0] == "on"
    assert notices == []


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: track_extra_parameters")
def test_reset_all_with_an_unreported_tracked_parameter(pooler, pg):
    """search_path in track_extra_parameters: PostgreSQL 15 never reports it, so a RESET
    ALL changes it on the server unseen. The client's own value must come back (its startup
    value, as on a direct connection), in the same transaction and after."""
    pg.sql("CREATE SCHEMA IF NOT EXISTS sp_a AUTHORIZATION md5user", db="appdb")
    p = pooler(pgbouncer=TXN1 | {"track_extra_parameters": "IntervalStyle, search_path"})
    a = _raw(p, {"search_path": "sp_a, public", "application_name": "a"})
    b = _raw(p, {"application_name": "b"})
    direct = _raw(pg, {"search_path": "sp_a, public", "application_name": "a"})
    try:
        for c in (direct, a):
            for sql in ("RESET ALL", "BEGIN", "DISCARD PLANS", "RESET ALL"):
                c.query(sql)
            assert c.query("SHOW search_path") == [["sp_a, public"]]
            c.query("COMMIT")
            b.query("SELECT 1")
            assert c.query("SHOW search_path") == [["sp_a, public"]]
            c.query("DISCARD ALL")
            assert c.query("SHOW search_path") == [["sp_a, public"]]
        assert b.query("SHOW search_path") == [['"$user", public']]
    finally:
        for c in (a, b, direct):
            c.close(terminate=True)


def _connect_query_pooler(pooler, query, **pgbouncer):
    quoted = query.replace("'", "''")
    return pooler(pgbouncer={**TXN1, **pgbouncer},
                  databases={"appdb": f"host={{pg_host}} port={{pg_port}} "
                                      f"connect_query='{quoted}'"})


def test_connect_query_runs_on_every_new_server(pooler, pg):
    """[databases] connect_query runs once on each new server connection, before any client
    uses it: its rows and tags reach nobody, and what it SETs holds for every client of that
    server. Several statements, quotes in the value (doubled in the ini) and a result set
    all work; two servers each run it."""
    p = _connect_query_pooler(
        pooler, "SELECT 1; SET statement_timeout = '15min'; SET work_mem = '8MB'",
        default_pool_size=2)
    a, b = p.connect(), p.connect()
    pids = set()
    with a.transaction(), b.transaction():  # both at once: two servers
        for c in (a, b):
            pid, timeout, mem = c.execute(
                "SELECT pg_backend_pid(), current_setting('statement_timeout'), "
                "current_setting('work_mem')").fetchone()
            assert (timeout, mem) == ("15min", "8MB")
            pids.add(pid)
    assert len(pids) == 2
    for c in (a, b):  # outside a transaction block, on whichever server
        assert c.execute("SHOW statement_timeout").fetchone()[0] == "15min"
    a.close()
    b.close()


def test_connect_query_error_is_logged_and_the_server_used(pooler, pg):
    """A connect_query that fails: the error is logged with PgBouncer's words and the server
    serves clients all the same (PgBouncer: errors are logged and ignored)."""
    p = _connect_query_pooler(pooler, "SELECT no_such_column")
    c = p.connect()
    assert c.execute("SELECT 41 + 1").fetchone()[0] == 42
    p.wait_for_log(r"S: error while executing exec_on_query: ERROR: "
                   r"column \"no_such_column\" does not exist")
    c.close()


def test_connect_query_values_welcome_clients(pooler, pg):
    """A reported parameter that connect_query SETs (TimeZone) is the server's value from the
    start: new clients are welcomed with it and run with it, whatever the role's default."""
    p = _connect_query_pooler(pooler, "SET TimeZone = 'Pacific/Auckland'")
    assert pg.sql("SHOW TimeZone", db="appdb")[0][0] != "Pacific/Auckland"
    first = _raw(p, {"application_name": "first"})
    second = _raw(p, {"application_name": "second"})
    for c in (first, second):
        assert c.parameters["TimeZone"] == "Pacific/Auckland"
        assert _show_raw(c)[1]["TimeZone"] == "Pacific/Auckland"
        c.close(terminate=True)


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 says only 'invalid server parameter'")
@pytest.mark.parametrize("mode", ["transaction", "session"])
@pytest.mark.parametrize("name, bad", [("TimeZone", "Nowhere/Bad"), ("DateStyle", "bogus"),
                                       ("client_encoding", "NOPE")])
def test_invalid_startup_value_is_refused(pooler, pg, mode, name, bad):
    """A startup value PostgreSQL refuses (libpq sends PGTZ, PGDATESTYLE, PGCLIENTENCODING as
    they are): directly the login fails with FATAL 22023. Through the pooler the client gets
    that very error (at its first query, when the value reaches a server) instead of running
    with whatever the server had, another client's value in transaction mode. The pool goes
    on serving."""
    p = pooler(pgbouncer={**TXN1, "pool_mode": mode})
    with pytest.raises(pgwire.ServerError) as direct:
        pgwire.Conn.connect(port=pg.port, user="md5user", password="md5pass",
                            database="appdb", params={name: bad})
    tokyo = _raw(p, {"TimeZone": "Asia/Tokyo"})  # leaves its value on the one server
    assert _show_raw(tokyo)[1]["TimeZone"] == "Asia/Tokyo"
    tokyo.close(terminate=True)
    c = _raw(p, {name: bad})
    c.send(pgwire.m.query(f"SHOW {name}"))
    got = [pgwire.parse_error(x.body) for x in c.wait_closed() if x.type == "E"]
    c.close()
    assert direct.value.code == "22023"
    fields = ("S", "C", "M", "D", "H")  # DateStyle's has a DETAIL ('Unrecognized key word')
    assert [tuple(e.get(k) for k in fields) for e in got] == \
        [tuple(direct.value.fields.get(k) for k in fields)]
    assert direct.value.severity == "FATAL"
    assert direct.value.message == f'invalid value for parameter "{name}": "{bad}"'
    good = _raw(p, {"TimeZone": "Europe/Berlin"})
    assert _show_raw(good)[1]["TimeZone"] == "Europe/Berlin"
    good.close(terminate=True)


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 welcomes the client with the whole name")
@pytest.mark.parametrize("name", ["a" * 70, "a" * 62 + "é" + "b" * 10],
                         ids=["ascii", "multibyte-at-the-cut"])
def test_long_application_name_as_postgresql_keeps_it(pooler, pg, name):
    """PostgreSQL keeps 63 bytes of an application_name (whole characters) and says so at
    login, in a NOTICE right after AuthenticationOk. The client is welcomed with that value
    and that NOTICE, runs with the value on a shared server, and never hears the NOTICE of the
    pooler's own SETs ('identifier ... will be truncated'), which a direct client never gets
    after its login. The first client waits for the pool's first server, the second is
    welcomed at once: both get it."""
    p = pooler(pgbouncer=TXN1)

    def login_notices(conn):
        types = [m.type for m in conn.startup_msgs]
        notices = [pgwire.parse_error(m.body) for m in conn.startup_msgs if m.type == "N"]
        if notices:  # where PostgreSQL puts it: right after AuthenticationOk
            auth_ok = max(i for i, t in enumerate(types) if t == "R")
            assert types.index("N") == auth_ok + 1, types
        return [(n.get("S"), n.get("C"), n.get("M")) for n in notices]

    direct = _raw(pg, {"application_name": name})
    want = direct.parameters["application_name"]
    assert len(want.encode()) < len(name.encode())
    notice = login_notices(direct)
    assert notice == [("NOTICE", "42622",
                       f'identifier "{name}" will be truncated to "{want}"')], notice
    shown = direct.query("SHOW application_name")[0][0]
    direct.close(terminate=True)
    c = _raw(p, {"application_name": name})
    assert login_notices(c) == notice
    again = _raw(p, {"application_name": name})  # the pool has its welcome now
    assert login_notices(again) == notice
    again.close(terminate=True)
    other = _raw(p, {"application_name": "other"})
    assert login_notices(other) == []
    assert c.parameters["application_name"] == want
    got = []
    for _ in range(3):
        for conn in (c, c, other):  # alone on the server, then after another client
            conn.send(pgwire.m.query("SHOW application_name"))
            msgs = conn.read_until_rfq()
            if conn is c:
                got += [x.type for x in msgs if x.type == "N"]
                assert [x.row for x in msgs if x.type == "D"] == [[shown]]
    assert got == []
    c.close(terminate=True)
    other.close(terminate=True)
