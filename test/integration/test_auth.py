"""Client authentication through the pooler: psql SELECT 1 per auth_type, and the
PgBouncer error texts for refused logins."""

import re

import socket

import psycopg
import pytest

import harness
import pgwire

USERS = ["md5user", "scramuser", "scramonly"]


def _fatal(stderr: str) -> str:
    """The FATAL message psql printed (after 'FATAL:  ')."""
    m = re.search(r"FATAL:\s+(.*)$", stderr, re.M)
    assert m, f"no FATAL in psql output: {stderr!r}"
    return m.group(1).strip()


@pytest.mark.parametrize("auth_type", ["md5", "plain", "trust", "scram-sha-256"])
def test_select_1_per_auth_type(pooler, auth_type):
    p = pooler(pgbouncer={"auth_type": auth_type})
    for user in USERS:
        rc, out, err = p.psql("-c", "SELECT 1, current_user", user=user)
        assert (rc, err) == (0, ""), f"{auth_type}/{user}: {err}"
        assert out.strip() == f"1|{user}"


def test_auth_type_is_case_insensitive(pooler):
    p = pooler(pgbouncer={"auth_type": "MD5"})
    assert p.psql("-c", "SELECT 1")[:2] == (0, "1\n")


@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256"])
def test_hashed_userlist_secrets(pooler, pg, auth_type):
    """userlist.txt holding PostgreSQL's own secrets: an md5 hash logs in with md5 (md5
    challenge to the client, md5 to the server); a SCRAM secret logs in by SCRAM
    pass-through. With auth_type=scram-sha-256 an md5 hash cannot be used."""
    userlist = [f'"{u}" "{pg.secret(u)}"' for u in USERS]
    assert pg.secret("md5user").startswith("md5")
    assert pg.secret("scramuser").startswith("SCRAM-SHA-256$")
    p = pooler(pgbouncer={"auth_type": auth_type}, userlist=userlist)
    for user in USERS:
        rc, out, err = p.psql("-c", "SELECT current_user", user=user)
        if auth_type == "scram-sha-256" and user == "md5user":
            assert rc != 0
            assert _fatal(err) == "SASL authentication failed"
        else:
            assert (rc, out, err) == (0, f"{user}\n", ""), f"{auth_type}/{user}"


@pytest.mark.parametrize("auth_type,message", [
    ("md5", "password authentication failed"),
    ("plain", "password authentication failed"),
    ("scram-sha-256", "SASL authentication failed"),
])
def test_wrong_password_refused(pooler, auth_type, message):
    p = pooler(pgbouncer={"auth_type": auth_type})
    for user in ("md5user", "scramuser"):
        rc, out, err = p.psql("-c", "SELECT 1", user=user, password="wrong-password")
        assert rc != 0 and out == ""
        assert _fatal(err) == message, err
    # an unknown user gets the same kind of failure (no user enumeration)
    rc, out, err = p.psql("-c", "SELECT 1", user="nosuchuser", password="whatever")
    assert rc != 0
    assert _fatal(err) == message, err
    # and the pooler keeps serving other clients
    assert p.psql("-c", "SELECT 1") == (0, "1\n", "")
    with p.connect("scramuser") as c:
        assert c.execute("SELECT 2").fetchone() == (2,)


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: replication= in the login attempt line")
def test_login_attempt_line(pooler):
    p = pooler()
    p.connect().close()
    p.wait_for_log(r"LOG C-0x[0-9a-f]+: appdb/md5user@127\.0\.0\.1:\d+ login attempt: db=appdb "
                   r"user=md5user tls=no replication=no\n")


def test_login_log_lines_as_pgbouncer(pooler):
    """The lines PgBouncer writes for a failed login, in its order: the attempt (before
    authentication), the close with its reason, then the error sent to the client. A server
    that refuses the login ends its waiting clients with the server's own message. A port
    probe that sends nothing leaves no line."""
    p = pooler(databases={"*": "host=127.0.0.1 port={pg_port}"})
    import socket
    socket.create_connection(("127.0.0.1", p.port)).close()  # a probe
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        p.connect("md5user", password="nope")
    pre = r"C-0x[0-9a-f]+: appdb/md5user@127\.0\.0\.1:\d+ "
    # (the attempt line's ending is newer than PgBouncer 1.18: test_login_attempt_line)
    p.wait_for_log(pre + r"login attempt: db=appdb user=md5user tls=no.*\n"
                   r".*LOG " + pre + r"closing because: password authentication failed "
                   r"\(age=\d+s\)\n.*WARNING " + pre +
                   r"pooler error: password authentication failed\n")
    with pytest.raises(psycopg.OperationalError, match='database "nosuchdb" does not exist'):
        p.connect("md5user", dbname="nosuchdb")
    pre = r"C-0x[0-9a-f]+: nosuchdb/md5user@127\.0\.0\.1:\d+ "
    # with the client's prefix, as PgBouncer: no pool yet, so no database or user in it
    p.wait_for_log(r"LOG C-0x[0-9a-f]+: \(nodb\)/\(nouser\)@127\.0\.0\.1:\d+ registered new "
                   r"auto-database: db=nosuchdb\n")
    # the server's refusal: a line without a connection prefix, as PgBouncer writes it
    p.wait_for_log(r'\[\d+\] WARNING server login failed: FATAL database "nosuchdb" does not '
                   r"exist\n")
    p.wait_for_log(pre + r'closing because: database "nosuchdb" does not exist \(age=\d+s\)\n'
                   r".*WARNING " + pre + r'pooler error: database "nosuchdb" does not exist\n')
    # Clients that leave during login between two messages leave no line either, as in
    # PgBouncer: a TLS probe after the answer to its SSLRequest, and psql going away to ask
    # for a password after the md5 challenge.
    import struct
    with socket.create_connection(("127.0.0.1", p.port)) as s:
        s.sendall(struct.pack("!II", 8, 80877103))
        assert s.recv(1) in (b"N", b"S")
    with socket.create_connection(("127.0.0.1", p.port)) as s:
        body = b"user\0md5user\0database\0appdb\0\0"
        s.sendall(struct.pack("!II", 8 + len(body), 196608) + body)
        assert s.recv(64)[:1] == b"R"  # the md5 challenge
    # a console session ending with Terminate
    p.admin("SHOW LISTS")
    p.wait_for_log(r"LOG C-0x[0-9a-f]+: pgbouncer/postgres@127\.0\.0\.1:\d+ closing because: client "
                   r"close request \(age=\d+s\)\n")
    assert "unexpected eof" not in p.log_text()  # the probes
    # a user name that is too long: the close, then PgBouncer's "login failed" line
    p2 = pooler(pgbouncer={"log_connections": "1"})
    with pytest.raises(psycopg.OperationalError, match="username too long"):
        p2.connect("u" * 130, password="x")
    p2.wait_for_log(r"closing because: username too long \(age=\d+s\)\n.*\n.*LOG C-0x[0-9a-f]+: "
                    r"\S+ login failed: db=appdb user=u{130}\n")


def test_unknown_user_and_empty_password(pooler):
    """A user not in auth_file (and no auth_query) is asked for a password like any other and
    refused with the same words; only the log says why (PgBouncer's "no such user"). An empty
    password gets PostgreSQL's and PgBouncer's own message."""
    p = pooler()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        p.connect("nosuchuser", password="whatever")
    p.wait_for_log(r"LOG C-0x[0-9a-f]+: \S+ no such user: nosuchuser\n")
    c = pgwire.Conn.open(port=p.port)
    try:
        c.send(pgwire.m.startup({"user": "md5user", "database": "appdb"}))
        assert c.read_msg().type == "R"
        c.send(pgwire.m.password(""))
        err = pgwire.parse_error(c.read_msg().body)
        assert (err.get("S"), err.get("C"), err.get("M")) == \
            ("FATAL", "08P01", "empty password returned by client")
    finally:
        c.close()
    with p.connect("md5user") as ok:
        assert ok.execute("SELECT 1").fetchone() == (1,)


def _scram_login(p, user, password, mechanism="SCRAM-SHA-256", tamper=None, first=None):
    """One SCRAM login over pgwire, the final message passed through tamper when given, the
    client-first-message replaced by `first` when given. Returns the fields of the
    ErrorResponse that ended it."""
    c = pgwire.Conn.open(port=p.port)
    try:
        c.send(pgwire.m.startup({"user": user, "database": "appdb"}))
        code, _ = pgwire.parse_auth(c.read_msg().body)
        assert code == 10  # AuthenticationSASL
        scram = pgwire.ScramClient(password)
        c.send(pgwire.m.sasl_initial(mechanism, first or scram.first_message()))
        msg = c.read_msg()
        if msg.type == "R":  # AuthenticationSASLContinue
            final = scram.final_message(pgwire.parse_auth(msg.body)[1])
            c.send(pgwire.m.password(tamper(final) if tamper else final))
            msg = c.read_msg()
        assert msg.type == "E", msg
        return pgwire.parse_error(msg.body)
    finally:
        c.close()


def _client_lines(p, since, user):
    """(prefix, lines) of the one client that logged in as `user` since `since`: its
    "db/user@addr:port" prefix at its login attempt, then each of its lines from that one on
    as "LEVEL message", without time, pid, pointer and prefix."""
    text = p.log_text()[since:]
    m = re.search(rf"LOG (C-0x[0-9a-f]+): (\S+) login attempt: db=appdb user={user} ", text)
    assert m, text
    ptr, prefix = m.groups()
    line = re.compile(rf"\[\d+\] (LOG|ERROR|WARNING) {ptr}: \S+ (.*)")
    start = text.rfind("\n", 0, m.start()) + 1
    return prefix, [" ".join(x.groups()) for x in map(line.search, text[start:].splitlines())
                    if x]


def test_malformed_scram_messages_logged(pooler, pg):
    """A malformed SCRAM message is refused with "SASL authentication failed"; the log has
    PgBouncer's ERROR line saying what was wrong with it."""
    p = pooler(pgbouncer={"auth_type": "scram-sha-256"},
               userlist=[f'"scramuser" "{pg.secret("scramuser")}"'])
    cases = [
        (dict(first=b"n,a=bob,n=,r=abcdefgh"),
         "client uses authorization identity, but it is not supported"),
        (dict(first=b"p=tls-server-end-point,,n=,r=abcdefgh"),
         "client requires SCRAM channel binding, but it is not supported"),
        (dict(first=b"n,,m=ext,n=,r=abcdefgh"), "client requires an unsupported SCRAM extension"),
        (dict(tamper=lambda f: f + b",x=1"),
         "malformed SCRAM message (garbage at the end of client-final-message)"),
        (dict(tamper=lambda f: f.replace(b"c=biws", b"c=eSws")),
         "unexpected SCRAM channel-binding attribute in client-final-message"),
    ]
    for kw, why in cases:
        mark = p.log_mark()
        err = _scram_login(p, "scramuser", pg.passwords["scramuser"], **kw)
        assert (err.get("C"), err.get("M")) == ("08P01", "SASL authentication failed"), why
        p.wait_for_log(r"pooler error: SASL authentication failed\n", since=mark)
        _, lines = _client_lines(p, mark, "scramuser")
        assert f"ERROR {why}" in lines, (why, lines)


def test_unknown_user_log_lines(pooler):
    """An unknown user (no auth_query): PgBouncer's "no such user" line comes first, with the
    "(nodb)/(nouser)" prefix of a client that has no credential yet, then the login attempt;
    the client never gets a pool, so its lines name "(nodb)/<user>" from then on."""
    p = pooler()
    mark = p.log_mark()
    rc, out, err = p.psql("-c", "SELECT 1", user="nosuchuser", password="x")
    assert rc != 0
    p.wait_for_log(r"pooler error: password authentication failed\n", since=mark)
    text = p.log_text()[mark:]
    lines = [m.groups() for m in re.finditer(
        r"\[\d+\] (LOG|WARNING) C-0x[0-9a-f]+: (\S+)@127\.0\.0\.1:\d+ (.*)", text)]
    assert lines[0] == ("LOG", "(nodb)/(nouser)", "no such user: nosuchuser"), text
    assert lines[1][:2] == ("LOG", "(nodb)/nosuchuser"), text
    assert lines[1][2].startswith("login attempt: db=appdb user=nosuchuser tls=no"), text
    assert lines[2:] == [("LOG", "(nodb)/nosuchuser",
                          "closing because: password authentication failed (age=0s)"),
                         ("WARNING", "(nodb)/nosuchuser",
                          "pooler error: password authentication failed")], text


def test_no_such_database_log_lines(pooler):
    """A database neither in [databases] nor made by "*": the client authenticates as usual,
    then gets "no such database: <name>". As in PgBouncer it never gets a pool, so its lines
    name "(nodb)/<user>", and "login failed" comes before the close. Every line is written
    before the socket closes: a client that has seen the close finds them all."""
    p = pooler(databases={"*": None})
    mark = p.log_mark()
    c = pgwire.Conn.open(port=p.port)
    try:
        with pytest.raises(pgwire.ServerError) as e:
            c.startup("md5user", "nosuchdb", password="md5pass")
        assert (e.value.severity, e.value.code, e.value.message) == \
            ("FATAL", "08P01", "no such database: nosuchdb")
        c.wait_closed()
    finally:
        c.close()
    text = p.log_text()[mark:]  # read once, no polling (see above)
    lines = [m.groups() for m in re.finditer(
        r"\[\d+\] (LOG|WARNING) C-0x[0-9a-f]+: (\S+)@127\.0\.0\.1:\d+ (.*)", text)]
    lines = [(lvl, pre, re.sub(r"\(age=\d+s\)", "(age=Ns)", msg)) for lvl, pre, msg in lines]
    assert lines[0][:2] == ("LOG", "(nodb)/md5user"), text
    assert lines[0][2].startswith("login attempt: db=nosuchdb user=md5user tls=no"), text
    assert lines[1:] == [("LOG", "(nodb)/md5user", "login failed: db=nosuchdb user=md5user"),
                         ("LOG", "(nodb)/md5user",
                          "closing because: no such database: nosuchdb (age=Ns)"),
                         ("WARNING", "(nodb)/md5user",
                          "pooler error: no such database: nosuchdb")], text


def test_scram_failures_log_as_pgbouncer(pooler, pg):
    """auth_type=scram-sha-256 refusals: the client gets FATAL 08P01 "SASL authentication
    failed"; the log has PgBouncer's ERROR line saying why (wrong password, an md5 secret that
    SCRAM cannot use, a nonce that does not match) before the close with its reason. A
    mechanism other than SCRAM-SHA-256 is refused with PgBouncer's own words."""
    sasl_failed = {"S": "FATAL", "C": "08P01", "M": "SASL authentication failed"}

    def refused(err):
        return {k: err.get(k) for k in ("S", "C", "M")}

    def closing(reason):
        return [f"LOG closing because: {reason} (age=0s)", f"WARNING pooler error: {reason}"]

    p = pooler(pgbouncer={"auth_type": "scram-sha-256"},
               userlist=[f'"md5user" "{pg.secret("md5user")}"',
                         f'"scramuser" "{pg.secret("scramuser")}"',
                         f'"postgres" "{pg.passwords["postgres"]}"'])
    cases = [
        # (user, password, tamper, the ERROR line)
        ("scramuser", "wrong", None, "password authentication failed"),  # SCRAM secret
        ("postgres", "wrong", None, "password authentication failed"),  # plain password
        ("md5user", pg.passwords["md5user"], None,
         "SCRAM authentication failed: user has MD5 secret"),
        ("scramuser", pg.passwords["scramuser"], lambda f: f.replace(b",r=", b",r=x"),
         "invalid SCRAM response (nonce does not match)"),
    ]
    for user, password, tamper, why in cases:
        mark = p.log_mark()
        assert refused(_scram_login(p, user, password, tamper=tamper)) == sasl_failed, user
        p.wait_for_log(r"pooler error: SASL authentication failed\n", since=mark)
        prefix, lines = _client_lines(p, mark, user)
        assert re.fullmatch(rf"appdb/{user}@127\.0\.0\.1:\d+", prefix)
        assert lines[0].startswith(f"LOG login attempt: db=appdb user={user} tls=no"), lines
        assert lines[1:] == [f"ERROR {why}"] + closing("SASL authentication failed"), lines

    # an unknown user runs the exchange against a mock secret, and fails the same way
    mark = p.log_mark()
    assert refused(_scram_login(p, "nosuchuser", "whatever")) == sasl_failed
    p.wait_for_log(r"pooler error: SASL authentication failed\n", since=mark)
    _, lines = _client_lines(p, mark, "nosuchuser")
    assert lines[-3:] == ["ERROR password authentication failed"] + \
        closing("SASL authentication failed"), lines

    mark = p.log_mark()
    err = _scram_login(p, "scramuser", "x", mechanism="SCRAM-SHA-256-PLUS")
    why = "client selected an invalid SASL authentication mechanism"
    assert refused(err) == dict(sasl_failed, M=why)
    p.wait_for_log(r"pooler error: client selected an invalid SASL authentication mechanism\n",
                   since=mark)
    assert _client_lines(p, mark, "scramuser")[1][1:] == closing(why)

    assert p.psql("-c", "SELECT 1", user="scramuser")[:2] == (0, "1\n")


def test_wrong_password_psycopg(pooler):
    p = pooler()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        p.connect("md5user", password="nope")
    p.wait_for_log(r"password authentication failed")
    with p.connect("md5user") as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_trust_unknown_user_refused(pooler):
    """trust still requires the user to be in auth_file."""
    p = pooler(pgbouncer={"auth_type": "trust"})
    rc, out, err = p.psql("-c", "SELECT 1", user="nosuchuser", password="")
    assert rc != 0
    assert _fatal(err) == '"trust" authentication failed'
    assert p.psql("-c", "SELECT 1", user="md5user", password="")[:2] == (0, "1\n")


def test_missing_password_for_md5(pooler):
    """A client that sends an empty password is refused like a wrong one."""
    p = pooler()
    rc, out, err = p.psql("-c", "SELECT 1", user="md5user", password="")
    assert rc != 0
    assert "password authentication failed" in err or "no password supplied" in err
    assert p.psql("-c", "SELECT 1")[:2] == (0, "1\n")


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: a forced user without password= logs in to the server with an "
    "empty password instead of the auth_file one")
def test_any_logs_in_as_forced_user(pooler):
    """auth_type=any: no password, the user name is ignored, and every database must have
    a forced user (else "bouncer config error")."""
    p = pooler(pgbouncer={"auth_type": "any"},
               databases={"forced": "host={pg_host} port={pg_port} dbname=appdb user=md5user"})
    rc, out, err = p.psql("-c", "SELECT current_user", user="whoever", password="",
                          dbname="forced")
    assert (rc, out, err) == (0, "md5user\n", "")
    rc, out, err = p.psql("-c", "SELECT 1", user="md5user", password="")
    assert rc != 0 and _fatal(err) == "bouncer config error"
    p.wait_for_log(r"auth_type=any requires forced user")


def test_empty_auth_file_setting_is_an_error(pooler):
    """"auth_file =" names no file: PgBouncer logs that it cannot open it (the name is empty)
    and runs without auth_file users; no auth_file line at all is no error."""
    p = pooler(pgbouncer={"auth_file": "", "auth_type": "trust"})
    p.wait_for_log(r"ERROR could not open auth_file : No such file or directory\n")
    rc, out, err = p.psql("-c", "SELECT 1", user="md5user", password="")
    assert rc != 0 and _fatal(err) == '"trust" authentication failed'
    q = pooler(pgbouncer={"auth_file": None, "auth_type": "trust"})
    assert q.psql("-c", "SELECT 1", user="md5user", password="")[0] != 0
    assert "auth_file" not in q.log_text()


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 stops loading the auth_file at the first broken line")
def test_broken_auth_file_line_is_skipped(pooler, pg):
    """A broken auth_file line is reported with PgBouncer's "broken auth file" and skipped:
    the users after it still log in (PgBouncer stops at that line and loses them)."""
    pw = pg.passwords
    p = pooler(userlist=[f'"postgres" "{pw["postgres"]}"', 'scramuser "no quotes"',
                         f'"md5user" "{pw["md5user"]}"'])
    p.wait_for_log(r"ERROR broken auth file: \S*userlist\.txt:2: ")
    with p.connect("md5user") as c:
        assert c.execute("SELECT current_user").fetchone() == ("md5user",)


@pytest.mark.skipif(not harness.have_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_addresses_in_log_lines(pooler, pg):
    """IPv6 addresses in brackets, as PgBouncer writes them: the client's and the server's
    prefixes and the server's local address."""
    p = pooler(pgbouncer={"listen_addr": "127.0.0.1,::1"},
               databases={"v6db": "host=::1 port={pg_port} dbname=appdb"})
    with psycopg.connect(host="::1", port=p.port, user="md5user", dbname="v6db",
                         password=harness.PASSWORDS["md5user"]) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    p.wait_for_log(r"LOG C-0x[0-9a-f]+: v6db/md5user@\[::1\]:\d+ login attempt: ")
    p.wait_for_log(rf"LOG S-0x[0-9a-f]+: v6db/md5user@\[::1\]:{pg.port} new connection to "
                   r"server \(from \[::1\]:\d+\)\n")
    p.wait_for_log(rf"LOG listening on \[::1\]:{p.port}\n")


def _wrong_server_password(pooler):
    """A [databases] entry whose password PostgreSQL refuses: the client's login waits for
    the pool's first server and gets the server's refusal. Returns (pooler, error fields)."""
    p = pooler(databases={"badpw": "host={pg_host} port={pg_port} dbname=appdb "
                                   "user=md5user password=wrong"})
    c = pgwire.Conn.open(port=p.port)
    try:
        with pytest.raises(pgwire.ServerError) as e:
            c.startup("md5user", "badpw", password="md5pass")
        c.wait_closed()
    finally:
        c.close()
    return p, e.value.fields


def test_server_password_refused(pooler):
    """PgBouncer's lines: the server's refusal without a connection prefix, then the waiting
    client closed with the server's message, then the server connection itself."""
    p, err = _wrong_server_password(pooler)
    text = 'password authentication failed for user "md5user"'
    assert (err.get("S"), err.get("M")) == ("FATAL", text)
    pre = r"C-0x[0-9a-f]+: badpw/md5user@127\.0\.0\.1:\d+ "
    p.wait_for_log(r"\[\d+\] WARNING server login failed: FATAL " + re.escape(text) + r"\n"
                   r".*LOG " + pre + r"closing because: " + re.escape(text) + r" \(age=\d+s\)\n"
                   r".*WARNING " + pre + r"pooler error: " + re.escape(text) + r"\n"
                   r".*LOG S-0x[0-9a-f]+: badpw/md5user@127\.0\.0\.1:\d+ closing because: "
                   r"login failed \(age=\d+s\)\n")


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: the server's SQLSTATE for a refused server login (1.18 sends 08P01)")
def test_server_password_refused_keeps_sqlstate(pooler):
    _, err = _wrong_server_password(pooler)
    assert err.get("C") == "28P01"  # PostgreSQL's invalid_password
