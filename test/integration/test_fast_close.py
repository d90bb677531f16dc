"""server_fast_close: in session mode a server marked close_needed by RECONNECT is closed at
the end of its client's transaction (taking the client with it) instead of at session end."""
import psycopg
import pytest


def _backend(conn):
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_fast_close_closes_session_after_transaction(pg, pooler):
    p = pooler(pgbouncer={"pool_mode": "session", "server_fast_close": "1"})
    c = p.connect()
    pid = _backend(c)
    c.execute("BEGIN")
    p.admin("RECONNECT")
    # Inside the transaction nothing happens to the session.
    assert _backend(c) == pid
    c.execute("COMMIT")
    # After it, the janitor closes the server and the client. The client stays quiet until
    # then: a query running when the janitor looks would (rightly) postpone the close.
    p.wait_for_log(r"closing because: database configuration changed")
    with pytest.raises(psycopg.OperationalError):
        c.execute("SELECT 1")
    # A new session gets a new backend.
    c2 = p.connect()
    assert _backend(c2) != pid
    c2.close()


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: server_fast_close")
def test_fast_close_acts_when_the_transaction_ends(pg, pooler):
    # The close comes with the end of the transaction itself, not with a later janitor tick
    # (every 333 ms): the very next query, sent at once, already finds the session gone, and
    # the COMMIT before it still got its answer.
    p = pooler(pgbouncer={"pool_mode": "session", "server_fast_close": "1"})
    c = p.connect()
    c.execute("BEGIN")
    p.admin("RECONNECT")
    c.execute("SELECT 1")
    c.execute("COMMIT")
    with pytest.raises(psycopg.OperationalError):
        c.execute("SELECT 1")
    p.wait_for_log(r"closing because: database configuration changed")


def test_without_fast_close_session_keeps_its_server(pg, pooler):
    p = pooler(pgbouncer={"pool_mode": "session"})
    c = p.connect()
    pid = _backend(c)
    p.admin("RECONNECT")
    for _ in range(10):
        c.execute("SELECT pg_sleep(0.05)")
    assert _backend(c) == pid
    c.close()
