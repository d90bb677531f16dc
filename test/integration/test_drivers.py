"""Real client drivers through transaction mode over a pool of 2: psycopg 3, asyncpg and
node-postgres with pg-copy-streams. Each does COPY in, COPY out, an error, then 50
transactions with parameters on the same connection while a second connection holds a
transaction during every other one, so the first keeps changing servers."""

import asyncio
import io
import json
import os
import shutil
import subprocess

import psycopg
import pytest

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")
ROWS = 2000
TXN_MODE = {"pool_mode": "transaction", "default_pool_size": 2}


def _fresh_table(pg, name):
    pg.sql(f"DROP TABLE IF EXISTS {name}", db="appdb")
    pg.sql(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)", db="appdb")
    pg.sql(f"ALTER TABLE {name} OWNER TO md5user", db="appdb")


# ---------------------------------------------------------------------------
# psycopg 3


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: protocol-level prepared statements in transaction mode "
    "(max_prepared_statements)")
def test_psycopg(pooler, pg):
    _fresh_table(pg, "drv_psycopg")
    p = pooler(pgbouncer=TXN_MODE)
    a = p.connect()
    b = p.connect()

    # COPY in
    cur = a.cursor()
    with cur.copy("COPY drv_psycopg (id, v) FROM STDIN") as cp:
        for i in range(1, ROWS + 1):
            cp.write_row((i, f"py-{i}"))
    assert cur.rowcount == ROWS
    assert a.execute("SELECT count(*), sum(id) FROM drv_psycopg").fetchone() == \
        (ROWS, ROWS * (ROWS + 1) // 2)

    # COPY out
    cur = a.cursor()
    with cur.copy("COPY (SELECT id, v FROM drv_psycopg ORDER BY id) TO STDOUT") as cp:
        cp.set_types(["int4", "text"])
        rows = list(cp.rows())
    assert rows == [(i, f"py-{i}") for i in range(1, ROWS + 1)]
    buf = io.BytesIO()
    with a.cursor().copy("COPY (SELECT id FROM drv_psycopg WHERE id <= 3 ORDER BY id) "
                         "TO STDOUT") as cp:
        for chunk in cp:
            buf.write(chunk)
    assert buf.getvalue() == b"1\n2\n3\n"

    # an error, then the connection is usable
    with pytest.raises(psycopg.errors.DivisionByZero) as ei:
        a.execute("SELECT 1 / %s::int", (0,))
    assert ei.value.sqlstate == "22012"
    assert a.execute("SELECT %s::int + 1", (41,)).fetchone() == (42,)

    # 50 transactions with parameters
    pids = set()
    for i in range(50):
        hold = i % 2 == 1
        if hold:
            b.execute("BEGIN")
            b.execute("SELECT 1")
        with a.transaction():
            a.execute("INSERT INTO drv_psycopg (id, v) VALUES (%s, %s)", (100000 + i, f"txn-{i}"))
            row = a.execute("SELECT v, %s::int * 2, pg_backend_pid() FROM drv_psycopg "
                            "WHERE id = %s", (i, 100000 + i)).fetchone()
        if hold:
            b.execute("COMMIT")
        assert row[:2] == (f"txn-{i}", 2 * i)
        pids.add(row[2])
    assert len(pids) == 2  # it really moved between the two servers
    assert a.execute("SELECT count(*) FROM drv_psycopg").fetchone() == (ROWS + 50,)
    a.close()
    b.close()


# ---------------------------------------------------------------------------
# asyncpg


def _run_async(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _asyncpg_connect(p, **kw):
    import asyncpg

    return await asyncpg.connect(host="127.0.0.1", port=p.port, user="md5user",
                                 password="md5pass", database="appdb", timeout=15, **kw)


async def _asyncpg_scenario(p, table, **kw):
    import asyncpg

    a = await _asyncpg_connect(p, **kw)
    b = await _asyncpg_connect(p, **kw)
    try:
        # COPY in
        res = await a.copy_records_to_table(
            table, records=[(i, f"apg-{i}") for i in range(1, ROWS + 1)], columns=["id", "v"])
        assert res == f"COPY {ROWS}"
        assert await a.fetchval(f"SELECT count(*) FROM {table}") == ROWS

        # COPY out
        out = io.BytesIO()
        res = await a.copy_from_query(f"SELECT id, v FROM {table} WHERE id <= $1 ORDER BY id",
                                      100, output=out, format="csv")
        assert res == "COPY 100"
        assert out.getvalue().decode() == "".join(f"{i},apg-{i}\n" for i in range(1, 101))

        # an error, then the connection is usable
        with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
            await a.fetchval("SELECT 1 / $1::int", 0)
        assert await a.fetchval("SELECT $1::int + 1", 41) == 42

        # 50 transactions with parameters
        pids = set()
        for i in range(50):
            hold = i % 2 == 1
            if hold:
                await b.execute("BEGIN")
                await b.execute("SELECT 1")
            async with a.transaction():
                await a.execute(f"INSERT INTO {table} (id, v) VALUES ($1, $2)",
                                100000 + i, f"txn-{i}")
                row = await a.fetchrow(f"SELECT v, $2::int * 2 AS d, pg_backend_pid() AS pid "
                                       f"FROM {table} WHERE id = $1", 100000 + i, i)
            if hold:
                await b.execute("COMMIT")
            assert (row["v"], row["d"]) == (f"txn-{i}", 2 * i)
            pids.add(row["pid"])
        assert len(pids) == 2
        assert await a.fetchval(f"SELECT count(*) FROM {table}") == ROWS + 50
    finally:
        await a.close(timeout=10)
        await b.close(timeout=10)


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: protocol-level prepared statements in transaction mode "
    "(max_prepared_statements)")
def test_asyncpg(pooler, pg):
    """statement_cache_size=0: asyncpg uses only unnamed statements (the setting PgBouncer's
    documentation recommends for transaction mode without its prepared-statement support)."""
    _fresh_table(pg, "drv_asyncpg")
    p = pooler(pgbouncer=TXN_MODE)
    _run_async(_asyncpg_scenario(p, "drv_asyncpg", statement_cache_size=0))


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18: asyncpg's RESET ALL at release gives the server's values (#457, #1260)")
def test_asyncpg_pool_keeps_its_settings_across_releases(pooler, pg):
    """asyncpg's pool runs `RESET ALL` (with CLOSE ALL, UNLISTEN *) at every release. On a
    direct connection that brings back the pool's server_settings, sent at startup; through
    sluice too, while another client with settings of its own shares the one server."""
    p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": 1})

    async def run():
        import asyncpg

        pool = await asyncpg.create_pool(
            host="127.0.0.1", port=p.port, user="md5user", password="md5pass",
            database="appdb", min_size=1, max_size=1, statement_cache_size=0,
            server_settings={"application_name": "pool-app", "TimeZone": "Asia/Tokyo"})
        other = await _asyncpg_connect(p, statement_cache_size=0,
                                       server_settings={"application_name": "other"})
        try:
            for _ in range(3):
                async with pool.acquire() as c:
                    async with c.transaction():
                        name, tz, pid = await c.fetchrow(
                            "SELECT current_setting('application_name'), "
                            "current_setting('TimeZone'), pg_backend_pid()")
                        seen = pg.sql("SELECT application_name FROM pg_stat_activity "
                                      f"WHERE pid = {pid}")
                    assert (name, tz) == ("pool-app", "Asia/Tokyo")
                    assert seen == [("pool-app",)]
                    assert c.get_settings().application_name == "pool-app"
                    assert c.get_settings().TimeZone == "Asia/Tokyo"
                # the release ran RESET ALL; the other client comes in between
                assert await other.fetchval("SHOW application_name") == "other"
                assert await other.fetchval("SELECT pg_backend_pid()") == pid
        finally:
            await other.close(timeout=10)
            await pool.close()

    _run_async(run())


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: protocol-level prepared statements in transaction mode "
    "(max_prepared_statements)")
def test_asyncpg_prepared_statements(pooler, pg):
    """asyncpg with its default statement cache: every query is a named prepared statement
    (__asyncpg_stmt_N__, the same names on both connections), used again from whatever
    server the connection lands on. Needs the prepared-statement cache (DESIGN.md §5)."""
    _fresh_table(pg, "drv_asyncpg_ps")
    p = pooler(pgbouncer=TXN_MODE)
    _run_async(_asyncpg_scenario(p, "drv_asyncpg_ps"))

    async def explicit():
        a = await _asyncpg_connect(p)
        b = await _asyncpg_connect(p)
        try:
            sa = await a.prepare("SELECT $1::int * 10 AS x, pg_backend_pid() AS pid")
            sb = await b.prepare("SELECT $1::text || '!' AS x, pg_backend_pid() AS pid")
            pids = set()
            for i in range(20):
                if i % 2:  # b holds a server inside a transaction while a runs
                    async with b.transaction():
                        assert (await sb.fetchrow(str(i)))["x"] == f"{i}!"
                        r = await sa.fetchrow(i)
                else:
                    r = await sa.fetchrow(i)
                    assert (await sb.fetchrow(str(i)))["x"] == f"{i}!"
                assert r["x"] == i * 10
                pids.add(r["pid"])
            assert len(pids) == 2
        finally:
            await a.close(timeout=10)
            await b.close(timeout=10)

    _run_async(explicit())


# ---------------------------------------------------------------------------
# node-postgres + pg-copy-streams


def _node_ready():
    node = shutil.which("node")
    assert node, "node not found: run `make deps` (Debian packages nodejs, npm)"
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "pg-copy-streams")):
        npm = shutil.which("npm")
        assert npm, "npm not found: run `make deps` (Debian packages nodejs, npm)"
        r = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                           capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, f"npm install failed:\n{r.stdout}\n{r.stderr}"
    return node


def test_node_pg_copy_streams(pooler, pg):
    node = _node_ready()
    _fresh_table(pg, "drv_node")
    p = pooler(pgbouncer=TXN_MODE)
    r = subprocess.run([node, "copy_test.js", "127.0.0.1", str(p.port), "md5user", "md5pass",
                        "appdb", "drv_node", str(ROWS)], cwd=NODE_DIR, capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["copy_in_rowcount"] == ROWS
    assert res["count_after_copy_in"] == ROWS
    assert res["copy_out_rowcount"] == ROWS
    assert res["copy_out_matches"] is True
    assert res["error"]["code"] == "22012"
    assert "division by zero" in res["error"]["message"]
    assert res["after_error"] == 42
    assert res["txns"] == [[f"txn-{i}", 2 * i] for i in range(50)]
    assert res["backend_pids"] == 2
    assert res["final_count"] == ROWS + 50
    assert pg.sql("SELECT count(*) FROM drv_node", db="appdb")[0][0] == ROWS + 50


# ---------------------------------------------------------------------------
# libpq itself (ctypes): the extended COPY of PQexecParams


PGRES_TUPLES_OK, PGRES_COPY_IN, PGRES_FATAL_ERROR = 2, 4, 7


def _libpq():
    import ctypes
    import ctypes.util
    lib = ctypes.CDLL(ctypes.util.find_library("pq") or "libpq.so.5")
    lib.PQconnectdb.restype = ctypes.c_void_p
    lib.PQconnectdb.argtypes = [ctypes.c_char_p]
    for name in ("PQstatus", "PQresultStatus", "PQputCopyEnd", "PQntuples"):
        getattr(lib, name).restype = ctypes.c_int
    lib.PQstatus.argtypes = lib.PQresultStatus.argtypes = [ctypes.c_void_p]
    lib.PQexec.restype = lib.PQexecParams.restype = lib.PQgetResult.restype = ctypes.c_void_p
    lib.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.PQexecParams.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p,
                                 ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.PQgetResult.argtypes = [ctypes.c_void_p]
    lib.PQputCopyData.restype = ctypes.c_int
    lib.PQputCopyData.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.PQputCopyEnd.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.PQresultErrorMessage.restype = lib.PQgetvalue.restype = ctypes.c_char_p
    lib.PQresultErrorMessage.argtypes = [ctypes.c_void_p]
    lib.PQgetvalue.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.PQntuples.argtypes = [ctypes.c_void_p]
    lib.PQclear.argtypes = lib.PQfinish.argtypes = [ctypes.c_void_p]
    return lib


def _scalar(lib, conn, sql):
    """The one value of `sql` (PQexec), or the error text."""
    r = lib.PQexec(conn, sql.encode())
    try:
        if lib.PQresultStatus(r) != PGRES_TUPLES_OK or lib.PQntuples(r) != 1:
            return "error: %s" % (lib.PQresultErrorMessage(r) or b"").decode()
        return lib.PQgetvalue(r, 0, 0).decode()
    finally:
        lib.PQclear(r)


def _copy_refused(lib, dsn, during_copy=lambda: None):
    """PQexecParams COPY into drv_trig, a row, PQputCopyEnd, then two queries: what libpq
    reported at each step. during_copy() runs while the COPY is open."""
    a = lib.PQconnectdb(dsn)
    try:
        assert lib.PQstatus(a) == 0
        r = lib.PQexecParams(a, b"COPY drv_trig FROM STDIN", 0, None, None, None, None, 0)
        steps = [lib.PQresultStatus(r)]
        lib.PQclear(r)
        during_copy()
        steps.append((lib.PQputCopyData(a, b"1\tx\n", 4), lib.PQputCopyEnd(a, None)))
        r = lib.PQgetResult(a)
        steps.append((lib.PQresultStatus(r), lib.PQresultErrorMessage(r).split(b"\n")[0]))
        lib.PQclear(r)
        while (r := lib.PQgetResult(a)):
            steps.append(lib.PQresultStatus(r))
            lib.PQclear(r)
        # The second ReadyForQuery: libpq drops it when it comes in the same read as the
        # first, else takes it for the end of the next query (an empty error). Directly too.
        steps += [_scalar(lib, a, "SELECT 41 + 1"), _scalar(lib, a, "SELECT 41 + 1")]
        return steps
    finally:
        lib.PQfinish(a)


def test_libpq_extended_copy_refused_by_a_statement_trigger(pooler, pg):
    """PQexecParams of a COPY sends Parse Bind Describe Execute Sync, and PQputCopyEnd a
    CopyDone and a Sync. A BEFORE STATEMENT trigger fails the COPY before PostgreSQL reads
    the first Sync, so both Syncs get a ReadyForQuery. The pooler cannot tell that from a
    COPY that failed later and settles the count with a query of its own (doc/pooling.md,
    request accounting): libpq must see nothing of it, only what it sees directly, and a
    second client, queued for the only server meanwhile, must get its own answer and
    nothing of the first client's. (Which of two things libpq makes of the second
    ReadyForQuery depends on whether it comes in the same read as the first, through the
    pooler as directly. Whether the old miscount showed here depended on a race: the
    client's data had to reach the pooler before the server's error.)"""
    import threading
    import time

    pg.sql("CREATE OR REPLACE FUNCTION drv_refuses() RETURNS trigger LANGUAGE plpgsql AS "
           "$$ BEGIN RAISE EXCEPTION 'drv_trig takes no rows'; END $$", db="appdb")
    _fresh_table(pg, "drv_trig")
    pg.sql("CREATE TRIGGER refuse BEFORE INSERT ON drv_trig FOR EACH STATEMENT "
           "EXECUTE FUNCTION drv_refuses()", db="appdb")
    p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": 1})
    lib = _libpq()
    def dsn(port):
        return ("host=127.0.0.1 port=%d user=md5user password=%s dbname=appdb "
                "sslmode=disable connect_timeout=10" % (port, pg.passwords["md5user"])).encode()

    b = lib.PQconnectdb(dsn(p.port))
    try:
        want = _copy_refused(lib, dsn(pg.port))[:3]
        assert want[2] == (PGRES_FATAL_ERROR, b"ERROR:  drv_trig takes no rows")
        either = [want + ["error: ", "42"], want + ["42", "42"]]
        other = {}
        t = threading.Thread(target=lambda: other.update(v=_scalar(lib, b, "SELECT 'other'")))

        def queue_b():
            t.start()        # queued: the first client holds the only server until it ends
            time.sleep(0.3)

        assert _copy_refused(lib, dsn(p.port), queue_b) in either
        t.join(15)
        assert other.get("v") == "other"
        assert _scalar(lib, b, "SELECT 'b again'") == "b again"
    finally:
        lib.PQfinish(b)
        pg.sql("DROP TABLE IF EXISTS drv_trig; DROP FUNCTION IF EXISTS drv_refuses()",
               db="appdb")
