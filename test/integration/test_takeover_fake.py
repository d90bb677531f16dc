"""Online restart (-R) against a FAKE old process: the new process's defensive paths.

A real old process only sends well-formed SHOW FDS results, so what the new process does
with a bad one is driven here by test/lib/fakeold.py: a Python stand-in listening on the
unix socket the new process connects to, speaking just enough of the console protocol and
attaching real sockets to its rows (socketpair ends for clients, a logged-in connection to
the scratch cluster for a server, its own listeners for the "pooler" rows).

A malformed answer must make the new process give up cleanly: a FATAL line naming what was
wrong (PgBouncer's phrases where it has one), exit status 1, no SHUTDOWN sent (so the old
process resumes when the session goes), and the old process's unix socket file left in
place. Where the new process deliberately carries on (a row it cannot use), it closes that
row's socket, says so, and takes the rest.
"""

import os
import re
import socket
import struct
import time

import pytest

import fakeold
import harness
from fakeold import (CLOSE, FakeOld, client_row, command_complete, error_response, ready,
                     server_row, show_fds, takeover)
from pgwire import Conn, m

# The new process's lines for a takeover that went through (PgBouncer's texts).
DONE = r"LOG old process killed, resuming work\n"


@pytest.fixture
def fake_old(pooler):
    """fake_old(p) -> a FakeOld on p's unix socket path and port (p: a not yet started
    Pooler), with p's pidfile. Torn down before the poolers: it closes what it holds and
    the test's client ends, then re-raises an error of its script."""
    made = []

    def factory(p):
        f = FakeOld(p.dir, p.port, pidfile=os.path.join(p.dir, "pooler.pid"))
        made.append(f)
        return f

    yield factory
    errors = []
    for f in made:
        try:
            f.stop()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    if errors:
        raise errors[0]


def _new(pooler, **kw):
    """The new process (not started): `<binary> -R`, session pooling; kw: make_ini's."""
    return pooler(start=False, args=["-R"], pgbouncer={"pool_mode": "session"}, **kw)


def _listeners(fake):
    """The two "pooler" rows an old process sends first, with their sockets."""
    return [(fakeold.pooler_row(fake.tcp, fake.port), [fake.tcp]),
            (fakeold.pooler_row(fake.unix, fake.port), [fake.unix])]


def _client(fake):
    """(our end, the end handed over): a socketpair standing for a client connection."""
    ours, theirs = socket.socketpair()
    fake.keep(ours)
    fake.hold(theirs)
    return ours, theirs


def _take_over(p, fake):
    """Start p and wait until the takeover went through; its log."""
    p.start(wait_ready=False)
    p.wait_for_log(DONE, timeout=20)
    fake.wait()
    assert fake.queries == ["SUSPEND;", "SHOW FDS;", "SHUTDOWN;"], fake.queries
    return p.log_text()


def re_search(regex, text):
    return re.search(regex, text, re.M)


def _gives_up(p, fake, fatal):
    """Start p, which must give up: exit 1 with a FATAL line matching `fatal` (a regex; its
    alternatives may be PgBouncer's own words: they are matched after the "@file:line in
    function f(): " PgBouncer puts first, and sluice's never stand there alone), without
    sending SHUTDOWN; the old process's unix socket file stays. Returns the log."""
    p.expect_exit = True
    p.start(wait_ready=False)
    # (a process that took over anyway fails the test at once)
    harness.wait_until(lambda: not p.alive() or "resuming work" in p.log_text(), 15,
                       what="the new process to give up")
    fake.wait()
    log = p.log_text()
    assert p.returncode == 1, f"{p.describe_rc()}\n{log}"
    assert re_search(rf"^\S+ \S+ \S+ \[{p.pid}\] FATAL (@\S+ in function \S+ )?(?:{fatal})\n",
                     log), log
    assert "SHUTDOWN;" not in fake.queries, (fake.queries, log)
    assert fake.eof or fake.gone, "the new process did not close the console session"
    assert "resuming work" not in log, log
    assert fake.unix_file_exists()
    return log


def _peer_gets(sock, send=b"", timeout=5):
    """Sends `send`, then reads until EOF: (bytes received, whether EOF came)."""
    sock.settimeout(timeout)
    try:
        if send:
            sock.sendall(send)
    except OSError:
        pass
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def _query(sock, sql):
    """The rows of one simple query over a carried client socket."""
    c = Conn(sock)
    c.send(m.query(sql))
    return [msg.row for msg in c.read_until_rfq() if msg.type == "D"]


# ---------------------------------------------------------------------------
# the fake itself: a well-formed takeover goes through


def test_fake_old_process_is_taken_over(pooler, pg, fake_old):
    """Baseline for the rest: from a well-formed SHOW FDS of the fake (two listeners, a
    client linked to a logged-in server connection), the new process takes over as from a
    real old process: PgBouncer's lines, SHUTDOWN sent, the client goes on on the same
    backend, new logins work on the listeners it got."""
    p = _new(pooler)
    fake = fake_old(p)
    ours, theirs = _client(fake)
    srv = Conn.connect(pg.host, pg.port, user="md5user", database="appdb",
                       password=pg.passwords["md5user"])
    fake.hold(srv.sock)
    rows = _listeners(fake) + [
        (client_row(theirs.fileno(), link=srv.sock.fileno()), [theirs]),
        (server_row(srv.sock.fileno(), pg.port, srv.backend_pid,
                    int.from_bytes(srv.backend_key, "big"), link=theirs.fileno()), [srv.sock]),
    ]
    fake.start(takeover(show_fds(rows)))
    log = _take_over(p, fake)
    assert {k: fake.startup.get(k) for k in ("user", "database")} == {
        "user": "pgbouncer", "database": "pgbouncer"}, fake.startup
    for line in (rf"LOG got pooler socket: 127\.0\.0\.1:{p.port}\n",
                 rf"LOG got pooler socket: unix:{p.port}\n", r"LOG SHOW FDS finished\n",
                 r"LOG sending SHUTDOWN;\n"):
        assert re_search(line, log), (line, log)
    assert _query(ours, "SELECT pg_backend_pid()") == [[str(srv.backend_pid)]]
    with p.connect() as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


@pytest.mark.differs_from_pgbouncer_1_18(
    "sluice only: a new PgBouncer reads no pending_input and does not say so")
def test_new_process_says_it_carries_queued_requests(pooler, fake_old):
    """The console session of the new process carries application_name "sluice takeover":
    an old sluice then knows that queued clients' requests may move in pending_input (for
    any other session its SUSPEND serves the queue first)."""
    p = _new(pooler)
    fake = fake_old(p)
    fake.start(takeover(show_fds(_listeners(fake))))
    _take_over(p, fake)
    assert fake.startup == {"user": "pgbouncer", "database": "pgbouncer",
                            "application_name": "sluice takeover"}, fake.startup


# ---------------------------------------------------------------------------
# rows the new process does not take, and carries on without


NO_VARS = {"client_encoding": None, "std_strings": None, "datestyle": None, "timezone": None}
EMPTY_VARS = {"client_encoding": "", "std_strings": "", "datestyle": "", "timezone": ""}


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: lets a client row without server parameters (a client still logging "
    "in) in as logged in: its peer's query runs, as the row's user, without a password")
@pytest.mark.parametrize("vars_", [NO_VARS, EMPTY_VARS], ids=["null", "empty"])
def test_client_still_logging_in_is_closed(pooler, fake_old, vars_):
    """A client row without the server parameters a welcome gives (PgBouncer lists a client
    still logging in like that) is not let in: its socket is closed (the client gets EOF,
    not an answer to the query it sends) and the warning names it; the takeover goes on
    with the other client, which is served."""
    p = _new(pooler)
    fake = fake_old(p)
    half_ours, half_theirs = _client(fake)
    ours, theirs = _client(fake)
    rows = _listeners(fake) + [
        (client_row(half_theirs.fileno(), user="postgres", db="appdb", vars=vars_),
         [half_theirs]),
        (client_row(theirs.fileno()), [theirs]),
    ]
    fake.start(takeover(show_fds(rows)))
    log = _take_over(p, fake)
    assert _peer_gets(half_ours, m.query("SELECT current_user")) == (b"", True)
    assert _query(ours, "SELECT current_user") == [["md5user"]]
    assert re_search(r'^\S+ \S+ \S+ \[\d+\] WARNING takeover: a client of user "postgres" to '
                     r'database "appdb" was still logging in: closed\n', log), log
    assert "LOG takeover: 2 listening sockets, 1 clients, 0 servers\n" in log, log


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: keeps the socket of a client row for a database it does not have "
    "open and never answers on it (an fd leak; the client hangs)")
def test_rows_of_unknown_database_are_dropped(pooler, pg, fake_old):
    """A client and a server row of a database this configuration does not have (no "*"
    entry) are dropped with a warning each and their sockets closed (the client gets EOF,
    the server's backend ends); the takeover goes on with the rest."""
    p = _new(pooler, databases={"*": None})
    fake = fake_old(p)
    lost_ours, lost_theirs = _client(fake)
    ours, theirs = _client(fake)
    srv = Conn.connect(pg.host, pg.port, user="md5user", database="postgres",
                       password=pg.passwords["md5user"])
    fake.hold(srv.sock)
    rows = _listeners(fake) + [
        (client_row(lost_theirs.fileno(), db="nosuchdb"), [lost_theirs]),
        (server_row(srv.sock.fileno(), pg.port, srv.backend_pid,
                    int.from_bytes(srv.backend_key, "big"), db="nosuchdb"), [srv.sock]),
        (client_row(theirs.fileno()), [theirs]),
    ]
    fake.start(takeover(show_fds(rows)))
    log = _take_over(p, fake)
    assert _peer_gets(lost_ours, m.query("SELECT 1")) == (b"", True)
    harness.wait_until(lambda: not pg.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                          (srv.backend_pid,)), 10,
                       what="the dropped server's backend to end")
    assert _query(ours, "SELECT current_user") == [["md5user"]]
    for task in ("client", "server"):
        assert (f'WARNING takeover: {task} connection of user "md5user" to database '
                f'"nosuchdb" dropped: no such database in this configuration\n') in log, log
    assert "LOG takeover: 2 listening sockets, 1 clients, 0 servers\n" in log, log


@pytest.mark.differs_from_pgbouncer_1_18(
    "sluice only: PgBouncer 1.18 gives the whole takeover up (FATAL takeover_create_link: "
    "failed to find pair)")
def test_links_to_rows_that_did_not_come(pooler, pg, fake_old):
    """A client row linked to a server that is not among the rows is told (FATAL
    "server conn crashed?", as PgBouncer tells a client whose server went) and closed; a
    server row linked to a client that is not among the rows is in the middle of that
    client's session: it is closed (its backend ends). The takeover goes on."""
    p = _new(pooler)
    fake = fake_old(p)
    ours, theirs = _client(fake)
    srv = Conn.connect(pg.host, pg.port, user="md5user", database="appdb",
                       password=pg.passwords["md5user"])
    fake.hold(srv.sock)
    rows = _listeners(fake) + [
        (client_row(theirs.fileno(), link=999), [theirs]),
        (server_row(srv.sock.fileno(), pg.port, srv.backend_pid,
                    int.from_bytes(srv.backend_key, "big"), link=998), [srv.sock]),
    ]
    fake.start(takeover(show_fds(rows)))
    log = _take_over(p, fake)
    data, eof = _peer_gets(ours)
    assert eof and data[:1] == b"E", data
    assert b"SFATAL\0" in data and b"C08P01\0" in data and b"Mserver conn crashed?\0" in data
    harness.wait_until(lambda: not pg.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                          (srv.backend_pid,)), 10,
                       what="the server's backend to end")
    assert "closing because: client disconnect while server was not ready" in log, log


# ---------------------------------------------------------------------------
# malformed answers: the new process gives up


@pytest.mark.parametrize("where", ["last", "middle", "on_the_row_description"])
def test_row_without_socket(pooler, fake_old, where):
    """A DataRow that comes without a socket attached: PgBouncer's "got row without fd
    info", whether it is the last row or one before a row that has its socket; and a
    socket attached to the RowDescription is not taken for the first row's."""
    p = _new(pooler)
    fake = fake_old(p)
    _, theirs = _client(fake)
    tcp, unix = _listeners(fake)
    bare = (client_row(theirs.fileno()), [])
    if where == "on_the_row_description":
        pieces = show_fds([(tcp[0], []), unix])
        pieces[0] = (pieces[0][0], tcp[1])
        # PgBouncer queues that socket for the TCP row or leaves it unused, depending on how
        # the bytes arrive: "socket takeover failed" or "got row without fd info"
        fatal = r"takeover: 1 file descriptors came without a row"
        if harness.is_pgbouncer(p.binary):
            fatal = r"socket takeover failed|got row without fd info"
    else:
        pieces = show_fds([tcp, unix, bare] if where == "last" else [tcp, bare, unix])
        fatal = r"(takeover: )?got row without fd info"
    fake.start(takeover(pieces))
    _gives_up(p, fake, fatal)


@pytest.mark.parametrize("where", [
    pytest.param("last", marks=pytest.mark.differs_from_pgbouncer_1_18(
        "PgBouncer 1.18 bug: takes the first socket and keeps the second open, unused (an fd "
        "leak), and goes on")),
    "before_a_row_without"])
def test_row_with_two_sockets(pooler, fake_old, where):
    """A DataRow with two sockets attached: the new process gives up, also when the next
    row comes without one (the second socket must not be taken for that row's: its peer
    would be let in as the next row's client, here user postgres, without a password)."""
    p = _new(pooler)
    fake = fake_old(p)
    _, a = _client(fake)
    _, extra = _client(fake)
    _, b = _client(fake)
    rows = _listeners(fake) + [(client_row(a.fileno()), [a, extra])]
    if where == "before_a_row_without":
        rows.append((client_row(b.fileno(), user="postgres"), []))
    fake.start(takeover(show_fds(rows)))
    _gives_up(p, fake, r"takeover: got row with 2 file descriptors|got row without fd info")


def test_unknown_task(pooler, fake_old):
    """A row whose task is none of pooler, client, server: PgBouncer's "unknown task"."""
    p = _new(pooler)
    fake = fake_old(p)
    _, theirs = _client(fake)
    row = client_row(theirs.fileno())
    row["task"] = "listener"
    fake.start(takeover(show_fds(_listeners(fake) + [(row, [theirs])])))
    _gives_up(p, fake, r"unknown task: listener")


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: takes any socket of a pooler row for a listener and goes on")
def test_pooler_row_not_listening(pooler, fake_old):
    """A "pooler" row whose socket is not a listening one."""
    p = _new(pooler)
    fake = fake_old(p)
    _, theirs = _client(fake)
    row = fakeold.pooler_row(theirs, p.port)
    fake.start(takeover(show_fds(_listeners(fake)[:1] + [(row, [theirs])])))
    _gives_up(p, fake, r"the old process handed over fd \d+, which is not a listening socket")


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: goes on without any listening socket (no new client can connect)")
def test_no_listening_socket(pooler, fake_old):
    """A result without any "pooler" row: nothing to serve on."""
    p = _new(pooler)
    fake = fake_old(p)
    _, theirs = _client(fake)
    fake.start(takeover(show_fds([(client_row(theirs.fileno()), [theirs])])))
    _gives_up(p, fake, r"takeover: the old process handed over no listening socket")


@pytest.mark.parametrize("column", ["fd", "task"])
def test_required_column_missing(pooler, fake_old, column):
    """A RowDescription without the fd or the task column (the rows without it as well).
    (PgBouncer reads the columns by position: the row it cannot read is its reason.)"""
    p = _new(pooler)
    fake = fake_old(p)
    columns = [c for c in fakeold.FDS_COLUMNS if c != column]
    fake.start(takeover(show_fds(_listeners(fake), columns=columns)))
    _gives_up(p, fake, r"takeover: SHOW FDS without fd and task columns|"
                       r"incomplete data from old process")


@pytest.mark.parametrize("step", ["login", "SUSPEND", "SHOW FDS"])
def test_error_response(pooler, fake_old, step):
    """An ErrorResponse from the old process, to the login, to SUSPEND, or to SHOW FDS
    after a first row (its socket already received): PgBouncer's two lines, "old bouncer
    sent: <severity>: <message>" then FATAL "something failed"."""
    p = _new(pooler)
    fake = fake_old(p)
    if step == "login":
        script = takeover([], login=error_response("no such user: pgbouncer", "FATAL"))
    elif step == "SUSPEND":
        script = takeover([], suspend_reply=error_response("already suspended/paused") +
                          ready())
    else:
        pieces = show_fds(_listeners(fake)[:1])[:2]
        pieces.append((error_response("out of memory") + ready(), []))
        script = takeover(pieces)
    fake.start(script)
    text = {"login": "FATAL: no such user: pgbouncer", "SUSPEND":
            "ERROR: already suspended/paused", "SHOW FDS": "ERROR: out of memory"}[step]
    # PgBouncer takes the console login for a server login: "S: login failed: <error>",
    # then FATAL "login failed"
    log = _gives_up(p, fake, r"something failed|login failed" if step == "login" else
                    r"something failed")
    assert re_search(rf"^\S+ \S+ \S+ \[{p.pid}\] ERROR (old bouncer sent|S: login failed): "
                     rf"{text}\n", log), log


@pytest.mark.parametrize("where", ["instead_of_SUSPEND", "after_a_row", "inside_a_row"])
def test_eof_mid_result(pooler, fake_old, where):
    """The old process closes the session before answering SUSPEND, between two rows of
    SHOW FDS, or half way through a row (its socket attached to the first half)."""
    p = _new(pooler)
    fake = fake_old(p)
    if where == "instead_of_SUSPEND":
        script = takeover([], suspend_reply=CLOSE)
        what = "SUSPEND;"
        theirs = "unexpected EOF"
    else:
        pieces = show_fds(_listeners(fake))[:-1]
        if where == "inside_a_row":
            data, socks = pieces[-1]
            pieces[-1] = (data[:len(data) // 2], socks)
        script = takeover(pieces + [CLOSE])
        what = "SHOW FDS;"
        # PgBouncer parses each recvmsg on its own
        theirs = "unexpected partial packet" if where == "inside_a_row" else "unexpected EOF"
    fake.start(script)
    _gives_up(p, fake, rf"takeover: unexpected EOF from the old process \({what}\)|{theirs}")


@pytest.mark.parametrize("length", [0xFFFFFFF0, 0x7FFFFFFF, 2], ids=["4GiB", "2GiB", "short"])
def test_absurd_message_length(pooler, fake_old, length):
    """A message header whose length is absurd (more than any SHOW FDS could be, or less
    than the length field itself): given up at once, not waited for nor allocated."""
    p = _new(pooler)
    fake = fake_old(p)
    pieces = show_fds(_listeners(fake))[:2]
    pieces.append((b"D" + struct.pack("!I", length) + b"\0\0\0\0", []))
    fake.start(takeover(pieces))
    _gives_up(p, fake, r"takeover: bad message from the old process \(SHOW FDS;\)|"
                       r"cannot parse packet")


def test_bad_command_tag(pooler, fake_old):
    """SUSPEND answered with another command's tag: PgBouncer's "got bad CMD"."""
    p = _new(pooler)
    fake = fake_old(p)
    fake.start(takeover([], suspend_reply=command_complete("PAUSE") + ready()))
    _gives_up(p, fake, r"got bad CMD from old bouncer: PAUSE")
