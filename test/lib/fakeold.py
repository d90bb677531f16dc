"""A fake old process for online-restart (-R) tests of the NEW process.

A real old process (sluice or PgBouncer) only ever sends a well-formed SHOW FDS; this one
sends what a test scripts, so the new process's defensive paths can be driven: a client row
without server parameters, a row without its socket or with two, an unknown task, a missing
column, an ErrorResponse, an EOF in the middle of the result, an absurd message length.

    fake = FakeOld(p.dir, p.port, pidfile)      # before the new process starts
    ours, theirs = socket.socketpair()          # a "client": theirs is handed over
    fake.hold(theirs); fake.keep(ours)
    rows = [(pooler_row(fake.tcp, p.port), [fake.tcp]), (client_row(theirs.fileno()), [theirs])]
    fake.start(takeover(show_fds(rows)))        # the script runs in a thread
    p.start(wait_ready=False)                   # <binary> -R: connects to the fake
    fake.wait()                                 # the script has ended
    fake.stop()                                 # closes all it still holds, joins the thread

It runs in the test's process, as the test's user. Where it listens: <dir>/.s.PGSQL.<port>
(mode 0777: the harness runs the new process as user postgres) and 127.0.0.1:<port>; these
are also the two listening sockets it hands over (task "pooler"), as an old process does:
.unix and .tcp. A connection closed before its startup packet is a probe (PgBouncer's -R
makes one to see whether an old process is there): the fake waits for the next one.
hold(): sockets the old process owns (closed when it "exits": at SHUTDOWN, at a CLOSE piece,
at stop()); keep(): the test's own ends, closed by stop() only.

A script is a function of one Session (the console session of the new process). takeover()
builds the usual one: log in (AuthenticationOk, ParameterStatus, BackendKeyData,
ReadyForQuery), answer "SUSPEND;", answer "SHOW FDS;" with the pieces given, then on
"SHUTDOWN;" remove the pidfile and close everything (the old process exits). Each piece is
(bytes, [sockets]) sent with one sendmsg, the sockets attached by SCM_RIGHTS (one DataRow
per sendmsg, as sluice and PgBouncer send them), or CLOSE (the old process goes away there).

What the fake saw: .queries (the commands, in order), .eof (the new process closed the
session: it gave up), .shutdown (SHUTDOWN arrived), .gone (the fake closed everything: at
SHUTDOWN, or a CLOSE piece), .startup (the startup parameters).
A script's exception is re-raised by stop().

Builders: message(type, body), auth_ok(), parameter_status(k, v), backend_key_data(pid, key),
ready(status='I'), command_complete(tag), error_response(message, severity, code),
row_description(names), data_row(values) (None = NULL), show_fds(rows, columns) (the pieces
of a whole result), and rows as dicts: pooler_row(), client_row(), server_row().
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

# PgBouncer 1.18's SHOW FDS columns, in its order (sluice adds prepared_statements and
# pending_input, which a new process may do without).
FDS_COLUMNS = ["fd", "task", "user", "database", "addr", "port", "cancel", "link",
               "client_encoding", "std_strings", "datestyle", "timezone", "password",
               "scram_client_key", "scram_server_key"]
_TYPES = {"fd": 23, "port": 23, "link": 23, "cancel": 20, "scram_client_key": 17,
          "scram_server_key": 17}  # int4, int8, bytea; the rest text

CLOSE = "close"  # a piece: the old process closes the session here


# ---------------------------------------------------------------------------
# backend messages


def message(type_: bytes, body: bytes = b"") -> bytes:
    return type_ + struct.pack("!I", 4 + len(body)) + body


def _cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def auth_ok() -> bytes:
    return message(b"R", struct.pack("!I", 0))


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", _cstr(name) + _cstr(value))


def backend_key_data(pid: int, key: int) -> bytes:
    return message(b"K", struct.pack("!II", pid, key))


def ready(status: str = "I") -> bytes:
    return message(b"Z", status.encode())


def command_complete(tag: str) -> bytes:
    return message(b"C", _cstr(tag))


def error_response(text: str, severity: str = "ERROR", code: str = "08P01") -> bytes:
    return message(b"E", b"S" + _cstr(severity) + b"C" + _cstr(code) + b"M" + _cstr(text) +
                   b"\0")


def row_description(names) -> bytes:
    body = struct.pack("!H", len(names))
    for n in names:
        body += _cstr(n) + struct.pack("!IhIhih", 0, 0, _TYPES.get(n, 25), -1, -1, 0)
    return message(b"T", body)


def data_row(values) -> bytes:
    body = struct.pack("!H", len(values))
    for v in values:
        if v is None:
            body += struct.pack("!i", -1)
        else:
            b = str(v).encode()
            body += struct.pack("!i", len(b)) + b
    return message(b"D", body)


def login_reply() -> bytes:
    """What PgBouncer's console answers a login of user pgbouncer with."""
    return (auth_ok() + parameter_status("server_version", "1.18.0/bouncer") +
            parameter_status("client_encoding", "UTF8") +
            parameter_status("standard_conforming_strings", "on") +
            backend_key_data(4242, 4343) + ready())


SUSPEND_OK = command_complete("SUSPEND") + ready()


# ---------------------------------------------------------------------------
# SHOW FDS rows (dicts by column name; a missing key is NULL)


def pooler_row(sock: socket.socket, port: int) -> dict:
    unix = sock.family == socket.AF_UNIX
    return {"fd": sock.fileno(), "task": "pooler", "addr": "unix" if unix else "127.0.0.1",
            "port": port, "cancel": 0, "link": 0}


# What a logged-in connection to the scratch cluster has (a client got the same in its welcome).
LOGGED_IN_VARS = {"client_encoding": "UTF8", "std_strings": "on", "datestyle": "ISO, MDY",
                  "timezone": "UTC"}


def client_row(fd: int, user: str = "md5user", db: str = "appdb", link: int = 0,
               cancel: int = (1234 << 32) | 5678, port: int = 0, vars=LOGGED_IN_VARS) -> dict:
    row = {"fd": fd, "task": "client", "user": user, "database": db, "addr": "unix",
           "port": port, "cancel": cancel, "link": link}
    row.update(vars)
    return row


def server_row(fd: int, pg_port: int, backend_pid: int, backend_key: int,
               user: str = "md5user", db: str = "appdb", link: int = 0,
               vars=LOGGED_IN_VARS) -> dict:
    row = {"fd": fd, "task": "server", "user": user, "database": db, "addr": "127.0.0.1",
           "port": pg_port, "cancel": (backend_pid << 32) | backend_key, "link": link}
    row.update(vars)
    return row


def show_fds(rows, columns=FDS_COLUMNS, tag: str = "SHOW") -> list:
    """The pieces of a SHOW FDS result: rows is [(row dict, [sockets to attach])]."""
    pieces = [(row_description(columns), [])]
    for row, socks in rows:
        pieces.append((data_row([row.get(c) for c in columns]), list(socks)))
    pieces.append((command_complete(tag) + ready(), []))
    return pieces


# ---------------------------------------------------------------------------
# the session and the listener


class SessionClosed(Exception):
    pass


class Session:
    """The accepted console connection of the new process."""

    def __init__(self, fake: "FakeOld", sock: socket.socket):
        self.fake = fake
        self.sock = sock
        self.buf = b""

    def _recv(self, n: int) -> bytes:
        deadline = time.monotonic() + 30
        while len(self.buf) < n:
            if self.fake._stopping.is_set() or time.monotonic() > deadline:
                raise SessionClosed("stopped")
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, OSError):
                chunk = b""
            if not chunk:
                self.fake.eof = True
                raise SessionClosed("EOF")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_startup(self) -> dict:
        (ln,) = struct.unpack("!I", self._recv(4))
        body = self._recv(ln - 4)
        parts = body[4:].split(b"\0")
        params = {parts[i].decode(): parts[i + 1].decode()
                  for i in range(0, len(parts) - 1, 2) if parts[i]}
        self.fake.startup = params
        return params

    def login(self, reply: bytes | None = None) -> None:
        self.read_startup()
        self.send(login_reply() if reply is None else reply)

    def read_query(self) -> str | None:
        """The next simple Query's text (None: EOF, Terminate or anything else, all taken for
        the new process ending the session)."""
        try:
            t = self._recv(1)
            (ln,) = struct.unpack("!I", self._recv(4))
            body = self._recv(ln - 4)
        except SessionClosed:
            return None
        if t != b"Q":
            self.fake.eof = True  # Terminate (PgBouncer sends one when it gives up)
            return None
        q = body.rstrip(b"\0").decode()
        self.fake.queries.append(q)
        return q

    def send(self, data: bytes, socks=()) -> None:
        fds = [s if isinstance(s, int) else s.fileno() for s in socks]
        try:
            if fds:
                n = socket.send_fds(self.sock, [data], fds)
                if n != len(data):
                    raise RuntimeError("partial sendmsg")
            else:
                self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.fake.eof = True  # the new process gave up already
            raise SessionClosed("EOF") from None

    def close(self) -> None:
        self.sock.close()


def takeover(pieces, suspend_reply: bytes = SUSPEND_OK, login: bytes | None = None):
    """The usual script: login, SUSPEND, SHOW FDS answered with `pieces` (see show_fds()),
    SHUTDOWN. Stops where the new process goes away, or at a CLOSE piece."""
    def script(s: Session) -> None:
        s.login(login)
        if s.read_query() != "SUSPEND;":
            return
        if suspend_reply == CLOSE:
            s.fake.close_all()
            return
        s.send(suspend_reply)
        if s.read_query() != "SHOW FDS;":
            return
        for piece in pieces:
            if piece == CLOSE:
                s.fake.close_all()
                return
            s.send(*piece)
        if s.read_query() == "SHUTDOWN;":
            s.fake.shutdown = True
            s.fake.exit()
    return script


class FakeOld:
    def __init__(self, sock_dir: str, port: int, pidfile: str | None = None):
        self.path = os.path.join(sock_dir, f".s.PGSQL.{port}")
        self.port = port
        self.pidfile = pidfile
        self.queries: list[str] = []
        self.startup: dict = {}
        self.eof = False
        self.shutdown = False
        self.gone = False  # the fake closed the session and its sockets (exit, or CLOSE)
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._session: Session | None = None
        self._held: list[socket.socket] = []  # closed when the old process "exits"
        self._kept: list[socket.socket] = []  # the test's own ends, closed by stop()
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.path)
        os.chmod(self.path, 0o777)
        self.unix.listen(16)
        self.tcp = socket.create_server(("127.0.0.1", port), backlog=16)
        self._held += [self.unix, self.tcp]
        if pidfile:
            with open(pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")

    def hold(self, *socks: socket.socket) -> None:
        """Sockets the old process owns (what it hands over): closed at its exit."""
        self._held += socks

    def keep(self, *socks: socket.socket) -> None:
        """The test's ends of those sockets (the clients'): closed by stop()."""
        self._kept += socks

    def start(self, script) -> None:
        self._thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self._thread.start()

    def _run(self, script) -> None:
        try:
            self.unix.settimeout(0.2)
            deadline = time.monotonic() + 30
            while not self._stopping.is_set():
                try:
                    conn, _ = self.unix.accept()
                except socket.timeout:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the new process did not connect")
                    continue
                conn.settimeout(0.2)
                self._session = Session(self, conn)
                try:
                    script(self._session)
                except SessionClosed:
                    pass
                if self.startup:
                    return
                # a probe: PgBouncer connects once to see whether an old process listens
                conn.close()
                self.eof = False
        except BaseException as e:  # noqa: BLE001 - re-raised by stop()
            self._error = e

    def exit(self) -> None:
        """What the old process's exit does: pidfile removed, then every socket closed (the
        unix socket file stays: the new process listens on it now)."""
        if self.pidfile:
            try:
                os.unlink(self.pidfile)
            except FileNotFoundError:
                pass
        self.close_all()

    def close_all(self) -> None:
        self.gone = True
        if self._session:
            self._session.close()
        for s in self._held:
            s.close()
        self._held = []

    def unix_file_exists(self) -> bool:
        return os.path.exists(self.path)

    def wait(self, timeout: float = 15) -> None:
        """Until the script has ended."""
        if self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError("the fake old process's script did not end")

    def stop(self) -> None:
        self._stopping.set()
        if self._thread:
            self._thread.join(30)
        self.close_all()
        for s in self._kept:
            s.close()
        self._kept = []
        if self._error:
            raise self._error
