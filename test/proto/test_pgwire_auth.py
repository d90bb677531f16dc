"""The raw client's own start-up and authentication (trust, cleartext, md5,
SCRAM-SHA-256), directly against PostgreSQL and through the pooler, so that a
failure elsewhere in test/proto is never a client-library problem."""

import pytest

from pgwire import Conn, ServerError, m


def test_direct_auth_methods(pg):
    with Conn.connect(port=pg.port, unix_socket_dir=pg.socket_dir, user='postgres') as c:
        assert c.auth_method == 'trust' and c.status == 'I'
    with Conn.connect(pg.host, pg.port, user='md5user', password='md5pass',
                      database='appdb') as c:
        assert c.auth_method == 'md5'
        assert c.query('SELECT current_user') == [['md5user']]
        assert c.backend_pid == c.server_pid()
    with Conn.connect(pg.host, pg.port, user='scramuser', password='scrampass',
                      database='appdb') as c:
        assert c.auth_method == 'scram-sha-256'
        assert c.parameters.get('server_encoding') == 'UTF8'
    with pytest.raises(ServerError) as e:
        Conn.connect(pg.host, pg.port, user='scramuser', password='wrong', database='appdb')
    assert e.value.code == '28P01'


@pytest.mark.parametrize('auth_type, method', [
    ('trust', 'trust'), ('plain', 'password'), ('md5', 'md5'),
    ('scram-sha-256', 'scram-sha-256')])
def test_auth_through_pooler(pooler, pg, auth_type, method):
    p = pooler(pgbouncer={'auth_type': auth_type, 'pool_mode': 'transaction'})
    for user in ('md5user', 'scramuser'):
        with Conn.connect('127.0.0.1', p.port, user=user, password=pg.passwords[user],
                          database='appdb') as c:
            assert c.auth_method == method
            c.send(m.query('SELECT current_user'))
            assert [x.row for x in c.read_until_rfq() if x.type == 'D'] == [[user]]
            c.close(terminate=True)
    if auth_type != 'trust':
        with pytest.raises(ServerError) as e:
            Conn.connect('127.0.0.1', p.port, user='md5user', password='wrong',
                         database='appdb')
        assert e.value.severity == 'FATAL'
