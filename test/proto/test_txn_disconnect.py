"""Transaction pooling: a client that goes away while its server is busy or
inside a transaction must never hand a dirty server to the next client.

The next client may get a different backend (the pooler may close the old
one), so these tests assert "clean", not "same pid" — except where the old
server is provably reusable."""

import time

import pytest

from pgwire import m


def _open_transaction(env, copy_table, terminate=False):
    a, pid = env.client()
    a.send(m.query('BEGIN'),
           m.query("INSERT INTO copytest VALUES (1, 'uncommitted')"),
           m.query('SELECT pg_advisory_xact_lock(4242)'),
           m.query('CREATE TEMP TABLE leak_tmp (x int)'),
           m.query('LOCK TABLE copytest IN SHARE ROW EXCLUSIVE MODE'),
           m.query("DECLARE leak_cur CURSOR WITH HOLD FOR SELECT 1"))
    got = env.seq(a.read_until_rfq(6))
    assert got[-1] == 'Z:T' and 'E' not in ''.join(x[0] for x in got), got
    assert txid_assigned(env, pid)
    a.close(terminate=terminate)
    return pid


def txid_assigned(env, pid):
    rows = env.sql("SELECT backend_xid IS NOT NULL FROM pg_stat_activity WHERE pid = %d"
                   % pid)
    return rows and rows[0][0] == 't'


def test_disconnect_with_open_transaction(env, copy_table):
    _open_transaction(env, copy_table)
    env.assert_clean()
    assert env.count(copy_table) == 0          # rolled back, never committed
    # no lock leaked (lock_timeout=5s on this connection)
    env.sql('BEGIN; LOCK TABLE copytest IN ACCESS EXCLUSIVE MODE; ROLLBACK')


def test_terminate_with_open_transaction(env, copy_table):
    """Same with a polite Terminate 'X' instead of a dropped socket."""
    _open_transaction(env, copy_table, terminate=True)
    env.assert_clean()
    assert env.count(copy_table) == 0


def test_disconnect_with_failed_transaction(env):
    a, pid = env.client()
    a.send(m.query('BEGIN'), m.query('SELECT 1/0'))
    assert env.seq(a.read_until_rfq(2)) == ['C:BEGIN', 'Z:T', 'E:22012', 'Z:E']
    a.close()
    env.assert_clean()


def test_disconnect_with_query_running(env):
    """A long query, then the client closes before its reply: the next client
    gets a clean server within the bounded wait (pooler either waits for the
    result and drains it, or closes the server)."""
    a, pid = env.client()
    a.send(m.query('SELECT pg_sleep(2)'))
    time.sleep(0.2)
    a.close()
    t0 = time.monotonic()
    env.assert_clean()
    assert time.monotonic() - t0 < 10


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: replies owed to a client that disconnected reach the next client "
    "of that server")
def test_disconnect_with_pipelined_replies_owed(env):
    """Several pipelined Queries and extended batches, client reads one reply and
    leaves: the rest of the replies are owed to nobody."""
    a, pid = env.client()
    a.send(m.query('SELECT 1'), m.query('SELECT pg_sleep(0.5)'),
           m.parse('SELECT g FROM generate_series(1, 100000) g'), m.bind(), m.execute(),
           m.sync(), m.query('SELECT 3'))
    assert env.seq(a.read_until_rfq()) == ['T', 'D:1', 'C:SELECT 1', 'Z:I']
    a.close()
    env.assert_clean()


def test_disconnect_with_big_result_streaming(env):
    """The client leaves while a large result is still streaming toward it."""
    a, pid = env.client()
    a.send(m.query("SELECT g, repeat('x', 200) FROM generate_series(1, 200000) g"))
    a.read_until('D')
    a.close()
    env.assert_clean()


def test_disconnect_in_copy_out(env):
    a, pid = env.client()
    a.send(m.query("COPY (SELECT g, repeat('y', 200) FROM generate_series(1, 200000) g) "
                   "TO STDOUT"))
    assert env.seq(a.read_until('H')) == ['H:0/2']
    a.read_until('d')
    a.close()
    env.assert_clean()


def test_disconnect_extended_without_sync(env):
    """Parse/Bind/Execute(row limit)/Flush, no Sync: the server sits in an
    implicit transaction with an open portal when the client leaves."""
    a, pid = env.client()
    a.send(m.parse('SELECT g FROM generate_series(1, 10) g'), m.bind(),
           m.execute(max_rows=3), m.flush())
    assert env.seq(a.read_until('s')) == ['1', '2', 'D:1', 'D:2', 'D:3', 's']
    a.close()
    env.assert_clean()


def test_disconnect_extended_insert_without_sync_is_not_committed(env, copy_table):
    """An INSERT executed with Parse/Bind/Execute/Flush but never Synced is
    part of an open implicit transaction.  If the pooler handed that server to
    the next client, the next client's query would COMMIT the departed
    client's INSERT."""
    a, pid = env.client()
    a.send(m.parse("INSERT INTO copytest VALUES (99, 'never synced')"), m.bind(),
           m.execute(), m.flush())
    assert env.seq(a.read_until('C')) == ['1', '2', 'C:INSERT 0 1']
    a.close()
    env.assert_clean()
    assert env.count(copy_table) == 0, 'the unsynced INSERT was committed by someone else'


def test_disconnect_after_error_before_sync(env):
    """Error in an extended batch, client leaves before sending Sync: the
    server is still discarding messages, waiting for a Sync."""
    a, pid = env.client()
    a.send(m.parse('SELECT 1/0'), m.bind(), m.execute(), m.flush())
    got = env.seq(a.read_until('E'))
    assert got[-1] == 'E:22012', got
    a.close()
    env.assert_clean()


def test_disconnect_while_waiting_for_server(env):
    """A queued client (pool full) leaves before it got a server: the linked
    client is unaffected and the pool is clean afterwards."""
    a, pid = env.client()
    a.send(m.query('BEGIN'))
    assert env.seq(a.read_until_rfq()) == ['C:BEGIN', 'Z:T']
    b = env.pooled()
    b.send(m.query('SELECT 1'))
    b.expect_nothing(0.5)
    b.close()
    time.sleep(0.2)
    a.send(m.query('SELECT pg_backend_pid()'), m.query('COMMIT'))
    assert env.seq(a.read_until_rfq(2)) == ['T', 'D:%d' % pid, 'C:SELECT 1', 'Z:T',
                                            'C:COMMIT', 'Z:I']
    env.assert_clean(pid)


# What a client sends before it leaves still runs, as it does on a direct connection:
# PostgreSQL reads and runs every message before the Terminate or the end of the stream
# (PQsendQuery + PQfinish, a COMMIT sent along with Terminate). PgBouncer 1.18 drops them.

LEAVE_WAYS = [pytest.param(True, id='terminate'), pytest.param(False, id='close')]


def _leave_after(c, payload, terminate):
    c.sock.sendall(payload + (m.terminate() if terminate else b''))
    c.close()


def _rows_when_settled(env, table, want, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        n = env.count(table)
        if n >= want or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


@pytest.mark.differs_from_pgbouncer_1_18("PgBouncer 1.18 drops what the client sent last")
@pytest.mark.parametrize('terminate', LEAVE_WAYS)
def test_statements_sent_just_before_leaving_run(env, copy_table, terminate):
    """Clients in a row each send an INSERT (a simple Query, or an extended batch with its
    Sync) and leave in the same write: directly each lands, and so it must through the
    pooler. The pool is clean after. (Not a failing statement first: directly, what follows
    it runs only if the backend's error reached the socket before the client closed it.)"""
    payloads = [
        lambda i: m.query("INSERT INTO copytest VALUES (%d, 'q')" % i),
        lambda i: (m.parse("INSERT INTO copytest VALUES (%d, 'x')" % i) + m.bind() +
                   m.execute() + m.sync()),
    ]
    for via in ('direct', 'pooler'):
        env.sql('TRUNCATE %s' % copy_table)
        for i in range(6):
            c = env.direct() if via == 'direct' else env.pooled()
            _leave_after(c, payloads[i % 2](i), terminate)
            # (one at a time: a client still queued for the server when it leaves is dropped)
            assert _rows_when_settled(env, copy_table, i + 1) == i + 1, (via, i)
    env.assert_clean()


@pytest.mark.differs_from_pgbouncer_1_18("PgBouncer 1.18 drops what the client sent last")
@pytest.mark.parametrize('terminate', LEAVE_WAYS)
def test_commit_sent_just_before_leaving_commits(env, copy_table, terminate):
    a, pid = env.client()
    a.send(m.query('BEGIN'), m.query("INSERT INTO copytest VALUES (1, 'kept')"))
    assert env.seq(a.read_until_rfq(2))[-1] == 'Z:T'
    _leave_after(a, m.query('COMMIT'), terminate)
    assert _rows_when_settled(env, copy_table, 1) == 1
    env.assert_clean(pid)


def test_transaction_left_open_by_the_last_statements_rolls_back(env, copy_table):
    """BEGIN and an INSERT sent just before Terminate: they run, the transaction is still
    open when the client is gone, and it is rolled back as the backend would on its own."""
    a, pid = env.client()
    _leave_after(a, m.query("BEGIN; INSERT INTO copytest VALUES (2, 'gone')"), True)
    env.assert_clean()
    assert env.count(copy_table) == 0


def test_copy_from_stdin_sent_just_before_leaving_is_not_left_waiting(env, copy_table):
    """A COPY FROM STDIN whose data never comes: the server is closed, not kept waiting."""
    a, pid = env.client()
    _leave_after(a, m.query('COPY copytest FROM STDIN'), True)
    assert env.wait_server_gone(pid)
    env.assert_clean()
    assert env.count(copy_table) == 0


@pytest.mark.differs_from_pgbouncer_1_18("PgBouncer 1.18 closes the server when the client leaves")
def test_query_timeout_bounds_what_a_departed_client_left_running(env_factory):
    """What a departed client left running holds its server like any query: query_timeout
    closes it, and the client queued behind gets a new server."""
    env = env_factory(query_timeout=2)
    a, pid = env.client()
    _leave_after(a, m.query('SELECT pg_sleep(30)'), True)
    time.sleep(1.2)  # b queues for less than its own query_timeout (the queue counts)
    t0 = time.monotonic()
    b = env.pooled()
    assert b.query('SELECT pg_backend_pid()') != [[str(pid)]]
    assert time.monotonic() - t0 < 10
    env.pooler.wait_for_log(r'S-0x[0-9a-f]+: \S+ closing because: query timeout')
    env.sql('SELECT pg_terminate_backend(%d)' % pid)


@pytest.mark.differs_from_pgbouncer_1_18("PgBouncer 1.18 closes the server when the client leaves")
def test_silent_server_of_a_departed_client_closed_after_five_seconds(env):
    """Without query_timeout, what a departed client left running may run on until its server
    has been silent for 5 s (doc/pooling.md, "A client that leaves with replies owed"): then
    the server is closed, since it may be waiting for input that will never come."""
    a, pid = env.client()
    t0 = time.monotonic()
    _leave_after(a, m.query('SELECT pg_sleep(30)'), True)
    time.sleep(2)
    assert env.sql("SELECT state, query FROM pg_stat_activity WHERE pid = %d" % pid) == \
        [['active', 'SELECT pg_sleep(30)']]
    env.pooler.wait_for_log(r'S-0x[0-9a-f]+: \S+ closing because: client disconnect while '
                            r'server was not ready', timeout=20)
    took = time.monotonic() - t0
    assert 4.5 <= took < 15, took
    env.sql('SELECT pg_terminate_backend(%d)' % pid)
    b = env.pooled()
    assert b.query('SELECT 1') == [['1']]
