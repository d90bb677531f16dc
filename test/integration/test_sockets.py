"""Socket settings seen from outside, with ss(8): listen_backlog, so_reuseport,
tcp_socket_buffer and the tcp_keepalive family, on the listening socket, the accepted client
sockets and the server connections."""

import os
import re
import shutil
import socket
import subprocess

import psycopg
import pytest

import harness

pytestmark = pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) not installed")


def ss(*args):
    r = subprocess.run(["ss", "-H", *args], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout


def socket_line(local_port, *opts, peer_port=None):
    """ss's line for the TCP socket whose local end is 127.0.0.1:local_port (established),
    and whose other end is 127.0.0.1:peer_port if given."""
    flt = ["src", f"127.0.0.1:{local_port}"]
    if peer_port is not None:
        flt += ["dst", f"127.0.0.1:{peer_port}"]
    out = ss("-tn", *opts, "state", "established", *flt)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    # -m puts skmem on a line of its own
    text = " ".join(lines)
    assert f"127.0.0.1:{local_port}" in text, out
    return text


def test_listen_backlog(pooler):
    p = pooler(pgbouncer={"listen_backlog": "37"})
    out = ss("-ltn", "sport", "=", f":{p.port}")
    # for a listening socket Send-Q is the backlog
    rows = [ln.split() for ln in out.splitlines() if ln.strip()]
    assert rows and all(r[2] == "37" for r in rows), out


def test_so_reuseport_shares_the_port(pooler):
    settings = {"so_reuseport": "1", "pool_mode": "transaction"}
    a = pooler(pgbouncer=settings)
    b = pooler(port=a.port, pgbouncer=settings)
    # b's readiness probe may have been answered by a (same port): wait for b's own line
    b.wait_for_log(rf"LOG listening on 127\.0\.0\.1:{a.port}\n")
    assert a.alive() and b.alive()
    conns = [a.connect() for _ in range(24)]  # the kernel spreads them by address hash
    for c in conns:
        assert c.execute("SELECT 1").fetchone() == (1,)

    def clients(p):
        # through this instance's own unix socket: over TCP the console too lands on either
        with psycopg.connect(host=p.dir, port=p.port, user="postgres", dbname="pgbouncer",
                             password=harness.PASSWORDS["postgres"], autocommit=True,
                             cursor_factory=psycopg.ClientCursor) as con:
            cur = con.execute("SHOW CLIENTS", prepare=False)
            names = [d.name for d in cur.description]
            return len([r for r in cur.fetchall() if dict(zip(names, r))["database"] == "appdb"])
    na, nb = clients(a), clients(b)
    assert na + nb == 24 and na > 0 and nb > 0, (na, nb)
    for c in conns:
        c.close()


def pooler_ends(p, c):
    """(local port of the pooler's server connection, client port of c): the pooler's two
    sockets for c are src :<server end> and src :p.port dst :<client port>."""
    server_end = c.execute("SELECT inet_client_port()").fetchone()[0]
    client_port = socket.socket(fileno=os.dup(c.fileno())).getsockname()[1]
    return server_end, client_port


def test_tcp_socket_buffer(pooler):
    p = pooler(pgbouncer={"tcp_socket_buffer": "24576"})
    c = p.connect()
    server_end, client_port = pooler_ends(p, c)
    # SO_RCVBUF/SO_SNDBUF as set, on both sides: the kernel reports twice the value
    # (socket(7)); the default would be tcp_rmem's / tcp_wmem's middle value
    for line in (socket_line(server_end, "-m"), socket_line(p.port, "-m", peer_port=client_port)):
        m = re.search(r"skmem:\(r\d+,rb(\d+),t\d+,tb(\d+)", line)
        assert m, line
        assert (int(m.group(1)), int(m.group(2))) == (49152, 49152), line
    c.close()


def test_tcp_keepalive(pooler):
    p = pooler(pgbouncer={"tcp_keepalive": "1", "tcp_keepidle": "600", "tcp_keepintvl": "7",
                          "tcp_keepcnt": "3"})
    c = p.connect()
    server_end, client_port = pooler_ends(p, c)
    for args in ((server_end,), (p.port,)):
        kw = {} if args[0] == server_end else {"peer_port": client_port}
        # the first probe is due tcp_keepidle (10 min) after the last traffic: 9 min and
        # some seconds left (the kernel's default would be 2 hours). ss shows one timer: the
        # retransmit timer while the last reply is not acknowledged yet (delayed ACK).
        harness.wait_until(lambda: re.search(r"timer:\(keepalive,9min",
                                             socket_line(*args, "-o", **kw)), 5,
                           what=f"keepalive timer on {args} {kw}")
    c.close()
    p2 = pooler(pgbouncer={"tcp_keepalive": "0"})
    c = p2.connect()
    server_end, client_port = pooler_ends(p2, c)
    for line in (socket_line(server_end, "-o"), socket_line(p2.port, "-o", peer_port=client_port)):
        assert "timer:(keepalive" not in line, line
    c.close()
