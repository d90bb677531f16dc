"""TLS on both sides of the pooler.

Certificates are made with the `openssl` command in a temp dir (test/lib/tlsutil.py: a CA, a
server certificate for localhost/127.0.0.1 with subjectAltName, a client certificate with
CN=md5user, and an unrelated "other" CA). A second scratch PostgreSQL cluster (TlsPgCluster,
module scope) has ssl=on and hostssl-only pg_hba lines; database `postgres` additionally wants
a client certificate from md5user (clientcert=verify-full), to test server_tls_cert_file.

Clients: psql with sslmode=require / verify-full (libpq 15 here: no sslnegotiation=direct, so
direct TLS is spoken with Python's ssl module), raw sockets for the buffer-stuffing defence,
and pgbench -c 32 over TLS in transaction mode.
"""

import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import time

import psycopg
import pytest

import harness
import tlsutil
from pgwire import PROTOCOL_3_0, m, md5_password, parse_auth, parse_error
from tlsutil import Certs

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


# ---------------------------------------------------------------------------
# certificates (test/lib/tlsutil.py)


@pytest.fixture(scope="module")
def certs():
    c = tlsutil.make_certs()
    yield c
    tlsutil.remove_certs(c)


# ---------------------------------------------------------------------------
# a PostgreSQL that insists on TLS


class TlsPgCluster(harness.PgCluster):
    """harness.PgCluster with ssl=on and hostssl-only access from TCP."""

    def __init__(self, c: Certs):
        self._certs = c
        super().__init__(max_connections=100)

    def _initdb(self, max_connections):
        super()._initdb(max_connections)
        for src, dst in ((self._certs.server_crt, "server.crt"),
                         (self._certs.server_key, "server.key"), (self._certs.ca, "root.crt")):
            path = os.path.join(self.datadir, dst)
            shutil.copyfile(src, path)
            os.chmod(path, 0o600)
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                    "ssl_ca_file = 'root.crt'\n")
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "hostssl postgres md5user 127.0.0.1/32 md5 clientcert=verify-full\n"
                    "hostssl all all 127.0.0.1/32 md5\n"
                    "host all all 127.0.0.1/32 reject\n")
        harness.chown_postgres(self.dir)


@pytest.fixture(scope="module")
def tlspg(certs):
    c = TlsPgCluster(certs)
    yield c
    c.stop()


# ---------------------------------------------------------------------------
# helpers


_pooler_files = tlsutil.pooler_files


def _tls_pooler(pooler, c: Certs, target=None, databases=None, **settings):
    """A pooler with client TLS (sslmode require unless overridden); `target` = the cluster
    its databases point to (default: the session's plain cluster)."""
    pgb = {"client_tls_sslmode": "require", "client_tls_cert_file": "{dir}/server.crt",
           "client_tls_key_file": "{dir}/server.key", "client_tls_ca_file": "{dir}/ca.crt",
           "server_tls_sslmode": "disable"}
    pgb.update(settings)
    if target is not None:
        dbs = {k: f"host=127.0.0.1 port={target.port}" for k in ("postgres", "appdb", "*")}
    else:
        dbs = {}
    dbs.update(databases or {})
    return pooler(pgbouncer=pgb, databases=dbs, files=_pooler_files(c))


_ssl_env = tlsutil.ssl_env
_fatal = tlsutil.fatal


def _recv_exact(sock, n, deadline):
    out = b""
    while len(out) < n:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def _read_msg(sock, timeout=10):
    deadline = time.monotonic() + timeout
    hdr = _recv_exact(sock, 5, deadline)
    t, n = hdr[:1].decode(), struct.unpack("!i", hdr[1:])[0]
    return t, _recv_exact(sock, n - 4, deadline)


def _login(sock, user="md5user", password="md5pass", database="appdb"):
    """Startup + md5/SCRAM-less login on an already (TLS-)connected socket; returns the
    messages up to ReadyForQuery, or raises with the ErrorResponse message."""
    sock.sendall(m.startup({"user": user, "database": database}))
    msgs = []
    while True:
        t, body = _read_msg(sock)
        msgs.append(t)
        if t == "R":
            code, rest = parse_auth(body)
            if code == 5:
                sock.sendall(m.password(md5_password(user, password, rest[:4])))
            elif code != 0:
                raise AssertionError(f"unexpected auth request {code}")
        elif t == "E":
            raise PermissionError(parse_error(body).get("M"))
        elif t == "Z":
            return msgs


def _query_one(sock, sql):
    sock.sendall(m.query(sql))
    value = None
    while True:
        t, body = _read_msg(sock)
        if t == "D":
            n = struct.unpack("!i", body[2:6])[0]
            value = body[6:6 + n].decode()
        elif t == "E":
            raise AssertionError(parse_error(body).get("M"))
        elif t == "Z":
            return value


def _direct_tls(port, c: Certs, alpn=("postgresql",)):
    ctx = ssl.create_default_context(cafile=c.ca)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


# ---------------------------------------------------------------------------
# client side


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: replication= and ECDH= in the login attempt line")
def test_require_and_verify_full_to_tls_server(pooler, tlspg, certs):
    """psql -> sluice -> PostgreSQL, TLS on both legs; PostgreSQL sees an SSL connection."""
    p = _tls_pooler(pooler, certs, target=tlspg, server_tls_sslmode="require")
    q = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    rc, out, err = p.psql("-c", q, env=_ssl_env("require"))
    assert (rc, out, err) == (0, "t\n", "")
    rc, out, err = p.psql("-c", q, env=_ssl_env("verify-full", root=certs.ca))
    assert (rc, out, err) == (0, "t\n", "")
    log = p.log_text()
    assert re.search(r"login attempt: db=appdb user=md5user "
                     r"tls=TLSv1\.3/TLS_[A-Z0-9_]+/ECDH=\w+ replication=no", log), log
    assert re.search(r"S-0x[0-9a-f]+: appdb/md5user@127\.0\.0\.1:\d+ SSL established: "
                     r"TLSv1\.3/", log), log


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: replication= in the login attempt line")
def test_plain_startup_refused_when_required(pooler, certs):
    p = _tls_pooler(pooler, certs)
    rc, out, err = p.psql("-c", "SELECT 1", env=_ssl_env("disable"))
    assert rc != 0 and _fatal(err) == "SSL required", err
    # prefer: the plain fallback is allowed
    p2 = _tls_pooler(pooler, certs, client_tls_sslmode="prefer")
    assert p2.psql("-c", "SELECT 1", env=_ssl_env("disable")) == (0, "1\n", "")
    assert p2.psql("-c", "SELECT 1", env=_ssl_env("require")) == (0, "1\n", "")
    assert re.search(r"tls=no replication=no", p2.log_text())
    assert re.search(r"tls=TLSv1\.3/", p2.log_text())


def test_unix_socket_never_tls(pooler, certs):
    """client_tls_sslmode=require does not apply to the unix socket."""
    p = _tls_pooler(pooler, certs)
    e = dict(os.environ, PGPASSWORD="md5pass", PGSSLMODE="disable")
    r = subprocess.run([harness.pg_tool("psql"), "-X", "-At", "-h", p.dir, "-p", str(p.port),
                        "-U", "md5user", "-d", "appdb", "-c", "SELECT 1"],
                       capture_output=True, text=True, timeout=60, env=e,
                       stdin=subprocess.DEVNULL)
    assert (r.returncode, r.stdout, r.stderr) == (0, "1\n", "")


def test_wrong_ca_refused(pooler, certs):
    p = _tls_pooler(pooler, certs)
    rc, out, err = p.psql("-c", "SELECT 1", env=_ssl_env("verify-full", root=certs.other_ca))
    assert rc != 0 and "certificate verify failed" in err, err
    # the pooler keeps serving
    assert p.psql("-c", "SELECT 1", env=_ssl_env("verify-full", root=certs.ca)) == (0, "1\n", "")


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: replication= in the login attempt line")
def test_tls12_only_refuses_tls13_client_and_vice_versa(pooler, certs):
    p = _tls_pooler(pooler, certs, client_tls_protocols="tlsv1.2")
    rc, out, err = p.psql("-c", "SELECT 1",
                          env=_ssl_env(PGSSLMINPROTOCOLVERSION="TLSv1.3"))
    assert rc != 0 and re.search(r"SSL error|protocol version|alert", err, re.I), err
    assert p.psql("-c", "SELECT 1", env=_ssl_env()) == (0, "1\n", "")
    assert re.search(r"tls=TLSv1\.2/\S+ replication=no", p.log_text())

    p13 = _tls_pooler(pooler, certs, client_tls_protocols="tlsv1.3")
    rc, out, err = p13.psql("-c", "SELECT 1",
                            env=_ssl_env(PGSSLMAXPROTOCOLVERSION="TLSv1.2"))
    assert rc != 0 and re.search(r"SSL error|protocol version|alert", err, re.I), err
    assert p13.psql("-c", "SELECT 1", env=_ssl_env()) == (0, "1\n", "")


def test_client_certificate_required_by_verify_full(pooler, certs):
    p = _tls_pooler(pooler, certs, client_tls_sslmode="verify-full")
    rc, out, err = p.psql("-c", "SELECT 1", env=_ssl_env())
    assert rc != 0, err
    env = _ssl_env(PGSSLCERT=certs.client_crt, PGSSLKEY=certs.client_key)
    assert p.psql("-c", "SELECT 1", env=env) == (0, "1\n", "")


def test_unencrypted_bytes_after_ssl_request_refused(pooler, certs):
    """SSLRequest and a startup packet in one write: the startup bytes were not encrypted
    and could be a man in the middle's. sluice answers FATAL and closes."""
    p = _tls_pooler(pooler, certs, client_tls_sslmode="prefer")
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(m.ssl_request() + m.startup({"user": "md5user", "database": "appdb"}))
    data = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    assert not data.startswith(b"S"), data
    if data:
        assert data[:1] == b"E", data
        assert parse_error(data[5:]).get("M") == "received unencrypted data after SSL request"
    p.wait_for_log(r"received unencrypted data after SSL request")


def test_gssenc_request_gets_n(pooler, certs):
    p = _tls_pooler(pooler, certs, client_tls_sslmode="prefer")
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(struct.pack("!ii", 8, 80877104))
    assert s.recv(1) == b"N"
    # then SSLRequest on the same connection is still welcome
    s.sendall(m.ssl_request())
    assert s.recv(1) == b"S"
    ctx = ssl.create_default_context(cafile=certs.ca)
    t = ctx.wrap_socket(s, server_hostname="localhost")
    assert _login(t)[-1] == "Z"
    assert _query_one(t, "SELECT 40 + 2") == "42"
    t.close()


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: direct TLS (sslnegotiation=direct)")
def test_direct_tls(pooler, certs):
    """PostgreSQL 17 direct TLS: a ClientHello with ALPN "postgresql" as the first bytes."""
    p = _tls_pooler(pooler, certs)
    t = _direct_tls(p.port, certs)
    assert t.selected_alpn_protocol() == "postgresql"
    _login(t)
    assert _query_one(t, "SELECT 'direct'") == "direct"
    t.sendall(m.terminate())
    t.close()
    assert re.search(r"login attempt: db=appdb user=md5user tls=TLSv1\.3/", p.log_text())


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: direct TLS (sslnegotiation=direct)")
def test_direct_tls_needs_alpn(pooler, certs):
    p = _tls_pooler(pooler, certs)
    # no ALPN at all: the handshake completes, then a FATAL over TLS
    t = _direct_tls(p.port, certs, alpn=None)
    with pytest.raises(PermissionError, match="without ALPN"):
        _login(t)
    t.close()
    # a different protocol: refused in the handshake (no_application_protocol)
    with pytest.raises(ssl.SSLError):
        _direct_tls(p.port, certs, alpn=("http/1.1",))
    # direct TLS to a pooler without client TLS: a bad startup packet, nothing else
    p2 = pooler()
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _direct_tls(p2.port, certs)
    assert p2.psql("-c", "SELECT 1") == (0, "1\n", "")


def test_big_rows_both_directions_over_tls(pooler, tlspg, certs):
    """Multi-megabyte messages through TLS on both legs (partial SSL_writes, full buffers)."""
    p = _tls_pooler(pooler, certs, target=tlspg, server_tls_sslmode="require")
    big = "x" * 3_000_000
    rc, out, err = p.psql(input=f"SELECT length('{big}');\n"
                                "SELECT length(repeat('y', 20000000));\n"
                                "SELECT md5(string_agg(g::text, ',')) FROM "
                                "generate_series(1, 300000) g;\n",
                          env=_ssl_env())
    assert rc == 0, err
    want = tlspg.sql("SELECT md5(string_agg(g::text, ',')) FROM generate_series(1, 300000) g")
    assert out.split("\n")[:3] == ["3000000", "20000000", want[0][0]]
    rc, out, err = p.psql("-c", "SELECT repeat('z', 8000000)", env=_ssl_env())
    assert rc == 0 and len(out) == 8000001, err


# ---------------------------------------------------------------------------
# server side


def test_server_verify_full(pooler, tlspg, certs):
    for host in ("127.0.0.1", "localhost"):
        p = _tls_pooler(pooler, certs, client_tls_sslmode="disable",
                        server_tls_sslmode="verify-full", server_tls_ca_file="{dir}/ca.crt",
                        databases={"appdb": f"host={host} port={tlspg.port}"})
        rc, out, err = p.psql("-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                              env=_ssl_env("disable"))
        assert (rc, out, err) == (0, "t\n", ""), host


def _cached_login_error(p):
    """A failed TLS setup towards the server is a connect-type failure: like PgBouncer, the
    pool remembers it and the next client gets it (the first one times out)."""
    rc, out, err = p.psql("-c", "SELECT 1", env=_ssl_env("disable"))
    assert rc != 0, err
    rc, out, err = p.psql("-c", "SELECT 1", env=_ssl_env("disable"))
    assert rc != 0, err
    m_ = re.search(r"server login has been failing, cached error: (.*) \(server_login_retry\)",
                   err)
    assert m_, err
    return m_.group(1)


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: a failed server TLS setup handed to the next client as the "
    "cached login error")
def test_server_wrong_ca_fails_login(pooler, tlspg, certs):
    p = _tls_pooler(pooler, certs, client_tls_sslmode="disable",
                    server_tls_sslmode="verify-ca", server_tls_ca_file="{dir}/other-ca.crt",
                    client_login_timeout=2,
                    databases={"appdb": f"host=127.0.0.1 port={tlspg.port}"})
    assert _cached_login_error(p).startswith("TLS handshake failed: certificate verify failed")
    p.wait_for_log(r"TLS handshake error: certificate verify failed")


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: a failed server TLS setup handed to the next client as the "
    "cached login error")
def test_server_require_refused_by_plain_server(pooler, pg, certs):
    """The session's scratch cluster has ssl=off: it answers 'N' to our SSLRequest."""
    p = _tls_pooler(pooler, certs, client_tls_sslmode="disable", server_tls_sslmode="require",
                    client_login_timeout=2)
    assert _cached_login_error(p) == "server refused SSL"
    # prefer goes on in clear
    p2 = _tls_pooler(pooler, certs, client_tls_sslmode="disable", server_tls_sslmode="prefer")
    assert p2.psql("-c", "SELECT 1", env=_ssl_env("disable")) == (0, "1\n", "")


def test_server_client_certificate(pooler, tlspg, certs):
    """pg_hba wants a client certificate (CN=md5user) for database postgres."""
    dbs = {"postgres": f"host=127.0.0.1 port={tlspg.port}"}
    p = _tls_pooler(pooler, certs, client_tls_sslmode="disable", server_tls_sslmode="require",
                    databases=dbs)
    rc, out, err = p.psql("-c", "SELECT 1", dbname="postgres", env=_ssl_env("disable"))
    assert rc != 0 and "certificate" in err, err
    p2 = _tls_pooler(pooler, certs, client_tls_sslmode="disable", server_tls_sslmode="require",
                     server_tls_cert_file="{dir}/client.crt",
                     server_tls_key_file="{dir}/client.key", databases=dbs)
    assert p2.psql("-c", "SELECT current_user", dbname="postgres",
                   env=_ssl_env("disable")) == (0, "md5user\n", "")


# ---------------------------------------------------------------------------
# config


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: the later TLS error texts (invalid client_tls_key_file: ...)")
def test_bad_tls_config_is_fatal_at_startup(pooler, certs):
    p = pooler(pgbouncer={"client_tls_sslmode": "require",
                          "client_tls_cert_file": "{dir}/server.crt"},
               files=_pooler_files(certs), start=False)
    p.expect_exit = True
    with pytest.raises(harness.PoolerError):
        p.start()
    assert "client_tls_key_file and client_tls_cert_file must be set" in p.full_log()

    p = pooler(pgbouncer={"client_tls_sslmode": "require",
                          "client_tls_cert_file": "{dir}/server.crt",
                          "client_tls_key_file": "{dir}/missing.key"},
               files=_pooler_files(certs), start=False)
    p.expect_exit = True
    with pytest.raises(harness.PoolerError):
        p.start()
    assert re.search(r"invalid client_tls_key_file: .*missing\.key", p.full_log()), p.full_log()

    p = pooler(pgbouncer={"server_tls_protocols": "tlsv9"}, start=False)
    p.expect_exit = True
    with pytest.raises(harness.PoolerError):
        p.start()
    assert "invalid server_tls_protocols: tlsv9" in p.full_log()


def test_reload_keeps_connections_and_old_context_on_error(pooler, certs):
    p = _tls_pooler(pooler, certs)
    c = p.connect("md5user", sslmode="require")
    assert c.execute("SELECT 1").fetchone() == (1,)
    mark = p.log_mark()
    # bad new TLS settings: logged, old contexts kept
    ini = p.ini_text
    assert "client_tls_sslmode = require\n" in ini
    p.write_ini(ini.replace("client_tls_sslmode = require\n",
                            "client_tls_sslmode = require\nclient_tls_ciphers = NO-SUCH-CIPHER\n"))
    p.reload()
    # PgBouncer's two lines: the reason, then the one log collectors match
    p.wait_for_log(r"ERROR invalid client_tls_ciphers: NO-SUCH-CIPHER\n.*ERROR TLS configuration "
                   r"could not be reloaded, keeping old configuration\n", since=mark)
    assert c.execute("SELECT 2").fetchone() == (2,)
    assert p.psql("-c", "SELECT 3", env=_ssl_env()) == (0, "3\n", "")
    # a new certificate (same settings, new file content) is picked up
    mark = p.log_mark()
    p.write_ini(ini)
    p.write_file("server.crt", certs.text(certs.other_crt))
    p.write_file("server.key", certs.text(certs.other_key))
    p.reload()
    p.wait_for_log(r"got SIGHUP, re-reading config", since=mark)
    rc, out, err = p.psql("-c", "SELECT 4", env=_ssl_env("verify-full", root=certs.ca))
    assert rc != 0 and "certificate verify failed" in err, err
    assert p.psql("-c", "SELECT 5",
                  env=_ssl_env("verify-full", root=certs.other_ca)) == (0, "5\n", "")
    assert c.execute("SELECT 6").fetchone() == (6,)  # the old session never noticed
    c.close()


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: RELOAD answering an error when the TLS settings fail")
def test_console_reload_reports_bad_tls_settings(pooler, certs):
    """The console's RELOAD fails when the new TLS settings do, with PgBouncer's lines (and
    not its "RELOAD Failed" line, which is for a config that does not load); the rest of the
    new config is in force."""
    p = _tls_pooler(pooler, certs)
    mark = p.log_mark()
    p.write_ini(p.ini_text.replace("client_tls_sslmode = require\n",
                                   "client_tls_sslmode = require\nclient_tls_ciphers = NO-SUCH\n"
                                   "query_wait_timeout = 77\n"))
    with pytest.raises(psycopg.Error) as e:
        p.admin("RELOAD")
    assert (e.value.diag.sqlstate, e.value.diag.message_primary) == (
        "F0000", "RELOAD failed, see logs for additional details")
    p.wait_for_log(r"ERROR invalid client_tls_ciphers: NO-SUCH\n.*ERROR TLS configuration could "
                   r"not be reloaded, keeping old configuration\n", since=mark)
    assert "RELOAD Failed" not in p.log_text()[mark:]
    assert {r["key"]: r["value"] for r in p.show("CONFIG")}["query_wait_timeout"] == "77"
    assert p.psql("-c", "SELECT 1", env=_ssl_env()) == (0, "1\n", "")


# ---------------------------------------------------------------------------
# load


def test_pgbench_over_tls_transaction_mode(pooler, tlspg, certs):
    env = dict(os.environ, PGPASSWORD="md5pass", PGSSLMODE="require", PGCONNECT_TIMEOUT="15")
    env.pop("PGPASSFILE", None)
    base = [harness.pg_tool("pgbench"), "-h", "127.0.0.1", "-U", "md5user"]
    init = subprocess.run(base + ["-p", str(tlspg.port), "-i", "-q", "-s", "1", "appdb"],
                          capture_output=True, text=True, timeout=180, env=env,
                          stdin=subprocess.DEVNULL)
    assert init.returncode == 0, init.stderr
    p = _tls_pooler(pooler, certs, target=tlspg, server_tls_sslmode="require",
                    pool_mode="transaction", default_pool_size=10, max_client_conn=100)
    r = subprocess.run(base + ["-p", str(p.port), "-c", "32", "-j", "4", "-T", "10", "-n",
                               "appdb"],
                       capture_output=True, text=True, timeout=120, env=env,
                       stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    assert processed and int(processed.group(1)) > 0, out
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert failed and int(failed.group(1)) == 0, out
    assert "error" not in r.stderr.lower(), r.stderr
