"""PostgreSQL's own client programs through the pooler, the way an operator runs them:
pg_isready as a health check, pg_dump and a parallel pg_restore (and a plain dump replayed
by psql), vacuumdb and reindexdb with parallel jobs, createdb and dropdb, and pgbench -i in
transaction mode. Each result is checked directly against PostgreSQL."""

import re
import subprocess

import pytest

# Rows big enough that COPY carries many messages, a value larger than pkt_buf and binary
# data with every byte value.
SOURCE_SCHEMA = [
    "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), "
    "tags text[], payload bytea, made timestamptz DEFAULT '2026-01-02 03:04:05+00')",
    "INSERT INTO items (id, name, price, tags, payload) "
    "SELECT g, 'item ' || g || repeat('x', g % 200), g / 7.0, ARRAY['a' || g, 'tab\tand\nline'], "
    "decode(lpad(to_hex(g % 256), 2, '0') || '00ff0a0d5c', 'hex') "
    "FROM generate_series(1, 20000) g",
    "CREATE TABLE big (id int PRIMARY KEY, body text)",
    "INSERT INTO big SELECT g, repeat(md5(g::text), 40000) FROM generate_series(1, 3) g",
    "CREATE SEQUENCE order_no START 1000",
    "SELECT setval('order_no', 4242)",
    "CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 10",
    "CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2'",
    "CREATE INDEX items_price ON items (price)",
    "COMMENT ON TABLE items IS 'dumped through the pooler'",
    # a large object: pg_dump reads it and pg_restore writes it with function calls
    # (the protocol's FunctionCall message, lo_open / loread / lowrite)
    "SELECT lo_from_bytea(4242, decode(repeat('00ff105c0a', 60000), 'hex'))",
]

CHECKS = [
    "SELECT count(*), md5(string_agg(i::text, '|' ORDER BY id)) FROM items i",
    "SELECT count(*), md5(string_agg(b::text, '|' ORDER BY id)) FROM big b",
    "SELECT last_value FROM order_no",
    "SELECT count(*) FROM cheap",
    "SELECT twice(21)",
    "SELECT obj_description('items'::regclass, 'pg_class')",
    "SELECT indexname FROM pg_indexes WHERE tablename = 'items' ORDER BY 1",
    "SELECT oid, md5(lo_get(oid)), length(lo_get(oid)) FROM pg_largeobject_metadata",
]


# The programs run as the superuser, which the tests' databases need; a dump or a restore
# may take longer than the default minute on a loaded machine.
SU = {"user": "postgres", "timeout": 180}


def ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, f"{r.args[0]} exited {r.returncode}\n{r.stdout}\n{r.stderr}"


def fresh_db(pg, name: str) -> None:
    pg.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg.sql(f"CREATE DATABASE {name}")


def snapshot(pg, db: str) -> list:
    return [pg.sql(q, db=db) for q in CHECKS]


@pytest.fixture
def source_db(pg):
    fresh_db(pg, "tools_src")
    for q in SOURCE_SCHEMA:
        pg.sql(q, db="tools_src")
    yield "tools_src"
    pg.sql("DROP DATABASE IF EXISTS tools_src WITH (FORCE)")


def test_pg_isready(pooler):
    p = pooler(databases={"*": None})
    r = p.tool("pg_isready", "-d", "appdb", **SU)
    ok(r)
    assert "accepting connections" in r.stdout, r.stdout
    # A database the pooler does not serve: the pooler answered, so it is up (what libpq's
    # ping reports for any answer but "cannot connect now").
    r = p.tool("pg_isready", "-d", "no_such_db", **SU)
    ok(r)
    assert "accepting connections" in r.stdout, r.stdout
    # Paused (the console's PAUSE, as before a server restart): logins still get their
    # answer, so a health check does not flap while the pooler holds queries back.
    ok(p.tool("psql", "-X", "-d", "pgbouncer", "-c", "PAUSE", **SU))
    r = p.tool("pg_isready", "-d", "appdb", "-t", "5", **SU)
    ok(r)
    assert "accepting connections" in r.stdout, r.stdout
    ok(p.tool("psql", "-X", "-d", "pgbouncer", "-c", "RESUME", **SU))
    p.stop()
    assert not p.alive()
    r = p.tool("pg_isready", "-d", "appdb", "-t", "3", **SU)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "no response" in r.stdout, r.stdout


def test_pg_dump_and_restore(pooler, pg, source_db, tmp_path):
    p = pooler(pgbouncer={"pool_mode": "session"})
    expected = snapshot(pg, source_db)
    assert expected[0][0][0] == 20000 and expected[2][0][0] == 4242
    assert [(oid, n) for oid, _, n in expected[-1]] == [(4242, 300000)]
    try:
        # custom format, restored with two parallel connections
        dump = tmp_path / "src.dump"
        ok(p.tool("pg_dump", "-Fc", "-f", dump, source_db, **SU))
        fresh_db(pg, "tools_dst")
        ok(p.tool("pg_restore", "-j", "2", "--exit-on-error", "-d", "tools_dst", dump,
                  **SU))
        assert snapshot(pg, "tools_dst") == expected
        # plain format replayed by psql: COPY FROM STDIN inside a script
        sql = tmp_path / "src.sql"
        ok(p.tool("pg_dump", "-f", sql, source_db, **SU))
        assert "COPY public.items" in sql.read_text()
        fresh_db(pg, "tools_dst2")
        ok(p.tool("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", sql, "-d", "tools_dst2",
                  **SU))
        assert snapshot(pg, "tools_dst2") == expected
    finally:
        pg.sql("DROP DATABASE IF EXISTS tools_dst WITH (FORCE)")
        pg.sql("DROP DATABASE IF EXISTS tools_dst2 WITH (FORCE)")


def test_psql_large_object_import_export(pooler, pg, tmp_path):
    """psql's \\lo_import and \\lo_export use libpq's large-object calls (FunctionCall
    messages) inside a transaction psql opens: in transaction mode they must stay on one
    server."""
    p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": 2})
    src = tmp_path / "in.bin"
    data = bytes(range(256)) * 3000 + b"tail"
    src.write_bytes(data)
    out = tmp_path / "out.bin"
    r = p.tool("psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", "appdb",
               "-c", f"\\lo_import {src}", **SU)
    ok(r)
    m = re.fullmatch(r"lo_import (\d+)\n", r.stdout)
    assert m, r.stdout
    oid = int(m.group(1))
    try:
        assert pg.sql("SELECT length(lo_get(%s::oid))", (oid,), db="appdb") == [(len(data),)]
        ok(p.tool("psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", "appdb",
                  "-c", f"\\lo_export {oid} {out}", **SU))
        assert out.read_bytes() == data
    finally:
        pg.sql("SELECT lo_unlink(%s::oid)", (oid,), db="appdb")


def test_vacuumdb_and_reindexdb_parallel(pooler, pg, source_db):
    p = pooler(pgbouncer={"pool_mode": "session"})
    pg.sql("SELECT pg_stat_reset()", db=source_db)
    r = p.tool("vacuumdb", "-j", "2", "--analyze", "-d", source_db, **SU)
    ok(r)
    analyzed = pg.sql("SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL "
                      "AND last_vacuum IS NOT NULL ORDER BY 1", db=source_db)
    assert [r[0] for r in analyzed] == ["big", "items"]
    before = pg.sql("SELECT relname, relfilenode FROM pg_class WHERE relname IN "
                    "('items_pkey', 'items_price', 'big_pkey') ORDER BY 1", db=source_db)
    r = p.tool("reindexdb", "-j", "2", "-d", source_db, **SU)
    ok(r)
    after = pg.sql("SELECT relname, relfilenode FROM pg_class WHERE relname IN "
                   "('items_pkey', 'items_price', 'big_pkey') ORDER BY 1", db=source_db)
    assert len(before) == 3 and len(after) == 3
    assert all(b[1] != a[1] for b, a in zip(before, after)), (before, after)


def test_createdb_and_dropdb_in_transaction_mode(pooler, pg):
    p = pooler(pgbouncer={"pool_mode": "transaction"})
    pg.sql("DROP DATABASE IF EXISTS tools_new WITH (FORCE)")
    ok(p.tool("createdb", "-E", "UTF8", "-T", "template0", "tools_new",
              "made through the pooler", **SU))
    assert pg.sql("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                  "WHERE datname = 'tools_new'") == [("made through the pooler",)]
    # used through the pooler: its idle server connection keeps the database busy until
    # the console's KILL closes it
    ok(p.tool("psql", "-X", "-d", "tools_new", "-c", "SELECT 1", **SU))
    r = p.tool("dropdb", "tools_new", **SU)
    assert r.returncode == 1 and "is being accessed by other users" in r.stderr, r.stderr
    ok(p.tool("psql", "-X", "-d", "pgbouncer", "-c", "KILL tools_new", **SU))
    ok(p.tool("dropdb", "tools_new", **SU))
    assert pg.sql("SELECT 1 FROM pg_database WHERE datname = 'tools_new'") == []
    # or dropdb --force, which has PostgreSQL end those connections (the pooler's too); a
    # killed database takes new clients again after RESUME
    ok(p.tool("psql", "-X", "-d", "pgbouncer", "-c", "RESUME tools_new", **SU))
    ok(p.tool("createdb", "tools_new", **SU))
    ok(p.tool("psql", "-X", "-d", "tools_new", "-c", "SELECT 1", **SU))
    ok(p.tool("dropdb", "--force", "tools_new", **SU))
    assert pg.sql("SELECT 1 FROM pg_database WHERE datname = 'tools_new'") == []
    ok(p.tool("psql", "-X", "-d", "appdb", "-c", "SELECT 1", **SU))
    # what the tools say when the server refuses, passed on as PostgreSQL words it
    r = p.tool("dropdb", "tools_new", **SU)
    assert r.returncode == 1
    assert 'database "tools_new" does not exist' in r.stderr, r.stderr


def test_pgbench_init_in_transaction_mode(pooler, pg):
    fresh_db(pg, "tools_bench")
    try:
        p = pooler(pgbouncer={"pool_mode": "transaction"})
        r = p.tool("pgbench", "-i", "-q", "-s", "2", "tools_bench", **SU)
        ok(r)
        counts = pg.sql("SELECT (SELECT count(*) FROM pgbench_accounts), "
                        "(SELECT count(*) FROM pgbench_branches), "
                        "(SELECT count(*) FROM pgbench_tellers)", db="tools_bench")
        assert counts == [(200000, 2, 20)]
        keys = pg.sql("SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'pgbench_%' "
                      "AND indexname LIKE '%_pkey'", db="tools_bench")
        assert keys == [(3,)]
        # and a run over what it made, through the same pooler
        r = p.tool("pgbench", "-n", "-c", "4", "-j", "2", "-t", "50",
                     "tools_bench", **SU)
        ok(r)
        assert "number of failed transactions: 0" in r.stdout, r.stdout
    finally:
        pg.sql("DROP DATABASE IF EXISTS tools_bench WITH (FORCE)")
