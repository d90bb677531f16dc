"""pgwire: a small synchronous raw PostgreSQL v3 protocol client for tests.

Nothing here hides the protocol: the caller builds frontend messages as bytes,
sends them (several in one write to pipeline), and reads backend messages one
by one.  Every read has a deadline, so no test can hang forever.

    from pgwire import Conn, m            # m = the message builders
    c = Conn.connect(host, port, user='md5user', password='md5pass',
                     database='appdb')
    c.send(m.parse('SELECT $1::int'), m.bind(params=['7']), m.execute(),
           m.sync())
    msgs = c.read_until_rfq()
    assert render(msgs) == ['1', '2', 'D', 'C', 'Z:I']

Only the Python standard library is used (hashlib/hmac for md5 and SCRAM).
"""

import base64
import hashlib
import hmac
import os
import select
import socket
import struct
import time

__all__ = [
    'PgWireError', 'ProtocolTimeout', 'ConnectionClosed', 'ServerError',
    'Msg', 'Conn', 'm', 'render', 'render_detail', 'short', 'md5_password',
    'ScramClient',
    'parse_error', 'parse_row_description', 'parse_data_row',
    'parse_command_tag', 'parse_rfq', 'parse_copy_response',
    'parse_parameter_status', 'parse_notification', 'parse_backend_key',
    'parse_function_result', 'parse_parameter_description', 'parse_auth',
    'split_stream',
    'DEFAULT_TIMEOUT', 'PROTOCOL_3_0',
]

# Seconds any single read may wait.  PGWIRE_TIMEOUT overrides; runs under
# valgrind (VALGRIND=1, see harness.py) get three times as long.
DEFAULT_TIMEOUT = float(os.environ.get('PGWIRE_TIMEOUT') or
                        (30.0 if os.environ.get('VALGRIND') == '1' else 10.0))
PROTOCOL_3_0 = 196608
SSL_REQUEST_CODE = 80877103
CANCEL_REQUEST_CODE = 80877102

# Readable names of backend message types (for error messages and debugging).
BACKEND_NAMES = {
    'R': 'Authentication', 'K': 'BackendKeyData', 'S': 'ParameterStatus',
    'Z': 'ReadyForQuery', 'v': 'NegotiateProtocolVersion',
    'T': 'RowDescription', 'D': 'DataRow', 'C': 'CommandComplete',
    'I': 'EmptyQueryResponse', '1': 'ParseComplete', '2': 'BindComplete',
    '3': 'CloseComplete', 't': 'ParameterDescription', 'n': 'NoData',
    's': 'PortalSuspended', 'G': 'CopyInResponse', 'H': 'CopyOutResponse',
    'W': 'CopyBothResponse', 'd': 'CopyData', 'c': 'CopyDone',
    'V': 'FunctionCallResponse', 'E': 'ErrorResponse', 'N': 'NoticeResponse',
    'A': 'NotificationResponse',
}


class PgWireError(Exception):
    """Base class of everything this module raises."""


class ProtocolTimeout(PgWireError):
    """No complete message arrived before the deadline."""

    def __init__(self, text, received=()):
        super().__init__(text)
        self.received = list(received)   # messages read before the timeout


class ConnectionClosed(PgWireError):
    """The peer closed the connection (EOF or reset)."""

    def __init__(self, text, received=()):
        super().__init__(text)
        self.received = list(received)


class ServerError(PgWireError):
    """An ErrorResponse arrived where the helper expected success."""

    def __init__(self, fields, received=()):
        self.fields = fields
        self.code = fields.get('C')
        self.message = fields.get('M')
        self.severity = fields.get('S')
        self.received = list(received)
        super().__init__('%s %s: %s' % (self.severity, self.code, self.message))


# ---------------------------------------------------------------------------
# Frontend message builders.  Each returns the complete message as bytes.
# ---------------------------------------------------------------------------

def _cstr(s):
    if isinstance(s, str):
        s = s.encode()
    if b'\0' in s:
        raise ValueError('NUL inside a C string')
    return s + b'\0'


def _text(v):
    if isinstance(v, bytes):
        return v
    return str(v).encode()


class _Builders:
    """Namespace of frontend message builders (exported as `m`)."""

    @staticmethod
    def raw(type_byte, body=b''):
        """Any typed message: type byte + Int32 length + body."""
        if isinstance(type_byte, str):
            type_byte = type_byte.encode()
        return type_byte + struct.pack('!i', len(body) + 4) + body

    @staticmethod
    def startup(params, version=PROTOCOL_3_0):
        body = struct.pack('!i', version)
        for k, v in params.items():
            if v is None:
                continue
            body += _cstr(k) + _cstr(v)
        body += b'\0'
        return struct.pack('!i', len(body) + 4) + body

    @staticmethod
    def ssl_request():
        return struct.pack('!ii', 8, SSL_REQUEST_CODE)

    @staticmethod
    def cancel_request(pid, key):
        if isinstance(key, int):
            key = struct.pack('!i', key)
        return struct.pack('!ii', 12 + len(key), CANCEL_REQUEST_CODE) + \
            struct.pack('!i', pid) + key

    @staticmethod
    def password(data):
        """PasswordMessage / SASLResponse: raw payload ('p')."""
        if isinstance(data, str):
            data = _cstr(data)
        return m.raw('p', data)

    @staticmethod
    def sasl_initial(mechanism, data):
        if data is None:
            return m.raw('p', _cstr(mechanism) + struct.pack('!i', -1))
        return m.raw('p', _cstr(mechanism) + struct.pack('!i', len(data)) + data)

    @staticmethod
    def query(sql):
        return m.raw('Q', _cstr(sql))

    @staticmethod
    def parse(sql, name='', param_types=()):
        body = _cstr(name) + _cstr(sql) + struct.pack('!h', len(param_types))
        for oid in param_types:
            body += struct.pack('!I', oid)
        return m.raw('P', body)

    @staticmethod
    def bind(portal='', stmt='', params=(), result_formats=(),
             param_formats=()):
        """Bind with text parameters by default; None is SQL NULL."""
        body = _cstr(portal) + _cstr(stmt)
        body += struct.pack('!h', len(param_formats))
        for f in param_formats:
            body += struct.pack('!h', f)
        body += struct.pack('!h', len(params))
        for p in params:
            if p is None:
                body += struct.pack('!i', -1)
            else:
                b = _text(p)
                body += struct.pack('!i', len(b)) + b
        body += struct.pack('!h', len(result_formats))
        for f in result_formats:
            body += struct.pack('!h', f)
        return m.raw('B', body)

    @staticmethod
    def describe(kind='S', name=''):
        """kind 'S' (statement) or 'P' (portal)."""
        assert kind in ('S', 'P')
        return m.raw('D', kind.encode() + _cstr(name))

    @staticmethod
    def describe_statement(name=''):
        return m.describe('S', name)

    @staticmethod
    def describe_portal(name=''):
        return m.describe('P', name)

    @staticmethod
    def execute(portal='', max_rows=0):
        return m.raw('E', _cstr(portal) + struct.pack('!i', max_rows))

    @staticmethod
    def close(kind='S', name=''):
        """kind 'S' (statement) or 'P' (portal)."""
        assert kind in ('S', 'P')
        return m.raw('C', kind.encode() + _cstr(name))

    @staticmethod
    def close_statement(name=''):
        return m.close('S', name)

    @staticmethod
    def close_portal(name=''):
        return m.close('P', name)

    @staticmethod
    def sync():
        return m.raw('S')

    @staticmethod
    def flush():
        return m.raw('H')

    @staticmethod
    def function_call(oid, args=(), arg_formats=(), result_format=0):
        """FunctionCall 'F'; args are text (format 0) unless told otherwise."""
        body = struct.pack('!I', oid)
        body += struct.pack('!h', len(arg_formats))
        for f in arg_formats:
            body += struct.pack('!h', f)
        body += struct.pack('!h', len(args))
        for a in args:
            if a is None:
                body += struct.pack('!i', -1)
            else:
                b = _text(a)
                body += struct.pack('!i', len(b)) + b
        body += struct.pack('!h', result_format)
        return m.raw('F', body)

    @staticmethod
    def copy_data(data):
        return m.raw('d', _text(data))

    @staticmethod
    def copy_done():
        return m.raw('c')

    @staticmethod
    def copy_fail(message='client failed the copy'):
        return m.raw('f', _cstr(message))

    @staticmethod
    def terminate():
        return m.raw('X')

    # Convenience: a whole extended-protocol batch for one statement.
    @staticmethod
    def extended(sql, params=(), max_rows=0, sync=True, describe=False):
        out = m.parse(sql) + m.bind(params=params)
        if describe:
            out += m.describe('P')
        out += m.execute(max_rows=max_rows)
        if sync:
            out += m.sync()
        return out


m = _Builders()


# ---------------------------------------------------------------------------
# Backend message decoding.
# ---------------------------------------------------------------------------

class Msg:
    """One backend message: .type (one-character str) and .body (bytes)."""

    __slots__ = ('type', 'body')

    def __init__(self, type_, body):
        self.type = type_
        self.body = body

    def __iter__(self):            # allows: t, body = msg
        yield self.type
        yield self.body

    def __eq__(self, other):
        if isinstance(other, Msg):
            return self.type == other.type and self.body == other.body
        if isinstance(other, tuple):
            return (self.type, self.body) == other
        return NotImplemented

    def __hash__(self):
        return hash((self.type, self.body))

    def __repr__(self):
        return 'Msg(%r, %s)' % (self.type, short(self))

    # decoding shortcuts
    @property
    def error(self):
        return parse_error(self.body)

    @property
    def code(self):
        """SQLSTATE of an ErrorResponse/NoticeResponse."""
        return parse_error(self.body).get('C')

    @property
    def tag(self):
        return parse_command_tag(self.body)

    @property
    def status(self):
        return parse_rfq(self.body)

    @property
    def row(self):
        return parse_data_row(self.body)

    @property
    def columns(self):
        return parse_row_description(self.body)


def _split_cstr(body, pos):
    end = body.index(b'\0', pos)
    return body[pos:end].decode('utf-8', 'replace'), end + 1


def split_stream(data):
    """Splits raw backend bytes into whole messages: ([(type, body), ...], rest), rest
    being the start of a message cut short (b'' when the bytes end between messages)."""
    msgs, i = [], 0
    while i + 5 <= len(data):
        end = i + 1 + struct.unpack('!I', data[i + 1:i + 5])[0]
        if end > len(data):
            break
        msgs.append((chr(data[i]), bytes(data[i + 5:end])))
        i = end
    return msgs, bytes(data[i:])


def parse_error(body):
    """ErrorResponse/NoticeResponse -> dict field-code -> value.

    'S' severity (localized), 'V' severity, 'C' SQLSTATE, 'M' message,
    'D' detail, 'H' hint, 'P' position, ...
    """
    fields = {}
    pos = 0
    while pos < len(body) and body[pos] != 0:
        code = chr(body[pos])
        value, pos = _split_cstr(body, pos + 1)
        fields[code] = value
    return fields


def parse_row_description(body):
    """RowDescription -> list of dicts (name, table_oid, column, type_oid,
    type_len, type_mod, format)."""
    (n,) = struct.unpack_from('!h', body, 0)
    pos = 2
    cols = []
    for _ in range(n):
        name, pos = _split_cstr(body, pos)
        tbl, col, typ, tlen, tmod, fmt = struct.unpack_from('!IhIhih', body, pos)
        pos += 18
        cols.append(dict(name=name, table_oid=tbl, column=col, type_oid=typ,
                         type_len=tlen, type_mod=tmod, format=fmt))
    return cols


def parse_data_row(body, decode=True):
    """DataRow -> list of str (or bytes if decode=False) / None for NULL."""
    (n,) = struct.unpack_from('!h', body, 0)
    pos = 2
    out = []
    for _ in range(n):
        (ln,) = struct.unpack_from('!i', body, pos)
        pos += 4
        if ln < 0:
            out.append(None)
        else:
            v = body[pos:pos + ln]
            out.append(v.decode('utf-8', 'replace') if decode else v)
            pos += ln
    return out


def parse_command_tag(body):
    return body.rstrip(b'\0').decode()


def parse_rfq(body):
    """ReadyForQuery -> 'I', 'T' or 'E'."""
    return chr(body[0])


def parse_copy_response(body):
    """CopyIn/CopyOut/CopyBothResponse -> (overall format, [column formats])."""
    fmt, n = struct.unpack_from('!bh', body, 0)
    cols = list(struct.unpack_from('!%dh' % n, body, 3)) if n else []
    return fmt, cols


def parse_parameter_status(body):
    name, pos = _split_cstr(body, 0)
    value, _ = _split_cstr(body, pos)
    return name, value


def parse_notification(body):
    """NotificationResponse -> (pid, channel, payload)."""
    (pid,) = struct.unpack_from('!i', body, 0)
    channel, pos = _split_cstr(body, 4)
    payload, _ = _split_cstr(body, pos)
    return pid, channel, payload


def parse_backend_key(body):
    """BackendKeyData -> (pid, secret key bytes)."""
    (pid,) = struct.unpack_from('!i', body, 0)
    return pid, body[4:]


def parse_function_result(body):
    """FunctionCallResponse -> bytes or None."""
    (ln,) = struct.unpack_from('!i', body, 0)
    return None if ln < 0 else body[4:4 + ln]


def parse_parameter_description(body):
    (n,) = struct.unpack_from('!h', body, 0)
    return list(struct.unpack_from('!%dI' % n, body, 2)) if n else []


def parse_auth(body):
    """Authentication* -> (subtype int, rest bytes)."""
    (code,) = struct.unpack_from('!i', body, 0)
    return code, body[4:]


def short(msg):
    """One-token rendering of a message with its most useful detail."""
    t, b = msg.type, msg.body
    try:
        if t in ('E', 'N'):
            f = parse_error(b)
            return '%s:%s' % (t, f.get('C'))
        if t == 'Z':
            return 'Z:' + parse_rfq(b)
        if t == 'C':
            return 'C:' + parse_command_tag(b)
        if t == 'D':
            return 'D:' + '|'.join('NULL' if v is None else v
                                   for v in parse_data_row(b))
        if t == 'd':
            return 'd:' + b[:40].decode('utf-8', 'replace').rstrip('\n')
        if t == 'S':
            return 'S:%s=%s' % parse_parameter_status(b)
        if t == 'A':
            return 'A:%s:%s' % parse_notification(b)[1:]
        if t in ('G', 'H', 'W'):
            fmt, cols = parse_copy_response(b)
            return '%s:%d/%d' % (t, fmt, len(cols))
        if t == 'V':
            r = parse_function_result(b)
            return 'V:' + ('NULL' if r is None else r.decode('utf-8', 'replace'))
    except Exception:           # malformed: show the raw type only
        pass
    return t


def _norm_ignore(ignore):
    if ignore is None:
        return ()
    return tuple(ignore)


def _collapse(tokens):
    out = []
    for tok in tokens:
        if out and out[-1][0] == tok:
            out[-1][1] += 1
        else:
            out.append([tok, 1])
    return [t if n == 1 else '%s*%d' % (t, n) for t, n in out]


def render(msgs, ignore=('S',), collapse=False):
    """Compact rendering of a reply sequence.

    Each message becomes its type character; ReadyForQuery becomes 'Z:<status>',
    ErrorResponse 'E:<SQLSTATE>', NoticeResponse 'N:<SQLSTATE>'.  Types listed in
    `ignore` are dropped (default: ParameterStatus 'S'; pass e.g. 'SN' or
    ('S', 'N', 'K') to drop notices/BackendKeyData too).  collapse=True turns
    runs of equal tokens into 'tok*count' (e.g. 'd*1000').
    """
    ignore = _norm_ignore(ignore)
    out = []
    for msg in msgs:
        if msg.type in ignore:
            continue
        if msg.type in ('E', 'N'):
            out.append('%s:%s' % (msg.type, parse_error(msg.body).get('C')))
        elif msg.type == 'Z':
            out.append('Z:' + parse_rfq(msg.body))
        else:
            out.append(msg.type)
    return _collapse(out) if collapse else out


def render_detail(msgs, ignore=('S',), collapse=False):
    """Like render() but with tags, row values, notification channel/payload
    and copy formats (see short()).  Notification sender pids are left out so
    that sequences from different connections compare equal."""
    ignore = _norm_ignore(ignore)
    out = [short(msg) for msg in msgs if msg.type not in ignore]
    return _collapse(out) if collapse else out


def diff_tokens(msgs, error_fields='SVCMDH'):
    """Backend messages as tokens for a differential comparison: short(), but errors and
    notices with the given fields (severity, SQLSTATE, message, ...); ParameterStatus left
    out (a pooler may add or drop those)."""
    out = []
    for x in msgs:
        if x.type == 'S':
            continue
        if x.type in ('E', 'N'):
            f = parse_error(x.body)
            out.append('%s:%s' % (x.type, ':'.join(f.get(k, '') for k in error_fields)))
        else:
            out.append(short(x))
    return out


def shown(msg, width=60):
    """A frontend message (bytes) for a failure report: type, then the body."""
    return (msg[:1] + msg[5:].replace(b'\0', b'|')).decode('utf-8', 'replace')[:width]


# ---------------------------------------------------------------------------
# SCRAM-SHA-256 client (RFC 5802 / 7677, no channel binding).
# ---------------------------------------------------------------------------

class ScramClient:
    def __init__(self, password):
        self.password = password.encode() if isinstance(password, str) else password
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.client_first_bare = 'n=,r=' + self.nonce
        self.server_signature = None

    def first_message(self):
        return ('n,,' + self.client_first_bare).encode()

    def final_message(self, server_first):
        server_first = server_first.decode()
        attrs = dict(kv.split('=', 1) for kv in server_first.split(','))
        nonce, salt, iters = attrs['r'], base64.b64decode(attrs['s']), int(attrs['i'])
        if not nonce.startswith(self.nonce):
            raise PgWireError('SCRAM: server nonce does not extend ours')
        salted = hashlib.pbkdf2_hmac('sha256', self.password, salt, iters)
        client_key = hmac.new(salted, b'Client Key', hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        final_bare = 'c=biws,r=' + nonce
        auth_message = ','.join((self.client_first_bare, server_first,
                                 final_bare)).encode()
        client_sig = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, client_sig))
        server_key = hmac.new(salted, b'Server Key', hashlib.sha256).digest()
        self.server_signature = hmac.new(server_key, auth_message,
                                         hashlib.sha256).digest()
        return (final_bare + ',p=' + base64.b64encode(proof).decode()).encode()

    def verify_final(self, server_final):
        attrs = dict(kv.split('=', 1) for kv in server_final.decode().split(','))
        if 'e' in attrs:
            raise PgWireError('SCRAM: server error ' + attrs['e'])
        if base64.b64decode(attrs['v']) != self.server_signature:
            raise PgWireError('SCRAM: bad server signature')


def md5_password(user, password, salt):
    inner = hashlib.md5(_text(password) + _text(user)).hexdigest().encode()
    return 'md5' + hashlib.md5(inner + salt).hexdigest()


# ---------------------------------------------------------------------------
# The connection.
# ---------------------------------------------------------------------------

class Conn:
    """A raw protocol connection.

    After connect()/startup(): .backend_pid and .backend_key (from
    BackendKeyData, i.e. the pooler's fake key when going through a pooler),
    .parameters (ParameterStatus dict), .startup_msgs (everything the server
    sent during startup), .status (status of the last ReadyForQuery read).
    """

    def __init__(self, sock, timeout=DEFAULT_TIMEOUT):
        self.sock = sock
        self.sock.setblocking(True)
        self.timeout = timeout
        self.buf = bytearray()
        self.closed = False
        self.eof = False
        self.parameters = {}
        self.backend_pid = None
        self.backend_key = None
        self.status = None
        self.startup_msgs = []
        self.auth_method = None
        self.log = []                # every message read, in order

    # -- connecting -------------------------------------------------------

    @classmethod
    def open(cls, host='127.0.0.1', port=5432, unix_socket_dir=None,
             timeout=DEFAULT_TIMEOUT):
        """Open the socket only (no startup).  unix_socket_dir wins over host."""
        deadline = time.monotonic() + timeout
        if unix_socket_dir:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            addr = os.path.join(unix_socket_dir, '.s.PGSQL.%d' % port)
        else:
            fam = socket.AF_INET6 if ':' in host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            addr = (host, port)
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            s.connect(addr)
        except BaseException:
            s.close()
            raise
        if not unix_socket_dir:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(s, timeout)

    @classmethod
    def connect(cls, host='127.0.0.1', port=5432, user='postgres',
                database=None, password=None, params=None,
                unix_socket_dir=None, timeout=DEFAULT_TIMEOUT, version=PROTOCOL_3_0):
        """Open + startup + authenticate + wait for the first ReadyForQuery."""
        c = cls.open(host, port, unix_socket_dir, timeout)
        try:
            c.startup(user, database, password, params, version=version)
        except BaseException:
            c.close()
            raise
        return c

    def startup(self, user, database=None, password=None, params=None,
                timeout=None, version=PROTOCOL_3_0):
        sp = {'user': user, 'database': database or user}
        sp.update(params or {})
        self.send(m.startup(sp, version))
        deadline = self._deadline(timeout)
        scram = None
        while True:
            msg = self.read_msg(deadline=deadline)
            self.startup_msgs.append(msg)
            t = msg.type
            if t == 'R':
                code, rest = parse_auth(msg.body)
                if code == 0:
                    self.auth_method = self.auth_method or 'trust'
                elif code == 3:
                    self.auth_method = 'password'
                    self._need(password)
                    self.send(m.password(password))
                elif code == 5:
                    self.auth_method = 'md5'
                    self._need(password)
                    self.send(m.password(md5_password(user, password, rest[:4])))
                elif code == 10:
                    mechs = [x.decode() for x in rest.split(b'\0') if x]
                    if 'SCRAM-SHA-256' not in mechs:
                        raise PgWireError('no supported SASL mechanism in %r' % mechs)
                    self.auth_method = 'scram-sha-256'
                    self._need(password)
                    scram = ScramClient(password)
                    self.send(m.sasl_initial('SCRAM-SHA-256', scram.first_message()))
                elif code == 11:
                    self.send(m.password(scram.final_message(rest)))
                elif code == 12:
                    scram.verify_final(rest)
                else:
                    raise PgWireError('unsupported authentication request %d' % code)
            elif t == 'S':
                k, v = parse_parameter_status(msg.body)
                self.parameters[k] = v
            elif t == 'K':
                self.backend_pid, self.backend_key = parse_backend_key(msg.body)
            elif t == 'Z':
                self.status = parse_rfq(msg.body)
                return self
            elif t == 'E':
                raise ServerError(parse_error(msg.body), self.startup_msgs)
            elif t in ('N', 'v'):
                pass
            else:
                raise PgWireError('unexpected %r during startup' % msg)

    @staticmethod
    def _need(password):
        if password is None:
            raise PgWireError('server asks for a password and none was given')

    # -- sending ------------------------------------------------------------

    def send(self, *msgs):
        """Write all messages with ONE sendall (pipelining)."""
        data = b''.join(msgs)
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    send_raw = send

    def send_split(self, data, at, pause=1.5):
        """Send `data` in pieces cut at offset(s) `at` (int or list of ints),
        sleeping `pause` seconds between pieces."""
        if isinstance(at, int):
            at = [at]
        cuts = [0] + sorted(at) + [len(data)]
        for i in range(len(cuts) - 1):
            if i:
                time.sleep(pause)
            piece = data[cuts[i]:cuts[i + 1]]
            if piece:
                self.send(piece)

    # -- receiving ----------------------------------------------------------

    def _deadline(self, timeout):
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _fill(self, deadline):
        """Read more bytes into buf; raises ProtocolTimeout/ConnectionClosed."""
        if self.eof:
            raise ConnectionClosed('connection closed by peer')
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProtocolTimeout('timed out waiting for a message')
        r, _, _ = select.select([self.sock], [], [], remaining)
        if not r:
            raise ProtocolTimeout('timed out waiting for a message')
        try:
            chunk = self.sock.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError) as e:
            self.eof = True
            raise ConnectionClosed('connection reset: %s' % e)
        if not chunk:
            self.eof = True
            raise ConnectionClosed('connection closed by peer')
        self.buf += chunk

    def read_msg(self, timeout=None, deadline=None):
        """Next backend message as Msg(type, body).

        Raises ProtocolTimeout if no complete message arrives within `timeout`
        seconds (default: the connection timeout), ConnectionClosed on EOF.
        """
        if deadline is None:
            deadline = self._deadline(timeout)
        while len(self.buf) < 5:
            self._fill(deadline)
        (ln,) = struct.unpack_from('!i', self.buf, 1)
        if ln < 4:
            raise PgWireError('bad message length %d' % ln)
        while len(self.buf) < 1 + ln:
            self._fill(deadline)
        msg = Msg(chr(self.buf[0]), bytes(self.buf[5:1 + ln]))
        del self.buf[:1 + ln]
        if msg.type == 'Z':
            self.status = parse_rfq(msg.body)
        self.log.append(msg)
        return msg

    def read_byte(self, timeout=None):
        """One raw byte (answer to SSLRequest)."""
        deadline = self._deadline(timeout)
        while not self.buf:
            self._fill(deadline)
        b = bytes(self.buf[:1])
        del self.buf[:1]
        return b

    def read_until(self, pred, timeout=None):
        """Messages up to and including the first one for which pred(msg) is
        true; pred may also be a string of type characters."""
        if isinstance(pred, str):
            types = pred
            pred = lambda msg: msg.type in types          # noqa: E731
        deadline = self._deadline(timeout)
        out = []
        while True:
            try:
                msg = self.read_msg(deadline=deadline)
            except ProtocolTimeout as e:
                raise ProtocolTimeout('%s; got so far: %s' % (e, render_detail(out)),
                                      out)
            except ConnectionClosed as e:
                raise ConnectionClosed('%s; got so far: %s' % (e, render_detail(out)),
                                       out)
            out.append(msg)
            if pred(msg):
                return out

    def read_until_rfq(self, n=1, timeout=None):
        """Messages up to and including the n-th ReadyForQuery."""
        deadline = self._deadline(timeout)
        out = []
        for i in range(n):
            try:
                out += self.read_until('Z', timeout=max(0.0, deadline - time.monotonic()))
            except (ProtocolTimeout, ConnectionClosed) as e:
                out += e.received
                raise type(e)('%s while waiting for ReadyForQuery #%d of %d; got so far: %s'
                              % (str(e).split(';')[0], i + 1, n, render_detail(out)),
                              out) from None
        return out

    def read_n(self, n, timeout=None):
        deadline = self._deadline(timeout)
        return [self.read_msg(deadline=deadline) for _ in range(n)]

    def read_available(self, wait=0.3):
        """Every message that arrives within `wait` seconds of quiet (for
        checking that nothing more comes).  Stops at EOF."""
        out = []
        while True:
            try:
                out.append(self.read_msg(timeout=wait))
            except ProtocolTimeout:
                return out
            except ConnectionClosed:
                return out

    def expect_nothing(self, wait=0.3):
        """Assert no message arrives within `wait` seconds."""
        got = self.read_available(wait)
        if got:
            raise AssertionError('unexpected messages: %s' % render_detail(got))

    def raw_until_closed(self, timeout=None):
        """Every byte not read yet, until the peer closes (EOF or reset), unparsed: for
        checking a stream that may end inside a message (split_stream())."""
        deadline = self._deadline(timeout)
        out = bytes(self.buf)
        self.buf.clear()
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                data = b''
            except socket.timeout:
                raise ProtocolTimeout('connection still open after %d bytes' % len(out))
            if not data:
                self.eof = True
                return out
            out += data

    def wait_closed(self, timeout=None):
        """Read until EOF; return the messages read before it.  Raises
        ProtocolTimeout if the peer keeps the connection open."""
        deadline = self._deadline(timeout)
        out = []
        while True:
            try:
                out.append(self.read_msg(deadline=deadline))
            except ConnectionClosed:
                return out
            except ProtocolTimeout as e:
                raise ProtocolTimeout('%s (connection still open); got %s'
                                      % (e, render_detail(out)), out)

    def is_readable(self, wait=0.0):
        """True if data (or EOF) is already pending."""
        if self.buf:
            return True
        r, _, _ = select.select([self.sock], [], [], wait)
        return bool(r)

    # -- convenience ----------------------------------------------------------

    def simple(self, sql, timeout=None):
        """Run a simple Query, return its messages up to ReadyForQuery."""
        self.send(m.query(sql))
        return self.read_until_rfq(timeout=timeout)

    def query(self, sql, timeout=None):
        """Simple Query returning rows (lists of str/None) of the last result
        set; raises ServerError on ErrorResponse."""
        msgs = self.simple(sql, timeout)
        rows = []
        for msg in msgs:
            if msg.type == 'T':
                rows = []
            elif msg.type == 'D':
                rows.append(parse_data_row(msg.body))
        for msg in msgs:
            if msg.type == 'E':
                raise ServerError(parse_error(msg.body), msgs)
        return rows

    def scalar(self, sql, timeout=None):
        rows = self.query(sql, timeout)
        return rows[0][0] if rows else None

    def server_pid(self, timeout=None):
        """pg_backend_pid() of the server currently serving us."""
        return int(self.scalar('SELECT pg_backend_pid()', timeout))

    def close(self, terminate=False):
        """Close the socket (abruptly unless terminate=True)."""
        if self.closed:
            return
        self.closed = True
        try:
            if terminate:
                self.sock.settimeout(1.0)
                self.sock.sendall(m.terminate())
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
