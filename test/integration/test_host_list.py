"""[databases] host lists: new server connections go round-robin over the hosts, or with
load_balance_hosts=disable stay on one host until a login there fails."""

import time

import pytest

import harness


def _server_addrs(p):
    return [r["addr"] for r in p.show("SERVERS")]


def _hold_servers(p, n):
    """n clients inside a transaction each: n server connections in session mode."""
    conns = []
    for _ in range(n):
        c = p.connect()
        c.execute("BEGIN")
        c.execute("SELECT 1")
        conns.append(c)
    return conns


def test_round_robin_over_hosts(pooler):
    # One PostgreSQL reached two ways: TCP and its unix socket directory.
    p = pooler(pgbouncer={"pool_mode": "session"},
               databases={"appdb": "host={pg_host},{pg_socket_dir} port={pg_port}"})
    conns = _hold_servers(p, 4)
    try:
        addrs = _server_addrs(p)
        assert sorted(addrs) == ["127.0.0.1", "127.0.0.1", "unix", "unix"]
    finally:
        for c in conns:
            c.close()


def test_round_robin_moves_past_a_dead_host(pooler):
    # Nothing listens in the first directory: that attempt fails, and the retry after
    # server_login_retry goes to the next host.
    p = pooler(pgbouncer={"pool_mode": "session", "server_login_retry": "1"},
               databases={"appdb": "host=/nonexistent-sluice-dir,{pg_host} port={pg_port}"})
    t0 = time.monotonic()
    c = p.connect()
    try:
        assert c.execute("SELECT 1").fetchone() == (1,)
        assert time.monotonic() - t0 < 30
        assert _server_addrs(p) == ["127.0.0.1"]
    finally:
        c.close()
    # PgBouncer's line for a connect() that fails at once: no connection prefix
    p.wait_for_log(r"\[\d+\] WARNING sbuf_connect failed: No such file or directory\n")


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: load_balance_hosts")
def test_disable_stays_on_a_host_until_it_fails(pooler):
    settings = {"pool_mode": "session", "server_login_retry": "1"}
    p = pooler(pgbouncer=settings,
               databases={"appdb": "host=/nonexistent-sluice-dir,{pg_host},{pg_socket_dir} "
                                   "port={pg_port} load_balance_hosts=disable"})
    t0 = time.monotonic()
    conns = _hold_servers(p, 3)  # the first login fails on the missing directory
    try:
        assert time.monotonic() - t0 < 30
        # After the failure it moved to the second host and stayed there.
        assert _server_addrs(p) == ["127.0.0.1"] * 3
    finally:
        for c in conns:
            c.close()


def test_unix_socket_server(pooler):
    # A unix socket connects at once (no connect in progress): the startup packet must still
    # go out without waiting for a write report.
    p = pooler(databases={"appdb": "host={pg_socket_dir} port={pg_port}"})
    t0 = time.monotonic()
    assert p.psql("-c", "SELECT 1")[:2] == (0, "1\n")
    assert time.monotonic() - t0 < 10  # not after a 15 s server_connect_timeout
    assert _server_addrs(p) == ["unix"]
