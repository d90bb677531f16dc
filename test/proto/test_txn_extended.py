"""Transaction pooling, extended-protocol flows (pool_mode=transaction,
default_pool_size=1): same replies as PostgreSQL directly, then a second client
gets the same, clean backend."""

import struct

import pytest

from pgwire import m

QUIET = 0.3


def test_parse_bind_describe_execute_close_sync(env):
    def flow(c):
        c.send(m.parse('SELECT $1::int + 1 AS x, $2::text AS y'),
               m.describe('S'),
               m.bind(params=['41', None]),
               m.describe('P'),
               m.execute(),
               m.close('P'),
               m.close('S'),
               m.sync())
        out = c.read_until_rfq()
        # Describe of a utility statement -> NoData.
        c.send(m.parse('DO $$ BEGIN END $$'), m.describe('S'),
               m.bind(), m.describe('P'), m.execute(), m.sync())
        out += c.read_until_rfq()
        return out

    _, _, _, got = env.compare(flow)
    assert env.seq(got) == ['1', 't', 'T', '2', 'T', 'D:42|NULL', 'C:SELECT 1', '3', '3',
                            'Z:I',
                            '1', 't', 'n', '2', 'n', 'C:DO', 'Z:I']


def test_named_statement_and_portal(env):
    """Named statement reused by several Binds in one batch, then closed."""
    def flow(c):
        c.send(m.parse('SELECT $1::int * 2', name='s_double'),
               m.bind(portal='p1', stmt='s_double', params=['1']),
               m.bind(portal='p2', stmt='s_double', params=['2']),
               m.execute('p2'), m.execute('p1'),
               m.close('P', 'p1'), m.close('P', 'p2'),
               m.sync())
        out = c.read_until_rfq()
        c.send(m.bind(stmt='s_double', params=['21']), m.execute(),
               m.close('S', 's_double'), m.sync())
        out += c.read_until_rfq()
        return out

    _, _, _, got = env.compare(flow)
    assert env.seq(got) == ['1', '2', '2', 'D:4', 'C:SELECT 1', 'D:2', 'C:SELECT 1',
                            '3', '3', 'Z:I', '2', 'D:42', 'C:SELECT 1', '3', 'Z:I']


def test_pipeline_of_many_syncs(env):
    """12 Sync-terminated batches written at once, before reading anything."""
    def flow(c):
        batches = []
        for i in range(12):
            batches.append(m.parse('SELECT $1::int AS n, repeat(\'x\', $1::int)') +
                           m.bind(params=[str(i)]) + m.describe('P') + m.execute() +
                           m.sync())
        c.send(*batches)
        return c.read_until_rfq(12)

    _, _, _, got = env.compare(flow)
    assert env.seq(got, collapse=False).count('Z:I') == 12


def test_execute_row_limit_portal_suspended(env):
    """Execute with a row limit -> PortalSuspended; re-Execute continues.
    All in one batch, then split over Flush (no Sync in between)."""
    sql = 'SELECT g FROM generate_series(1, 5) g'

    def flow(c):
        c.send(m.parse(sql), m.bind(), m.execute(max_rows=2), m.execute(max_rows=2),
               m.execute(max_rows=2), m.sync())
        out = c.read_until_rfq()
        # Row-limited Execute + Flush; the client reads, then continues later.
        c.send(m.parse(sql), m.bind(), m.execute(max_rows=3), m.flush())
        out += c.read_until('s')
        c.send(m.execute(max_rows=1), m.flush())
        out += c.read_until('s')
        c.send(m.execute(), m.sync())
        out += c.read_until_rfq()
        return out

    _, _, _, got = env.compare(flow)
    assert env.seq(got, collapse=False) == [
        '1', '2', 'D:1', 'D:2', 's', 'D:3', 'D:4', 's', 'D:5', 'C:SELECT 1', 'Z:I',
        '1', '2', 'D:1', 'D:2', 'D:3', 's', 'D:4', 's', 'D:5', 'C:SELECT 1', 'Z:I']


def test_suspended_portal_keeps_server_linked(env):
    """Between a PortalSuspended and the next Execute (no Sync yet) the server
    is mid-transaction: a second client must wait, not get it."""
    a, pid = env.client()
    a.send(m.parse('SELECT g FROM generate_series(1, 4) g'), m.bind(),
           m.execute(max_rows=2), m.flush())
    assert env.seq(a.read_until('s')) == ['1', '2', 'D:1', 'D:2', 's']

    b = env.pooled()
    b.send(m.query('SELECT pg_backend_pid()'))
    b.expect_nothing(1.0)

    a.send(m.execute(), m.sync())
    assert env.seq(a.read_until_rfq()) == ['D:3', 'D:4', 'C:SELECT 2', 'Z:I']
    assert env.seq(b.read_until_rfq()) == ['T', 'D:%d' % pid, 'C:SELECT 1', 'Z:I']
    env.assert_clean(pid)


def test_named_portal_across_syncs_in_transaction(env):
    """In an explicit transaction a named portal survives Sync: fetch it in
    pieces across several Sync batches; RFQ status T until COMMIT."""
    def flow(c):
        c.send(m.query('BEGIN'))
        out = c.read_until_rfq()
        c.send(m.parse('SELECT g FROM generate_series(1, 5) g'),
               m.bind(portal='cur'), m.execute('cur', 2), m.sync())
        out += c.read_until_rfq()
        c.send(m.execute('cur', 2), m.sync())
        out += c.read_until_rfq()
        c.send(m.execute('cur', 0), m.close('P', 'cur'), m.sync())
        out += c.read_until_rfq()
        c.send(m.query('COMMIT'))
        out += c.read_until_rfq()
        return out

    _, _, _, got = env.compare(flow)
    assert env.seq(got, collapse=False) == [
        'C:BEGIN', 'Z:T', '1', '2', 'D:1', 'D:2', 's', 'Z:T', 'D:3', 'D:4', 's', 'Z:T',
        'D:5', 'C:SELECT 1', '3', 'Z:T', 'C:COMMIT', 'Z:I']


def test_error_in_middle_of_pipeline(env):
    """Error at Execute: the server discards the rest of the batch until Sync;
    later batches run normally."""
    def flow(c):
        c.send(
            # batch 1: fails in the first Execute after two rows, the second
            # P/B/E are discarded
            m.parse('SELECT 10 / (g - $1::int) FROM generate_series(1, 5) g'),
            m.bind(params=['3']), m.execute(),
            m.parse('SELECT 2'), m.bind(), m.execute(), m.sync(),
            # batch 2: fine
            m.parse('SELECT 3'), m.bind(), m.execute(), m.sync(),
            # batch 3: fails at Parse (syntax error), Describe/Execute/Close skipped
            m.parse('SELEC 4'), m.bind(), m.describe('P'), m.execute(), m.close('S'),
            m.sync(),
            # batch 4: fails at Bind (unknown statement)
            m.bind(stmt='no_such_stmt'), m.execute(), m.sync(),
            # batch 5: fine
            m.parse('SELECT 5'), m.bind(), m.execute(), m.sync())
        return c.read_until_rfq(5)

    _, _, _, got = env.compare(flow)
    assert env.seq(got) == ['1', '2', 'D:-5', 'D:-10', 'E:22012', 'Z:I',
                            '1', '2', 'D:3', 'C:SELECT 1', 'Z:I',
                            'E:42601', 'Z:I',
                            'E:26000', 'Z:I',
                            '1', '2', 'D:5', 'C:SELECT 1', 'Z:I']


def test_error_in_pipeline_inside_transaction(env):
    """Inside BEGIN an extended-protocol error leaves status E; ROLLBACK frees."""
    def flow(c):
        c.send(m.query('BEGIN'),
               m.parse('SELECT 1 / 0'), m.bind(), m.execute(), m.sync(),
               m.parse('SELECT 1'), m.bind(), m.execute(), m.sync(),
               m.query('ROLLBACK'))
        return c.read_until_rfq(4)

    _, _, _, got = env.compare(flow)
    assert env.seq(got) == ['C:BEGIN', 'Z:T', '1', 'E:22012', 'Z:E', 'E:25P02', 'Z:E',
                            'C:ROLLBACK', 'Z:I']


def test_parse_describe_flush_then_simple_query(env):
    """asyncpg: Parse/Describe/Flush with no Sync, read the description, then a
    simple Query.  The server must stay linked in between."""
    def flow(c):
        c.send(m.parse('SELECT $1::int AS v'), m.describe('S'), m.flush())
        out = c.read_until('Tn')
        c.send(m.query('SELECT 7'))
        out += c.read_until_rfq()
        return out

    _, _, _, got = env.compare(flow)
    assert env.seq(got) == ['1', 't', 'T', 'T', 'D:7', 'C:SELECT 1', 'Z:I']

    # and with a second client trying to get in between
    a, pid = env.client()
    a.send(m.parse('SELECT $1::int AS v'), m.describe('S'), m.flush())
    assert env.seq(a.read_until('Tn')) == ['1', 't', 'T']
    b = env.pooled()
    b.send(m.query('SELECT pg_backend_pid()'))
    b.expect_nothing(1.0)
    a.send(m.bind(params=['5']), m.execute(), m.sync())
    assert env.seq(a.read_until_rfq()) == ['2', 'D:5', 'C:SELECT 1', 'Z:I']
    assert env.seq(b.read_until_rfq()) == ['T', 'D:%d' % pid, 'C:SELECT 1', 'Z:I']
    env.assert_clean(pid)


def test_describe_only_batches(env):
    """Batches that produce no rows: Parse+Describe+Sync, Close+Sync, Sync alone."""
    def flow(c):
        c.send(m.parse('SELECT 1 AS one'), m.describe('S'), m.sync(),
               m.close('S'), m.close('P', 'nonexistent'), m.sync(),
               m.sync(),
               m.flush(), m.sync())
        return c.read_until_rfq(4)

    _, _, _, got = env.compare(flow)
    assert env.seq(got) == ['1', 't', 'T', 'Z:I', '3', '3', 'Z:I', 'Z:I', 'Z:I']


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: it waits for a reply to the skipped request and never releases the "
    "server")
@pytest.mark.parametrize('behind', ['query', 'function_call'])
def test_request_pipelined_behind_a_failed_extended_message_is_skipped(env, behind):
    """After an error in an extended-protocol message PostgreSQL skips everything up to the
    next Sync, a simple Query or a FunctionCall too: one ReadyForQuery answers the Sync and
    the skipped request gets nothing. Counting a reply for it would keep the server from
    the next client."""
    d = env.direct()
    oid = int(d.scalar("SELECT 'abs(int4)'::regprocedure::oid"))
    d.close()
    extra = m.query('SELECT 7') if behind == 'query' else m.function_call(oid, ['-7'])

    def flow(c):
        c.send(m.parse('SELECT 1/0'), m.bind(), m.execute(), m.flush(), extra, m.sync())
        out = c.read_until_rfq()
        out += c.read_available(QUIET)
        c.send(m.query('SELECT 8'))
        out += c.read_until_rfq()
        return out

    _, _, _, got = env.compare(flow)
    assert env.seq(got) == ['1', 'E:22012', 'Z:I', 'T', 'D:8', 'C:SELECT 1', 'Z:I']


def _raw_msg(t, body):
    return t + struct.pack('!i', len(body) + 4) + body


@pytest.mark.parametrize('payload', [
    pytest.param(_raw_msg(b'S', b'abcd'), id='sync-with-body'),
    pytest.param(_raw_msg(b'P', b''), id='parse-without-body'),
    pytest.param(_raw_msg(b'C', b'S'), id='close-without-name'),
    pytest.param(_raw_msg(b'P', b's9\0select 1\0\0\0junk'), id='named-parse-with-junk'),
    pytest.param(_raw_msg(b'D', b'Sabc'), id='describe-name-without-nul'),
    pytest.param(_raw_msg(b'B', b'\0s9\0\0\x05'), id='named-bind-cut-short'),
])
def test_malformed_extended_message_gets_the_servers_error(env, payload):
    """A malformed extended-protocol message, as the first message of a client without a
    server (the statement cache on, its default): PostgreSQL answers ERROR 08P01 and the
    session goes on. So must the pooler, rather than end the session with a FATAL of its
    own or answer it locally."""
    def flow(c):
        c.send(payload, m.sync(), m.query("SELECT 'after'"))
        return c.read_until_rfq(2)
    env.compare(flow, ignore='SN', same_pid=False)
