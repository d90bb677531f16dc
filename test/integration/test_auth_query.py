"""auth_user / auth_query: users without an auth_file line are looked up in PostgreSQL's
pg_authid (auth_user=postgres, whose password is the only userlist line), then
challenged with md5 or SCRAM against the secret found; SCRAM secrets log in to the server by
pass-through. Also: "no such user", wrong passwords, per-database auth_user/auth_query/
auth_dbname, query errors, the auth server handed back clean, client_login_timeout while the
query waits, and SCRAM pass-through from an auth_file secret to a SCRAM-only server."""

import base64
import hashlib
import hmac
import os
import socket
import threading

import pytest

import harness
import pgwire

AUTH_USERLIST = ['"postgres" "postgrespass"']


def login(p, user, password=None, db="appdb", host="127.0.0.1"):
    """'<auth method>:<current_user>' after a successful login, else 'error: <message>'."""
    if password is None:
        password = harness.PASSWORDS.get(user, "some-password")
    try:
        c = pgwire.Conn.connect(host=host, port=p.port, user=user, database=db,
                                password=password)
    except pgwire.ServerError as e:
        return f"error: {e.message}"
    try:
        return f"{c.auth_method}:{c.scalar('SELECT current_user')}"
    finally:
        c.close(terminate=True)


def _auth_pooler(pooler, pgbouncer=None, databases=None, **kw):
    settings = {"auth_user": "postgres"}
    settings.update(pgbouncer or {})
    return pooler(pgbouncer=settings, databases=databases, userlist=AUTH_USERLIST, **kw)


def _pooler_backends(pg, user, db=None):
    """Backends of `user` opened over TCP (the pooler's; pg.sql itself uses the socket)."""
    q = ("SELECT datname, state, query FROM pg_stat_activity "
         "WHERE usename = %s AND client_addr IS NOT NULL")
    rows = pg.sql(q, (user,))
    return [r for r in rows if db is None or r[0] == db]


def test_md5_and_scram_users_from_pg_authid(pooler, pg):
    assert pg.secret("md5user").startswith("md5")
    assert pg.secret("scramuser").startswith("SCRAM-SHA-256$")
    p = _auth_pooler(pooler)
    # md5 secret: md5 challenge; SCRAM secret: auth_type md5 switches to SCRAM, and the
    # server login is SCRAM pass-through with the keys from the client's proof
    assert login(p, "md5user") == "md5:md5user"
    assert login(p, "scramuser") == "scram-sha-256:scramuser"
    assert login(p, "scramonly") == "scram-sha-256:scramonly"  # server accepts only SCRAM
    # psql too, twice (the second login reuses the auth server and the user's pool)
    for _ in range(2):
        for user in ("md5user", "scramuser", "scramonly"):
            rc, out, err = p.psql("-c", "SELECT current_user", user=user)
            assert (rc, out, err) == (0, f"{user}\n", ""), user
    # the auth_user's own login came from the userlist
    assert login(p, "postgres", "postgrespass") == "md5:postgres"


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: user= in the login failed line")
def test_no_such_user_and_wrong_passwords(pooler):
    p = _auth_pooler(pooler)
    assert login(p, "nosuchuser", "x") == "error: no such user"
    rc, out, err = p.psql("-c", "SELECT 1", user="nosuchuser", password="x")
    assert rc != 0 and "FATAL:  no such user" in err
    assert login(p, "md5user", "wrong") == "error: password authentication failed"
    assert login(p, "scramuser", "wrong") == "error: SASL authentication failed"
    assert login(p, "scramonly", "wrong") == "error: SASL authentication failed"
    p.wait_for_log(r"login failed: db=appdb user=nosuchuser")
    # still serving
    assert login(p, "md5user") == "md5:md5user"


def test_auth_server_handed_back_clean(pooler, pg):
    """The auth query runs on one server of the (appdb, postgres) pool, which goes back idle
    and is reused: many logins, one auth connection, and it still works as a normal server."""
    p = _auth_pooler(pooler, pgbouncer={"pool_mode": "transaction"})
    for _ in range(5):
        assert login(p, "md5user") == "md5:md5user"
        assert login(p, "scramuser") == "scram-sha-256:scramuser"
    auth = _pooler_backends(pg, "postgres", "appdb")
    assert len(auth) == 1, auth
    assert auth[0][1] == "idle", auth
    # the same pool serves the auth_user as an ordinary client afterwards
    with p.connect("postgres", password="postgrespass") as c:
        assert c.execute("SELECT current_user, 1").fetchone() == ("postgres", 1)
    assert len(_pooler_backends(pg, "postgres", "appdb")) == 1


def test_concurrent_logins_queue_for_the_auth_server(pooler):
    p = _auth_pooler(pooler, pgbouncer={"pool_mode": "transaction", "default_pool_size": "1"})
    users = ["md5user", "scramuser", "scramonly"] * 4
    results = [None] * len(users)

    def run(i, u):
        results[i] = login(p, u)

    threads = [threading.Thread(target=run, args=(i, u)) for i, u in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    method = {"md5user": "md5", "scramuser": "scram-sha-256", "scramonly": "scram-sha-256"}
    assert results == [f"{method[u]}:{u}" for u in users]


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: a [users] entry counts as a user without a password, so auth_query"
    " is never asked")
def test_users_section_without_userlist_entry(pooler):
    """A [users] entry does not make a userlist line: auth_query looks the user up."""
    p = _auth_pooler(pooler, users={"md5user": "pool_mode=session"})
    assert login(p, "md5user") == "md5:md5user"


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: auth_dbname")
def test_per_database_settings(pooler, pg):
    dbs = {
        # only this database has an auth_user
        "withauth": "host={pg_host} port={pg_port} dbname=appdb auth_user=postgres",
        # auth_dbname: the query runs on the postgres database's pool
        "viapg": "host={pg_host} port={pg_port} dbname=appdb auth_user=postgres "
                 "auth_dbname=postgres",
        # a NULL password: the user exists, no password works
        "nullpw": "host={pg_host} port={pg_port} dbname=appdb auth_user=postgres "
                  "auth_query='SELECT rolname, NULL FROM pg_authid WHERE rolname = $1'",
        # the query fails
        "badq": "host={pg_host} port={pg_port} dbname=appdb auth_user=postgres "
                "auth_query='SELECT nosuchcolumn FROM pg_authid WHERE rolname = $1'",
        # three columns
        "cols": "host={pg_host} port={pg_port} dbname=appdb auth_user=postgres "
                "auth_query='SELECT rolname, rolpassword, 1 FROM pg_authid WHERE rolname=$1'",
        # auth_dbname names no database
        "nodb": "host={pg_host} port={pg_port} dbname=appdb auth_user=postgres "
                "auth_dbname=nosuchdb",
    }
    p = pooler(databases=dict(dbs, **{"*": None}), userlist=AUTH_USERLIST)
    assert login(p, "md5user", db="withauth") == "md5:md5user"
    assert login(p, "scramuser", db="withauth") == "scram-sha-256:scramuser"
    # no auth_user for appdb: an unknown user gets mock authentication
    assert login(p, "md5user", db="appdb") == "error: password authentication failed"
    assert login(p, "md5user", db="viapg") == "md5:md5user"
    # the query ran on a server of the postgres database's pool
    assert "postgres" in {r[0] for r in _pooler_backends(pg, "postgres")}
    assert login(p, "md5user", db="nullpw") == "error: password authentication failed"
    assert login(p, "md5user", db="badq") == "error: bouncer config error"
    p.wait_for_log(r"closing because: error response from auth_query: column \"nosuchcolumn\" "
                   r"does not exist")
    assert login(p, "md5user", db="cols") == "error: bouncer config error"
    p.wait_for_log(r"expected 2 columns from auth_query, not 3")
    assert login(p, "md5user", db="nodb") == "error: bouncer config error"
    p.wait_for_log(r"authentication database \"nosuchdb\" is not configured")
    # the good ones still work
    assert login(p, "scramonly", db="viapg") == "scram-sha-256:scramonly"


def test_auth_query_with_hba(pooler):
    hba = "host all all 127.0.0.1/32 scram-sha-256\n"
    p = _auth_pooler(pooler, pgbouncer={"auth_type": "hba", "auth_hba_file": "{dir}/hba.conf"},
                     files={"hba.conf": hba})
    assert login(p, "scramuser") == "scram-sha-256:scramuser"
    # an md5 secret cannot answer SCRAM
    assert login(p, "md5user") == "error: SASL authentication failed"
    assert login(p, "nosuchuser", "x") == "error: no such user"


@pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: auth_dbname")
def test_client_login_timeout_while_auth_server_hangs(pooler):
    """The auth database's server never answers the startup packet: the client waits in the
    auth pool and gets client_login_timeout."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(lsock.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        port = lsock.getsockname()[1]
        dbs = {"silent": f"host=127.0.0.1 port={port} dbname=x",
               "slowauth": "host={pg_host} port={pg_port} dbname=appdb auth_dbname=silent"}
        p = _auth_pooler(pooler, pgbouncer={"client_login_timeout": "1"}, databases=dbs)
        assert login(p, "md5user", db="slowauth") == "error: client_login_timeout"
        # users from the userlist are not affected
        assert login(p, "postgres", "postgrespass", db="slowauth") == "md5:postgres"
    finally:
        stop.set()
        t.join(5)
        for s in held:
            s.close()
        lsock.close()


# --- SCRAM pass-through from an auth_file secret (no auth_query) ---------------------------

def _scram_secret(password, salt, iterations=4096):
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def test_scram_passthrough_from_userlist_secret(pooler, pg):
    """scramonly: PostgreSQL accepts only SCRAM for it. The userlist holds its SCRAM secret
    copied from pg_authid; the client logs in with the password, sluice logs in to the server
    with the keys recovered from the client's proof."""
    secret = pg.secret("scramonly")
    p = pooler(userlist=[f'"scramonly" "{secret}"'])
    assert login(p, "scramonly") == "scram-sha-256:scramonly"
    rc, out, err = p.psql("-c", "SELECT current_user", user="scramonly")
    assert (rc, out, err) == (0, "scramonly\n", "")
    assert len(_pooler_backends(pg, "scramonly")) >= 1


def test_scram_passthrough_needs_the_servers_secret(pooler, pg):
    """Same password, other salt: the client's proof checks out against the userlist, but the
    recovered keys do not fit the server's secret, so the server refuses the login."""
    other = _scram_secret("scramonlypass", os.urandom(16))
    assert other != pg.secret("scramonly")
    p = pooler(userlist=[f'"scramonly" "{other}"'])
    res = login(p, "scramonly")
    assert res.startswith("error: ") and "password authentication failed" in res, res
