"""Differential test of the tracked parameters (client_encoding, DateStyle, TimeZone,
standard_conforming_strings, application_name, IntervalStyle): three clients with different
startup values share one server in transaction mode (default_pool_size=1; one group runs
session mode instead, a server each, opened with none of their values) and run random
SET, SET LOCAL, set_config(), RESET, RESET ALL and DISCARD ALL, in and out of transaction
blocks, with savepoints, errors and rollbacks, as simple Queries and now and then as an
extended-protocol batch; each client's replies, ParameterStatus
included, must be what the same client gets on its own direct connection.

What it checks beyond the replies: that a client never sees another client's value (a
client without an application_name once inherited the previous client's), and that RESET
and DISCARD ALL bring back the client's own startup values, as PostgreSQL does, rather than
those the shared server was opened with (asyncpg's pool runs RESET ALL at every release).

The vocabulary leaves out what sluice documents it cannot follow (doc/pooling.md): SET ...
TO DEFAULT, a SET to exactly the value the server started with (a later RESET of another
parameter would take it back to the client's default too), and a statement that reads a
value after a RESET in the same Query. ParameterStatus messages of one reply are compared
as a set: PostgreSQL sends them in its own order.

The inputs are fixed by their seeds (SLUICE_DIFF_SEED adds to them, SLUICE_DIFF_UNITS sets
the number of units per client group); a failure names the seed and prints both replies."""

import os
import random

import pytest

from pgwire import Conn, diff_tokens, m

pytestmark = pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 lets a client without application_name inherit the previous client's, "
    "and RESET ALL / DISCARD ALL give the server's values instead of the client's")

SEED = int(os.environ.get('SLUICE_DIFF_SEED', '0'))
UNITS = int(os.environ.get('SLUICE_DIFF_UNITS', '120'))

# Values a client may set or start with: never the server's own (see the docstring).
VALUES = {
    'TimeZone': ['Asia/Tokyo', 'America/New_York', 'Europe/Berlin', 'Australia/Sydney'],
    'DateStyle': ['SQL, DMY', 'German, DMY', 'Postgres, MDY', 'ISO, YMD'],
    'IntervalStyle': ['iso_8601', 'sql_standard', 'postgres_verbose'],
    'application_name': ['alpha', 'beta', "o'brien", 'C:\\tmp\\n'],
    'standard_conforming_strings': ['off', 'on'],
    'client_encoding': ['LATIN1', 'WIN1252', 'UTF8'],
}
NAMES = list(VALUES)
READ = 'SELECT ' + ', '.join("current_setting('%s')" % n for n in NAMES)


def lit(v):
    """A literal that means `v` whatever standard_conforming_strings is."""
    if '\\' in v:
        return "E'%s'" % v.replace('\\', '\\\\').replace("'", "''")
    return "'%s'" % v.replace("'", "''")


class Gen:
    def __init__(self, rnd, defaults):
        self.rnd = rnd
        self.values = {n: [v for v in vs if v != defaults[n]] for n, vs in VALUES.items()}

    def value(self, name):
        return self.rnd.choice(self.values[name])

    def startup(self):
        return {n: self.value(n) for n in NAMES if self.rnd.random() < 0.5}

    def change(self, in_xact):
        r = self.rnd.random()
        n = self.rnd.choice(NAMES)
        if r < 0.35:
            local = 'LOCAL ' if in_xact and self.rnd.random() < 0.3 else ''
            return 'SET %s%s = %s' % (local, n, lit(self.value(n)))
        if r < 0.5:
            return 'SELECT set_config(%s, %s, %s)' % (
                lit(n), lit(self.value(n)), 'true' if in_xact and self.rnd.random() < 0.3
                else 'false')
        if r < 0.7:
            return 'RESET %s' % n
        if r < 0.85:
            return 'RESET ALL'
        return 'DISCARD ALL'

    def unit(self):
        """One client's turn: queries sent one at a time; the server stays with the client
        until the turn ends (outside a transaction block)."""
        rnd = self.rnd
        if rnd.random() < 0.55:
            r = rnd.random()
            if r < 0.6:
                return [self.change(False)]
            if r < 0.75:
                return [READ]
            # several statements in one Query (an implicit transaction): nothing reads a
            # value after a RESET in it
            qs = [self.change(False) for _ in range(rnd.randint(2, 3))]
            qs = [q for q in qs if q != 'DISCARD ALL'] or ['RESET ALL']
            if rnd.random() < 0.3:
                qs.append('SELECT 1/0')
            return ['; '.join(qs)]
        out = ['BEGIN']
        savepoint = False
        for _ in range(rnd.randint(1, 5)):
            r = rnd.random()
            if r < 0.55:
                out.append(self.change(True))
            elif r < 0.7:
                out.append(READ)
            elif r < 0.8:
                out.append('SAVEPOINT s')
                savepoint = True
            elif r < 0.88 and savepoint:
                out.append('ROLLBACK TO SAVEPOINT s')
            else:
                out.append('SELECT 1/0')
        out.append(rnd.choice(['COMMIT', 'ROLLBACK', 'COMMIT']))
        out.append(READ)
        return out


def tokens(msgs):
    plain = diff_tokens(msgs, 'SC')
    status = sorted('S:%s=%s' % tuple(x.body.split(b'\0')[:2][i].decode() for i in (0, 1))
                    for x in msgs if x.type == 'S')
    return plain, status


def login_values(conn):
    return {n: conn.parameters.get(n) for n in NAMES}


def run_group(env, seed):
    rnd = random.Random(seed)
    probe = env.direct()
    defaults = dict(zip(NAMES, probe.query(READ)[0]))
    probe.close()
    gen = Gen(rnd, defaults)
    starts = [gen.startup() for _ in range(3)]
    pw = env.password

    def connect(port, params):
        c = Conn.connect('127.0.0.1', port, user='md5user', database='appdb', password=pw,
                         params=params)
        env.conns.append(c)
        return c

    direct = [connect(env.pg.port, s) for s in starts]
    pooled = [connect(env.pooler.port, s) for s in starts]
    for i, (d, p) in enumerate(zip(direct, pooled)):
        assert login_values(p) == login_values(d), (seed, i, starts[i])
    history = []
    for _ in range(UNITS):
        i = rnd.randrange(3)
        for q in gen.unit():
            # a single statement goes now and then as Parse/Bind/Execute/Sync
            extended = ';' not in q and rnd.random() < 0.2
            want, got = [], []
            for conn, out in ((direct[i], want), (pooled[i], got)):
                conn.send(m.extended(q) if extended else m.query(q))
                out.extend(conn.read_until_rfq(1))
            q = ('extended: ' if extended else '') + q
            history.append('client %d: %s' % (i, q))
            if tokens(got) != tokens(want):
                pytest.fail('seed %d, client %d (startup %r), query %r\n  direct: %r\n  '
                            'pooled: %r\nlast queries:\n  %s' % (
                                seed, i, starts[i], q, tokens(want), tokens(got),
                                '\n  '.join(history[-12:])))


@pytest.mark.parametrize('group', range(4))
def test_random_parameter_sessions_match_postgresql(env_factory, group):
    if group == 2:  # the statement cache on: DISCARD ALL also drops its statements
        env = env_factory(max_prepared_statements=20)
    elif group == 3:  # session mode: each client keeps a server, opened with no values
        env = env_factory(mode='session', pool_size=3)
    else:
        env = env_factory()
    run_group(env, 7000 + 100 * group + SEED)
