"""Real drivers that use named prepared statements, through sluice in transaction pooling
with the prepared-statement cache on (max_prepared_statements default 200).

Each driver runs 500 transactions with parameters over several concurrent connections
sharing default_pool_size=2 servers (so connections keep switching servers and the cache
has to inject Parses), and checks every result:

* asyncpg: prepares every query it runs (statement cache) plus explicit prepare();
* psycopg 3 with prepare_threshold=0 (every query prepared on first use), also in pipeline
  mode;
* node-postgres named queries ({name, text, values}: Parse once per connection, Bind
  alone afterwards);
* postgres.js: up to 100 pipelined batches per connection, Parse + Describe + Flush before
  the Sync, cursors, savepoints, COPY (named and unnamed statements);
* pgx v4 (Go, Debian golang-github-jackc-pgx-v4-dev) with pgxpool: its statement cache in
  prepare and describe mode, Batch, CopyFrom, and the simple protocol; built with go at
  test time;
* PHP PDO (Debian php-pgsql) with emulated prepares off: pdo_stmt_<n> statements dropped
  with DEALLOCATE as a simple Query;
* pgjdbc (Debian libpostgresql-jdbc-java) with prepareThreshold=1, a small Java program
  compiled with javac at test time;
* pgbench -M prepared -c 64 -j 2 -T 30 over default_pool_size=8: zero failed
  transactions.

Afterwards every server is checked directly in PostgreSQL terms (no admin console:
SHOW STATS-like counters are not required here): the driver's statements are on the
servers under sluice_* names only, no client name leaked to a server, no transaction is
left open, and never more server connections than the pool size.
"""

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading

import pytest

import harness

# Tests that fail against PgBouncer 1.18 (make check-pgbouncer) by design.
NEEDS_CACHE = pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: protocol-level prepared statements in transaction mode "
    "(max_prepared_statements)")

TX = 500
POOL = 2
NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'node')
PGJDBC_JAR = '/usr/share/java/postgresql.jar'


def _pooler(pooler, pool_size=POOL, **extra):
    cfg = {'pool_mode': 'transaction', 'default_pool_size': pool_size,
           'max_client_conn': 200,
           # pgjdbc sends extra_float_digits in its startup packet (as with PgBouncer).
           'ignore_startup_parameters': 'extra_float_digits'}
    cfg.update(extra)
    return pooler(pgbouncer=cfg)


def _server_states(p, n):
    """Hold n servers at once through the pooler (each connection in an open
    transaction) and read, on each, its pid and its prepared statements."""
    conns = []
    out = []
    try:
        for _ in range(n):
            c = p.connect(prepare_threshold=None, autocommit=False)
            conns.append(c)
            pid = c.execute('SELECT pg_backend_pid()').fetchone()[0]
            stmts = c.execute('SELECT name, statement FROM pg_prepared_statements '
                              'ORDER BY name').fetchall()
            out.append((pid, stmts))
    finally:
        for c in conns:
            try:
                c.rollback()
            finally:
                c.close()
    return out


def _assert_servers_clean(p, pg, marker, n=POOL):
    """Every server of the pool: idle (no transaction left open), only sluice_*
    statements, the driver's statements (recognized by `marker` in their text) present
    somewhere; and at most n backends of md5user exist."""
    rows = pg.sql("SELECT pid, state, xact_start IS NOT NULL FROM pg_stat_activity "
                  "WHERE usename = 'md5user' AND backend_type = 'client backend'")
    assert len(rows) <= n, 'more server connections than the pool size %d: %r' % (n, rows)
    assert not [r for r in rows if r[2] or r[1] != 'idle'], \
        'server connections left inside a transaction or busy: %r' % rows
    states = _server_states(p, n)
    pids = {s[0] for s in states}
    assert len(pids) == n, 'expected %d distinct servers, got %r' % (n, states)
    seen = []
    for pid, stmts in states:
        bad = [name for name, _ in stmts if not name.startswith('sluice_')]
        assert not bad, 'server %d holds client-named statements %r' % (pid, bad)
        seen += [text for _, text in stmts]
    assert any(marker in text for text in seen), \
        'no statement with %r on any server: the driver did not use named statements ' \
        'through the cache? %r' % (marker, seen)


def _in_threads(n, worker):
    """worker(w) for w in 0..n-1, all at once in threads; fails on a hang or on any
    worker's exception (reported with its number)."""
    errors = []

    def run(w):
        try:
            worker(w)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append('worker %d: %r' % (w, e))

    threads = [threading.Thread(target=run, args=(w,)) for w in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not [t for t in threads if t.is_alive()], 'workers hung'
    assert not errors, errors


# ---------------------------------------------------------------------------
# asyncpg
# ---------------------------------------------------------------------------

@NEEDS_CACHE
def test_asyncpg_concurrent_connections(pooler, pg):
    import asyncpg
    p = _pooler(pooler)
    workers, per = 5, TX // 5

    async def worker(w):
        conn = await asyncpg.connect(host='127.0.0.1', port=p.port, user='md5user',
                                     password=pg.passwords['md5user'], database='appdb')
        try:
            stmt = await conn.prepare('SELECT $1::int * 10 AS asyncpg_mul')
            done = 0
            for i in range(per):
                async with conn.transaction():
                    v = await conn.fetchval('SELECT $1::int + $2::int AS asyncpg_add', i, w)
                    assert v == i + w
                    row = await conn.fetchrow(
                        'SELECT $1::text AS t, $2::int8 * 2 AS d, $3::numeric AS n',
                        'w%d' % w, i, i % 5)
                    assert (row['t'], row['d'], int(row['n'])) == ('w%d' % w, 2 * i, i % 5)
                    assert await stmt.fetchval(i) == 10 * i
                    if i % 10 == 0:
                        await conn.execute('SELECT pg_catalog.set_config($1, $2, true)',
                                           'application_name', 'asyncpg%d' % w)
                # Outside a transaction block (autocommit) as well.
                rows = await conn.fetch('SELECT g FROM generate_series(1, $1::int) g',
                                        i % 4 + 1)
                assert [r['g'] for r in rows] == list(range(1, i % 4 + 2))
                done += 1
            return done
        finally:
            await conn.close()

    async def main():
        return await asyncio.gather(*[worker(w) for w in range(workers)])

    done = asyncio.run(asyncio.wait_for(main(), timeout=120))
    assert sum(done) == TX
    _assert_servers_clean(p, pg, 'asyncpg_add')


# ---------------------------------------------------------------------------
# psycopg 3, prepare_threshold=0
# ---------------------------------------------------------------------------

@NEEDS_CACHE
def test_psycopg_prepare_threshold_0(pooler, pg):
    p = _pooler(pooler)
    workers, per = 4, TX // 4
    done = []

    def worker(w):
        with p.connect(prepare_threshold=0, autocommit=True) as conn:
            n = 0
            for i in range(per):
                with conn.transaction():
                    r = conn.execute('SELECT %s::int + %s::int AS psycopg_add',
                                     (i, w)).fetchone()
                    assert r == (i + w,), r
                    r = conn.execute('SELECT %s::text || %s::text AS psycopg_cat',
                                     ('w%d' % w, '-%d' % (i % 3))).fetchone()
                    assert r == ('w%d-%d' % (w, i % 3),), r
                    rows = conn.execute('SELECT g FROM generate_series(1, %s) g',
                                        (i % 5 + 1,)).fetchall()
                    assert [x[0] for x in rows] == list(range(1, i % 5 + 2))
                r = conn.execute('SELECT %s::int * 2 AS psycopg_dbl', (i,)).fetchone()
                assert r == (2 * i,), r
                n += 1
            # psycopg really prepared them (named statements, not one-shot).
            assert conn._prepared._names, 'psycopg prepared nothing'
            done.append(n)

    _in_threads(workers, worker)
    assert sum(done) == TX
    _assert_servers_clean(p, pg, 'psycopg_add')


@NEEDS_CACHE
def test_psycopg_pipeline_mode(pooler, pg):
    """psycopg 3's pipeline mode (libpq pipeline) with prepare_threshold=0: 11 prepared
    queries per Sync, results read after the Sync; in a transaction a failing query aborts
    the pipeline and the transaction is rolled back, then the connection goes on. 4
    threads over 2 servers, every result checked."""
    import psycopg
    p = _pooler(pooler)
    done = []

    def worker(w):
        with p.connect(prepare_threshold=0, autocommit=True) as conn:
            for r in range(40):
                with conn.pipeline() as pl:
                    curs = []
                    for i in range(10):
                        cur = conn.cursor()
                        cur.execute('SELECT %s::int + %s::int AS pipe_add', (r, i))
                        curs.append((cur, r + i))
                    cur = conn.cursor()
                    cur.execute("SELECT %s::text || 'x' AS pipe_cat", ('w%d' % w,))
                    curs.append((cur, 'w%dx' % w))
                    pl.sync()
                    for cur, want in curs:
                        assert cur.fetchone()[0] == want
                failed = False
                try:
                    with conn.transaction():
                        with conn.pipeline():
                            conn.execute('SELECT %s::int AS pipe_ok', (r,))
                            conn.execute('SELECT 1 / %s::int AS pipe_div', (0,))
                            conn.execute('SELECT %s::int AS pipe_after', (r,))
                except psycopg.errors.DivisionByZero:
                    failed = True
                assert failed
                assert conn.execute('SELECT %s::int * 3 AS pipe_tri', (r,)).fetchone() == \
                    (3 * r,)
            assert conn._prepared._names, 'psycopg prepared nothing'
            done.append(w)

    _in_threads(4, worker)
    assert sorted(done) == [0, 1, 2, 3]
    # psycopg answers the failed pipeline with DEALLOCATE ALL: the last statement prepared
    # after it is what the servers keep.
    _assert_servers_clean(p, pg, 'pipe_tri')


@NEEDS_CACHE
@pytest.mark.parametrize('autocommit', [True, False])
def test_psycopg_cache_rotation_deallocates(pooler, pg, autocommit):
    """psycopg 3 keeps prepared_max statements (100 by default) and, when it prepares one
    more, sends `DEALLOCATE _pg3_<n>` for the oldest (in an unnamed Parse; libpq < 17).
    The server knows the statement by the pooler's name: without the pooler answering for
    the client's name every rotation failed with 26000 and the application got the
    exception. 4 workers, prepared_max = 3, 12 distinct statements in a loop, in
    autocommit and in psycopg's default transactions."""
    p = _pooler(pooler)
    done = []

    def worker(w):
        with p.connect(prepare_threshold=0, autocommit=autocommit) as conn:
            conn.prepared_max = 3
            for i in range(60):
                k = (i * 5 + w) % 12
                r = conn.execute('SELECT %%s::int + %d AS psycopg_rot' % k, (i,)).fetchone()
                assert r == (i + k,), r
                if not autocommit and i % 7 == 6:
                    conn.commit()
            conn.commit()
            assert len(conn._prepared._names) == 3, conn._prepared._names
            done.append(w)

    _in_threads(4, worker)
    assert sorted(done) == [0, 1, 2, 3]
    _assert_servers_clean(p, pg, 'psycopg_rot')


# ---------------------------------------------------------------------------
# node-postgres named queries
# ---------------------------------------------------------------------------

def _node_ready():
    node = shutil.which('node')
    if not node:
        pytest.skip('node is not installed')
    if not all(os.path.isdir(os.path.join(NODE_DIR, 'node_modules', m))
               for m in ('pg', 'postgres')):
        npm = shutil.which('npm')
        assert npm, 'npm is needed to install the node drivers (test/integration/node)'
        r = subprocess.run([npm, 'install', '--no-audit', '--no-fund', '--loglevel=error'],
                           cwd=NODE_DIR, capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, 'npm install failed:\n%s\n%s' % (r.stdout, r.stderr)
    return node


@NEEDS_CACHE
def test_node_postgres_named_queries(pooler, pg):
    node = _node_ready()
    p = _pooler(pooler)
    workers, per = 4, TX // 4
    r = subprocess.run([node, os.path.join(NODE_DIR, 'ps_named_queries.js'), str(p.port),
                        str(workers), str(per)],
                       cwd=NODE_DIR, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, 'node-postgres failed:\n%s\n%s' % (r.stdout, r.stderr)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res == {'transactions': TX, 'queries': 4 * TX}, res
    _assert_servers_clean(p, pg, 'node_add')


# ---------------------------------------------------------------------------
# postgres.js: pipelined batches, Parse + Describe + Flush before the Sync
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('prepare', [
    pytest.param(1, marks=NEEDS_CACHE),
    pytest.param(0, marks=pytest.mark.differs_from_pgbouncer_1_18(
        "PgBouncer 1.18 bug: it hands the server back to the pool after Parse + Describe + "
        "Flush (no ReadyForQuery owed in its books), drops the replies ('got packet '1' "
        "from server when not linked') and the client waits forever")),
], ids=['named', 'unnamed'])
def test_postgres_js_pipelined(pooler, pg, prepare):
    """postgres.js keeps up to 100 batches of one connection on the wire, and sends a new
    statement with parameters as Parse + Describe + Flush, Bind + Execute + Sync only
    after reading its parameter types: the server must stay with the client across that
    gap (no ReadyForQuery yet), and every pipelined batch must reach the statements of
    its own server; a cursor fetches 10 rows at a time with no Sync between; COPY both ways.
    6 workers x 3 connections over 2 servers."""
    node = _node_ready()
    pg.sql('DROP TABLE IF EXISTS pjs_copy; CREATE TABLE pjs_copy (a int, b text); '
           'ALTER TABLE pjs_copy OWNER TO md5user', db='appdb')
    p = _pooler(pooler)
    workers, rounds = 6, 8
    r = subprocess.run([node, os.path.join(NODE_DIR, 'postgres_js.js'), str(p.port),
                        str(workers), str(rounds), str(prepare)],
                       cwd=NODE_DIR, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, 'postgres.js failed:\n%s\n%s' % (r.stdout, r.stderr)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res == {'queries': workers * rounds * 58, 'transactions': 2 * workers * rounds}, res
    assert pg.sql('SELECT count(*) FROM pjs_copy', db='appdb')[0][0] == workers * rounds * 200
    if prepare:
        _assert_servers_clean(p, pg, 'pjs_add')


# ---------------------------------------------------------------------------
# pgx (Go): statement cache, batches, binary COPY
# ---------------------------------------------------------------------------

GO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'go')
GOPATH = '/usr/share/gocode'  # Debian's Go libraries (golang-github-jackc-pgx-v4-dev)


@pytest.fixture(scope='module')
def pgx_program():
    go = shutil.which('go')
    assert go, 'go missing: build-aux/deps.sh installs golang-go'
    assert os.path.isdir(os.path.join(GOPATH, 'src/github.com/jackc/pgx/v4')), \
        'pgx missing: build-aux/deps.sh installs golang-github-jackc-pgx-v4-dev'
    with tempfile.TemporaryDirectory(prefix='sluice-pgx-') as d:
        exe = os.path.join(d, 'pgx_pool')
        env = dict(os.environ, GO111MODULE='off', GOPATH=GOPATH, GOFLAGS='',
                   GOCACHE=os.environ.get('GOCACHE') or os.path.join(
                       os.path.expanduser('~'), '.cache', 'go-build'))
        r = subprocess.run([go, 'build', '-o', exe, os.path.join(GO_DIR, 'pgx_pool.go')],
                           capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, 'go build failed:\n%s' % r.stderr
        yield exe


@pytest.mark.parametrize('mode', [pytest.param('prepare', marks=NEEDS_CACHE), 'describe',
                                  'simple'])
def test_pgx_pool(pooler, pg, pgx_program, mode):
    """pgx v4 (Go) with pgxpool: 6 pools of 3 connections over 2 servers, 8 rounds of 24
    concurrent queries, a Batch of 11 queries pipelined behind one Sync, a failed
    transaction rolled back and one committed (one server throughout), and a binary
    CopyFrom. prepare: pgx names every statement and binds it alone later (the cache's
    job); describe: unnamed statements; simple: the simple protocol."""
    pg.sql('DROP TABLE IF EXISTS pgx_copy; CREATE TABLE pgx_copy (a int, b text); '
           'ALTER TABLE pgx_copy OWNER TO md5user', db='appdb')
    p = _pooler(pooler)
    workers, rounds = 6, 8
    dsn = ('host=127.0.0.1 port=%d user=md5user password=%s dbname=appdb sslmode=disable'
           % (p.port, pg.passwords['md5user']))
    r = subprocess.run([pgx_program, dsn, str(workers), str(rounds), mode],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, 'pgx failed:\n%s\n%s' % (r.stdout, r.stderr)
    assert r.stdout.split() == ['queries=%d' % (workers * rounds * 41),
                                'transactions=%d' % (workers * rounds * 2)], r.stdout
    assert pg.sql('SELECT count(*) FROM pgx_copy', db='appdb')[0][0] == workers * rounds * 100
    if mode == 'prepare':
        _assert_servers_clean(p, pg, 'pgx_add')


# ---------------------------------------------------------------------------
# PHP PDO (pdo_pgsql): pdo_stmt_<n> statements, DEALLOCATE as a simple Query
# ---------------------------------------------------------------------------

PHP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'php')


@NEEDS_CACHE
def test_php_pdo_server_prepares(pooler, pg):
    """PHP PDO with emulated prepares off: every statement prepared under its own name
    (Parse + Sync), run with Bind + Execute + Sync, and dropped with `DEALLOCATE
    pdo_stmt_<n>` sent as a simple Query when the object goes (PgBouncer issue #991: the
    server knows the statement under another name). 6 PHP processes over 2 servers, each
    with statements in autocommit, in committed transactions and in rolled-back ones."""
    php = shutil.which('php')
    assert php, 'php missing: build-aux/deps.sh installs php-cli and php-pgsql'
    r = subprocess.run([php, '-m'], capture_output=True, text=True, timeout=30)
    assert 'pdo_pgsql' in r.stdout, 'pdo_pgsql missing: build-aux/deps.sh installs php-pgsql'
    p = _pooler(pooler)
    workers, rounds = 6, 25
    procs = [subprocess.Popen([php, os.path.join(PHP_DIR, 'pdo_test.php'), str(p.port),
                               str(w), str(rounds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) for w in range(workers)]
    outs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError('PDO workers hung')
        assert proc.returncode == 0, 'PDO failed:\n%s\n%s' % (out, err)
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs == [{'queries': rounds * 9, 'transactions': rounds * 2}] * workers, outs
    _assert_servers_clean(p, pg, 'php_')


# ---------------------------------------------------------------------------
# pgjdbc, prepareThreshold=1
# ---------------------------------------------------------------------------

JAVA_SRC = r'''
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;
import org.postgresql.PGStatement;

public class PsJdbc {
    public static void main(String[] args) throws Exception {
        String url = args[0];
        int threads = Integer.parseInt(args[1]);
        int tx = Integer.parseInt(args[2]);
        ExecutorService ex = Executors.newFixedThreadPool(threads);
        List<Future<Integer>> fs = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            final int w = t;
            fs.add(ex.submit(() -> run(url, w, tx)));
        }
        int total = 0;
        for (Future<Integer> f : fs)
            total += f.get(120, TimeUnit.SECONDS);
        ex.shutdown();
        System.out.println("transactions=" + total);
    }

    static void check(String what, Object got, Object want) {
        if (!want.equals(got))
            throw new IllegalStateException(what + ": got " + got + ", want " + want);
    }

    static int run(String url, int w, int tx) throws Exception {
        try (Connection c = DriverManager.getConnection(url)) {
            c.setAutoCommit(false);
            PreparedStatement add = c.prepareStatement("SELECT ?::int + ?::int AS jdbc_add");
            PreparedStatement cat = c.prepareStatement("SELECT ?::text || ?::text AS jdbc_cat");
            int n = 0;
            for (int i = 0; i < tx; i++) {
                add.setInt(1, i);
                add.setInt(2, w);
                try (ResultSet rs = add.executeQuery()) {
                    rs.next();
                    check("add", rs.getInt(1), i + w);
                }
                cat.setString(1, "w" + w);
                cat.setString(2, "-" + (i % 3));
                try (ResultSet rs = cat.executeQuery()) {
                    rs.next();
                    check("cat", rs.getString(1), "w" + w + "-" + (i % 3));
                }
                // A statement prepared and closed inside the transaction (the driver
                // caches it by text and prepares it again on another server).
                try (PreparedStatement p = c.prepareStatement(
                        "SELECT count(*) AS jdbc_n FROM generate_series(1, ?)")) {
                    p.setInt(1, i % 6 + 1);
                    try (ResultSet rs = p.executeQuery()) {
                        rs.next();
                        check("count", rs.getInt(1), i % 6 + 1);
                    }
                }
                c.commit();
                n++;
            }
            if (!add.unwrap(PGStatement.class).isUseServerPrepare())
                throw new IllegalStateException("pgjdbc did not use server-side prepare");
            return n;
        }
    }
}
'''


@NEEDS_CACHE
def test_pgjdbc_prepare_threshold_1(pooler, pg):
    javac, java = shutil.which('javac'), shutil.which('java')
    assert javac and java, 'javac/java missing: build-aux/deps.sh installs default-jdk-headless'
    assert os.path.exists(PGJDBC_JAR), \
        'pgjdbc missing: build-aux/deps.sh installs libpostgresql-jdbc-java'
    p = _pooler(pooler)
    with tempfile.TemporaryDirectory(prefix='sluice-jdbc-') as d:
        with open(os.path.join(d, 'PsJdbc.java'), 'w') as f:
            f.write(JAVA_SRC)
        r = subprocess.run([javac, '-cp', PGJDBC_JAR, '-d', d, os.path.join(d, 'PsJdbc.java')],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        url = ('jdbc:postgresql://127.0.0.1:%d/appdb?user=md5user&password=%s'
               '&prepareThreshold=1&sslmode=disable' % (p.port, pg.passwords['md5user']))
        workers = 4
        r = subprocess.run([java, '-cp', '%s:%s' % (d, PGJDBC_JAR), 'PsJdbc', url,
                            str(workers), str(TX // workers)],
                           capture_output=True, text=True, timeout=150,
                           stdin=subprocess.DEVNULL)
    assert r.returncode == 0, 'pgjdbc failed:\n%s\n%s' % (r.stdout, r.stderr)
    assert 'transactions=%d' % TX in r.stdout, r.stdout
    _assert_servers_clean(p, pg, 'jdbc_add')


# ---------------------------------------------------------------------------
# pgbench -M prepared
# ---------------------------------------------------------------------------


@NEEDS_CACHE
@pytest.mark.parametrize('threads,seconds', [(2, 30), (64, 10)], ids=['j2', 'j64'])
def test_pgbench_prepared_64_clients_transaction_mode(pooler, pg, threads, seconds):
    """-c 64 over default_pool_size=8. pgbench (15) prepares each command with a
    synchronous PQprepare (Parse + Sync) the first time a client runs it; with -j 2 one
    thread drives 32 clients, so that Parse must be answered while the thread's other
    clients hold servers in open transactions. -j 64 (a thread per client) is the
    control. query_wait_timeout bounds a hang to well under a minute."""
    init = harness.pgbench_run(['-i', '-q', '-s', '1'], pg.port, 180)  # directly
    assert init.returncode == 0, init.stderr
    p = _pooler(pooler, pool_size=8, query_wait_timeout=seconds + 15)
    r = harness.pgbench_run(['-M', 'prepared', '-c', '64', '-j', str(threads), '-T',
                             str(seconds), '-n'], p.port, seconds + 120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    processed = re.search(r'number of transactions actually processed: (\d+)', out)
    assert processed and int(processed.group(1)) > 0, out
    failed = re.search(r'number of failed transactions: (\d+)', out)
    assert failed and int(failed.group(1)) == 0, out
    assert 'aborted' not in out and 'error' not in r.stderr.lower(), r.stderr
    assert re.search(r'number of clients: 64\b', out), out
    _assert_servers_clean(p, pg, 'pgbench_accounts', n=8)
