"""pgbench through the pooler in transaction mode: 64 clients over a pool of 10, simple and
extended protocol, every transaction succeeds: with sockets read through io_uring (the
proactor, SLUICE_PROACTOR; also with only 16 idle clients keeping their buffer, so that the
other 48 read each message through a provided buffer: SLUICE_KEPT_BUFFERS), through the
epoll set with sends batched through io_uring (SLUICE_NO_PROACTOR), and with no io_uring at
all (SLUICE_NO_IO_URING). Without either switch the pooler chooses by what a system call
costs on the machine, and says so in the log."""

import os
import re
import subprocess

import pytest

import harness


def _pgbench(args, port, timeout):
    env = dict(os.environ, PGPASSWORD="md5pass", PGCONNECT_TIMEOUT="15")
    env.pop("PGPASSFILE", None)
    cmd = [harness.pg_tool("pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "md5user"] \
        + args + ["appdb"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def pgbench_tables(pg):
    init = _pgbench(["-i", "-q", "-s", "1"], pg.port, 180)  # directly against PostgreSQL
    assert init.returncode == 0, init.stderr


def _io_uring_disabled():
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return f.read().strip() != "0"
    except OSError:
        return False  # older kernels have no switch: io_uring is on


def _io_uring_fds(pid):
    fds = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[io_uring]"
        except OSError:
            pass
    return fds


def _epoll_watched(pid):
    """How many fds the process's epoll sets watch (the tfd lines of their fdinfo)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                n += sum(line.startswith("tfd:") for line in f)
        except OSError:
            pass
    return n


@pytest.mark.parametrize("protocol,io", [
    pytest.param("simple", "proactor", marks=pytest.mark.differs_from_pgbouncer_1_18(
        "sluice only: sockets read through io_uring")),
    pytest.param("extended", "proactor", marks=pytest.mark.differs_from_pgbouncer_1_18(
        "sluice only: sockets read through io_uring")),
    pytest.param("extended", "proactor-16-kept", marks=pytest.mark.differs_from_pgbouncer_1_18(
        "sluice only: sockets read through io_uring")),
    pytest.param("simple", "epoll", marks=pytest.mark.differs_from_pgbouncer_1_18(
        "sluice only: sends batched through io_uring")),
    ("simple", "plain")])
def test_pgbench_transaction_mode(pooler, pg, pgbench_tables, protocol, io):
    env = dict(os.environ)
    for name in ("SLUICE_PROACTOR", "SLUICE_NO_PROACTOR", "SLUICE_NO_IO_URING",
                 "SLUICE_KEPT_BUFFERS"):
        env.pop(name, None)
    if io.startswith("proactor"):
        env["SLUICE_PROACTOR"] = "1"
    if io == "proactor-16-kept":
        env["SLUICE_KEPT_BUFFERS"] = "16"
    elif io == "epoll":
        env["SLUICE_NO_PROACTOR"] = "1"
    elif io == "plain":
        env["SLUICE_NO_IO_URING"] = "1"
    p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": 10,
                          "max_client_conn": 100}, env=env)
    # One ring (the proactor's, or the send batch's) exactly when asked for, where the
    # kernel allows io_uring.
    if io != "plain" and _io_uring_disabled():
        pytest.skip("io_uring is disabled on this machine (kernel.io_uring_disabled)")
    assert _io_uring_fds(p.pid) == (0 if io == "plain" else 1)
    # Connection sockets are in the epoll set unless the proactor reads them.
    watched = _epoll_watched(p.pid)
    conns = [p.connect() for _ in range(3)]
    for c in conns:
        assert c.execute("SELECT 1").fetchone() == (1,)
    grew = _epoll_watched(p.pid) - watched
    if io.startswith("proactor"):
        assert grew == 0, grew
    else:
        # three clients and a server (one less when the harness's readiness probe was still
        # watched at the first count)
        assert grew >= 3, grew
    for c in conns:
        c.close()
    r = _pgbench(["-M", protocol, "-c", "64", "-j", "2", "-T", "20", "-n"], p.port, 120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    clients = re.search(r"number of clients: (\d+)", out)
    assert clients and clients.group(1) == "64", out
    mode = re.search(r"query mode: (\w+)", out)
    assert mode and mode.group(1) == protocol, out
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    assert processed and int(processed.group(1)) > 0, out
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if failed:  # pgbench 15+ prints it
        assert int(failed.group(1)) == 0, out
    assert "error" not in r.stderr.lower(), r.stderr
    # the pool never grew past its size
    servers = pg.sql("SELECT count(*) FROM pg_stat_activity "
                     "WHERE usename = 'md5user' AND datname = 'appdb'")[0][0]
    assert servers <= 10


@pytest.mark.differs_from_pgbouncer_1_18("sluice only: the choice between epoll and io_uring")
def test_default_reads_follow_the_cost_of_a_system_call(pooler):
    """Without SLUICE_PROACTOR or SLUICE_NO_PROACTOR, sockets are read through io_uring only
    where a system call costs 350 ns or more (on a machine with cheap calls io_uring's own
    work costs more than the calls it saves: src/net/loop.cpp); the log says which, with the
    cost measured, and the sockets are handled so."""
    if _io_uring_disabled():
        pytest.skip("io_uring is disabled on this machine (kernel.io_uring_disabled)")
    env = dict(os.environ)
    for name in ("SLUICE_PROACTOR", "SLUICE_NO_PROACTOR", "SLUICE_NO_IO_URING"):
        env.pop(name, None)
    p = pooler(env=env)
    m = p.wait_for_log(r"sockets are read through (epoll|io_uring): a system call costs "
                       r"(\d+) ns here")
    cost = int(m.group(2))
    assert 0 < cost < 1_000_000, m.group(0)
    expected = "io_uring" if cost >= 350 else "epoll"
    assert m.group(1) == expected, m.group(0)
    assert _io_uring_fds(p.pid) == 1  # the proactor's ring, or the send batch's
    watched = _epoll_watched(p.pid)
    conns = [p.connect() for _ in range(3)]
    for c in conns:
        assert c.execute("SELECT 1").fetchone() == (1,)
    grew = _epoll_watched(p.pid) - watched
    if expected == "io_uring":
        assert grew == 0, grew
    else:
        assert grew >= 3, grew
    for c in conns:
        c.close()
