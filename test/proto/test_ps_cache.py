"""Prepared-statement cache (DESIGN.md section 5, spec/protocol.md section 9) in
transaction pooling: every rule as an exact message sequence, run DIRECTLY against
PostgreSQL and then through the pooler; the client-visible replies must be identical
(ErrorResponse compared by severity, SQLSTATE, message, detail, hint and position;
statement names never appear in replies anyway). Afterwards the pool must be clean: a
second client gets the same server (default_pool_size=1), finds no open transaction and
only the pooler's own sluice_* statements in pg_prepared_statements.

Named statements are virtual: a named Parse is sent renamed to sluice_<id> or answered
with a synthesized ParseComplete when the server already has the same (text, types);
Bind/Describe 'S' are rewritten, with a Parse injected first when the current server
lacks the statement; Close 'S' is answered by the pooler (the server keeps the
statement); LRU eviction at max_prepared_statements; max_prepared_statements=0 turns it
all off."""

import pytest

import pgwire
from pgwire import m, parse_error, short

# Tests that fail against PgBouncer 1.18 (make check-pgbouncer) by design.
NEEDS_CACHE = pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: the prepared statement cache (max_prepared_statements)")

USER_STATEMENT_FILTER = "name !~ '^(sluice|pgbouncer)_'"
ERROR_FIELDS = 'SVCMDHP'   # not F/L/R (source file/line/routine of the server build)


# ---------------------------------------------------------------------------
# Rendering and comparison helpers
# ---------------------------------------------------------------------------

def tok(msg):
    """One token per message; errors carry their message text as well."""
    if msg.type in ('E', 'N'):
        f = parse_error(msg.body)
        return '%s:%s:%s' % (msg.type, f.get('C'), f.get('M'))
    return short(msg)


def toks(msgs, ignore='SN'):
    return [tok(x) for x in msgs if x.type not in ignore]


def error_fields(msgs):
    out = []
    for x in msgs:
        if x.type == 'E':
            f = parse_error(x.body)
            out.append({k: f[k] for k in ERROR_FIELDS if k in f})
    return out


def assert_same(want, got, what='reply sequence'):
    assert toks(got) == toks(want), \
        '%s through the pooler differs from PostgreSQL:\n  direct: %s\n  pooler: %s' % (
            what, toks(want), toks(got))
    assert error_fields(got) == error_fields(want), \
        'ErrorResponse fields differ:\n  direct: %s\n  pooler: %s' % (
            error_fields(want), error_fields(got))


def run_both(env, scenario):
    """scenario(new_conn, via) -> list of messages, where new_conn() opens a connection
    (directly to PostgreSQL when via == 'direct', else through the pooler). Runs it both
    ways, asserts identical replies, returns (direct messages, pooled messages)."""
    try:
        want = scenario(env.direct, 'direct')
    except pgwire.PgWireError as e:
        raise AssertionError('scenario failed DIRECTLY against PostgreSQL: %s' % e) from e
    env.close_all()
    try:
        got = scenario(env.pooled, 'pooler')
    except pgwire.PgWireError as e:
        raise AssertionError('scenario failed THROUGH THE POOLER: %s\n(directly: %s)'
                             % (e, toks(want))) from e
    assert_same(want, got)
    return want, got


def compare(env, flow):
    """Single-connection flow(conn, via) -> messages; returns (pid, direct, pooled)."""
    pid = {}

    def scenario(new_conn, via):
        c = new_conn()
        if via == 'pooler':
            pid['pid'] = c.server_pid()
        return flow(c, via)

    want, got = run_both(env, scenario)
    return pid['pid'], want, got


def send_read(c, *msgs, n=1):
    c.send(*msgs)
    return c.read_until_rfq(n)


def pooled_statements(c):
    """(name, statement) of every prepared statement on the caller's current server,
    read with a simple Query (which the cache never touches)."""
    return [tuple(r) for r in c.query(
        'SELECT name, statement FROM pg_prepared_statements ORDER BY name')]


def sluice_count(c):
    return int(c.scalar("SELECT count(*) FROM pg_prepared_statements "
                        "WHERE name LIKE 'sluice\\_%'"))


def assert_pool_clean(env, pid=None):
    """Second client: bounded wait, same backend (when pid given), no transaction, no
    client-named statement; pg_prepared_statements holds only sluice_* names."""
    env.assert_clean(pid)
    c = env.pooled()
    try:
        names = [r[0] for r in c.query('SELECT name FROM pg_prepared_statements')]
        status = c.status
    finally:
        c.close()
    assert all(n.startswith('sluice_') for n in names), \
        'statements other than the pooler\'s own left on the server: %r' % names
    assert status == 'I', status


def rows_of(msgs):
    return [x.row for x in msgs if x.type == 'D']


# ---------------------------------------------------------------------------
# Basic rewriting
# ---------------------------------------------------------------------------

Q_ADD = 'SELECT $1::int + 1 AS x'


@NEEDS_CACHE
def test_named_parse_bind_describe_rewritten(env):
    """Parse/Describe 'S'/Bind of a client name work as on PostgreSQL; the server holds
    the statement under a sluice_* name only."""
    def flow(c, via):
        out = send_read(c, m.parse(Q_ADD, name='s1'), m.describe('S', 's1'),
                        m.bind(stmt='s1', params=['1']), m.execute(), m.sync())
        out += send_read(c, m.bind(stmt='s1', params=['41']), m.execute(), m.sync())
        out += send_read(c, m.describe('S', 's1'), m.bind(portal='p', stmt='s1', params=['2']),
                         m.describe('P', 'p'), m.execute('p'), m.close('P', 'p'), m.sync())
        # Typed parameters are part of the statement's identity.
        out += send_read(c, m.parse('SELECT $1 AS y', name='s2', param_types=(23,)),
                         m.describe('S', 's2'), m.bind(stmt='s2', params=['5']),
                         m.execute(), m.sync())
        if via == 'pooler':
            stmts = pooled_statements(c)
            assert sorted(s for _, s in stmts) == sorted([Q_ADD, 'SELECT $1 AS y']), stmts
            assert all(n.startswith('sluice_') for n, _ in stmts), stmts
        return out

    pid, _, got = compare(env, flow)
    assert toks(got) == ['1', 't', 'T', '2', 'D:2', 'C:SELECT 1', 'Z:I',
                         '2', 'D:42', 'C:SELECT 1', 'Z:I',
                         't', 'T', '2', 'T', 'D:3', 'C:SELECT 1', '3', 'Z:I',
                         '1', 't', 'T', '2', 'D:5', 'C:SELECT 1', 'Z:I']
    assert_pool_clean(env, pid)


def test_unnamed_statements_pass_untouched(env):
    def flow(c, via):
        out = send_read(c, m.parse('SELECT $1::int * 3'), m.describe('S'),
                        m.bind(params=['3']), m.execute(),
                        m.bind(portal='np', params=['4']), m.execute('np'),
                        m.close('S'), m.close('P', 'np'), m.sync())
        out += send_read(c, m.parse('SELECT 1'), m.parse('SELECT 2'), m.bind(),
                         m.execute(), m.sync())
        if via == 'pooler':
            assert sluice_count(c) == 0
        return out

    pid, _, got = compare(env, flow)
    assert toks(got) == ['1', 't', 'T', '2', 'D:9', 'C:SELECT 1', '2', 'D:12', 'C:SELECT 1',
                         '3', '3', 'Z:I', '1', '1', '2', 'D:2', 'C:SELECT 1', 'Z:I']
    assert_pool_clean(env, pid)


@NEEDS_CACHE
def test_same_text_second_client_gets_synthesized_parse_complete(env):
    """Two clients, one server: the second Parse of the same text is answered by the
    pooler, in order (after the replies owed before it), also before a Flush."""
    q2 = 'SELECT $1::text || $2::text AS cat'

    def scenario(new_conn, via):
        a = new_conn()
        out = send_read(a, m.parse(Q_ADD, name='a1'), m.bind(stmt='a1', params=['9']),
                        m.execute(), m.sync())
        b = new_conn()
        # Unnamed query with rows first: the synthesized ParseComplete must follow them.
        out += send_read(b, m.parse('SELECT generate_series(1, 3)'), m.bind(), m.execute(),
                         m.parse(Q_ADD, name='b1'), m.bind(stmt='b1', params=['99']),
                         m.execute(), m.sync())
        # Nothing outstanding before it: answered at once, even without Sync.
        b.send(m.parse(Q_ADD, name='b2'), m.flush())
        out += b.read_until('1')
        out += send_read(b, m.bind(stmt='b2', params=['-1']), m.execute(), m.sync())
        out += send_read(a, m.parse(q2, name='a2'), m.bind(stmt='a2', params=['x', 'y']),
                         m.execute(), m.bind(stmt='a1', params=['0']), m.execute(), m.sync())
        out += send_read(b, m.parse(q2, name='b3'), m.bind(stmt='b3', params=['p', 'q']),
                         m.execute(), m.sync())
        if via == 'pooler':
            stmts = pooled_statements(b)
            # One server-side copy per distinct text, whoever prepared it.
            assert sorted(s for _, s in stmts) == sorted([Q_ADD, q2]), stmts
        return out

    _, got = run_both(env, scenario)
    assert toks(got) == ['1', '2', 'D:10', 'C:SELECT 1', 'Z:I',
                         '1', '2', 'D:1', 'D:2', 'D:3', 'C:SELECT 3',
                         '1', '2', 'D:100', 'C:SELECT 1', 'Z:I',
                         '1', '2', 'D:0', 'C:SELECT 1', 'Z:I',
                         '1', '2', 'D:xy', 'C:SELECT 1', '2', 'D:1', 'C:SELECT 1', 'Z:I',
                         '1', '2', 'D:pq', 'C:SELECT 1', 'Z:I']
    assert_pool_clean(env)


def test_synthesized_replies_after_large_rows(env):
    """Synthesized ParseComplete/CloseComplete queued behind multi-megabyte DataRows
    (streamed by the pooler in pieces) come out after them, in order."""
    def scenario(new_conn, via):
        a = new_conn()
        out = send_read(a, m.parse(Q_ADD, name='a'), m.sync())
        b = new_conn()
        b.send(m.parse("SELECT repeat('x', 3000000) AS big FROM generate_series(1, 3)"),
               m.bind(), m.execute(), m.parse(Q_ADD, name='b'), m.close('S', 'nothing'),
               m.bind(stmt='b', params=['1']), m.execute(), m.close('S', 'b'), m.sync())
        msgs = b.read_until_rfq(timeout=30)
        out += [x if x.type != 'D' or len(x.body) < 1000 else pgwire.Msg('D', b'\0\1\0\0\0\3big')
                for x in msgs]
        out += send_read(a, m.close('S', 'a'), m.sync())
        return out

    _, got = run_both(env, scenario)
    assert toks(got) == ['1', 'Z:I', '1', '2', 'D:big', 'D:big', 'D:big', 'C:SELECT 3',
                         '1', '3', '2', 'D:2', 'C:SELECT 1', '3', 'Z:I', '3', 'Z:I']
    assert_pool_clean(env)


@NEEDS_CACHE
def test_bind_and_describe_on_server_lacking_the_statement(env_factory):
    """default_pool_size=2: the client prepares on one server, then gets the other one,
    which lacks the statements: Describe 'S' and Bind get an injected Parse whose
    ParseComplete the client never sees."""
    env = env_factory(pool_size=2)
    q_pid = 'SELECT $1::int + 1 AS x, pg_backend_pid() AS pid'
    q_desc = 'SELECT $1::text AS t, $2::int8 AS n'
    seen = {'pids': set()}

    def norm(msgs):
        # The pid column differs between runs: keep only that it was there.
        out = []
        for x in msgs:
            if x.type == 'D' and len(x.row) == 2 and x.row[1].isdigit() and \
                    int(x.row[1]) in seen.get('pids', ()):
                out.append('D:%s|PID' % x.row[0])
            else:
                out.append(tok(x))
        return [t for t in out if not t.startswith(('S:', 'N:'))]

    def flow(a, via, holders):
        out = send_read(a, m.parse(q_pid, name='s1'), m.parse(q_desc, name='s2'),
                        m.bind(stmt='s1', params=['1']), m.execute(), m.sync())
        pid_a = int(rows_of(out)[0][1])
        other = None
        if via == 'pooler':
            # Hold both servers in open transactions, then free the one that lacks s1/s2.
            y, z = holders
            y.query('BEGIN')
            z.query('BEGIN')
            py, pz = y.server_pid(), z.server_pid()
            assert py != pz and pid_a in (py, pz), (pid_a, py, pz)
            keep, free = (y, z) if py == pid_a else (z, y)
            other = pz if py == pid_a else py
            free.query('COMMIT')
        seen['pids'].update({pid_a, other} - {None})
        out2 = send_read(a, m.describe('S', 's2'), m.bind(stmt='s2', params=['t', '7']),
                         m.execute(), m.sync())
        out2 += send_read(a, m.bind(stmt='s1', params=['2']), m.execute(), m.sync())
        out2 += send_read(a, m.bind(portal='pp', stmt='s1', params=['3']), m.describe('P', 'pp'),
                          m.execute('pp'), m.sync())
        if via == 'pooler':
            pids = [int(r[1]) for r in rows_of(out2) if len(r) == 2 and r[1].isdigit()
                    and r[0] in ('3', '4')]
            assert pids == [other, other], \
                'the client was expected on the other server %d, ran on %r' % (other, pids)
            assert sorted(s for _, s in pooled_statements(a)) == sorted([q_pid, q_desc])
            keep.query('COMMIT')
        return out + out2

    d = env.direct()
    want = flow(d, 'direct', None)
    env.close_all()
    a = env.pooled()
    holders = (env.pooled(), env.pooled())
    got = flow(a, 'pooler', holders)
    assert norm(got) == norm(want), '\n  direct: %s\n  pooler: %s' % (norm(want), norm(got))
    assert norm(got) == ['1', '1', '2', 'D:2|PID', 'C:SELECT 1', 'Z:I',
                         't', 'T', '2', 'D:t|7', 'C:SELECT 1', 'Z:I',
                         '2', 'D:3|PID', 'C:SELECT 1', 'Z:I',
                         '2', 'T', 'D:4|PID', 'C:SELECT 1', 'Z:I']
    for c in holders:
        c.close()
    a.close()
    env.assert_clean()


# ---------------------------------------------------------------------------
# Close, errors, DEALLOCATE ALL / DISCARD ALL
# ---------------------------------------------------------------------------

@NEEDS_CACHE
def test_close_then_reparse_same_name_different_text(env):
    """Close 'S' is answered by the pooler; the name is free again at once; the server
    keeps the statement for others."""
    q2 = "SELECT 'second:' || $1::text AS s"

    def flow(c, via):
        out = send_read(c, m.parse(Q_ADD, name='s'), m.bind(stmt='s', params=['1']),
                        m.execute(), m.sync())
        out += send_read(c, m.close('S', 's'), m.sync())
        out += send_read(c, m.parse(q2, name='s'), m.bind(stmt='s', params=['a']),
                         m.execute(), m.sync())
        # Close and re-Parse in the same batch; then a Bind after Close in one batch.
        out += send_read(c, m.close('S', 's'), m.parse(Q_ADD, name='s'),
                         m.bind(stmt='s', params=['10']), m.execute(), m.sync())
        out += send_read(c, m.close('S', 's'), m.bind(stmt='s', params=['1']), m.execute(),
                         m.sync())
        # Closing a name that does not exist is not an error.
        out += send_read(c, m.close('S', 'never_there'), m.close('S', 's'), m.sync())
        if via == 'pooler':
            stmts = pooled_statements(c)
            assert sorted(s for _, s in stmts) == sorted([Q_ADD, q2]), stmts
        return out

    pid, _, got = compare(env, flow)
    assert toks(got) == [
        '1', '2', 'D:2', 'C:SELECT 1', 'Z:I', '3', 'Z:I',
        '1', '2', 'D:second:a', 'C:SELECT 1', 'Z:I',
        '3', '1', '2', 'D:11', 'C:SELECT 1', 'Z:I',
        '3', 'E:26000:prepared statement "s" does not exist', 'Z:I', '3', '3', 'Z:I']
    assert_pool_clean(env, pid)


def test_duplicate_name_42P05_in_pipeline(env):
    """Re-using a name without Close: PostgreSQL's own 42P05, the rest of the batch is
    discarded up to Sync, the next batch runs; the old statement stays."""
    def flow(c, via):
        out = send_read(c, m.parse('SELECT 1 AS one', name='d'), m.sync())
        c.send(m.parse('SELECT 2 AS two', name='d'), m.bind(stmt='d'), m.execute(), m.sync(),
               m.parse('SELECT $1::int AS n'), m.bind(params=['5']), m.execute(), m.sync(),
               m.bind(stmt='d'), m.execute(), m.sync())
        out += c.read_until_rfq(3)
        # Same text again under the same name: still a duplicate.
        out += send_read(c, m.parse('SELECT 1 AS one', name='d'), m.sync())
        # A new name prepared earlier in the failing batch survives (statements are not
        # transactional); the duplicate in the middle of the batch discards the rest.
        c.send(m.parse('SELECT 3 AS three', name='e'), m.bind(stmt='e'), m.execute(),
               m.parse('SELECT 4', name='d'), m.bind(stmt='d'), m.execute(), m.sync(),
               m.bind(stmt='e'), m.execute(), m.bind(stmt='d'), m.execute(), m.sync())
        out += c.read_until_rfq(2)
        # Inside a transaction block: the block fails (Z:E) like on PostgreSQL.
        out += send_read(c, m.query('BEGIN'))
        out += send_read(c, m.parse('SELECT 5', name='e'), m.bind(stmt='e'), m.execute(),
                         m.sync())
        out += send_read(c, m.query('ROLLBACK'))
        out += send_read(c, m.bind(stmt='e'), m.execute(), m.close('S', 'd'),
                         m.close('S', 'e'), m.sync())
        return out

    pid, _, got = compare(env, flow)
    dup = 'E:42P05:prepared statement "d" already exists'
    assert toks(got) == [
        '1', 'Z:I',
        dup, 'Z:I', '1', '2', 'D:5', 'C:SELECT 1', 'Z:I', '2', 'D:1', 'C:SELECT 1', 'Z:I',
        dup, 'Z:I',
        '1', '2', 'D:3', 'C:SELECT 1', dup, 'Z:I',
        '2', 'D:3', 'C:SELECT 1', '2', 'D:1', 'C:SELECT 1', 'Z:I',
        'C:BEGIN', 'Z:T', 'E:42P05:prepared statement "e" already exists', 'Z:E',
        'C:ROLLBACK', 'Z:I',
        '2', 'D:3', 'C:SELECT 1', '3', '3', 'Z:I']
    assert_pool_clean(env, pid)


def test_two_duplicate_names_in_one_write(env):
    """Several batches of the same write each re-use a name: every one gets PostgreSQL's
    42P05 for the client's name (never an error about a pooler-internal name)."""
    def flow(c, via):
        out = send_read(c, m.parse('SELECT 1 AS one', name='d'), m.parse('SELECT 2', name='e'),
                        m.sync())
        c.send(m.parse('SELECT 3', name='d'), m.bind(stmt='d'), m.execute(), m.sync(),
               m.parse('SELECT 4', name='e'), m.sync(),
               m.parse('SELECT 5', name='d'), m.bind(stmt='d'), m.execute(), m.sync(),
               m.bind(stmt='d'), m.execute(), m.bind(stmt='e'), m.execute(), m.sync())
        out += c.read_until_rfq(4)
        out += send_read(c, m.close('S', 'd'), m.close('S', 'e'), m.sync())
        return out

    pid, _, got = compare(env, flow)
    assert toks(got) == ['1', '1', 'Z:I',
                         'E:42P05:prepared statement "d" already exists', 'Z:I',
                         'E:42P05:prepared statement "e" already exists', 'Z:I',
                         'E:42P05:prepared statement "d" already exists', 'Z:I',
                         '2', 'D:1', 'C:SELECT 1', '2', 'D:2', 'C:SELECT 1', 'Z:I',
                         '3', '3', 'Z:I']
    assert_pool_clean(env, pid)


def test_synthesized_parse_complete_after_failed_batch_in_one_write(env):
    """A batch that fails, then in the same write a batch whose named Parse the pooler
    answers itself (the server already has the text): replies stay in order."""
    def scenario(new_conn, via):
        a = new_conn()
        out = send_read(a, m.parse(Q_ADD, name='a'), m.sync())
        b = new_conn()
        b.send(m.parse('SELEC 1'), m.parse(Q_ADD, name='b0'), m.bind(stmt='b0', params=['1']),
               m.execute(), m.sync(),
               m.parse(Q_ADD, name='b'), m.bind(stmt='b', params=['2']), m.execute(),
               m.sync(),
               m.bind(stmt='b', params=['3']), m.execute(), m.close('S', 'b'), m.sync())
        out += b.read_until_rfq(3)
        out += send_read(a, m.close('S', 'a'), m.sync())
        return out

    _, got = run_both(env, scenario)
    assert [t[:7] for t in toks(got)] == ['1', 'Z:I', 'E:42601', 'Z:I',
                                          '1', '2', 'D:3', 'C:SELEC', 'Z:I',
                                          '2', 'D:4', 'C:SELEC', '3', 'Z:I', '3', 'Z:I']
    assert_pool_clean(env)


def test_parse_in_failed_transaction_block(env):
    """In a failed transaction block PostgreSQL refuses every Parse (25P02) -- also one
    whose text the server already has (no synthesized ParseComplete), and also a re-used
    name (25P02, not 42P05). After ROLLBACK the refused name does not exist."""
    def flow(c, via):
        out = send_read(c, m.parse(Q_ADD, name='x'), m.sync())
        out += send_read(c, m.query('BEGIN; SELECT 1/0'))
        out += send_read(c, m.parse(Q_ADD, name='y'), m.bind(stmt='y', params=['1']),
                         m.execute(), m.sync())
        out += send_read(c, m.parse('SELECT 2', name='x'), m.sync())
        out += send_read(c, m.query('ROLLBACK'))
        out += send_read(c, m.parse(Q_ADD, name='y'), m.bind(stmt='y', params=['1']),
                         m.execute(), m.bind(stmt='x', params=['2']), m.execute(), m.sync())
        out += send_read(c, m.close('S', 'x'), m.close('S', 'y'), m.sync())
        return out

    pid, _, got = compare(env, flow)
    assert [t[:7] for t in toks(got)] == [
        '1', 'Z:I', 'C:BEGIN', 'E:22012', 'Z:E', 'E:25P02', 'Z:E', 'E:25P02', 'Z:E',
        'C:ROLLB', 'Z:I', '1', '2', 'D:2', 'C:SELEC', '2', 'D:3', 'C:SELEC', 'Z:I',
        '3', '3', 'Z:I']
    assert_pool_clean(env, pid)


def test_transaction_exit_statements_in_failed_transaction_block(env):
    """A failed transaction block still accepts a Parse (and Bind) of ROLLBACK, ABORT,
    COMMIT, END and ROLLBACK TO: also when the server already has the text, which the cache
    then answers itself. postgres.js prepares its `rollback` like any statement; when the
    cache refused it with 25P02 the client could never leave the failed block. A re-used
    name is 42P05 there (the name is looked at after the text), other texts 25P02."""
    texts = ['ROLLBACK', 'abort;', 'COMMIT', '/* app */ END', 'ROLLBACK TO SAVEPOINT sp']

    def flow(c, via):
        # The server gets every text once, outside any transaction.
        out = send_read(c, *[m.parse(t, name='first%d' % i) for i, t in enumerate(texts)],
                        m.sync())
        for i, t in enumerate(texts):
            if 'SAVEPOINT' in t:
                out += send_read(c, m.query('BEGIN; SAVEPOINT sp; SELECT 1/0'))
            else:
                out += send_read(c, m.query('BEGIN; SELECT 1/0'))
            out += send_read(c, m.parse(t, name='again%d' % i), m.bind(stmt='again%d' % i),
                             m.execute(), m.sync())
            if 'SAVEPOINT' in t:  # still in the transaction, usable again
                out += send_read(c, m.query('SELECT 5; COMMIT'))
        # The name already exists: 42P05 for an exit text, 25P02 for another.
        out += send_read(c, m.query('BEGIN; SELECT 1/0'))
        out += send_read(c, m.parse('ROLLBACK', name='first0'), m.sync())
        out += send_read(c, m.parse('SELECT 2', name='first0'), m.sync())
        out += send_read(c, m.bind(stmt='first0'), m.execute(), m.sync())
        out += send_read(c, *[m.close('S', 'first%d' % i) for i in range(len(texts))],
                         *[m.close('S', 'again%d' % i) for i in range(len(texts))], m.sync())
        return out

    pid, _, got = compare(env, flow)
    t = [x for x in toks(got) if x not in ('1', '2')]
    assert t == [
        'Z:I',
        'C:BEGIN', 'E:22012:division by zero', 'Z:E', 'C:ROLLBACK', 'Z:I',
        'C:BEGIN', 'E:22012:division by zero', 'Z:E', 'C:ROLLBACK', 'Z:I',
        'C:BEGIN', 'E:22012:division by zero', 'Z:E', 'C:ROLLBACK', 'Z:I',
        'C:BEGIN', 'E:22012:division by zero', 'Z:E', 'C:ROLLBACK', 'Z:I',
        'C:BEGIN', 'C:SAVEPOINT', 'E:22012:division by zero', 'Z:E', 'C:ROLLBACK', 'Z:T',
        'T', 'D:5', 'C:SELECT 1', 'C:COMMIT', 'Z:I',
        'C:BEGIN', 'E:22012:division by zero', 'Z:E',
        'E:42P05:prepared statement "first0" already exists', 'Z:E',
        'E:25P02:current transaction is aborted, commands ignored until end of transaction '
        'block', 'Z:E',
        'C:ROLLBACK', 'Z:I'] + ['3'] * 10 + ['Z:I'], toks(got)
    assert_pool_clean(env, pid)


@NEEDS_CACHE
def test_errors_name_the_clients_statement(env):
    """PostgreSQL's errors that name a statement (a Bind with the wrong number of
    parameters) name the client's statement, not sluice_<n>: also when the client has two
    names for one text, and when the name is closed and the same text prepared under
    another name behind the failing Bind (the server discards both)."""
    def flow(c, via):
        out = send_read(c, m.parse(Q_ADD, name='b'), m.parse(Q_ADD, name='c'), m.sync())
        out += send_read(c, m.bind(stmt='c'), m.execute(), m.sync())
        out += send_read(c, m.bind(stmt='b', params=['1', '2']), m.execute(), m.sync())
        out += send_read(c, m.bind(stmt='b'), m.execute(), m.close('S', 'b'),
                         m.parse(Q_ADD, name='d'), m.sync())
        out += send_read(c, m.describe('S', 'b'), m.describe('S', 'd'), m.sync())
        return out

    pid, _, got = compare(env, flow)
    assert toks(got) == [
        '1', '1', 'Z:I',
        'E:08P01:bind message supplies 0 parameters, but prepared statement "c" requires 1',
        'Z:I',
        'E:08P01:bind message supplies 2 parameters, but prepared statement "b" requires 1',
        'Z:I',
        'E:08P01:bind message supplies 0 parameters, but prepared statement "b" requires 1',
        'Z:I',
        't', 'T', 'E:26000:prepared statement "d" does not exist', 'Z:I']
    assert_pool_clean(env, pid)


def test_parse_pipelined_behind_a_state_change(env):
    """Whether PostgreSQL takes a Parse can depend on the transaction's state when it runs,
    and requests pipelined ahead of it may change that state: a ROLLBACK executed ahead
    ends a failed block (a re-used name then gets 42P05, a known text ParseComplete); a
    Query ahead that fails inside BEGIN makes the block fail (a known text then gets 25P02
    and its name is not kept)."""
    def flow(c, via):
        out = send_read(c, m.parse('ROLLBACK', name='rb'), m.parse(Q_ADD, name='x'),
                        m.parse('SELECT 2', name='seed'), m.sync())
        out += send_read(c, m.query('BEGIN; SELECT 1/0'))
        c.send(m.bind(stmt='rb'), m.execute(), m.sync(),
               m.parse('SELECT 3', name='x'), m.sync(),
               m.parse('SELECT 2', name='y'), m.bind(stmt='y'), m.execute(), m.sync())
        out += c.read_until_rfq(3)
        c.send(m.query('BEGIN; SELECT 1/0'),
               m.parse('SELECT 2', name='z'), m.bind(stmt='z'), m.execute(), m.sync())
        out += c.read_until_rfq(2)
        out += send_read(c, m.query('ROLLBACK'))
        out += send_read(c, m.parse('SELECT 2', name='z'), m.sync())
        out += send_read(c, *[m.close('S', n) for n in ('rb', 'x', 'seed', 'y', 'z')],
                         m.sync())
        return out

    pid, _, got = compare(env, flow)
    assert toks(got) == [
        '1', '1', '1', 'Z:I',
        'C:BEGIN', 'E:22012:division by zero', 'Z:E',
        '2', 'C:ROLLBACK', 'Z:I',
        'E:42P05:prepared statement "x" already exists', 'Z:I',
        '1', '2', 'D:2', 'C:SELECT 1', 'Z:I',
        'C:BEGIN', 'E:22012:division by zero', 'Z:E',
        'E:25P02:current transaction is aborted, commands ignored until end of transaction '
        'block', 'Z:E',
        'C:ROLLBACK', 'Z:I',
        '1', 'Z:I',
        '3', '3', '3', '3', '3', 'Z:I']
    assert_pool_clean(env, pid)


def test_deallocate_refused_in_failed_block_keeps_the_statement(env):
    """psycopg's `DEALLOCATE name` (an unnamed Parse) inside a failed transaction block is
    refused (25P02), as PostgreSQL refuses it: the statement stays the client's, and the
    server's copy stays usable in that block (a Describe of a statement without a result
    is still answered there)."""
    def flow(c, via):
        out = send_read(c, m.parse('SAVEPOINT x', name='a'), m.sync())
        out += send_read(c, m.query('BEGIN; SELECT 1/0'))
        out += send_read(c, m.parse('DEALLOCATE a'), m.bind(), m.execute(), m.sync())
        out += send_read(c, m.describe('S', 'a'), m.sync())
        out += send_read(c, m.query('ROLLBACK'))
        out += send_read(c, m.describe('S', 'a'), m.close('S', 'a'), m.sync())
        return out

    pid, _, got = compare(env, flow)
    assert toks(got) == [
        '1', 'Z:I', 'C:BEGIN', 'E:22012:division by zero', 'Z:E',
        'E:25P02:current transaction is aborted, commands ignored until end of transaction '
        'block', 'Z:E',
        't', 'n', 'Z:E', 'C:ROLLBACK', 'Z:I', 't', 'n', '3', 'Z:I']
    assert_pool_clean(env, pid)


@NEEDS_CACHE
def test_discard_all_skipped_after_an_extended_error_keeps_the_statements(env):
    """A DISCARD ALL Query pipelined behind a failing Execute, before the Sync: PostgreSQL
    skips it with everything else up to the Sync, so the client's statement still exists
    afterwards (the pooler had set its names aside when the DISCARD ALL went out)."""
    def flow(c, via):
        out = send_read(c, m.parse(Q_ADD, name='a'), m.sync())
        out += send_read(c, m.parse('SELECT 1/0'), m.bind(), m.execute(),
                         m.query('DISCARD ALL'), m.sync())
        out += send_read(c, m.bind(stmt='a', params=['41']), m.execute(), m.sync())
        return out

    pid, _, got = compare(env, flow)
    assert toks(got) == ['1', 'Z:I', '1', 'E:22012:division by zero', 'Z:I',
                         '2', 'D:42', 'C:SELECT 1', 'Z:I']
    assert_pool_clean(env, pid)


@NEEDS_CACHE
def test_reset_all_before_a_synthesized_close_complete(env):
    """RESET ALL, then in the same write the Close of a cached statement: the pooler answers
    that Close itself, right after the RESET's ReadyForQuery, which it sends behind the
    client's own parameters (doc/pooling.md, "Client parameters")."""
    def scenario(new_conn, via):
        a = new_conn()
        out = send_read(a, m.parse(Q_ADD, name='a1'), m.bind(stmt='a1', params=['1']),
                        m.execute(), m.sync())
        b = new_conn()
        out += send_read(b, m.query("SET application_name = 'b'"), m.parse(Q_ADD, name='b1'),
                         m.sync(), n=2)
        a.query('SELECT 1')  # the server last ran a's values
        out += send_read(b, m.query('RESET ALL'), m.close('S', 'b1'), m.flush())
        out += b.read_until('3')
        out += send_read(b, m.sync())
        out += send_read(b, m.query('SHOW application_name'))
        return out

    _, got = run_both(env, scenario)
    assert toks(got) == ['1', '2', 'D:2', 'C:SELECT 1', 'Z:I', 'C:SET', 'Z:I', '1', 'Z:I',
                         'C:RESET', 'Z:I', '3', 'Z:I', 'T', 'D:', 'C:SHOW', 'Z:I']
    assert_pool_clean(env)


def test_bind_describe_unknown_name_26000(env):
    """Bind/Describe of a name the client never prepared: the server's own 26000 with
    the client's name; Close of it: CloseComplete."""
    def flow(c, via):
        out = send_read(c, m.bind(stmt='nope', params=['1']), m.execute(), m.sync())
        out += send_read(c, m.describe('S', 'nope'), m.sync())
        out += send_read(c, m.close('S', 'nope'), m.sync())
        # Unknown name after a good Parse in the same batch.
        out += send_read(c, m.parse(Q_ADD, name='known'), m.bind(stmt='known', params=['1']),
                         m.execute(), m.bind(stmt='nope2'), m.execute(), m.sync())
        out += send_read(c, m.bind(stmt='known', params=['2']), m.execute(),
                         m.close('S', 'known'), m.sync())
        return out

    pid, _, got = compare(env, flow)
    assert toks(got) == [
        'E:26000:prepared statement "nope" does not exist', 'Z:I',
        'E:26000:prepared statement "nope" does not exist', 'Z:I',
        '3', 'Z:I',
        '1', '2', 'D:2', 'C:SELECT 1', 'E:26000:prepared statement "nope2" does not exist',
        'Z:I',
        '2', 'D:3', 'C:SELECT 1', '3', 'Z:I']
    assert_pool_clean(env, pid)


@NEEDS_CACHE
def test_internal_statement_names_are_not_client_names(env):
    """Another client's server-side statement (sluice_<n>) is not this client's
    statement: Bind/Describe of that name must fail with 26000 as on PostgreSQL."""
    state = {}

    def scenario(new_conn, via):
        a = new_conn()
        out = send_read(a, m.parse('SELECT 42 AS secret', name='mine'), m.sync())
        if via == 'pooler':
            names = [n for n, s in pooled_statements(a) if s == 'SELECT 42 AS secret']
            assert len(names) == 1 and names[0].startswith('sluice_'), names
            state['name'] = names[0]
        name = state.get('name', 'sluice_1')
        b = new_conn()
        out += send_read(b, m.bind(stmt=name), m.execute(), m.sync())
        out += send_read(b, m.describe('S', name), m.sync())
        return [x for x in out if x.type != 'E'] + \
            [pgwire.Msg('E', x.body.replace(name.encode(), b'NAME')) for x in out
             if x.type == 'E']

    _, got = run_both(env, scenario)
    assert [t for t in toks(got)] == [
        '1', 'Z:I', 'Z:I', 'Z:I',
        'E:26000:prepared statement "NAME" does not exist',
        'E:26000:prepared statement "NAME" does not exist']
    assert_pool_clean(env)


def test_failed_parse_leaves_no_name_and_no_server_entry(env):
    """A Parse that fails (syntax error) creates nothing: the same name can be prepared
    right after, and another client's Parse of the same bad text fails too."""
    bad = 'SELEC $1::int'

    def scenario(new_conn, via):
        c = new_conn()
        out = send_read(c, m.parse(bad, name='f'), m.bind(stmt='f', params=['1']),
                        m.execute(), m.sync())
        out += send_read(c, m.parse('SELECT $1::int * 7', name='f'),
                         m.bind(stmt='f', params=['6']), m.execute(), m.sync())
        # Failing inside a transaction block, then again after ROLLBACK.
        out += send_read(c, m.query('BEGIN'))
        out += send_read(c, m.parse(bad, name='g'), m.sync())
        out += send_read(c, m.query('ROLLBACK'))
        out += send_read(c, m.parse('SELECT 8', name='g'), m.bind(stmt='g'), m.execute(),
                         m.sync())
        # The bad text must not be remembered as prepared on the server.
        d = new_conn()
        out += send_read(d, m.parse(bad, name='h'), m.bind(stmt='h', params=['1']),
                         m.execute(), m.sync())
        out += send_read(d, m.bind(stmt='h', params=['1']), m.execute(), m.sync())
        out += send_read(c, m.close('S', 'f'), m.close('S', 'g'), m.sync())
        if via == 'pooler':
            assert bad not in [s for _, s in pooled_statements(d)]
        return out

    _, got = run_both(env, scenario)
    e_syntax = [t for t in toks(got) if t.startswith('E:')]
    assert [t[:7] for t in e_syntax] == ['E:42601', 'E:42601', 'E:42601', 'E:26000'], \
        toks(got)
    assert rows_of(got) == [['42'], ['8']]
    assert_pool_clean(env)


def test_failed_parse_then_same_name_in_the_same_write(env):
    """Pipelined: a failing Parse of a name and, in the next batch of the same write,
    a correct Parse of that name. PostgreSQL runs the second one."""
    def flow(c, via):
        c.send(m.parse('SELEC 1', name='f'), m.bind(stmt='f'), m.execute(), m.sync(),
               m.parse('SELECT 11 AS eleven', name='f'), m.bind(stmt='f'), m.execute(),
               m.sync(),
               m.bind(stmt='f'), m.execute(), m.close('S', 'f'), m.sync())
        return c.read_until_rfq(3)

    pid, _, got = compare(env, flow)
    assert [t[:7] for t in toks(got)] == [
        'E:42601', 'Z:I', '1', '2', 'D:11', 'C:SELEC', 'Z:I', '2', 'D:11', 'C:SELEC', '3',
        'Z:I']
    assert_pool_clean(env, pid)


def test_close_discarded_after_error_keeps_the_name(env):
    """A Close 'S' that PostgreSQL discards (an earlier message of its batch failed) does
    not close anything: the name still works afterwards."""
    def flow(c, via):
        out = send_read(c, m.parse(Q_ADD, name='k'), m.sync())
        out += send_read(c, m.parse('SELEC 1'), m.close('S', 'k'), m.sync())
        out += send_read(c, m.bind(stmt='k', params=['4']), m.execute(), m.sync())
        out += send_read(c, m.parse(Q_ADD, name='k'), m.sync())
        out += send_read(c, m.close('S', 'k'), m.sync())
        return out

    pid, _, got = compare(env, flow)
    assert [t[:7] for t in toks(got)] == [
        '1', 'Z:I', 'E:42601', 'Z:I', '2', 'D:5', 'C:SELEC', 'Z:I',
        'E:42P05', 'Z:I', '3', 'Z:I']
    assert_pool_clean(env, pid)


def test_discarded_parse_removes_only_its_own_name(env):
    """The client already has names a_i for texts q_i (on this server). A batch that
    fails first and then Parses b_i for the same texts: PostgreSQL discards the b_i
    Parses, so a_i still exist and b_i do not."""
    n = 8
    texts = ['SELECT %d + $1::int AS v' % (100 * i) for i in range(n)]

    def flow(c, via):
        out = send_read(c, *[m.parse(t, name='a_%d' % i) for i, t in enumerate(texts)],
                        m.sync())
        out += send_read(c, m.parse('SELEC 1'),
                         *[m.parse(t, name='b_%d' % i) for i, t in enumerate(texts)],
                         m.sync())
        batch = []
        for i in range(n):
            batch += [m.bind(stmt='a_%d' % i, params=[str(i)]), m.execute(), m.sync()]
        out += send_read(c, *batch, n=n)
        # b_i never existed: preparing them now succeeds.
        batch = []
        for i, t in enumerate(texts):
            batch += [m.parse(t, name='b_%d' % i), m.bind(stmt='b_%d' % i, params=['1']),
                      m.execute(), m.sync()]
        out += send_read(c, *batch, n=n)
        out += send_read(c, *[m.close('S', '%s_%d' % (p, i)) for i in range(n)
                              for p in 'ab'], m.sync())
        return out

    pid, _, got = compare(env, flow)
    assert rows_of(got) == [[str(101 * i)] for i in range(n)] + \
        [[str(100 * i + 1)] for i in range(n)]
    assert_pool_clean(env, pid)


@pytest.mark.parametrize('how', ['DEALLOCATE ALL', 'DISCARD ALL', 'extended DEALLOCATE ALL'])
def test_deallocate_all_discard_all_then_reparse(env, how):
    """The client empties its session's statements; the pooler forgets the client's
    names and the server's set, so the same names and texts can be prepared again."""
    q2 = 'SELECT $1::text AS t'

    def flow(c, via):
        out = send_read(c, m.parse(Q_ADD, name='s'), m.parse(q2, name='t'),
                        m.bind(stmt='s', params=['1']), m.execute(), m.sync())
        if how.startswith('extended'):
            out += send_read(c, m.parse('DEALLOCATE ALL'), m.bind(), m.execute(), m.sync())
        else:
            out += send_read(c, m.query(how))
        out += send_read(c, m.bind(stmt='s', params=['1']), m.execute(), m.sync())
        out += send_read(c, m.parse(Q_ADD, name='s'), m.bind(stmt='s', params=['2']),
                         m.execute(), m.parse(q2, name='t'), m.bind(stmt='t', params=['z']),
                         m.execute(), m.sync())
        if via == 'pooler':
            assert sorted(s for _, s in pooled_statements(c)) == sorted([Q_ADD, q2])
        out += send_read(c, m.close('S', 's'), m.close('S', 't'), m.sync())
        return out

    pid, _, got = compare(env, flow)
    tag = 'C:' + how.replace('extended ', '')
    assert toks(got) == ['1', '1', '2', 'D:2', 'C:SELECT 1', 'Z:I',
                         ] + (['1', '2'] if how.startswith('extended') else []) + [
                         tag, 'Z:I',
                         'E:26000:prepared statement "s" does not exist', 'Z:I',
                         '1', '2', 'D:3', 'C:SELECT 1', '1', '2', 'D:z', 'C:SELECT 1', 'Z:I',
                         '3', '3', 'Z:I']
    assert_pool_clean(env, pid)


@pytest.mark.parametrize('text, tag', [
    ('DEALLOCATE ALL', 'DEALLOCATE ALL'),
    (' deallocate\n\tAll ;', 'DEALLOCATE ALL'),
    ('DEALLOCATE PREPARE ALL', 'DEALLOCATE ALL'),
    ('discard all;', 'DISCARD ALL'),
])
def test_deallocate_all_pipelined_with_reparse(env, text, tag):
    """DEALLOCATE ALL (or DISCARD ALL, in any spelling PostgreSQL takes) and the re-Parse
    of a name in the same write (libpq pipeline mode style): PostgreSQL runs both, so
    the pooler must forget the name when it sees the Query, not when the answer comes.
    A simple query before it takes the plain path while the statement is cached."""
    def flow(c, via):
        out = send_read(c, m.parse(Q_ADD, name='s'), m.sync())
        out += send_read(c, m.query('SELECT 7 AS d'))
        c.send(m.query(text),
               m.parse(Q_ADD, name='s'), m.bind(stmt='s', params=['5']), m.execute(),
               m.close('S', 's'), m.sync())
        out += c.read_until_rfq(2)
        return out

    pid, _, got = compare(env, flow)
    assert toks(got) == ['1', 'Z:I', 'T', 'D:7', 'C:SELECT 1', 'Z:I', 'C:' + tag, 'Z:I',
                         '1', '2', 'D:6', 'C:SELECT 1', '3', 'Z:I']
    assert_pool_clean(env, pid)


@pytest.mark.parametrize('how', ['DISCARD ALL', 'DEALLOCATE ALL'])
@NEEDS_CACHE
def test_forget_all_while_parse_bind_describe_unanswered(env_factory, how):
    """A named Parse, Bind and Describe are still unanswered when the same write goes on
    with DISCARD ALL / DEALLOCATE ALL, which empties the client's names and the server's
    set at once: the statement's entry must live until the replies that concern it have
    passed (under the sanitizer build, touching it after it was freed aborts sluice). The
    eviction of a full set (max_prepared_statements = 1) takes the same path with a Close.
    PostgreSQL refuses DISCARD ALL there (an implicit transaction is open); DEALLOCATE ALL
    runs."""
    env = env_factory(max_prepared_statements=1)

    def flow(c, via):
        out = send_read(c, m.parse('SELECT 1 AS one', name='old'), m.sync())
        c.send(m.parse(Q_ADD, name='s'), m.bind(stmt='s', params=['1']),
               m.describe('S', 's'), m.query(how))
        out += c.read_until_rfq(1)
        out += send_read(c, m.sync())
        out += send_read(c, m.parse(Q_ADD, name='s'), m.bind(stmt='s', params=['2']),
                         m.execute(), m.sync())
        out += send_read(c, m.close('S', 's'), m.close('S', 'old'), m.sync())
        return out

    pid, want, got = compare(env, flow)
    assert toks(got)[:2] == ['1', 'Z:I']
    assert rows_of(got) == [['3']], toks(got)
    assert_pool_clean(env, pid)


@pytest.mark.parametrize('how', ['simple', 'extended'])
def test_sql_deallocate_of_protocol_statement(env, how):
    """SQL DEALLOCATE removes a protocol-level prepared statement too (psycopg 3 sends
    `DEALLOCATE _pg3_0` when its cache rotates, in an unnamed Parse). The server knows the
    statement under the pooler's name, so the pooler answers for the client's: the same
    replies as PostgreSQL, outside and inside a transaction, with PREPARE and a quoted
    name; an unknown name and a failed transaction get the server's own errors."""
    def dealloc(c, text):
        if how == 'simple':
            return send_read(c, m.query(text))
        return send_read(c, m.parse(text), m.bind(), m.describe('P', ''), m.execute(),
                         m.sync())

    def flow(c, via):
        out = send_read(c, m.parse(Q_ADD, name='s1'), m.parse('SELECT 2 AS two', name='My S'),
                        m.sync())
        out += dealloc(c, 'deallocate s1')
        out += send_read(c, m.bind(stmt='s1', params=['1']), m.execute(), m.sync())
        out += send_read(c, m.parse(Q_ADD, name='s1'), m.bind(stmt='s1', params=['1']),
                         m.execute(), m.sync())
        out += send_read(c, m.query('BEGIN'))
        out += dealloc(c, ' DEALLOCATE PREPARE "My S" ;')
        out += send_read(c, m.bind(stmt='My S'), m.execute(), m.sync())
        out += send_read(c, m.query('ROLLBACK'))
        out += dealloc(c, 'DEALLOCATE nosuch')
        out += send_read(c, m.query('BEGIN'))
        out += send_read(c, m.query('SELECT 1/0'))
        out += dealloc(c, 'DEALLOCATE s1')
        out += send_read(c, m.query('ROLLBACK'))
        out += send_read(c, m.bind(stmt='s1', params=['4']), m.execute(), m.sync())
        out += dealloc(c, 'DEALLOCATE s1')
        return out

    pid, _, got = compare(env, flow)
    ext = how == 'extended'
    done = (['1', '2', 'n'] if ext else []) + ['C:DEALLOCATE']
    assert toks(got) == ['1', '1', 'Z:I'] + done + ['Z:I'] + [
        'E:26000:prepared statement "s1" does not exist', 'Z:I',
        '1', '2', 'D:2', 'C:SELECT 1', 'Z:I',
        'C:BEGIN', 'Z:T'] + done + ['Z:T'] + [
        'E:26000:prepared statement "My S" does not exist', 'Z:E',
        'C:ROLLBACK', 'Z:I'] + (['1', '2', 'n'] if ext else []) + [
        'E:26000:prepared statement "nosuch" does not exist', 'Z:I'] + [
        'C:BEGIN', 'Z:T', 'E:22012:division by zero', 'Z:E',
        'E:25P02:current transaction is aborted, commands ignored until end of transaction '
        'block', 'Z:E', 'C:ROLLBACK', 'Z:I',
        '2', 'D:5', 'C:SELECT 1', 'Z:I'] + done + ['Z:I'], toks(got)
    assert_pool_clean(env, pid)


STALE_PLAN = 'E:0A000:cached plan must not change result type'


@pytest.fixture
def retyped_table(env):
    """A table stale_t(x int) with one row, owned by the test user; dropped after."""
    env.sql('DROP TABLE IF EXISTS stale_t; CREATE TABLE stale_t (x int); '
            'INSERT INTO stale_t VALUES (1); ALTER TABLE stale_t OWNER TO md5user')
    yield 'stale_t'
    env.sql('DROP TABLE IF EXISTS stale_t')


def select_stale(c, name, parse=True):
    msgs = [m.parse('SELECT x FROM stale_t', name=name)] if parse else []
    return toks(send_read(c, *msgs, m.bind(stmt=name), m.execute(), m.sync()))


@NEEDS_CACHE
def test_statement_whose_result_type_changed_is_prepared_anew(env, retyped_table):
    """After ALTER TABLE ... TYPE, PostgreSQL refuses a statement prepared before
    (0A000, "cached plan must not change result type") but a new Parse of the same text
    works. Through the cache the server's copy is shared: a client that prepares the text
    after the change is given the old copy. The first Bind that hits it fails once; the
    pooler then prepares the statement anew, so the retry, every other client and the
    statement of the client that prepared it before the change all work. (PgBouncer 1.21+
    keeps failing such Binds until RECONNECT, as its documentation says.) Also when the
    Close and Parse that replace the stale copy are discarded after an earlier error in
    their batch: the server still has the old copy, and the next use replaces it."""
    a = env.pooled()
    assert select_stale(a, 'sa') == ['1', '2', 'D:1', 'C:SELECT 1', 'Z:I']
    a.query('ALTER TABLE stale_t ALTER x TYPE bigint')
    b = env.pooled()
    assert select_stale(b, 'sb') == ['1', STALE_PLAN, 'Z:I']
    # Stale copy again behind an error of the same batch: its replacement is discarded.
    got = toks(send_read(b, m.parse('SELECT 1/0'), m.bind(), m.execute(),
                         m.bind(stmt='sb'), m.execute(), m.sync()))
    assert got == ['1', 'E:22012:division by zero', 'Z:I'], got
    assert select_stale(b, 'sb', parse=False) == ['2', 'D:1', 'C:SELECT 1', 'Z:I']
    assert select_stale(a, 'sa', parse=False) == ['2', 'D:1', 'C:SELECT 1', 'Z:I']
    c = env.pooled()
    assert select_stale(c, 'sc') == ['1', '2', 'D:1', 'C:SELECT 1', 'Z:I']
    # The client sees the new type: int8 (OID 20) in the RowDescription.
    desc = send_read(c, m.describe('S', 'sc'), m.sync())
    assert [x.type for x in desc] == ['t', 'T', 'Z']
    assert pgwire.parse_row_description(desc[1].body)[0]['type_oid'] == 20
    for x, name in ((a, 'sa'), (b, 'sb'), (c, 'sc')):
        send_read(x, m.close('S', name), m.sync())
    assert_pool_clean(env)
    assert len([r for r in c.query("SELECT name FROM pg_prepared_statements "
                                   "WHERE statement = 'SELECT x FROM stale_t'")]) == 1


@NEEDS_CACHE
def test_stale_statement_deallocated_and_prepared_again(env, retyped_table):
    """What Rails does on 0A000 outside a transaction: DEALLOCATE the statement (SQL,
    simple Query), prepare it again under the same name, retry. The same replies as on
    PostgreSQL: the retry gets the new type."""
    def flow(c, via):
        out = send_read(c, m.parse('SELECT x FROM stale_t', name='a1'), m.bind(stmt='a1'),
                        m.execute(), m.sync())
        env.sql('ALTER TABLE stale_t ALTER x TYPE bigint')
        out += send_read(c, m.bind(stmt='a1'), m.execute(), m.sync())
        out += send_read(c, m.query('DEALLOCATE a1'))
        out += send_read(c, m.parse('SELECT x FROM stale_t', name='a1'), m.bind(stmt='a1'),
                         m.describe('P', ''), m.execute(), m.sync())
        env.sql('ALTER TABLE stale_t ALTER x TYPE int')
        return out

    pid, _, got = compare(env, flow)
    desc = [x for x in got if x.type == 'T']
    assert pgwire.parse_row_description(desc[0].body)[0]['type_oid'] == 20
    assert toks(got) == ['1', '2', 'D:1', 'C:SELECT 1', 'Z:I', STALE_PLAN, 'Z:I',
                         'C:DEALLOCATE', 'Z:I', '1', '2', 'T', 'D:1', 'C:SELECT 1', 'Z:I']
    assert_pool_clean(env, pid)


@NEEDS_CACHE
def test_stale_statement_prepared_anew_on_every_server(env_factory, retyped_table):
    """The change is noted once for all servers: after one client's Bind failed on one
    server, the other server's old copy is replaced before it is used, without a second
    error."""
    env = env_factory(pool_size=2)
    holder, user = env.pooled(), env.pooled()
    holder.query('BEGIN')  # keeps one server, so `user` gets the other
    assert select_stale(holder, 'h') == ['1', '2', 'D:1', 'C:SELECT 1', 'Z:T']
    assert select_stale(user, 'u') == ['1', '2', 'D:1', 'C:SELECT 1', 'Z:I']
    pids = {holder.server_pid(), user.server_pid()}
    assert len(pids) == 2
    holder.query('COMMIT')
    holder.query('ALTER TABLE stale_t ALTER x TYPE bigint')
    holder.query('BEGIN')
    first = select_stale(holder, 'h', parse=False)
    second = select_stale(user, 'u', parse=False)
    assert first == [STALE_PLAN, 'Z:E']
    assert second == ['2', 'D:1', 'C:SELECT 1', 'Z:I']  # replaced before use
    holder.query('ROLLBACK')
    assert select_stale(holder, 'h', parse=False) == ['2', 'D:1', 'C:SELECT 1', 'Z:I']


@NEEDS_CACHE
def test_result_type_flips_under_load(env_factory, retyped_table):
    """Four clients bind one cached statement over and over on two servers while its
    column's type flips between int and bigint 20 times. Each flip costs one 0A000 at
    least (the first Bind meets a copy planned before it) and at most one per server (two
    Binds already on their way); nobody sees one twice for the same flip, and after the
    last flip every client's statement works."""
    env = env_factory(pool_size=2)
    clients = [env.pooled() for _ in range(4)]
    for c in clients:
        assert select_stale(c, 'q') == ['1', '2', 'D:1', 'C:SELECT 1', 'Z:I']
    alter = env.pooled()
    flips, errors = 20, 0
    for k in range(flips):
        alter.query('ALTER TABLE stale_t ALTER x TYPE %s' % ('bigint' if k % 2 == 0 else 'int'))
        for _ in range(3):
            for c in clients:
                c.send(m.bind(stmt='q'), m.execute(), m.sync())
            for c in clients:
                got = toks(c.read_until_rfq(1))
                if got != ['2', 'D:1', 'C:SELECT 1', 'Z:I']:
                    assert got == [STALE_PLAN, 'Z:I'], got
                    errors += 1
    assert flips <= errors <= 2 * flips, errors
    for c in clients:
        assert select_stale(c, 'q', parse=False) == ['2', 'D:1', 'C:SELECT 1', 'Z:I']
        send_read(c, m.close('S', 'q'), m.sync())
    assert_pool_clean(env)


@NEEDS_CACHE
def test_reparse_fails_client_gets_error_and_ready(env):
    """The server lost the client's statement (another client ran DEALLOCATE ALL), so the
    pooler prepares it again in front of the Bind; that Parse fails (its table was
    dropped). The client gets PostgreSQL's error for its Bind, and its ReadyForQuery:
    before, the ReadyForQuery took the failed Parse's "not for the client" and the
    client waited forever."""
    def scenario(new_conn, via):
        env.sql('DROP TABLE IF EXISTS gone_t; CREATE TABLE gone_t (x int); '
                'INSERT INTO gone_t VALUES (1); ALTER TABLE gone_t OWNER TO md5user')
        a = new_conn()
        out = send_read(a, m.parse('SELECT x FROM gone_t', name='s'), m.bind(stmt='s'),
                        m.execute(), m.sync())
        env.sql('DROP TABLE gone_t')
        if via == 'pooler':
            new_conn().query('DEALLOCATE ALL')
        for _ in range(2):
            out += send_read(a, m.bind(stmt='s'), m.execute(), m.sync())
        out += send_read(a, m.close('S', 's'), m.sync())
        return out

    _, got = run_both(env, scenario)
    assert toks(got) == ['1', '2', 'D:1', 'C:SELECT 1', 'Z:I'] + [
        'E:42P01:relation "gone_t" does not exist', 'Z:I'] * 2 + ['3', 'Z:I']
    assert_pool_clean(env)


# ---------------------------------------------------------------------------
# Several clients, eviction, pipelining
# ---------------------------------------------------------------------------

@NEEDS_CACHE
def test_three_clients_interleaved_on_one_server(env):
    """default_pool_size=1, three clients: own names (one name 'q' used by all three for
    different texts), some texts shared, used across many transactions, with batches
    of several clients queued at once. One server-side copy per distinct text."""
    T_MUL = 'SELECT $1::int * 10 AS v'
    T_A = 'SELECT $1::int + 100 AS v'
    T_B = "SELECT $1::text || '-b' AS v"
    T_C = 'SELECT $1::int - 1000 AS v'
    T_LEN = 'SELECT length($1::text) AS v'
    progs = {
        # client: {name: (text, fn)}
        'A': {'mul': (T_MUL, lambda x: x * 10), 'q': (T_A, lambda x: x + 100),
              'len': (T_LEN, lambda x: len(str(x)))},
        'B': {'times': (T_MUL, lambda x: x * 10), 'q': (T_B, lambda x: '%s-b' % x)},
        'C': {'q': (T_C, lambda x: x - 1000), 'm10': (T_MUL, lambda x: x * 10),
              'L': (T_LEN, lambda x: len(str(x)))},
    }
    conns = {k: env.pooled() for k in progs}
    prepared = {k: set() for k in progs}

    def batch_for(k, rnd):
        """One transaction's messages for client k in round rnd, and expected values."""
        msgs, want = [], []
        names = sorted(progs[k])
        # Prepare one more name each round (so Parses interleave with Binds).
        for name in names:
            if name not in prepared[k]:
                msgs.append(m.parse(progs[k][name][0], name=name))
                prepared[k].add(name)
                break
        for j, name in enumerate(sorted(prepared[k])):
            x = rnd * 7 + j + ord(k)
            msgs += [m.bind(stmt=name, params=[str(x)]), m.execute()]
            want.append(str(progs[k][name][1](x)))
        return msgs, want

    def check(k, msgs, want, status='I'):
        got = [r[0] for r in rows_of(msgs)]
        assert got == want, 'client %s: %s (all: %s)' % (k, got, toks(msgs))
        assert not [x for x in msgs if x.type == 'E'], toks(msgs)
        assert msgs[-1].type == 'Z' and msgs[-1].status == status

    for rnd in range(6):
        order = ['A', 'B', 'C'][rnd % 3:] + ['A', 'B', 'C'][:rnd % 3]
        if rnd % 2 == 0:
            # Everyone writes at once; the pooler serializes them on the one server.
            pending = []
            for k in order:
                msgs, want = batch_for(k, rnd)
                conns[k].send(*msgs, m.sync())
                pending.append((k, want))
            for k, want in pending:
                check(k, conns[k].read_until_rfq(), want)
        else:
            # Explicit transactions: first client opens one, the others queue behind it.
            first, rest = order[0], order[1:]
            f = conns[first]
            assert f.query('BEGIN') == []
            msgs, want = batch_for(first, rnd)
            check(first, send_read(f, *msgs, m.sync()), want, status='T')
            pending = []
            for k in rest:
                msgs, want2 = batch_for(k, rnd)
                conns[k].send(*msgs, m.sync())
                pending.append((k, want2))
            early = {}
            for k in rest:
                # Only what sluice may answer without a server can arrive now: the
                # ParseComplete of a statement some server already parsed. Nothing that
                # needs the server (BindComplete, rows, ReadyForQuery) may.
                early[k] = conns[k].read_available(0.2)
                assert all(x.type == '1' for x in early[k]), \
                    'client %s was served while %s held the only server in a transaction: %s' \
                    % (k, first, toks(early[k]))
            msgs, want = batch_for(first, rnd + 100)
            check(first, send_read(f, *msgs, m.sync()), want, status='T')
            f.send(m.query('COMMIT'))
            assert toks(f.read_until_rfq()) == ['C:COMMIT', 'Z:I']
            for k, want2 in pending:
                check(k, early[k] + conns[k].read_until_rfq(), want2)
    # Every client closes its names; the statements stay on the server, one per text.
    c = conns['A']
    stmts = pooled_statements(c)
    assert sorted(s for _, s in stmts) == sorted({T_MUL, T_A, T_B, T_C, T_LEN}), stmts
    for k, conn in conns.items():
        msgs = send_read(conn, *[m.close('S', n) for n in sorted(progs[k])], m.sync())
        assert toks(msgs) == ['3'] * len(progs[k]) + ['Z:I']
        msgs = send_read(conn, m.bind(stmt='q', params=['1']), m.execute(), m.sync())
        assert toks(msgs) == ['E:26000:prepared statement "q" does not exist', 'Z:I']
    pid = conns['A'].server_pid()
    for conn in conns.values():
        conn.close()
    assert_pool_clean(env, pid)


@NEEDS_CACHE
def test_lru_eviction_at_max_prepared_statements(env_factory):
    """max_prepared_statements=2: prepare four statements, use them all again in many
    orders (also all bound to named portals before any Execute): results are right and
    the backend never holds more than two sluice_* statements."""
    env = env_factory(max_prepared_statements=2)
    texts = ['SELECT $1::int + %d AS v' % (1000 * (i + 1)) for i in range(4)]
    counts = []

    def check_count(c, via):
        if via == 'pooler':
            counts.append(sluice_count(c))

    def flow(c, via):
        out = []
        for i, t in enumerate(texts):
            out += send_read(c, m.parse(t, name='s%d' % i),
                             m.bind(stmt='s%d' % i, params=[str(i)]), m.execute(), m.sync())
            check_count(c, via)
        for order in ([0, 1, 2, 3], [3, 2, 1, 0], [0, 2, 0, 3, 1, 1, 3]):
            for i in order:
                out += send_read(c, m.bind(stmt='s%d' % i, params=['5']), m.execute(),
                                 m.sync())
                check_count(c, via)
            # The same order in one batch.
            batch = []
            for i in order:
                batch += [m.bind(stmt='s%d' % i, params=['7']), m.execute()]
            out += send_read(c, *batch, m.sync())
            check_count(c, via)
        # Named portals of all four statements before any Execute; Describe 'S' too.
        batch = [m.bind(portal='p%d' % i, stmt='s%d' % i, params=['9']) for i in range(4)]
        batch += [m.describe('S', 's0'), m.describe('S', 's3')]
        batch += [m.execute('p%d' % i) for i in (3, 1, 0, 2)]
        out += send_read(c, *batch, m.sync())
        check_count(c, via)
        return out

    pid, _, got = compare(env, flow)
    assert not [t for t in toks(got) if t.startswith('E:')], toks(got)
    assert len(rows_of(got)) == 4 + 2 * (4 + 4 + 7) + 4
    assert max(counts) <= 2, 'more than max_prepared_statements on the server: %r' % counts
    assert counts[-1] == 2
    # Two clients sharing texts with the server evicting under them.
    a, b = env.pooled(), env.pooled()
    assert toks(send_read(a, m.parse(texts[0], name='x'), m.sync())) == ['1', 'Z:I']
    assert toks(send_read(b, m.parse(texts[1], name='y'), m.parse(texts[2], name='z'),
                          m.bind(stmt='y', params=['1']), m.execute(),
                          m.bind(stmt='z', params=['1']), m.execute(), m.sync())) == \
        ['1', '1', '2', 'D:2001', 'C:SELECT 1', '2', 'D:3001', 'C:SELECT 1', 'Z:I']
    assert toks(send_read(a, m.bind(stmt='x', params=['1']), m.execute(), m.sync())) == \
        ['2', 'D:1001', 'C:SELECT 1', 'Z:I']
    assert sluice_count(a) <= 2
    a.close()
    b.close()
    assert_pool_clean(env, pid)


@NEEDS_CACHE
def test_eviction_close_discarded_after_error(env_factory):
    """max_prepared_statements=1: a batch fails before the pooler's own eviction Close
    (and the Parse after it) reach the server; PostgreSQL discards both. Replies stay
    PostgreSQL's, every statement keeps working, and the server stays in the pool."""
    env = env_factory(max_prepared_statements=1)
    q1, q2 = 'SELECT $1::int + 10 AS v', 'SELECT $1::int + 20 AS v'

    def flow(c, via):
        out = send_read(c, m.parse(q1, name='s1'), m.sync())
        out += send_read(c, m.parse('SELEC 1'), m.parse(q2, name='s2'), m.sync())
        out += send_read(c, m.bind(stmt='s1', params=['1']), m.execute(), m.sync())
        out += send_read(c, m.parse(q2, name='s2'), m.bind(stmt='s2', params=['1']),
                         m.execute(), m.bind(stmt='s1', params=['2']), m.execute(), m.sync())
        if via == 'pooler':
            assert sluice_count(c) <= 1
        out += send_read(c, m.close('S', 's1'), m.close('S', 's2'), m.sync())
        return out

    pid, _, got = compare(env, flow)
    assert [t[:7] for t in toks(got)] == ['1', 'Z:I', 'E:42601', 'Z:I',
                                          '2', 'D:11', 'C:SELEC', 'Z:I',
                                          '1', '2', 'D:21', 'C:SELEC', '2', 'D:12', 'C:SELEC',
                                          'Z:I', '3', '3', 'Z:I']
    assert_pool_clean(env, pid)


@pytest.mark.parametrize('size', [1 << 20, 20 << 20])
@pytest.mark.parametrize('name', ['big', ''])
def test_large_parse_and_bind(env, name, size):
    """Parse and Bind are held whole by the cache: a big statement text and a Bind
    parameter larger than the 16 MiB hold limit of the buffers still work, named or
    unnamed (PostgreSQL takes messages up to 1 GB; asyncpg sends every query as a named
    statement; unnamed statements are to pass untouched)."""
    pad = 'x' * min(size, 1 << 20)
    text = "SELECT length($1::text) AS n, length('%s') AS p" % pad

    def flow(c, via):
        c.send(m.parse(text, name=name), m.bind(stmt=name, params=['y' * size]),
               m.execute(), m.sync())
        out = c.read_until_rfq(timeout=60)
        out += send_read(c, m.close('S', name), m.sync())
        return out

    pid, _, got = compare(env, flow)
    assert toks(got) == ['1', '2', 'D:%d|%d' % (size, len(pad)), 'C:SELECT 1', 'Z:I',
                         '3', 'Z:I']
    assert_pool_clean(env, pid)


@pytest.mark.parametrize('max_ps', [200, 2])
@NEEDS_CACHE
def test_pipeline_100_batches_in_one_write(env_factory, max_ps):
    """100 x (Parse named, Bind, Execute, Sync) in ONE write, nothing read in between;
    texts repeat (synthesized ParseCompletes mixed with sent Parses; with
    max_prepared_statements=2 also evictions mid-pipeline). Then the same names reused in
    one write, then all closed in one batch."""
    env = env_factory(max_prepared_statements=max_ps)
    texts = ['SELECT $1::int * %d AS v' % (k + 2) for k in range(7)]

    def flow(c, via):
        batch = []
        for i in range(100):
            batch += [m.parse(texts[i % 7], name='n%d' % i),
                      m.bind(stmt='n%d' % i, params=[str(i)]), m.execute(), m.sync()]
        c.send(*batch)
        out = c.read_until_rfq(100)
        batch = []
        for i in reversed(range(100)):
            batch += [m.bind(stmt='n%d' % i, params=['1']), m.execute(), m.sync()]
        c.send(*batch)
        out += c.read_until_rfq(100)
        c.send(*[m.close('S', 'n%d' % i) for i in range(100)], m.sync())
        out += c.read_until_rfq()
        if via == 'pooler':
            assert sluice_count(c) <= min(max_ps, 7)
        return out

    pid, _, got = compare(env, flow)
    want = []
    for i in range(100):
        want += ['1', '2', 'D:%d' % (i * (i % 7 + 2)), 'C:SELECT 1', 'Z:I']
    for i in reversed(range(100)):
        want += ['2', 'D:%d' % (i % 7 + 2), 'C:SELECT 1', 'Z:I']
    want += ['3'] * 100 + ['Z:I']
    assert toks(got) == want
    assert_pool_clean(env, pid)


# ---------------------------------------------------------------------------
# Cache off / other pool modes
# ---------------------------------------------------------------------------

@NEEDS_CACHE
def test_max_prepared_statements_zero_passes_names_through(env_factory):
    """max_prepared_statements=0: the server sees the client's own names."""
    env = env_factory(max_prepared_statements=0)

    def flow(c, via):
        out = send_read(c, m.parse(Q_ADD, name='mine1'), m.bind(stmt='mine1', params=['1']),
                        m.execute(), m.sync())
        if via == 'pooler':
            assert pooled_statements(c) == [('mine1', Q_ADD)]
        out += send_read(c, m.parse(Q_ADD, name='mine1'), m.sync())
        out += send_read(c, m.describe('S', 'mine1'), m.bind(stmt='mine1', params=['2']),
                         m.execute(), m.close('S', 'mine1'), m.sync())
        out += send_read(c, m.bind(stmt='mine1'), m.execute(), m.sync())
        return out

    pid, _, got = compare(env, flow)
    assert toks(got) == ['1', '2', 'D:2', 'C:SELECT 1', 'Z:I',
                         'E:42P05:prepared statement "mine1" already exists', 'Z:I',
                         't', 'T', '2', 'D:3', 'C:SELECT 1', '3', 'Z:I',
                         'E:26000:prepared statement "mine1" does not exist', 'Z:I']
    assert_pool_clean(env, pid)


@NEEDS_CACHE
def test_statement_mode_uses_the_cache(env_factory):
    env = env_factory(mode='statement')

    def flow(c, via):
        out = send_read(c, m.parse(Q_ADD, name='st'), m.bind(stmt='st', params=['1']),
                        m.execute(), m.sync())
        out += send_read(c, m.bind(stmt='st', params=['2']), m.execute(), m.sync())
        if via == 'pooler':
            assert [n[:7] for n, _ in pooled_statements(c)] == ['sluice_']
        out += send_read(c, m.close('S', 'st'), m.sync())
        return out

    pid, _, got = compare(env, flow)
    assert toks(got) == ['1', '2', 'D:2', 'C:SELECT 1', 'Z:I', '2', 'D:3', 'C:SELECT 1',
                         'Z:I', '3', 'Z:I']
    assert_pool_clean(env, pid)


def test_session_mode_passes_names_through(env_factory):
    env = env_factory(mode='session')

    def flow(c, via):
        out = send_read(c, m.parse(Q_ADD, name='sess'), m.bind(stmt='sess', params=['1']),
                        m.execute(), m.sync())
        if via == 'pooler':
            assert pooled_statements(c) == [('sess', Q_ADD)]
        return out

    pid, _, got = compare(env, flow)
    assert toks(got) == ['1', '2', 'D:2', 'C:SELECT 1', 'Z:I']
    env.close_all()
    # server_reset_query (DISCARD ALL) drops it when the client leaves.
    assert_pool_clean(env, pid)


@pytest.mark.parametrize('max_ps', [0, 100])
@NEEDS_CACHE
def test_client_bytes_counted_once(env_factory, max_ps):
    """SHOW STATS total_received is the bytes of the client's messages, each counted once:
    unnamed extended queries (walked as plain runs), named statements (rewritten by the
    cache), a Describe of a statement, simple queries, a message split over two writes."""
    env = env_factory(max_prepared_statements=max_ps)
    c = env.pooled()
    sent = 0

    def send(*msgs):
        nonlocal sent
        c.send(*msgs)
        sent += sum(len(x) for x in msgs)

    send(m.parse('SELECT $1::int + 1'), m.bind(params=['1']), m.describe('P'), m.execute(),
         m.sync())
    c.read_until_rfq()
    send(m.parse('SELECT $1::int * 2', name='named_s'), m.describe('S', 'named_s'),
         m.bind(stmt='named_s', params=['21']), m.execute(), m.close('S', 'named_s'),
         m.sync())
    c.read_until_rfq()
    send(m.query('SELECT 1'))
    c.read_until_rfq()
    q = m.query('SELECT repeat(\'x\', 10)')
    send(q[:7])
    send(q[7:])
    c.read_until_rfq()
    stats = [r for r in env.pooler.show('STATS') if r['database'] == 'appdb']
    assert stats and stats[0]['total_received'] == sent, (stats, sent)
