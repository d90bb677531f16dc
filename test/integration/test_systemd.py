"""Running under systemd without libsystemd: the notify protocol of Type=notify and
Type=notify-reload units (Debian's pgbouncer.service is Type=notify: a pooler that never says
READY=1 is killed after TimeoutStartSec), and socket activation (listening sockets handed
over as fds 3.. with LISTEN_FDS / LISTEN_PID). The tests play systemd's part."""

import os
import signal
import socket
import time

import pytest

import harness


class NotifySocket:
    """systemd's end of $NOTIFY_SOCKET: a datagram socket the pooler (user postgres) may send
    to; abstract=True uses the '@' form (the abstract namespace)."""

    def __init__(self, directory, abstract):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"sluice-test-notify-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            path = os.path.join(directory, "notify.sock")
            self.sock.bind(path)
            os.chmod(path, 0o777)
            self.env = path

    def next(self, timeout=10):
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def nothing_within(self, seconds):
        self.sock.settimeout(seconds)
        try:
            return self.sock.recv(4096).decode()
        except socket.timeout:
            return None

    def close(self):
        self.sock.close()


def monotonic_us():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _notified_pooler(pooler, abstract):
    p = pooler(start=False)
    ns = NotifySocket(p.dir, abstract)  # p.dir: a directory user postgres can reach
    p.env = dict(os.environ, NOTIFY_SOCKET=ns.env)
    p.start(wait_ready=False)
    return p, ns


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_ready(pooler, abstract):
    p, ns = _notified_pooler(pooler, abstract)
    try:
        assert ns.next() == "READY=1"
        # ready means serving: no retry loop needed
        assert p.connect().execute("SELECT 1").fetchone() == (1,)
        p.wait_for_log(r"LOG process up: ")
        assert ns.nothing_within(0.3) is None  # nothing else while it just runs
    finally:
        ns.close()


NO_STOPPING = pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: STOPPING=1 at a SIGTERM or console shutdown (1.18: SIGINT only)")


@pytest.mark.parametrize("how", [
    "SIGINT",
    pytest.param("SIGTERM", marks=NO_STOPPING),
    pytest.param("SHUTDOWN", marks=NO_STOPPING),
    pytest.param("SHUTDOWN WAIT_FOR_CLIENTS", marks=NO_STOPPING),
])
def test_notify_stopping(pooler, how):
    """STOPPING=1 as soon as a shutdown starts, while it waits for clients or servers."""
    p, ns = _notified_pooler(pooler, False)
    try:
        assert ns.next() == "READY=1"
        c = p.connect()  # keeps the SIGTERM shutdown waiting
        c.execute("SELECT 1")
        if how.startswith("SHUTDOWN"):
            p.expect_exit = True
            try:
                p.admin(how)
            except Exception:  # noqa: BLE001 - the console may go before it answers
                pass
        else:
            p.signal(getattr(signal, how))
        assert ns.next() == "STOPPING=1"
    finally:
        ns.close()


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: MONOTONIC_USEC with RELOADING=1 (Type=notify-reload units)")
def test_notify_reload(pooler):
    """SIGHUP: RELOADING=1 with the monotonic time (a notify-reload unit ignores a RELOADING=1
    without it and its reload job times out), the reload, then READY=1 again."""
    p, ns = _notified_pooler(pooler, False)
    try:
        assert ns.next() == "READY=1"
        before = monotonic_us()
        p.reload()
        msg = ns.next()
        lines = msg.split("\n")
        assert len(lines) == 2 and lines[0] == "RELOADING=1", msg
        assert lines[1].startswith("MONOTONIC_USEC="), msg
        assert before <= int(lines[1].split("=", 1)[1]) <= monotonic_us(), msg
        assert ns.next() == "READY=1"
        p.wait_for_log(r"LOG got SIGHUP, re-reading config")
    finally:
        ns.close()


def _listening(family, addr):
    """A listening socket as systemd makes one (SO_REUSEADDR set: the port may still have
    TIME_WAIT connections of an earlier test, which harness.free_port() allows for)."""
    s = socket.socket(family, socket.SOCK_STREAM)
    if family != socket.AF_UNIX:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr)
    s.listen(64)
    return s


def test_socket_activation(pooler):
    """Two sockets made by "systemd" (TCP and unix) are fds 3 and 4 of the pooler, with
    LISTEN_PID set to its pid by a shell that then execs it: both serve; listen_addr is
    ignored with PgBouncer's warning; the unix socket file is left in place at exit (it is
    the service manager's)."""
    p = pooler(start=False)
    tcp = _listening(socket.AF_INET, ("127.0.0.1", p.port))
    unix_path = os.path.join(p.dir, f".s.PGSQL.{p.port}")
    unix = _listening(socket.AF_UNIX, unix_path)
    os.chmod(unix_path, 0o777)
    fds = (tcp.fileno(), unix.fileno())

    def hand_over():  # in the child, before exec: the two sockets become fds 3 and 4
        high = [os.dup(fd) for fd in fds]
        for i, fd in enumerate(high):
            os.dup2(fd, 3 + i)

    try:
        p.env = dict(os.environ, LISTEN_FDS="2")
        p.start(wait_ready=False, pass_fds=(3, 4), preexec_fn=hand_over,
                wrapper=["sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh"])
        p.wait_for_log(r"LOG process up: ")
    finally:
        tcp.close()  # the pooler has its own copies
        unix.close()
    log = p.log_text()
    assert "LOG socket passed from service manager (fd 3)\n" in log, log
    assert "LOG socket passed from service manager (fd 4)\n" in log, log
    # PgBouncer's words, its variable name included
    assert "WARNING sockets passed from service manager, cf_listen_addr ignored\n" in log, log
    assert "listening on" not in log, log  # it opened none of its own
    # both serve
    assert p.connect().execute("SELECT 1").fetchone() == (1,)
    rc, out, err = p.psql("-h", p.dir, "-c", "SELECT 2")
    assert (rc, out.strip()) == (0, "2"), err
    p.stop()
    assert os.path.exists(unix_path)  # not ours to remove
