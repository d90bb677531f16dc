"""Transaction pooling, simple-protocol flows (pool_mode=transaction,
default_pool_size=1).  Each flow: same replies as PostgreSQL directly, then a
second client gets the same, clean backend."""

import time

from pgwire import m


def test_simple_query(env):
    def flow(c):
        c.send(m.query('SELECT 1 AS a, NULL::text AS b'))
        return c.read_until_rfq()

    _, _, want, got = env.compare(flow)
    assert env.seq(got) == ['T', 'D:1|NULL', 'C:SELECT 1', 'Z:I']


def test_multi_statement_query(env):
    def flow(c):
        c.send(m.query("SELECT 1; SELECT g FROM generate_series(1, 3) g; "
                       "SET LOCAL work_mem = '8MB'; SHOW work_mem"))
        return c.read_until_rfq()

    _, _, _, got = env.compare(flow)
    assert env.seq(got) == ['T', 'D:1', 'C:SELECT 1', 'T', 'D:1', 'D:2', 'D:3',
                            'C:SELECT 3', 'C:SET', 'T', 'D:8MB', 'C:SHOW', 'Z:I']


def test_multi_statement_query_error_in_middle(env):
    def flow(c):
        c.send(m.query('SELECT 1; SELECT 1/0; SELECT 3'))
        return c.read_until_rfq()

    _, _, _, got = env.compare(flow)
    assert env.seq(got) == ['T', 'D:1', 'C:SELECT 1', 'E:22012', 'Z:I']


def test_pipelined_simple_queries(env):
    """Several Queries in one write: one ReadyForQuery each, in order."""
    def flow(c):
        c.send(*[m.query('SELECT %d' % i) for i in range(10)])
        return c.read_until_rfq(10)

    _, _, _, got = env.compare(flow)
    assert env.seq(got, collapse=False).count('Z:I') == 10


def test_explicit_transaction_keeps_server_linked(env, copy_table):
    """BEGIN ... COMMIT over several Queries: the server stays with the client;
    a second client waits until COMMIT and then gets the same backend."""
    def flow(c):
        out = []
        for sql in ('BEGIN', "INSERT INTO copytest VALUES (1, 'x')",
                    'SELECT count(*) FROM copytest', 'COMMIT'):
            c.send(m.query(sql))
            out += c.read_until_rfq()
        return out

    env.compare(flow, setup=env.truncator(copy_table), check_clean=False)

    # Now interleave with a second client.
    env.truncator(copy_table)()
    a, pid = env.client()
    a.send(m.query('BEGIN'))
    assert env.seq(a.read_until_rfq()) == ['C:BEGIN', 'Z:T']
    a.send(m.query("INSERT INTO copytest VALUES (2, 'y')"))
    assert env.seq(a.read_until_rfq()) == ['C:INSERT 0 1', 'Z:T']

    b = env.pooled()
    b.send(m.query('SELECT pg_backend_pid(), count(*) FROM copytest'))
    b.expect_nothing(1.0)          # pool_size=1 and A is inside a transaction

    a.send(m.query('SELECT pg_backend_pid()'))
    assert env.seq(a.read_until_rfq()) == ['T', 'D:%d' % pid, 'C:SELECT 1', 'Z:T']
    b.expect_nothing(0.3)
    a.send(m.query('COMMIT'))
    assert env.seq(a.read_until_rfq()) == ['C:COMMIT', 'Z:I']

    got = b.read_until_rfq()
    assert env.seq(got) == ['T', 'D:%d|1' % pid, 'C:SELECT 1', 'Z:I']
    env.assert_clean(pid)


def test_failed_transaction_block(env):
    """Error inside BEGIN: status E until ROLLBACK; released only after it."""
    def flow(c):
        out = []
        for sql in ('BEGIN', 'SELECT 1/0', 'SELECT 1', 'ROLLBACK'):
            c.send(m.query(sql))
            out += c.read_until_rfq()
        return out

    _, _, _, got = env.compare(flow)
    assert env.seq(got) == ['C:BEGIN', 'Z:T', 'E:22012', 'Z:E', 'E:25P02', 'Z:E',
                            'C:ROLLBACK', 'Z:I']


def test_empty_query(env):
    """Query '' -> EmptyQueryResponse; extended: Execute of an empty statement."""
    def flow(c):
        c.send(m.query(''))
        out = c.read_until_rfq()
        c.send(m.query(';'))
        out += c.read_until_rfq()
        c.send(m.parse(''), m.bind(), m.describe('P'), m.execute(), m.sync())
        out += c.read_until_rfq()
        return out

    _, _, _, got = env.compare(flow)
    assert env.seq(got) == ['I', 'Z:I', 'I', 'Z:I', '1', '2', 'n', 'I', 'Z:I']


def test_function_call(env):
    """FunctionCall 'F' (fast-path) of abs(int4): FunctionCallResponse + RFQ."""
    d = env.direct()
    oid = int(d.scalar("SELECT 'abs(int4)'::regprocedure::oid"))
    d.close()

    def flow(c):
        c.send(m.function_call(oid, ['-42']))
        out = c.read_until_rfq()
        c.send(m.function_call(oid, [None]))                   # strict: NULL
        out += c.read_until_rfq()
        c.send(m.function_call(oid, ['-2147483648']))          # overflow error
        out += c.read_until_rfq()
        c.send(m.function_call(oid, ['7']), m.function_call(oid, ['-8']))  # pipelined
        out += c.read_until_rfq(2)
        return out

    _, _, _, got = env.compare(flow)
    assert env.seq(got) == ['V:42', 'Z:I', 'V:NULL', 'Z:I', 'E:22003', 'Z:I',
                            'V:7', 'Z:I', 'V:8', 'Z:I']


def test_notice_mid_stream(env):
    """NoticeResponse (RAISE NOTICE) between other results, simple and extended."""
    do = "DO $$ BEGIN RAISE NOTICE 'n1'; RAISE NOTICE 'n2'; END $$"

    def flow(c):
        c.send(m.query('SELECT 1; %s; SELECT 2' % do))
        out = c.read_until_rfq()
        c.send(m.parse(do), m.bind(), m.execute(), m.parse('SELECT 3'), m.bind(),
               m.execute(), m.sync())
        out += c.read_until_rfq()
        return out

    _, _, _, got = env.compare(flow)
    assert env.seq(got, collapse=False) == [
        'T', 'D:1', 'C:SELECT 1', 'N:00000', 'N:00000', 'C:DO', 'T', 'D:2',
        'C:SELECT 1', 'Z:I',
        '1', '2', 'N:00000', 'N:00000', 'C:DO', '1', '2', 'D:3', 'C:SELECT 1', 'Z:I']


def test_notify_to_self(env):
    """LISTEN + NOTIFY in one Query: NotificationResponse right before the RFQ.
    UNLISTEN afterwards so the backend is handed over clean."""
    def flow(c):
        c.send(m.query("LISTEN chan_self; NOTIFY chan_self, 'hello'"),
               m.query('SELECT 1'), m.query('UNLISTEN *'))
        return c.read_until_rfq(3)

    _, _, _, got = env.compare(flow)
    assert env.seq(got) == ['C:LISTEN', 'C:NOTIFY', 'A:chan_self:hello', 'Z:I',
                            'T', 'D:1', 'C:SELECT 1', 'Z:I', 'C:UNLISTEN', 'Z:I']


def test_notification_from_other_session_mid_pipeline(env):
    """A NOTIFY from another session arrives while the client's pipeline runs:
    the notification is delivered between the pipelined results."""
    def flow(c):
        c.send(m.query('LISTEN chan_other'), m.query('SELECT pg_sleep(1.5)'),
               m.query('SELECT 2'), m.query('UNLISTEN *'))
        out = c.read_until_rfq()            # LISTEN committed
        time.sleep(0.2)
        s = env.superuser()
        s.query("NOTIFY chan_other, 'from-elsewhere'")
        s.close()
        out += c.read_until_rfq(3)
        return out

    _, _, _, got = env.compare(flow)
    assert env.seq(got) == ['C:LISTEN', 'Z:I', 'T', 'D:', 'C:SELECT 1',
                            'A:chan_other:from-elsewhere', 'Z:I',
                            'T', 'D:2', 'C:SELECT 1', 'Z:I', 'C:UNLISTEN', 'Z:I']
