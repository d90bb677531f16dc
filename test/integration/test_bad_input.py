"""Malformed or out-of-place client input: the client gets PgBouncer's FATAL (08P01) and is
closed; nothing reaches a server, no server connection is lost, and everyone else goes on.
The texts were compared side by side with PgBouncer 1.18."""

import socket
import struct
import threading
import time

import pytest

import harness
from pgwire import Conn, m, parse_error


def _answer(sock, timeout=10):
    """Everything the pooler sends until it closes: [(type, body)]."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    msgs, pos = [], 0
    while pos + 5 <= len(data):
        ln = struct.unpack("!I", data[pos + 1:pos + 5])[0]
        msgs.append((chr(data[pos]), data[pos + 5:pos + 1 + ln]))
        pos += 1 + ln
    return msgs


def _fatal(msgs):
    errors = [parse_error(body) for t, body in msgs if t == "E"]
    assert len(errors) == 1, msgs
    assert errors[0]["S"] == "FATAL" and errors[0]["C"] == "08P01", errors[0]
    return errors[0]["M"]


def _raw(p, payload, timeout=10):
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    try:
        s.sendall(payload)
        return _answer(s, timeout)
    finally:
        s.close()


def _logged_in(p):
    return Conn.connect("127.0.0.1", p.port, user="md5user", password="md5pass",
                        database="appdb")


def _after_login(p, payload):
    c = _logged_in(p)
    try:
        c.sock.sendall(payload)
        return _answer(c.sock)
    finally:
        c.sock.close()


def _still_serving(p):
    with p.connect() as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


@pytest.fixture
def tx_pooler(pooler):
    return pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": "1"})


@pytest.mark.parametrize("payload,message", [
    (b"Q\0\0\0\x02", "bad packet header: '5100000002'"),  # length below 4
    (b"z\0\0\0\x08abcd", "unknown pkt"),                  # no such message type
    (m.startup({"user": "md5user"}), "unknown pkt"),       # a second startup packet
    (b"p\0\0\0\x08abc\0", "unknown pkt"),                 # a password after login
])
def test_bad_message_after_login(tx_pooler, payload, message):
    p = tx_pooler
    _still_serving(p)
    before = [(r["remote_pid"], r["connect_time"]) for r in p.show("SERVERS")]
    assert len(before) == 1
    assert _fatal(_after_login(p, payload)) == message
    # The server connection was not handed the bad message (the backend would have ended).
    assert [(r["remote_pid"], r["connect_time"]) for r in p.show("SERVERS")] == before
    _still_serving(p)
    assert [(r["remote_pid"], r["connect_time"]) for r in p.show("SERVERS")] == before
    if message == "unknown pkt":
        p.wait_for_log(r"ERROR C-0x[0-9a-f]+: appdb/md5user@127\.0\.0\.1:\d+ unknown pkt "
                       r"from client: \d+/0x[0-9a-f]+")


def test_max_packet_size_both_ways(pooler):
    """max_packet_size caps every message the pooler passes on: a client's query above it is
    refused at the header (nothing reaches the server), and so is a server's message (one
    result row): that server is closed and its client told, as PgBouncer does."""
    p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": "1",
                          "max_packet_size": "10000"})
    _still_serving(p)
    # within the limit, both ways
    with p.connect() as c:
        assert len(c.execute("SELECT repeat('y', 9000)").fetchone()[0]) == 9000
    # a query message above it
    query = m.query("SELECT '" + "x" * 20000 + "'")
    assert _fatal(_after_login(p, query)) == \
        "bad packet header: '" + query[:8].hex() + "'"
    _still_serving(p)
    # a result row above it
    c = _logged_in(p)
    try:
        c.sock.sendall(m.query("SELECT repeat('y', 20000)"))
        msgs = _answer(c.sock)
    finally:
        c.sock.close()
    assert [t for t, _ in msgs if t == "D"] == []  # the row was not passed on
    assert _fatal(msgs) == "bad pkt header"
    p.wait_for_log(r"LOG S-0x[0-9a-f]+: appdb/md5user@127\.0\.0\.1:\d+ closing because: bad pkt "
                   r"header \(age=")
    p.wait_for_log(r"LOG C-0x[0-9a-f]+: appdb/md5user@127\.0\.0\.1:\d+ closing because: bad pkt "
                   r"header \(age=")
    _still_serving(p)  # a new server connection


def test_disable_pqexec(pooler):
    """disable_pqexec = 1: a simple-protocol Query ends the client with PgBouncer's FATAL and
    log lines; the extended protocol goes on."""
    p = pooler(pgbouncer={"pool_mode": "transaction", "disable_pqexec": "1"})
    with p.connect() as c:  # psycopg: Parse/Bind/Execute
        assert c.execute("SELECT %s::int", (5,)).fetchone() == (5,)
    assert _fatal(_after_login(p, m.query("SELECT 1"))) == "PQexec disallowed"
    p.wait_for_log(r"ERROR C-0x[0-9a-f]+: appdb/md5user@127\.0\.0\.1:\d+ client used 'Q' "
                   r"packet type\n.*closing because: PQexec disallowed \(age=")
    with p.connect() as c:
        assert c.execute("SELECT %s::int", (6,)).fetchone() == (6,)


@pytest.mark.differs_from_pgbouncer_1_18(
    "sluice only: the admin console, which speaks only the simple protocol, stays usable "
    "under disable_pqexec (PgBouncer closes it too)")
def test_disable_pqexec_leaves_the_console(pooler):
    p = pooler(pgbouncer={"disable_pqexec": "1"})
    assert [r["database"] for r in p.show("DATABASES") if r["name"] == "appdb"] == ["appdb"]


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: it gives the server back with the first part of the message in it, "
    "and the next client's query is never answered")
@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_bad_message_right_after_a_half_forwarded_one(pooler, mode):
    """A message forwarded as it arrives (a CopyData outside COPY: it owes no reply and
    PostgreSQL ignores it) comes in two reads, and the second goes on with a bad message. The
    client is ended; its server already has the first part of that message, so it must not be
    reused with the rest missing: reused, the next client's query became the tail of the
    message and was never answered (found by test_fuzz.py)."""
    p = pooler(pgbouncer={"pool_mode": mode, "default_pool_size": "1"})
    _still_serving(p)
    body = b"x" * 4000
    copy_data = b"d" + struct.pack("!I", 4 + len(body)) + body
    c = _logged_in(p)
    try:
        # The query links a server; the first part of the CopyData follows it there.
        c.send(m.query("SELECT 1"))
        c.sock.sendall(copy_data[:1000])
        assert [x.type for x in c.read_until_rfq()][-1] == "Z"
        c.sock.sendall(copy_data[1000:] + b"z\0\0\0\x08abcd")
        assert _fatal(_answer(c.sock)) == "unknown pkt"
    finally:
        c.sock.close()
    c = _logged_in(p)
    try:
        assert c.scalar("SELECT 41 + 1", timeout=15) == "42"
    finally:
        c.close()


def test_client_gone_without_terminate(tx_pooler):
    """A client that closes (FIN) or resets (RST) without Terminate: PgBouncer's one reason
    for both, and its server goes back to the pool."""
    p = tx_pooler
    _still_serving(p)
    for rst in (False, True):
        c = _logged_in(p)
        if rst:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        mark = p.log_mark()
        c.sock.close()
        p.wait_for_log(r"LOG C-0x[0-9a-f]+: appdb/md5user@127\.0\.0\.1:\d+ closing because: client "
                       r"unexpected eof \(age=\d+s\)\n", since=mark)
    _still_serving(p)


def test_server_that_hangs_up_during_login(pooler):
    """A "server" that accepts and closes at once: PgBouncer's reason for the server's close;
    the waiting client is told and the pooler goes on."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    stop = threading.Event()

    def hang_up():
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
                conn.close()
            except OSError:
                pass
    t = threading.Thread(target=hang_up, daemon=True)
    t.start()
    try:
        p = pooler(pgbouncer={"server_login_retry": "1", "query_wait_timeout": "3"},
                   databases={"deaddb": f"host=127.0.0.1 port={lsock.getsockname()[1]} "
                                        "dbname=x"})
        try:  # refused with the server's failure, or left waiting until query_wait_timeout
            Conn.connect("127.0.0.1", p.port, user="md5user", password="md5pass",
                         database="deaddb", timeout=15).sock.close()
        except Exception:  # noqa: BLE001 - either way is fine here
            pass
        p.wait_for_log(r"LOG S-0x[0-9a-f]+: deaddb/md5user@127\.0\.0\.1:\d+ closing because: "
                       r"server conn crashed\? \(age=\d+s\)\n")
        _still_serving(p)
    finally:
        stop.set()
        t.join(5)
        lsock.close()


def test_oversize_message_before_login(tx_pooler):
    """A client nobody has authenticated yet announces a 1 GiB password message: refused at
    the header, nothing is buffered for it."""
    p = tx_pooler
    startup = m.startup({"user": "md5user", "database": "appdb"})
    msgs = _raw(p, startup + b"p\x40\0\0\0" + b"a" * 1000)
    assert msgs[0][0] == "R"  # the md5 challenge came first
    assert _fatal(msgs) == "client sent partial pkt in startup phase"
    _still_serving(p)


def test_bad_startup_header(tx_pooler):
    p = tx_pooler
    assert _fatal(_raw(p, b"\x7f\xff\xff\xff" + b"\0" * 12)) == \
        "bad packet header: '7fffffff00000000'"
    _still_serving(p)


@pytest.mark.parametrize("params,message", [
    ({"user": "u" * 128, "database": "appdb"}, "username too long"),
    ({"user": "md5user", "database": "appdb", "replication": "database"},
     "unsupported startup parameter: replication"),
])
def test_refused_startup(tx_pooler, params, message):
    p = tx_pooler
    assert _fatal(_raw(p, m.startup(params))) == message
    _still_serving(p)


def test_unknown_startup_parameter(tx_pooler):
    """Refused with the name; the log also has the value (PgBouncer's warning), which is what
    an operator needs to find the client that sends it. As in PgBouncer the prefix names no
    database or user yet: the client has no pool."""
    p = tx_pooler
    msgs = _raw(p, m.startup({"user": "md5user", "database": "appdb", "foo_param": "on"}))
    assert _fatal(msgs) == "unsupported startup parameter: foo_param"
    p.wait_for_log(r"WARNING C-0x[0-9a-f]+: \(nodb\)/\(nouser\)@127\.0\.0\.1:\d+ unsupported "
                   r"startup parameter: foo_param=on\n")
    _still_serving(p)


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: the replication startup parameter")
def test_replication_refused_even_when_ignored(pooler):
    """ignore_startup_parameters=replication must not turn a replication client's connection
    into an ordinary session (PgBouncer 1.18 would)."""
    p = pooler(pgbouncer={"ignore_startup_parameters": "replication,extra_float_digits"})
    msgs = _raw(p, m.startup({"user": "md5user", "database": "appdb", "replication": "true"}))
    assert _fatal(msgs) == "unsupported startup parameter: replication"
    # replication=false is an ordinary connection
    msgs = _raw(p, m.startup({"user": "md5user", "database": "appdb", "replication": "false"}),
                timeout=1)
    assert msgs and msgs[0][0] == "R", msgs


def test_bytes_after_refused_ssl_request(tx_pooler):
    """SSLRequest with a startup packet in the same write, TLS off: the startup was sent
    before the answer ('N'), so it is refused as PostgreSQL and PgBouncer do."""
    p = tx_pooler
    msgs = _raw(p, m.ssl_request() + m.startup({"user": "md5user", "database": "appdb"}))
    assert _fatal(msgs) == "received unencrypted data after SSL request"
    _still_serving(p)


@pytest.mark.parametrize("payload,first", [
    (m.parse("SHOW POOLS") + m.sync(), "extended query protocol not supported by admin console"),
    (m.sync(), "unsupported packet type for admin console: 83"),
    (b"Q\0\0\0\x0cSHOW VER", None),  # no terminating NUL
])
def test_console_refuses_other_messages(tx_pooler, payload, first):
    """The console speaks simple Query only, with PgBouncer's answers."""
    p = tx_pooler
    c = Conn.connect("127.0.0.1", p.port, user="postgres", password="postgrespass",
                     database="pgbouncer")
    try:
        c.sock.sendall(payload)
        msgs = _answer(c.sock)
    finally:
        c.sock.close()
    errors = [parse_error(body) for t, body in msgs if t == "E"]
    if first is None:
        assert [(e["S"], e["M"]) for e in errors] == [("FATAL", "incomplete query")], msgs
    else:
        assert [t for t, _ in msgs] == ["E", "Z", "E"], msgs
        assert [(e["S"], e["C"], e["M"]) for e in errors] == [
            ("ERROR", "08P01", first), ("FATAL", "08P01", "bad packet")]
    _still_serving(p)
