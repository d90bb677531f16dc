"""Shared fixtures for the raw-protocol tests (test/proto).

The technique of every transaction-pooling test:

1. run an exact message sequence DIRECTLY against PostgreSQL and record the
   reply sequence;
2. run the same sequence through the pooler (pool_mode=transaction,
   default_pool_size=1) and assert the reply sequence is identical
   (ParameterStatus is ignored: a pooler may legitimately add or drop those);
3. assert the pool is clean: a second client connecting through the pooler
   gets, within a bounded wait, the same backend (pg_backend_pid() equals the
   pid the first client saw earlier in its session) and finds it idle: no
   transaction, no leftover portal/cursor, prepared statement, lock, temp
   object or LISTEN.

Fixtures
    env      ProtoEnv with a transaction-mode pooler, default_pool_size=1
    env_factory(mode='transaction', pool_size=1, **pgbouncer_settings) -> ProtoEnv
    copy_table   name of a fresh table (a int, b text) owned by md5user in appdb

Every connection a test opens through ProtoEnv is closed at teardown (before
the pooler is stopped), so sluice's SIGTERM (wait for clients) returns fast.
"""

import time

import pytest

import pgwire
from pgwire import Conn, m, render, render_detail, ProtocolTimeout

USER = 'md5user'
DB = 'appdb'

# Seconds a second client may wait for the server the first client released.
RELEASE_WAIT = pgwire.DEFAULT_TIMEOUT

# Prepared statements that a pooler keeps on its servers on purpose
# (PgBouncer's max_prepared_statements cache: PGBOUNCER_<n>; sluice likewise).
POOLER_STATEMENT_RE = '^(pgbouncer|sluice)_'

# One simple Query that describes how clean a server connection is.
CLEAN_CHECK_SQL = """SELECT pg_backend_pid(),
  txid_current_if_assigned() IS NULL AS no_xid,
  now() = statement_timestamp() AS fresh_xact,
  (SELECT count(*) FROM pg_prepared_statements
     WHERE name !~* '%s') AS stmts,
  (SELECT count(*) FROM pg_cursors) AS cursors,
  (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()
     AND (locktype NOT IN ('virtualxid', 'relation')
          OR (locktype = 'relation' AND mode <> 'AccessShareLock'))) AS locks,
  (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) AS temps,
  (SELECT count(*) FROM pg_listening_channels()) AS listens""" % POOLER_STATEMENT_RE

CLEAN_EXPECTED = {'no_xid': 't', 'fresh_xact': 't', 'stmts': '0', 'cursors': '0',
                  'locks': '0', 'temps': '0', 'listens': '0'}


def seq(msgs, ignore='S', collapse=False):
    """Detailed rendering used for direct-vs-pooler comparisons."""
    return render_detail(msgs, ignore=ignore, collapse=collapse)


def superuser_conn(pg, db=DB):
    return Conn.connect(port=pg.port, unix_socket_dir=pg.socket_dir, user='postgres',
                        database=db,
                        params={'options': '-c lock_timeout=5s -c statement_timeout=20s'})


def superuser_sql(pg, query, db=DB):
    """Run `query` (may hold several statements) as superuser directly; return
    the rows of the last result as lists of str.  Never blocks for long: a lock
    left behind by a leaked server connection fails the test instead."""
    with superuser_conn(pg, db) as c:
        return c.query(query, timeout=30)


class ProtoEnv:
    def __init__(self, pg, pooler):
        self.pg = pg
        self.pooler = pooler
        self.conns = []
        self.password = pg.passwords[USER]

    # -- connections ----------------------------------------------------------

    def _track(self, c):
        self.conns.append(c)
        return c

    def direct(self, user=USER, db=DB, timeout=pgwire.DEFAULT_TIMEOUT):
        """Raw connection straight to PostgreSQL (TCP, md5)."""
        return self._track(Conn.connect(self.pg.host, self.pg.port, user=user,
                                        database=db, password=self.pg.passwords[user],
                                        timeout=timeout))

    def pooled(self, user=USER, db=DB, timeout=pgwire.DEFAULT_TIMEOUT):
        """Raw connection through the pooler (startup + auth done)."""
        return self._track(Conn.connect('127.0.0.1', self.pooler.port, user=user,
                                        database=db, password=self.pg.passwords[user],
                                        timeout=timeout))

    def superuser(self, db=DB):
        """Raw superuser connection straight to PostgreSQL (unix socket, trust),
        with lock and statement timeouts so that nothing can block forever."""
        return self._track(superuser_conn(self.pg, db))

    def sql(self, query, db=DB):
        """Rows of `query` run as superuser directly (bounded in time)."""
        return superuser_sql(self.pg, query, db)

    def client(self, via='pooler'):
        """(conn, server pid) — the pid read in this client's own session."""
        c = self.pooled() if via == 'pooler' else self.direct()
        return c, c.server_pid()

    def close_all(self):
        for c in self.conns:
            c.close()
        self.conns = []

    # -- the comparison ---------------------------------------------------------

    def compare(self, flow, setup=None, ignore='S', collapse=True, check_clean=True,
                same_pid=True):
        """Run flow(conn) -> messages directly and through the pooler; assert the
        renderings are equal; then (by default) assert the pool is clean.

        setup(), when given, runs before each of the two runs (e.g. to truncate
        a table).  Returns (pooled_conn, pid, direct_msgs, pooled_msgs)."""
        if setup:
            setup()
        d = self.direct()
        d.server_pid()
        try:
            want = flow(d)
        except pgwire.PgWireError as e:
            raise AssertionError('flow failed DIRECTLY against PostgreSQL: %s' % e) from e
        d.close()

        if setup:
            setup()
        c, pid = self.client()
        try:
            got = flow(c)
        except pgwire.PgWireError as e:
            raise AssertionError('flow failed THROUGH THE POOLER: %s\n(directly PostgreSQL '
                                 'answered: %s)' % (e, seq(want, ignore, True))) from e
        assert seq(got, ignore, collapse) == seq(want, ignore, collapse), \
            'reply sequence through the pooler differs from PostgreSQL'
        if check_clean:
            self.assert_clean(pid if same_pid else None)
        return c, pid, want, got

    # -- cleanliness ------------------------------------------------------------

    def clean_state(self, timeout=RELEASE_WAIT):
        """Connect a new client through the pooler, run CLEAN_CHECK_SQL and
        return (pid, {column: value}, messages).  The query must get its answer
        within `timeout` seconds (else the pool never released its server)."""
        c = self.pooled()
        try:
            c.send(m.query(CLEAN_CHECK_SQL))
            try:
                msgs = c.read_until_rfq(timeout=timeout)
            except ProtocolTimeout as e:
                raise AssertionError(
                    'a second client got no server within %ss: the pooler did not '
                    'release the connection (%s)' % (timeout, e)) from None
        finally:
            c.close()
        rendered = render(msgs, ignore='SN')
        assert rendered == ['T', 'D', 'C', 'Z:I'], \
            'clean check failed: %s' % render_detail(msgs)
        cols = [col['name'] for x in msgs if x.type == 'T' for col in x.columns]
        row = [x for x in msgs if x.type == 'D'][0].row
        state = dict(zip(cols, row))
        assert 'pg_backend_pid' in state, \
            'the second client got a reply that is not the answer to its own query ' \
            '(a reply owed to an earlier client leaked): %s' % render_detail(msgs)
        return int(state.pop('pg_backend_pid')), state, msgs

    def assert_clean(self, expected_pid=None, timeout=RELEASE_WAIT):
        """Second client through the pooler: bounded wait, same backend when
        expected_pid is given, and a clean session."""
        pid, state, _ = self.clean_state(timeout)
        if expected_pid is not None:
            assert pid == expected_pid, \
                'second client got backend %d, expected the first client\'s %d ' \
                '(pool_size=1: the old server was closed or never released)' % (pid, expected_pid)
        assert state == CLEAN_EXPECTED, 'server handed over dirty: %r' % state
        return pid

    def wait_server_gone(self, pid, timeout=10):
        """Wait until backend `pid` has exited (pooler closed it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.sql('SELECT 1 FROM pg_stat_activity WHERE pid = %d' % pid):
                return True
            time.sleep(0.05)
        return False

    def truncator(self, table):
        """A setup callable for compare(): TRUNCATE table."""
        return lambda: self.sql('TRUNCATE %s' % table)

    def count(self, table, where='true'):
        return int(self.sql('SELECT count(*) FROM %s WHERE %s' % (table, where))[0][0])

    seq = staticmethod(seq)

    def backend_state(self, pid):
        """pg_stat_activity.state of a backend, or None if gone."""
        rows = self.sql('SELECT state FROM pg_stat_activity WHERE pid = %d' % pid)
        return rows[0][0] if rows else None


@pytest.fixture
def env_factory(pg, pooler):
    envs = []

    def make(mode='transaction', pool_size=1, **settings):
        cfg = {'pool_mode': mode, 'default_pool_size': pool_size}
        cfg.update(settings)
        e = ProtoEnv(pg, pooler(pgbouncer=cfg))
        envs.append(e)
        return e

    yield make
    for e in envs:
        e.close_all()


@pytest.fixture
def env(env_factory):
    return env_factory()


@pytest.fixture
def copy_table(pg):
    """A fresh table copytest(a int, b text) owned by md5user in appdb."""
    name = 'copytest'
    superuser_sql(pg, 'DROP TABLE IF EXISTS %s; CREATE TABLE %s (a int, b text); '
                  'ALTER TABLE %s OWNER TO %s' % (name, name, name, USER))
    yield name
    superuser_sql(pg, 'DROP TABLE IF EXISTS %s' % name)


@pytest.fixture
def refusing_table(pg):
    """copytrig(a int, b text) owned by md5user, whose BEFORE STATEMENT trigger fails every
    COPY into it before the COPY reads any data."""
    superuser_sql(pg, "CREATE OR REPLACE FUNCTION copytrig_refuses() RETURNS trigger "
                  "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'copytrig takes no rows'; END $$;"
                  " DROP TABLE IF EXISTS copytrig; CREATE TABLE copytrig (a int, b text); "
                  "ALTER TABLE copytrig OWNER TO %s; CREATE TRIGGER refuse BEFORE INSERT ON "
                  "copytrig FOR EACH STATEMENT EXECUTE FUNCTION copytrig_refuses()" % USER)
    yield 'copytrig'
    superuser_sql(pg, 'DROP TABLE IF EXISTS copytrig; DROP FUNCTION IF EXISTS copytrig_refuses()')
