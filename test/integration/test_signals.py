"""Signals with PgBouncer 1.23+ semantics (spec: /work/shared/spec/pgbouncer-interface.md 1b).

SIGTERM = SHUTDOWN WAIT_FOR_CLIENTS: stop listening on TCP, let connected clients finish,
exit 0 once they are gone; a second SIGTERM exits at once. (PgBouncer 1.18 exits at the
first SIGTERM with code 1, so these fail against it by design.)"""

import os
import signal

import psycopg
import pytest

import harness


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: SIGTERM waiting for clients (1.18 exits at once)")
def test_sigterm_waits_for_clients(pooler):
    p = pooler()
    a = p.connect()
    pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    mark = p.log_mark()
    p.expect_exit = True
    p.signal(signal.SIGTERM)
    p.wait_for_log(r"got SIGTERM, shutting down, waiting for all clients disconnect",
                   since=mark)
    # the connected client keeps its server and keeps working
    assert p.alive()
    assert a.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    # new TCP logins are refused (listener closed)
    rc, out, err = p.psql("-c", "SELECT 1")
    assert rc != 0, out
    with pytest.raises(psycopg.OperationalError):
        p.connect()
    assert p.alive()
    # the last client leaving ends the process, with status 0
    a.close()
    harness.wait_until(lambda: not p.alive(), 15, what="exit after the last client left")
    assert p.returncode == 0, p.full_log()
    assert p.log_text().endswith("LOG client connections dropped, exiting\n"), p.full_log()


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: SIGTERM waiting for clients (1.18 exits at once)")
def test_second_sigterm_exits_at_once(pooler):
    p = pooler()
    a = p.connect()
    a.execute("SELECT 1")
    p.expect_exit = True
    mark = p.log_mark()
    p.signal(signal.SIGTERM)
    p.wait_for_log(r"got SIGTERM, shutting down", since=mark)
    assert p.alive()
    p.signal(signal.SIGTERM)
    harness.wait_until(lambda: not p.alive(), 15, what="exit after the second SIGTERM")
    assert p.returncode == 0, p.full_log()
    assert "LOG got SIGTERM while shutting down, fast exit\n" in p.log_text()
    a.close()


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: the SIGINT lines of later releases")
def test_second_sigint_exits_at_once(pooler):
    p = pooler()
    a = p.connect()
    a.execute("BEGIN")  # holds its server: the SIGINT shutdown waits for it
    a.execute("SELECT 1")
    p.expect_exit = True
    p.signal(signal.SIGINT)
    p.wait_for_log(r"LOG got SIGINT, shutting down, waiting for all servers connections to be "
                   r"released\n")
    assert p.alive()
    p.signal(signal.SIGINT)
    harness.wait_until(lambda: not p.alive(), 15, what="exit after the second SIGINT")
    assert p.returncode == 0, p.full_log()
    assert "LOG got SIGINT while shutting down, fast exit\n" in p.log_text()


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: a shutdown signal while suspended exits (1.18 waits on)")
def test_shutdown_signal_while_suspended_exits_at_once(pooler):
    """A SUSPEND froze every socket, so nothing could finish: PgBouncer's FATAL, exit 1,
    the pidfile removed."""
    p = pooler()
    a = p.connect()
    a.execute("SELECT 1")
    assert p.admin("SUSPEND") == []
    p.expect_exit = True
    p.signal(signal.SIGINT)
    harness.wait_until(lambda: not p.alive(), 15, what="exit at a SIGINT while suspended")
    assert p.returncode == 1, p.full_log()
    assert "FATAL suspend was in progress, going down immediately\n" in p.log_text()
    assert not os.path.exists(os.path.join(p.dir, "pooler.pid"))
    a.close()


def test_sighup_as_soon_as_the_pidfile_appears(pooler):
    """An init script reloads by reading the pidfile and sending SIGHUP: sent the moment the
    pidfile exists (even the moment the port accepts), it must reload the process, never end
    it. A few fresh processes, each signalled as early as the test can."""
    for _ in range(5):
        p = pooler(start=False)
        pidfile = harness._ini_value(p.ini_text, "pidfile")
        assert pidfile
        p.start(wait_ready=False)
        harness.wait_until(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(),
                           15, what="the pidfile", interval=0)
        os.kill(int(open(pidfile).read()), signal.SIGHUP)
        p.wait_ready()
        p.wait_for_log(r"got SIGHUP, re-reading config")
        assert p.alive(), p.full_log()
        p.stop()
