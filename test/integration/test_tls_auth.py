"""Client authentication that depends on TLS: hba `hostssl` / `hostnossl` lines, `cert` lines
(with and without an ident map) and `auth_type = cert`.

Certificates come from test/lib/tlsutil.py: besides the standard set (CA, server certificate,
client.crt with CN=md5user) this module makes client certificates with CN=scramuser,
CN=nosuchuser and CN=app-client (signed by the test CA) and one with CN=md5user signed by an
unrelated CA. Clients are psycopg (libpq) with sslmode=require (TLS) or sslmode=disable (plain),
never prefer: libpq's prefer retries in clear after a FATAL over TLS, which would hide which
path refused. Cert logins are given a wrong password: none may be asked for.

Failures are PgBouncer's texts (doc/auth.md): `certificate authentication failed` for every
cert failure (the reason is only logged), `login rejected` for the final reject line. With
client_tls_sslmode=verify-full a client without a certificate, or with one from another CA,
does not get past the TLS handshake at all.
"""

import re
import shutil

import psycopg
import pytest

import harness
import tlsutil


pytestmark = [
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed"),
]

CERT_FAILED = "error: certificate authentication failed"
REJECTED = "error: login rejected"
NOT_ASKED = "wrong-password-never-asked"  # the password given for cert logins


@pytest.fixture(scope="module")
def certs():
    c = tlsutil.make_certs("sluice-tls-auth-", clients={
        "md5user": ("ca", "md5user"),
        "scramuser": ("ca", "scramuser"),
        "nosuchuser": ("ca", "nosuchuser"),
        "app": ("ca", "app-client"),
        "foreign": ("other-ca", "md5user"),
    })
    yield c
    tlsutil.remove_certs(c)


# Pooler database names, all served by PostgreSQL database appdb.
HBA = """\
# TYPE     DATABASE      USER  ADDRESS        METHOD
hostssl    db_ssl        all   127.0.0.1/32   md5
hostnossl  db_nossl      all   127.0.0.1/32   md5
hostssl    db_cert       all   127.0.0.1/32   cert
# a cert line that a plain connection reaches
host       db_plaincert  all   127.0.0.1/32   cert
host       all           all   0.0.0.0/0      reject
"""

# with a cert line through an ident map (auth_ident_file: PgBouncer 1.21 and later)
HBA_MAPS = HBA.replace("# a cert line that a plain",
                       "hostssl    db_certmap    all   127.0.0.1/32   cert map=certmap\n"
                       "# a cert line that a plain", 1)

IDENT = """\
# MAPNAME  SYSTEM-USERNAME  PG-USERNAME
certmap    app-client       md5user
certmap    nosuchuser       all
"""

DATABASES = ("db_ssl", "db_nossl", "db_cert", "db_certmap", "db_plaincert")


def _start(pooler, certs, hba=HBA, **settings):
    pgb = {"client_tls_sslmode": "prefer", "client_tls_cert_file": "{dir}/server.crt",
           "client_tls_key_file": "{dir}/server.key", "client_tls_ca_file": "{dir}/ca.crt",
           "server_tls_sslmode": "disable", "auth_type": "hba",
           "auth_hba_file": "{dir}/hba.conf"}
    if "map=" in hba:  # only then, so that the other tests run against PgBouncer 1.18 too
        pgb["auth_ident_file"] = "{dir}/ident.conf"
    pgb.update(settings)
    files = tlsutil.pooler_files(certs)
    files.update({"hba.conf": hba, "ident.conf": IDENT})
    dbs = {name: "host={pg_host} port={pg_port} dbname=appdb" for name in DATABASES}
    return pooler(pgbouncer=pgb, databases=dbs, files=files)


def login(p, certs, db, user, tls, cert=None, password=None):
    """'<current_user> tls|plain' after a successful login; 'error: <FATAL message>' when the
    pooler refused; 'tls error: <libpq message>' when the TLS handshake failed."""
    if cert:
        crt, key = certs.client(cert)
    else:
        crt, key = "/nonexistent/client.crt", "/nonexistent/client.key"
    if password is None:
        password = harness.PASSWORDS.get(user, "some-password")
    try:
        c = psycopg.connect(host="127.0.0.1", port=p.port, user=user, dbname=db,
                            password=password, sslmode="require" if tls else "disable",
                            sslcert=crt, sslkey=key, connect_timeout=15, autocommit=True)
    except psycopg.OperationalError as e:
        text = str(e)
        m_ = re.search(r"FATAL:\s+(.*)$", text, re.M)
        if m_:
            return f"error: {m_.group(1).strip()}"
        return f"tls error: {text.strip()}"
    try:
        who = c.execute("SELECT current_user").fetchone()[0]
        return f"{who} {'tls' if c.pgconn.ssl_in_use else 'plain'}"
    finally:
        c.close()


def test_hostssl_and_hostnossl(pooler, certs):
    """client_tls_sslmode=prefer: TLS and plain clients both get in, each only through the
    line of its kind; the other one falls through to the final reject."""
    p = _start(pooler, certs)
    cases = [
        # (database, user, tls, password or None for the right one, expected)
        ("db_ssl", "md5user", True, None, "md5user tls"),
        ("db_ssl", "scramuser", True, None, "scramuser tls"),
        ("db_ssl", "md5user", True, "wrong", "error: password authentication failed"),
        ("db_ssl", "md5user", False, None, REJECTED),
        ("db_nossl", "md5user", False, None, "md5user plain"),
        ("db_nossl", "md5user", False, "wrong", "error: password authentication failed"),
        ("db_nossl", "md5user", True, None, REJECTED),
    ]
    got = [(db, u, tls, login(p, certs, db, u, tls, password=pw)) for db, u, tls, pw, _ in cases]
    assert got == [(db, u, tls, exp) for db, u, tls, _, exp in cases]
    # the pooler saw what the client saw
    log = p.log_text()
    assert re.search(r"login attempt: db=db_ssl user=md5user tls=TLSv1\.3/", log), log
    assert re.search(r"login attempt: db=db_nossl user=md5user tls=no\b", log), log


def test_hba_cert_line(pooler, certs):
    """A `hostssl ... cert` line under client_tls_sslmode=prefer with client_tls_ca_file: the
    certificate is optional in the handshake, the cert line insists on it."""
    p = _start(pooler, certs)
    cases = [
        # (database, user, tls, client certificate, expected)
        ("db_cert", "md5user", True, "md5user", "md5user tls"),
        ("db_cert", "scramuser", True, "scramuser", "scramuser tls"),
        # the certificate names someone else
        ("db_cert", "scramuser", True, "md5user", CERT_FAILED),
        ("db_cert", "md5user", True, "app", CERT_FAILED),
        # CN = user name, but no such user in auth_file
        ("db_cert", "nosuchuser", True, "nosuchuser", CERT_FAILED),
        # TLS without a certificate
        ("db_cert", "md5user", True, None, CERT_FAILED),
        # plain: a hostssl line never matches
        ("db_cert", "md5user", False, None, REJECTED),
        # plain, reaching a `host ... cert` line
        ("db_plaincert", "md5user", False, None, CERT_FAILED),
        ("db_plaincert", "md5user", True, "md5user", "md5user tls"),
    ]
    got = [(db, u, tls, cert, login(p, certs, db, u, tls, cert, NOT_ASKED))
           for db, u, tls, cert, _ in cases]
    assert got == [(db, u, tls, cert, exp) for db, u, tls, cert, exp in cases]
    # why each was refused is only in the log
    log = p.log_text()
    for why in ("TLS certificate name mismatch", "no such user",
                "TLS client certificate required", "TLS connection required"):
        assert why in log, why
    # a certificate from an unrelated CA fails the handshake even though it is optional
    r = login(p, certs, "db_cert", "md5user", True, "foreign", NOT_ASKED)
    assert r.startswith("tls error:") and "unknown ca" in r, r


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: auth_ident_file")
def test_hba_cert_line_with_ident_map(pooler, certs):
    """`cert map=certmap`: the CN goes through auth_ident_file (certmap: app-client ->
    md5user, nosuchuser -> all); with a map the CN itself is no longer compared to the user."""
    p = _start(pooler, certs, hba=HBA_MAPS)
    cases = [
        ("md5user", "app", "md5user tls"),        # mapped to another database user
        ("scramuser", "app", CERT_FAILED),        # app-client maps to md5user only
        ("md5user", "md5user", CERT_FAILED),      # CN = user, but the map has no such line
        ("scramuser", "nosuchuser", "scramuser tls"),  # `all`
        ("md5user", "nosuchuser", "md5user tls"),
        ("md5user", None, CERT_FAILED),
    ]
    got = [(u, cert, login(p, certs, "db_certmap", u, True, cert, NOT_ASKED))
           for u, cert, _ in cases]
    assert got == [(u, cert, exp) for u, cert, exp in cases]
    assert "ident map does not have a match" in p.log_text()
    # the server connection logs in as the mapped user, with its own credentials
    c = psycopg.connect(host="127.0.0.1", port=p.port, user="md5user", dbname="db_certmap",
                        password=NOT_ASKED, sslmode="require", sslcert=certs.client("app")[0],
                        sslkey=certs.client("app")[1], connect_timeout=15, autocommit=True)
    with c:
        assert c.execute("SELECT current_user, session_user").fetchone() == ("md5user",
                                                                              "md5user")


@pytest.mark.parametrize("auth_type", ["cert", "hba"])
def test_verify_full_cert_login(pooler, certs, auth_type):
    """auth_type=cert, and auth_type=hba with a cert line, under client_tls_sslmode=verify-full:
    a certificate is required in the handshake and its CN must be the user name."""
    hba = "hostssl all all 127.0.0.1/32 cert\nhost all all 0.0.0.0/0 reject\n"
    p = _start(pooler, certs, hba=hba, client_tls_sslmode="verify-full", auth_type=auth_type)
    cases = [
        ("md5user", "md5user", "md5user tls"),
        ("scramuser", "scramuser", "scramuser tls"),
        ("scramuser", "md5user", CERT_FAILED),
        ("md5user", "app", CERT_FAILED),
        ("nosuchuser", "nosuchuser", CERT_FAILED),
    ]
    got = [(u, cert, login(p, certs, "db_ssl", u, True, cert, NOT_ASKED)) for u, cert, _ in cases]
    assert got == [(u, cert, exp) for u, cert, exp in cases]
    # no certificate: the handshake fails (TLS 1.3 "certificate required" alert)
    r = login(p, certs, "db_ssl", "md5user", True, None, NOT_ASKED)
    assert r.startswith("tls error:") and "certificate required" in r, r
    # a certificate from another CA
    r = login(p, certs, "db_ssl", "md5user", True, "foreign", NOT_ASKED)
    assert r.startswith("tls error:") and "unknown ca" in r, r
    # plain: refused before authentication
    assert login(p, certs, "db_ssl", "md5user", False) == "error: SSL required"
    # PgBouncer's line, without a connection prefix
    p.wait_for_log(r"\[\d+\] WARNING TLS handshake error: .*(peer did not return a certificate|"
                   r"certificate verify failed)")
    # psql, the usual way: PGSSLCERT / PGSSLKEY
    crt, key = certs.client("md5user")
    assert p.psql("-c", "SELECT current_user", password=NOT_ASKED, dbname="db_ssl",
                  env=tlsutil.ssl_env("verify-full", root=certs.ca, PGSSLCERT=crt,
                                      PGSSLKEY=key)) == (0, "md5user\n", "")
    rc, out, err = p.psql("-c", "SELECT 1", user="scramuser", password=NOT_ASKED,
                          dbname="db_ssl", env=tlsutil.ssl_env(PGSSLCERT=crt, PGSSLKEY=key))
    assert rc != 0 and tlsutil.fatal(err) == "certificate authentication failed", err
