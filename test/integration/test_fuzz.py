"""Randomized bad input with fixed seeds: clients send mutated startup packets, mutated
answers to the pooler's md5 and SCRAM requests, mutated SHOW commands on the admin console,
and mutated streams of protocol messages after a real login (named and unnamed statements,
COPY, DISCARD ALL in the middle of a pipeline, function calls, portals), then leave
politely, abruptly or with a reset, while a well-behaved client checks again and again that
the pooler still answers it correctly. The pooler must not die (under `make check
SANITIZE=1` a memory error aborts it, which fails the test), must keep serving, must
give its servers back clean, and must end up holding what it held before: as many open
file descriptors (less one per server connection) and SHOW MEM client and server slots,
so that no socket or object of a session that left stays behind. Two bugs were found
this way: a heap-use-after-free in the statement cache (a DISCARD ALL pipelined behind a
named Parse not yet answered) and a server given back with half a message in it
(test_bad_input.py has the exact case). Another test
turns it round: a "server" answers with mutated, split and cut-off replies; others send
mutated TLS handshakes and records, start and reload the pooler with mutated pgbouncer.ini
files, and give state-changing console commands in random order while clients work.

The inputs are the same on every run (worker i of a mode uses seed base + i: 1000 for
transaction, 2000 for session, 3000 for statement mode); how they interleave is not.
SLUICE_FUZZ_SEED=<n> adds n to every seed (other inputs), SLUICE_FUZZ_SESSIONS=<n> sets
each worker's number of sessions (200)."""

import os
import random
import signal
import socket
import ssl
import struct
import threading
import time

import psycopg
import pytest

import harness
import pgwire
import tlsutil
from pgwire import Conn, ScramClient, m, md5_password, parse_auth

# SLUICE_FUZZ_SEED and SLUICE_FUZZ_SESSIONS explore other inputs (and replay a failure's).
SEED = int(os.environ.get("SLUICE_FUZZ_SEED", "0"))
SESSIONS_PER_WORKER = int(os.environ.get("SLUICE_FUZZ_SESSIONS", "200"))
WORKERS = 4

QUERIES = ["SELECT 1", "BEGIN", "COMMIT", "ROLLBACK", "SELECT pg_sleep(0.002)",
           "COPY fz FROM STDIN", "COPY fz TO STDOUT", "SELECT * FROM fz LIMIT 3",
           "SET application_name = 'fz'", "DISCARD ALL", "PREPARE p AS SELECT 1",
           "DEALLOCATE ALL", "DEALLOCATE s1", "DEALLOCATE PREPARE \"s2\"", "SELECT 1/0", ""]
SHOWS = ["SHOW POOLS", "SHOW CLIENTS", "SHOW SERVERS", "SHOW STATS", "SHOW CONFIG",
         "SHOW LISTS", "SHOW MEM", "SHOW DATABASES", "SHOW USERS", "SHOW SOCKETS", "SHOW HELP",
         "SHOW STATS_TOTALS", "SHOW DNS_HOSTS", "SHOW VERSION;"]
PARSE_TEXTS = ["SELECT $1::text", "SELECT generate_series(1, $1::int)", "BEGIN",
               "COPY fz FROM STDIN", "DISCARD ALL", "DEALLOCATE ALL", "DEALLOCATE s0",
               "SELECT 1/0"]


def _mutate(data, rnd):
    """One to four edits: a byte, a length field, a cut, an insertion, a truncation or a
    copied run."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        if not b:
            b.append(rnd.randrange(256))
            continue
        i = rnd.randrange(len(b))
        k = rnd.random()
        if k < 0.3:
            b[i] = rnd.randrange(256)
        elif k < 0.45:
            v = rnd.choice([0, 1, 3, 4, 5, 0x7fffffff, 0xffffffff, 0x80000000,
                            rnd.randrange(1 << 20), len(b)])
            b[i:i + 4] = struct.pack(">I", v)
        elif k < 0.6:
            del b[i:i + rnd.randint(1, 16)]
        elif k < 0.75:
            b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16)))
        elif k < 0.85:
            del b[i:]
        else:
            b[i:i] = b[rnd.randrange(len(b)):][:rnd.randint(1, 40)]
    return bytes(b)


def _messages(rnd):
    """A few well-formed frontend messages in a random order."""
    out = []
    for _ in range(rnd.randint(1, 8)):
        name = "s%d" % rnd.randrange(4)
        pick = rnd.randrange(18)
        out.append([
            lambda: m.query(rnd.choice(QUERIES)),
            lambda: m.parse("SELECT $1::int", name=name),
            lambda: m.bind(stmt=name, params=["1"]),
            lambda: m.describe("S", name),
            lambda: m.execute(),
            lambda: m.sync(),
            lambda: m.close("S", name),
            lambda: m.copy_data(b"1\tx\n"),
            lambda: m.copy_done(),
            lambda: m.flush(),
            lambda: m.parse("SELECT 1"),
            lambda: m.copy_fail(),
            lambda: m.describe("P", ""),
            lambda: m.execute(max_rows=rnd.choice([0, 1, 2])),
            lambda: m.close("P", ""),
            lambda: m.function_call(1598, ()),
            lambda: m.bind(portal="p1", stmt=name, params=["7"]),
            lambda: m.parse(rnd.choice(PARSE_TEXTS), name=rnd.choice(["", name])),
        ][pick]())
    return b"".join(out)


def _drain(sock, wait):
    sock.settimeout(wait)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def _read_auth_request(sock):
    """The first Authentication request of a login (code, rest), or None."""
    sock.settimeout(10)
    data = b""
    while True:
        while len(data) < 5 or len(data) < 1 + struct.unpack("!I", data[1:5])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        t, ln = data[:1], struct.unpack("!I", data[1:5])[0]
        body, data = data[5:1 + ln], data[1 + ln:]
        if t == b"R":
            return parse_auth(body)
        if t == b"E":
            return None


def _fuzz_login(port, rnd):
    """A real startup packet, then a mutated answer to the pooler's md5 or SCRAM request."""
    user, password = rnd.choice([("md5user", "md5pass"), ("scramuser", "scrampass")])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(m.startup({"user": user, "database": "appdb"}))
        req = _read_auth_request(s)
        if req is None:
            return
        code, rest = req
        if code == 5:
            s.sendall(_mutate(m.password(md5_password(user, password, rest[:4])), rnd))
        elif code == 10:
            scram = ScramClient(password)
            first = m.sasl_initial("SCRAM-SHA-256", scram.first_message())
            if rnd.random() < 0.5:
                s.sendall(_mutate(first, rnd))
            else:
                s.sendall(first)
                req = _read_auth_request(s)
                if req is None or req[0] != 11:
                    return
                s.sendall(_mutate(m.password(scram.final_message(req[1])), rnd))
        else:
            s.sendall(_mutate(m.password(password), rnd))
        _drain(s, 0.02)
    finally:
        s.close()


def _fuzz_console(port, admin_password, rnd):
    """Mutated SHOW commands on the admin console (never a command that changes state: the
    edits are too small to turn SHOW into PAUSE or SHUTDOWN)."""
    c = Conn.connect("127.0.0.1", port, user="postgres", password=admin_password,
                     database="pgbouncer")
    try:
        for _ in range(rnd.randint(1, 3)):
            c.sock.sendall(_mutate(m.query(rnd.choice(SHOWS)), rnd))
            _drain(c.sock, 0.02)
    finally:
        c.sock.close()


def _worker(port, admin_password, seed):
    rnd = random.Random(seed)
    for _ in range(SESSIONS_PER_WORKER):
        try:
            k = rnd.random()
            if k < 0.15:
                _fuzz_login(port, rnd)
                continue
            if k < 0.2:
                _fuzz_console(port, admin_password, rnd)
                continue
            if k < 0.4:
                data = m.startup({"user": rnd.choice(["md5user", "scramuser", "nobody"]),
                                  "database": rnd.choice(["appdb", "pgbouncer", "x"])})
                if rnd.random() < 0.3:
                    data = m.ssl_request() + data
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(_mutate(data, rnd))
                _drain(s, 0.02)
                s.close()
                continue
            c = Conn.connect("127.0.0.1", port, user="md5user", password="md5pass",
                             database="appdb")
            for _ in range(rnd.randint(1, 3)):
                data = _messages(rnd)
                if rnd.random() < 0.7:
                    data = _mutate(data, rnd)
                c.sock.sendall(data)
                _drain(c.sock, rnd.choice([0.0, 0.02, 0.05]))
            if rnd.random() < 0.5:  # leave with a reset instead of a FIN
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.sock.close()
        except OSError:
            pass  # the pooler closed on us mid-send: expected for bad input
        except Exception as e:
            raise AssertionError("worker with seed %d: %r" % (seed, e)) from e


def _run_while_checking(p, worker, seeds, *args):
    """worker(p.port, *args, seed) runs in a thread per seed while a well-behaved client
    checks its answers again and again (and once more after them). A worker's unexpected
    error fails the test."""
    runs = [harness.in_thread(worker, p.port, *args, seed) for seed in seeds]
    checks = 0
    while any(t.is_alive() for t, _ in runs):
        _check_answers(p)
        checks += 1
    for t, box in runs:
        t.join()
        assert "error" not in box, box["error"]
    assert checks > 0
    _check_answers(p)


def _check_answers(p):
    c = Conn.connect("127.0.0.1", p.port, user="md5user", password="md5pass",
                     database="appdb")
    try:
        assert c.scalar("SELECT 40 + 2") == "42"
        c.send(m.parse("SELECT $1::int * 2"), m.bind(params=["21"]), m.execute(), m.sync())
        rows = [x.row for x in c.read_until_rfq() if x.type == "D"]
        assert rows == [["42"]], rows
    finally:
        c.close(terminate=True)


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: after clients that left in the middle of bad pipelines, the next "
    "client gets replies it never asked for (CloseComplete, errors) or none", strict=False)
@pytest.mark.parametrize("mode", ["transaction", "session", "statement"])
def test_fuzzed_clients_leave_the_pooler_serving(pooler, pg, mode):
    pg.sql("CREATE TABLE IF NOT EXISTS fz(a int, b text)", db="appdb")
    pg.sql("GRANT ALL ON fz TO md5user", db="appdb")
    settings = {"pool_mode": mode, "default_pool_size": "8", "query_wait_timeout": "60",
                "log_connections": "0", "log_disconnections": "0", "log_pooler_errors": "0"}
    if not harness.is_pgbouncer(harness.sluice_bin()):
        settings["max_prepared_statements"] = "20"
    p = pooler(pgbouncer=settings)
    _check_answers(p)
    before = p.footprint()
    base = SEED + {"transaction": 1000, "session": 2000, "statement": 3000}[mode]
    _run_while_checking(p, _worker, [base + i for i in range(WORKERS)], pg.passwords["postgres"])

    # Everything given back: no client left, no server still busy or inside a transaction.
    def settled():
        rows = [r for r in p.show("POOLS") if r["database"] == "appdb"]
        return all(r["cl_active"] == 0 and r["cl_waiting"] == 0 and r["sv_active"] == 0
                   for r in rows)
    harness.wait_until(settled, 60, what="the appdb pool to settle")
    in_xact = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'appdb' "
                     "AND usename = 'md5user' AND state LIKE 'idle in transaction%'",
                     db="appdb")[0][0]
    assert int(in_xact) == 0
    p.assert_footprint_back(before)


# Console commands that change state, given while clients work: KILL frees pools under
# clients and servers that are still closing, PAUSE waits for them, RECONNECT retires servers.
CONSOLE_COMMANDS = ["KILL appdb", "RESUME appdb", "KILL otherdb", "RESUME otherdb",
                    "PAUSE otherdb", "RESUME otherdb", "RECONNECT appdb", "RECONNECT",
                    "DISABLE otherdb", "ENABLE otherdb", "RELOAD", "SHOW POOLS",
                    "SHOW CLIENTS", "SHOW SERVERS", "SHOW STATS", "SHOW LISTS", "KILL_CLIENT"]


def _busy_client(port, seed, stop):
    """Sessions of queries and pipelines with named statements on appdb and otherdb until
    stop; any error or close the console causes is expected."""
    rnd = random.Random(seed)
    while not stop.is_set():
        try:
            c = Conn.connect("127.0.0.1", port, user="md5user", password="md5pass",
                             database=rnd.choice(["appdb", "otherdb"]), timeout=10)
            for _ in range(rnd.randint(1, 5)):
                if rnd.random() < 0.5:
                    c.send(m.query(rnd.choice(["SELECT 1", "BEGIN", "COMMIT",
                                               "SELECT pg_sleep(0.01)"])))
                else:
                    name = "k%d" % rnd.randrange(3)
                    c.send(m.parse("SELECT $1::int", name=name), m.bind(stmt=name, params=["1"]),
                           m.execute(), m.sync())
                c.read_until_rfq(timeout=10)
            c.close(terminate=rnd.random() < 0.7)
        except (OSError, pgwire.PgWireError):
            pass  # killed, disabled, paused past the timeout: expected here


def _console_commands(port, admin_password, seed):
    rnd = random.Random(seed)
    c = Conn.connect("127.0.0.1", port, user="postgres", password=admin_password,
                     database="pgbouncer")
    try:
        for _ in range(SESSIONS_PER_WORKER // 3):
            cmd = rnd.choice(CONSOLE_COMMANDS)
            if cmd == "KILL_CLIENT":
                msgs = c.simple("SHOW CLIENTS")
                cols = [x["name"] for x in pgwire.parse_row_description(msgs[0].body)]
                if "id" not in cols:
                    continue  # PgBouncer 1.18: no client ids, no KILL_CLIENT
                rows = [dict(zip(cols, pgwire.parse_data_row(x.body)))
                        for x in msgs if x.type == "D"]
                ids = [r["id"] for r in rows if r["user"] == "md5user"]
                if not ids:
                    continue
                cmd = "KILL_CLIENT %s" % rnd.choice(ids)
            try:
                c.query(cmd, timeout=30)
            except pgwire.ServerError:
                pass  # e.g. a client gone before its KILL_CLIENT, a database not paused
            time.sleep(rnd.choice([0, 0.01, 0.05]))
    finally:
        c.close(terminate=True)


def test_console_commands_while_clients_work(pooler, pg):
    """KILL, RESUME, PAUSE, RECONNECT, DISABLE, KILL_CLIENT and RELOAD in random order while
    clients run queries and named-statement pipelines on the databases concerned; then,
    with every database resumed, the pooler serves as before and its pools settle."""
    settings = {"pool_mode": "transaction", "default_pool_size": "4",
                "log_connections": "0", "log_disconnections": "0", "log_pooler_errors": "0"}
    if not harness.is_pgbouncer(harness.sluice_bin()):
        settings["max_prepared_statements"] = "10"
    p = pooler(pgbouncer=settings, databases={"otherdb": "host={pg_host} port={pg_port} "
                                                         "dbname=appdb"})
    _check_answers(p)
    before = p.footprint()
    stop = threading.Event()
    workers = [harness.in_thread(_busy_client, p.port, SEED + 7000 + i, stop)
               for i in range(WORKERS)]
    try:
        t, box = harness.in_thread(_console_commands, p.port, pg.passwords["postgres"],
                                   SEED + 7100)
        t.join(300)
        assert "error" not in box, box.get("error")
        assert not t.is_alive(), "the console commands did not finish"
    finally:
        stop.set()
        for cmd in ("RESUME appdb", "RESUME otherdb", "ENABLE otherdb"):
            try:
                p.admin(cmd)  # whatever the commands left paused or disabled
            except psycopg.Error:
                pass  # not paused
        for w, _ in workers:
            w.join(30)
    for w, wbox in workers:
        assert "error" not in wbox, wbox["error"]
    _check_answers(p)

    def settled():
        rows = [r for r in p.show("POOLS") if r["database"] in ("appdb", "otherdb")]
        return all(r["cl_active"] == 0 and r["cl_waiting"] == 0 and r["sv_active"] == 0
                   for r in rows)
    harness.wait_until(settled, 60, what="the pools to settle")
    p.assert_footprint_back(before)


# ---------------------------------------------------------------------------
# A server that answers with mutated replies

def _be(t, body=b""):
    return t + struct.pack("!I", 4 + len(body)) + body


def _param(k, v):
    return _be(b"S", k.encode() + b"\0" + v.encode() + b"\0")


LOGIN_REPLY = (_be(b"R", struct.pack("!I", 0)) + _param("server_version", "15.0") +
               _param("client_encoding", "UTF8") + _param("DateStyle", "ISO, MDY") +
               _param("integer_datetimes", "on") + _param("standard_conforming_strings", "on") +
               _param("TimeZone", "UTC") + _param("IntervalStyle", "postgres") +
               _be(b"K", struct.pack("!II", 1234, 5678)) + _be(b"Z", b"I"))
ROW_DESCRIPTION = _be(b"T", struct.pack("!H", 1) + b"x\0" + struct.pack("!IhIhih", 0, 0, 23, 4,
                                                                            -1, 0))


def _query_reply(rnd):
    """What a server might answer a Query with: rows, an error, a COPY, a notice, a
    notification or a parameter change before them; then ReadyForQuery."""
    parts = [ROW_DESCRIPTION, _be(b"D", struct.pack("!HI", 1, 1) + b"1"),
             _be(b"C", b"SELECT 1\0")]
    k = rnd.random()
    if k < 0.1:
        parts = [_be(b"E", b"SERROR\0C42000\0Mboom\0\0")]
    elif k < 0.15:
        parts = [_be(b"G", b"\0\0\0")]
    elif k < 0.2:
        parts = [_be(b"H", b"\0\0\0"), _be(b"d", b"abc\n"), _be(b"c")]
    elif k < 0.25:
        parts.insert(0, _be(b"N", b"SNOTICE\0C00000\0Mhi\0\0"))
    elif k < 0.3:
        parts.insert(0, _be(b"A", struct.pack("!I", 1) + b"ch\0pl\0"))
    elif k < 0.35:
        parts.insert(0, _param("application_name", "zz"))
    return b"".join(parts) + _be(b"Z", rnd.choice([b"I", b"T", b"E"]))


def _serve_mutated(conn, rnd, stop):
    """One server connection: a login (sometimes mutated), then replies to Query and to
    extended batches at their Sync, a third of them mutated, some cut in two, now and then a
    hang-up instead."""
    conn.settimeout(10)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""

    def need(n):
        nonlocal buf
        while len(buf) < n:
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError
            buf += chunk
    try:
        need(8)
        if buf[4:8] == b"\x04\xd2\x16\x2f":  # SSLRequest
            buf = buf[8:]
            conn.sendall(b"N")
            need(8)
        need(struct.unpack("!I", buf[:4])[0])
        buf = buf[struct.unpack("!I", buf[:4])[0]:]
        if rnd.random() < 0.05:
            return
        conn.sendall(_mutate(LOGIN_REPLY, rnd) if rnd.random() < 0.15 else LOGIN_REPLY)
        batch = []
        while not stop.is_set():
            need(5)
            t, ln = buf[:1], struct.unpack("!I", buf[1:5])[0]
            need(1 + ln)
            buf = buf[1 + ln:]
            if t == b"X":
                return
            if t == b"Q":
                out = _query_reply(rnd)
            elif t in (b"P", b"B", b"D", b"E", b"C"):
                batch.append(t)
                continue
            elif t == b"S":
                out = b"".join({b"P": _be(b"1"), b"B": _be(b"2"), b"D": ROW_DESCRIPTION,
                                b"E": _be(b"D", struct.pack("!HI", 1, 1) + b"7") +
                                _be(b"C", b"SELECT 1\0"),
                                b"C": _be(b"3")}[x] for x in batch) + _be(b"Z", b"I")
                batch = []
            else:
                continue
            if rnd.random() < 0.35:
                out = _mutate(out, rnd)
            if rnd.random() < 0.05:
                return
            if rnd.random() < 0.2 and len(out) > 2:
                cut = rnd.randrange(1, len(out))
                conn.sendall(out[:cut])
                conn.sendall(out[cut:])
            else:
                conn.sendall(out)
    except (OSError, EOFError):
        pass
    finally:
        conn.close()


def _fake_server(seed, stop):
    """A listening socket whose connections _serve_mutated() answers; returns the port."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    lsock.settimeout(0.2)
    rnd = random.Random(seed)

    def accept():
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except OSError:
                continue
            threading.Thread(target=_serve_mutated, args=(conn, random.Random(rnd.random()), stop),
                             daemon=True).start()
        lsock.close()
    threading.Thread(target=accept, daemon=True).start()
    return lsock.getsockname()[1]


def _client_of_fake(port, seed):
    rnd = random.Random(seed)
    for _ in range(SESSIONS_PER_WORKER // 2):
        try:
            c = Conn.connect("127.0.0.1", port, user="md5user", password="md5pass",
                             database="fakedb", timeout=3)
            for _ in range(rnd.randint(1, 4)):
                if rnd.random() < 0.5:
                    c.sock.sendall(m.query("SELECT 1"))
                else:
                    c.sock.sendall(m.parse("SELECT 1", name=rnd.choice(["", "s1"])) +
                                   m.bind(stmt="") + m.describe("P", "") + m.execute() +
                                   m.sync())
                _drain(c.sock, 0.02)
            c.sock.close()
        except (OSError, pgwire.PgWireError):
            pass  # the mutated server's login or replies were refused: expected
        except Exception as e:
            raise AssertionError("client of the fake server, seed %d: %r" % (seed, e)) from e


def test_mutated_server_replies_leave_the_pooler_serving(pooler):
    """A "server" answers logins and queries with mutated, split and cut-off replies while
    clients use it; a real database on the same pooler must keep answering right."""
    stop = threading.Event()
    try:
        port = _fake_server(SEED + 4000, stop)
        p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": "4",
                              "server_login_retry": "0", "query_timeout": "5",
                              "log_connections": "0", "log_disconnections": "0"},
                   databases={"fakedb": f"host=127.0.0.1 port={port} dbname=x"})
        _check_answers(p)
        before = p.footprint()
        _run_while_checking(p, _client_of_fake, [SEED + 4100 + i for i in range(WORKERS)])
        p.assert_footprint_back(before)
    finally:
        stop.set()


def _client_hello():
    """The first flight of a TLS client: a ClientHello record."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def _tls_worker(port, hello, seed):
    """Sessions that send a mutated ClientHello after the SSLRequest's "S", or one with no
    SSLRequest at all, or that complete a TLS handshake (and sometimes an md5 login and a
    query) and then write bytes beneath TLS: a mutated application-data record on the raw
    socket."""
    rnd = random.Random(seed)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for _ in range(SESSIONS_PER_WORKER // 4):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            k = rnd.random()
            if k < 0.4:
                s.sendall(m.ssl_request())
                s.recv(1)
                s.sendall(_mutate(hello, rnd))
                _drain(s, 0.02)
                s.close()
                continue
            if k < 0.55:
                s.sendall(_mutate(hello, rnd))
                _drain(s, 0.02)
                s.close()
                continue
            s.sendall(m.ssl_request())
            assert s.recv(1) == b"S"
            t = ctx.wrap_socket(s, server_hostname="localhost")
            t.sendall(m.startup({"user": "md5user", "database": "appdb"}))
            data = t.recv(65536)
            if rnd.random() < 0.5 and data[:1] == b"R" and \
                    struct.unpack("!I", data[5:9])[0] == 5:
                t.sendall(m.password(md5_password("md5user", "md5pass", data[9:13])))
                t.recv(65536)
                t.sendall(m.query("SELECT 1"))
            os.write(t.fileno(), _mutate(b"\x17\x03\x03\x00\x20" + bytes(32), rnd))
            t.settimeout(0.2)  # a record cut short leaves the pooler waiting for its rest
            try:
                t.recv(65536)
            except (OSError, ssl.SSLError):
                pass
            t.close()
        except (OSError, ssl.SSLError):
            pass  # the pooler closed on us: expected for bad input
        except Exception as e:
            raise AssertionError("TLS worker with seed %d: %r" % (seed, e)) from e


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: TLS clients that closed in the middle of a handshake or of a record "
    "keep their sockets (CLOSE-WAIT) and client slots until client_login_timeout",
    strict=False)
def test_mutated_tls_input_leaves_the_pooler_serving(pooler):
    """Mutated ClientHellos (after an SSLRequest or instead of one) and bytes written beneath
    a live TLS session, while a plain client checks its answers; afterwards the pooler holds
    no socket or client slot of the sessions that left."""
    certs = tlsutil.make_certs()
    try:
        p = pooler(pgbouncer={"client_tls_sslmode": "allow",
                              "client_tls_cert_file": "{dir}/server.crt",
                              "client_tls_key_file": "{dir}/server.key",
                              "client_tls_ca_file": "{dir}/ca.crt",
                              "log_connections": "0", "log_disconnections": "0"},
                   files=tlsutil.pooler_files(certs))
        _check_answers(p)
        before = p.footprint()
        _run_while_checking(p, _tls_worker, [SEED + 6000 + i for i in range(WORKERS)],
                            _client_hello())
        p.assert_footprint_back(before)
    finally:
        tlsutil.remove_certs(certs)


# Values a mutated ini line may get: empty, signs, overflow, units, quotes, paths, bytes.
INI_VALUES = ["", "0", "-1", "99999999999999999999", "1e9", "abc", "yes", "on", "session",
              "md5", "*", "%", "\\", "'", '"', "host=", "port=-5", "auth_user=", "=", " = = ",
              "\x01", "é", "10s", "1h", "0x10", "/nonexistent", "..", "9" * 400]
INI_LINES = ["[databases]", "[pgbouncer]", "[users]", "[peers]", "[", "]",
             "%include /nonexistent", "%include", "%include x", "foo = bar", "x" * 300 + " = 1"]
DB_KEYS = ["host=", "port=", "dbname=", "user=", "password=", "pool_size=", "pool_mode=",
           "connect_query=", "client_encoding=", "max_db_connections="]


def _mutate_ini(text, rnd):
    """One to four line edits: a value replaced, a section/include/unknown line inserted, a
    line deleted, a character changed, a [databases] entry with odd parameters, a line
    repeated elsewhere. listen_addr stays as it was (tests listen on loopback only)."""
    lines = text.split("\n")
    for _ in range(rnd.randint(1, 4)):
        i = rnd.randrange(len(lines))
        line = lines[i]
        k = rnd.random()
        if line.startswith("listen_addr"):
            continue
        if k < 0.35 and "=" in line:
            lines[i] = line.split("=", 1)[0] + "= " + rnd.choice(INI_VALUES)
        elif k < 0.5:
            lines.insert(i, rnd.choice(INI_LINES))
        elif k < 0.6:
            del lines[i]
        elif k < 0.75 and line:
            j = rnd.randrange(len(line))
            lines[i] = line[:j] + rnd.choice(["", "=", " ", "\t", ";", "#", "[", "\\"]) + \
                line[j + 1:]
        elif k < 0.85:
            params = " ".join(rnd.choice(DB_KEYS) + rnd.choice(INI_VALUES) for _ in range(3))
            lines.insert(i, "dbx = " + params)
        else:
            lines.insert(i, lines[rnd.randrange(len(lines))])
    return "\n".join(x for x in lines if not x.startswith("listen_addr") or x in text)


def _answers_ssl_request(port):
    """The event loop runs: an SSLRequest on a new connection gets its one-byte answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(m.ssl_request())
            return s.recv(1) in (b"N", b"S")
    except OSError:
        return False


def test_mutated_configs_fail_cleanly_or_serve(pooler):
    """Start-up with a mutated pgbouncer.ini (the generated one, or it with the settings of
    pgbouncer-compat.ini) ends either in a running pooler or in exit code 1 with a message,
    never a crash. Then one pooler is given mutated files by SIGHUP again and again: it keeps
    running and answering, and once the good file is back it serves queries as before. (The
    probe this grew from found a SIGHUP that killed the process during start-up:
    test_signals.py has the exact case.)"""
    rnd = random.Random(SEED + 5000)
    with open(os.path.join(harness.REPO, "pgbouncer-compat.ini")) as f:
        compat = f.read().split("[pgbouncer]", 1)[-1]
    refused = 0
    for i in range(40):
        p = pooler(start=False)
        p.write_ini(_mutate_ini(p.ini_text if rnd.random() < 0.7 else
                                p.ini_text + "\n" + compat, rnd))
        p.expect_exit = True  # a refused file ends the process: checked below
        p.start(wait_ready=False)
        # Up (answering on its port), refused (exited), or up elsewhere (the mutation moved
        # the listener): then after 5 s it is past start-up.
        deadline = time.monotonic() + 5
        while p.alive() and not _answers_ssl_request(p.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        rc = p.proc.poll()
        if rc is not None:
            out = p.full_log()
            assert rc == 1 and "FATAL" in out and not p.crashed(), \
                f"start {i}: exit {p.describe_rc(rc)}\n--- ini\n{p.ini_text}\n--- out\n{out}"
            refused += 1
            continue
        rc = p.stop()
        assert not p.crashed() and (rc == 0 or harness.is_pgbouncer(p.binary)), \
            f"start {i}: stop gave {p.describe_rc(rc)}\n--- ini\n{p.ini_text}\n{p.full_log()}"
    assert 0 < refused < 40, refused  # the seed gives both outcomes

    p = pooler()
    good = p.ini_text
    for i in range(80):
        if i % 8 == 7:
            text = good
        else:
            text = _mutate_ini(good if rnd.random() < 0.7 else good + "\n" + compat, rnd)
        p.write_ini(text)
        mark = len(p.stderr_text())
        p.signal(signal.SIGHUP)
        harness.wait_until(lambda: "got SIGHUP" in p.stderr_text()[mark:] or not p.alive(), 5,
                           what="the SIGHUP's log line")
        assert p.alive() and not p.crashed(), \
            f"reload {i}: died\n--- ini\n{p.ini_text}\n--- out\n{p.full_log()}"
        assert _answers_ssl_request(p.port), f"reload {i}: no answer\n--- ini\n{p.ini_text}"
        if text == good:
            _check_answers(p)
