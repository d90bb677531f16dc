"""Messages that reach the pooler in pieces, seconds apart.

sluice forwards a partly received message piece by piece (DESIGN.md section
3); these tests check the result, through PostgreSQL, not the timing: the
statement PostgreSQL executed is exactly the one the client sent."""

import hashlib

from pgwire import m


def md5hex(s):
    return hashlib.md5(s.encode()).hexdigest()


def literal(n, seed='split'):
    """A deterministic ASCII string of n characters without quotes."""
    chunk = ''.join(chr(ord('a') + (i * 7 + len(seed)) % 26) for i in range(997))
    return (chunk * (n // len(chunk) + 1))[:n]


def test_query_split_in_two_pieces(env, copy_table):
    text = literal(3000)
    sql = "INSERT INTO copytest VALUES (1, '%s') RETURNING length(b), md5(b)" % text
    msg = m.query(sql)
    c, pid = env.client()
    c.send_split(msg, len(msg) // 2, pause=1.5)
    got = env.seq(c.read_until_rfq())
    assert got == ['T', 'D:3000|%s' % md5hex(text), 'C:INSERT 0 1', 'Z:I']
    # exactly one row, with exactly the text sent
    rows = env.sql('SELECT a, length(b), md5(b) FROM copytest')
    assert rows == [['1', '3000', md5hex(text)]]
    env.assert_clean(pid)


def test_query_split_inside_header(env):
    """Cuts inside the 5-byte header (after the type byte, inside the length)
    and one byte before the end."""
    sql = "SELECT md5('%s')" % literal(500)
    msg = m.query(sql)
    c, pid = env.client()
    c.send_split(msg, [1, 3, len(msg) - 1], pause=0.5)
    assert env.seq(c.read_until_rfq()) == ['T', 'D:%s' % md5hex(literal(500)),
                                           'C:SELECT 1', 'Z:I']
    env.assert_clean(pid)


def test_1mb_query_split_at_odd_offsets(env):
    text = literal(1 << 20, seed='big')
    msg = m.query("SELECT length('%s'), md5('%s')" % (text, text))
    assert len(msg) > 2 << 20
    cuts = [1, 4, 7, 4093, 65537, 524287, 1048573, len(msg) - 3]
    c, pid = env.client()
    c.send_split(msg, cuts, pause=0.2)
    assert env.seq(c.read_until_rfq(timeout=30)) == [
        'T', 'D:%d|%s' % (len(text), md5hex(text)), 'C:SELECT 1', 'Z:I']
    # and once more, followed by a pipelined Query in the last piece
    c.send_split(msg + m.query('SELECT 2'), [2, 999999, len(msg) + 3], pause=0.2)
    assert env.seq(c.read_until_rfq(2, timeout=30)) == [
        'T', 'D:%d|%s' % (len(text), md5hex(text)), 'C:SELECT 1', 'Z:I',
        'T', 'D:2', 'C:SELECT 1', 'Z:I']
    env.assert_clean(pid)


def test_extended_batch_split_at_odd_offsets(env):
    """Parse/Bind (1 MB text parameter)/Execute/Sync as one byte stream cut at
    odd places, including inside the Bind's parameter."""
    text = literal(1 << 20, seed='param')
    data = (m.parse('SELECT length($1::text), md5($1::text)') +
            m.bind(params=[text]) + m.execute() + m.sync())
    cuts = [3, 40, 45, 500001, len(data) - 7, len(data) - 2]
    c, pid = env.client()
    c.send_split(data, cuts, pause=0.2)
    assert env.seq(c.read_until_rfq(timeout=30)) == [
        '1', '2', 'D:%d|%s' % (len(text), md5hex(text)), 'C:SELECT 1', 'Z:I']
    env.assert_clean(pid)


def test_copy_data_split(env, copy_table):
    """A COPY whose CopyData messages arrive cut in pieces."""
    rows = ''.join('%d\t%s\n' % (i, literal(100 + i)) for i in range(200))
    data = m.query('COPY copytest FROM STDIN') + m.copy_data(rows) + m.copy_done()
    c, pid = env.client()
    c.send_split(data, [10, 31, 32, 33, 5001, len(data) - 4], pause=0.2)
    assert env.seq(c.read_until_rfq()) == ['G:0/2', 'C:COPY 200', 'Z:I']
    assert env.sql('SELECT count(*), sum(length(b)) FROM copytest') == \
        [['200', str(sum(100 + i for i in range(200)))]]
    env.assert_clean(pid)
