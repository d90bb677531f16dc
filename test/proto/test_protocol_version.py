"""Protocol version negotiation at start-up, compared with PostgreSQL itself.

A client may ask for a newer minor version of protocol 3 than the server speaks, or send
`_pq_.` options the server does not know. PostgreSQL then answers, before authentication,
with one NegotiateProtocolVersion message: the newest version it speaks, as a whole
protocol number (major << 16 | minor; libpq reads it so and refuses a "downgrade to
pre-3.0"), and the names of the options it ignored. The login then goes on at that
version. The pooler must send the very same message and carry on the same way.
"""

import struct

import pytest

from pgwire import Conn, m

PROTOCOL_3_2 = 3 << 16 | 2
GREASE = 3 << 16 | 0xea0b  # a minor version no server speaks, as libpq's tests use


def negotiation(c):
    """The NegotiateProtocolVersion messages of the start-up: (version, [options])."""
    out = []
    for msg in c.startup_msgs:
        if msg.type != 'v':
            continue
        version, count = struct.unpack('!ii', msg.body[:8])
        names = [x.decode() for x in msg.body[8:].split(b'\0')[:count]]
        out.append((version, names))
    return out


CASES = [
    pytest.param(PROTOCOL_3_2, {}, id='3.2'),
    pytest.param(GREASE, {}, id='grease'),
    pytest.param(3 << 16, {'_pq_.not_an_option': 'on'}, id='unknown-option'),
    pytest.param(PROTOCOL_3_2, {'_pq_.one': 'x', '_pq_.two': 'y'}, id='3.2-two-options'),
]


@pytest.mark.differs_from_pgbouncer_1_18
@pytest.mark.parametrize('version, options', CASES)
def test_negotiation_matches_postgresql(pooler, pg, version, options):
    p = pooler(pgbouncer={'pool_mode': 'transaction'})
    got = {}
    for name, port in (('direct', pg.port), ('pooler', p.port)):
        with Conn.connect('127.0.0.1', port, user='md5user', password='md5pass',
                          database='appdb', params=options, version=version) as c:
            got[name] = negotiation(c)
            # The session goes on at protocol 3.0.
            assert c.query('SELECT 1') == [['1']]
            c.close(terminate=True)
    assert got['direct'] and got['direct'][0][0] == 3 << 16, got
    assert got['pooler'] == got['direct']


def test_plain_3_0_gets_no_negotiation(pooler, pg):
    p = pooler(pgbouncer={'pool_mode': 'transaction'})
    with Conn.connect('127.0.0.1', p.port, user='md5user', password='md5pass',
                      database='appdb') as c:
        assert negotiation(c) == []
        assert c.query('SELECT 1') == [['1']]
        c.close(terminate=True)
