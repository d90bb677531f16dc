"""pool_mode=statement: every statement returns its server at once; a
transaction block is a violation that PgBouncer answers with a FATAL
'transaction blocks not allowed in statement pooling mode' and closes both the
client and the server connection (spec/pgbouncer-interface.md section 1d)."""

from pgwire import m, render_detail

STMT_ERROR = 'transaction blocks not allowed in statement pooling mode'


def test_begin_is_refused(env_factory):
    env = env_factory(mode='statement')
    a, pid = env.client()
    a.send(m.query('BEGIN'))
    msgs = a.wait_closed()                   # the pooler closes the client
    errors = [x for x in msgs if x.type == 'E']
    assert errors, 'no ErrorResponse before close: %s' % render_detail(msgs)
    f = errors[-1].error
    assert f['M'] == STMT_ERROR, f
    assert f['S'] == 'FATAL' and f['C'] == '08P01', f
    assert 'Z' not in [x.type for x in msgs], render_detail(msgs)
    # The server that saw BEGIN was closed, the next client gets a clean one.
    env.assert_clean()
    assert env.wait_server_gone(pid)


def test_begin_in_extended_protocol_is_refused(env_factory):
    env = env_factory(mode='statement')
    a, pid = env.client()
    a.send(m.parse('BEGIN'), m.bind(), m.execute(), m.sync())
    msgs = a.wait_closed()
    errors = [x for x in msgs if x.type == 'E']
    assert errors and errors[-1].error['M'] == STMT_ERROR, render_detail(msgs)
    env.assert_clean()


def test_statements_share_one_server(env_factory):
    """Autocommit statements (simple, multi-statement, extended, pipelined) are
    fine; between statements the single server serves other clients."""
    env = env_factory(mode='statement')

    def flow(c):
        c.send(m.query('SELECT 1; SELECT 2'))
        out = c.read_until_rfq()
        c.send(m.parse('SELECT $1::int'), m.bind(params=['3']), m.execute(), m.sync(),
               m.query('SELECT 4'))
        out += c.read_until_rfq(2)
        return out

    a, pid, _, got = env.compare(flow)
    assert env.seq(got) == ['T', 'D:1', 'C:SELECT 1', 'T', 'D:2', 'C:SELECT 1', 'Z:I',
                            '1', '2', 'D:3', 'C:SELECT 1', 'Z:I',
                            'T', 'D:4', 'C:SELECT 1', 'Z:I']
    b = env.pooled()
    assert b.server_pid() == pid
    assert a.server_pid() == pid
