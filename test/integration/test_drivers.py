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
