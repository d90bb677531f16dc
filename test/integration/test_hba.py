"""auth_type = hba: an auth_hba_file with every supported line type, each path tested allowed
and refused, over 127.0.0.1, ::1 and the unix socket; peer with an ident map (the test process
runs as root, so a unix-socket peer is OS user root); RELOAD re-reads the files.

hostssl lines and cert need client TLS; here a hostssl line only proves it never matches a
plain connection (test_tls_auth.py covers hostssl, hostnossl and cert over TLS)."""

import os

import pytest

import harness
import pgwire

IDENT_MAPS = pytest.mark.differs_from_pgbouncer_1_18("not in PgBouncer 1.18: auth_ident_file")

# Pooler database names (all served by PostgreSQL database appdb) and the line each one is
# routed through.
HBA = """\
# TYPE    DATABASE        USER                ADDRESS          METHOD
# broken (samenet is not supported): logged and skipped, so it must not let anyone in
host      all             all                 samenet          trust

# unix socket
local     db_peer_nomap   all                                  peer
local     db_local        md5user                              md5
local     all             all                                  reject

# IPv6 loopback
host      db_v6           all                 ::1/128          trust
host      all             all                 ::1/128          reject

# IPv4 loopback
host      db_trust        all                 127.0.0.1/32     trust
host      db_reject       all                 127.0.0.1/32     reject
host      db_md5          all                 127.0.0.1/32     md5
host      db_password     all                 127.0.0.1/32     password
host      db_scram        all                 127.0.0.1/32     scram-sha-256
host      db_a,"db_b"     md5user,"scramuser" 127.0.0.1 255.255.255.255 md5
host      @lists/dbs.txt  @lists/users.txt    127.0.0.0/8      password
host      sameuser        all                 127.0.0.1/32     trust
hostnossl db_nossl        all                 127.0.0.1/32     trust
# without TLS a hostssl line never matches (else everything below would be trusted)
hostssl   all             all                 0.0.0.0/0        trust
host      db_elsewhere    all                 10.0.0.0/8       trust
host      pgbouncer       postgres            127.0.0.1/32     md5
host      all             all                 0.0.0.0/0        reject
"""

# the same with an ident map in use (auth_ident_file, PgBouncer 1.21 and later)
HBA_MAPS = HBA.replace("local     db_peer_nomap",
                       "local     db_peer         all                                  "
                       "peer map=rootmap\nlocal     db_peer_nomap", 1)

IDENT = """\
# MAPNAME  SYSTEM-USERNAME  PG-USERNAME
rootmap    root             md5user
rootmap    nobody           all
"""

FILES = {
    "hba.conf": HBA,
    "ident.conf": IDENT,
    "lists/dbs.txt": "db_f1\ndb_f2, db_f3\n",
    "lists/users.txt": "md5user\n",
}

DATABASES = ["db_peer", "db_peer_nomap", "db_local", "db_v6", "db_trust", "db_reject", "db_md5",
             "db_password", "db_scram", "db_a", "db_b", "db_f1", "db_f2", "db_f3", "md5user",
             "db_nossl", "db_elsewhere"]


HAVE_V6 = harness.have_ipv6_loopback()


def _start(pooler, hba=HBA, files=None, userlist_extra=(), **pgbouncer):
    """The pooler with hba as its auth_hba_file; auth_ident_file is set only when a line uses
    a map, so that the tests without one run against PgBouncer 1.18 too."""
    settings = {"auth_type": "hba", "auth_hba_file": "{dir}/hba.conf",
                "listen_addr": "127.0.0.1,::1" if HAVE_V6 else "127.0.0.1"}
    if "map=" in hba:
        settings["auth_ident_file"] = "{dir}/ident.conf"
    settings.update(pgbouncer)
    f = dict(FILES)
    f["hba.conf"] = hba
    f.update(files or {})
    dbs = {name: "host={pg_host} port={pg_port} dbname=appdb" for name in DATABASES}
    return pooler(pgbouncer=settings, databases=dbs, files=f, userlist_extra=userlist_extra)


def login(p, db, user, password=None, host="127.0.0.1", unix=False):
    """'<auth method>:<current_user>' after a successful login, else 'error: <message>'."""
    if password is None:
        password = harness.PASSWORDS.get(user, "some-password")
    try:
        c = pgwire.Conn.connect(host=host, port=p.port, user=user, database=db,
                                password=password, unix_socket_dir=p.dir if unix else None)
    except pgwire.ServerError as e:
        return f"error: {e.message}"
    try:
        return f"{c.auth_method}:{c.scalar('SELECT current_user')}"
    finally:
        c.close(terminate=True)


REJECTED = "error: login rejected"

TCP_CASES = [
    # (database, user, password or None for the right one, expected)
    ("db_trust", "md5user", "wrong", "trust:md5user"),
    ("db_trust", "nosuchuser", "x", 'error: "trust" authentication failed'),
    ("db_reject", "md5user", None, REJECTED),
    ("db_md5", "md5user", None, "md5:md5user"),
    ("db_md5", "scramuser", None, "md5:scramuser"),
    ("db_md5", "md5user", "wrong", "error: password authentication failed"),
    ("db_md5", "nosuchuser", "x", "error: password authentication failed"),
    ("db_password", "md5user", None, "password:md5user"),
    ("db_password", "md5user", "wrong", "error: password authentication failed"),
    ("db_scram", "scramuser", None, "scram-sha-256:scramuser"),
    ("db_scram", "md5user", None, "scram-sha-256:md5user"),
    ("db_scram", "scramuser", "wrong", "error: SASL authentication failed"),
    # lists, quoted names, separate netmask column
    ("db_a", "md5user", None, "md5:md5user"),
    ("db_b", "scramuser", None, "md5:scramuser"),
    ("db_a", "scramonly", None, REJECTED),
    ("db_peer_nomap", "md5user", None, REJECTED),  # local lines never apply to TCP
    # @file lists (relative to the hba file's directory)
    ("db_f1", "md5user", None, "password:md5user"),
    ("db_f3", "md5user", None, "password:md5user"),
    ("db_f2", "scramuser", None, REJECTED),
    # sameuser
    ("md5user", "md5user", "wrong", "trust:md5user"),
    ("md5user", "scramuser", None, REJECTED),
    # hostnossl matches a plain connection
    ("db_nossl", "md5user", "wrong", "trust:md5user"),
    # address outside the line's network: falls through to the final reject
    ("db_elsewhere", "md5user", None, REJECTED),
    ("appdb", "md5user", None, REJECTED),
]


def test_hba_tcp_ipv4(pooler):
    p = _start(pooler)
    got = [(db, user, login(p, db, user, pw)) for db, user, pw, _ in TCP_CASES]
    want = [(db, user, exp) for db, user, _, exp in TCP_CASES]
    assert got == want
    # the console goes through hba too
    assert p.admin("SHOW LISTS")
    # the broken line was reported with its number and skipped
    p.wait_for_log(r"hba.*\b3\b.*samenet")
    p.wait_for_log(r"\] WARNING could not parse hba config line 3\n")


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: the address 'all' and comment lines in @file lists")
def test_hba_all_address_and_comments_in_lists(pooler):
    hba = ("host @lists/commented.txt md5user all password\n"
           "host db_md5 all all md5\n")
    p = _start(pooler, hba=hba, files={
        "lists/commented.txt": "# databases for the first line\ndb_f1  # trailing\n\ndb_f2\n"})
    assert login(p, "db_f1", "md5user") == "password:md5user"
    assert login(p, "db_f2", "md5user") == "password:md5user"
    assert login(p, "db_md5", "md5user") == "md5:md5user"
    assert login(p, "db_f3", "md5user") == "error: no authentication method is found"
    if HAVE_V6:
        assert login(p, "db_f1", "md5user", host="::1") == "password:md5user"


@pytest.mark.skipif(not HAVE_V6, reason="no IPv6 loopback")
def test_hba_tcp_ipv6(pooler):
    p = _start(pooler)
    assert login(p, "db_v6", "md5user", "wrong", host="::1") == "trust:md5user"
    assert login(p, "db_trust", "md5user", "wrong", host="::1") == REJECTED
    assert login(p, "db_v6", "md5user", None) == REJECTED  # no IPv4 line for it


def test_hba_unix_socket(pooler):
    p = _start(pooler)
    # psql over the unix socket (the brief's "local" path), right and wrong password
    rc, out, err = p.psql("-h", p.dir, "-c", "SELECT current_user", dbname="db_local")
    assert (rc, out, err) == (0, "md5user\n", "")
    rc, out, err = p.psql("-h", p.dir, "-c", "SELECT 1", dbname="db_local", password="wrong")
    assert rc != 0 and "password authentication failed" in err
    assert login(p, "db_local", "md5user", unix=True) == "md5:md5user"
    assert login(p, "db_local", "scramuser", unix=True) == REJECTED
    assert login(p, "db_trust", "md5user", unix=True) == REJECTED  # host lines: TCP only


def test_hba_peer_without_map(pooler):
    """The test process is root: over the unix socket the peer's OS user is `root`; without
    a map it must equal the user name."""
    assert os.geteuid() == 0, "the peer test expects to run as root"
    p = _start(pooler, userlist_extra=['"root" "unused"'])
    assert login(p, "db_peer_nomap", "md5user", unix=True) == "error: unix socket login rejected"
    # root == root: the peer line lets it in, then PostgreSQL refuses the server login
    assert login(p, "db_peer_nomap", "root", unix=True) == \
        'error: password authentication failed for user "root"'


@IDENT_MAPS
def test_hba_peer_with_ident_map(pooler):
    """rootmap maps the OS user root to md5user only."""
    assert os.geteuid() == 0, "the peer test expects to run as root"
    p = _start(pooler, hba=HBA_MAPS)
    assert login(p, "db_peer", "md5user", "no-password-asked", unix=True) == "trust:md5user"
    assert login(p, "db_peer", "scramuser", unix=True) == "error: unix socket login rejected"
    assert login(p, "db_peer_nomap", "md5user", unix=True) == "error: unix socket login rejected"
    p.wait_for_log(r"ident map rootmap cannot be matched")
    # psql: no password prompt needed
    rc, out, err = p.psql("-h", p.dir, "-c", "SELECT current_user", dbname="db_peer",
                          password="")
    assert (rc, out, err) == (0, "md5user\n", "")


NO_METHOD = pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: a client no hba line matches gets 'no authentication method is "
    "found' (1.18: 'login rejected')")


@NO_METHOD
def test_hba_no_matching_line(pooler):
    p = _start(pooler, hba="host db_trust all 127.0.0.1/32 trust\n")
    assert login(p, "db_trust", "md5user", "x") == "trust:md5user"
    assert login(p, "db_md5", "md5user") == "error: no authentication method is found"
    assert login(p, "db_trust", "md5user", unix=True) == \
        "error: no authentication method is found"


@IDENT_MAPS
def test_hba_map_not_in_ident_file_skips_line(pooler):
    p = _start(pooler, hba="local all all peer map=nosuchmap\nlocal all all md5\n")
    assert login(p, "db_local", "md5user", unix=True) == "md5:md5user"
    p.wait_for_log(r"WARNING \S*hba\.conf:1: ident map \"nosuchmap\" is not found in the ident "
                   r"config file\n.*WARNING could not parse hba config line 1\n")


def test_hba_reload(pooler):
    p = _start(pooler, hba="host all all all reject\n")
    assert login(p, "db_md5", "md5user") == REJECTED
    mark = p.log_mark()
    p.write_file("hba.conf", "host db_md5 all 127.0.0.1/32 md5\nhost all all all reject\n")
    p.reload()
    p.wait_for_log(r"got SIGHUP", since=mark)
    harness.wait_until(lambda: login(p, "db_md5", "md5user") == "md5:md5user", 10,
                       what="new hba rules after RELOAD")
    assert login(p, "db_trust", "md5user") == REJECTED


@IDENT_MAPS
def test_hba_reload_reads_ident_file_again(pooler):
    p = _start(pooler, hba="local all all peer map=rootmap\n")
    assert login(p, "db_local", "md5user", unix=True) == "trust:md5user"
    p.write_file("hba.conf", "local all all peer map=m2\n")
    p.write_file("ident.conf", "m2 root scramuser\n")
    p.reload()
    harness.wait_until(lambda: login(p, "db_local", "scramuser", unix=True) ==
                       "trust:scramuser", 10, what="new ident map after RELOAD")
    assert login(p, "db_local", "md5user", unix=True) == "error: unix socket login rejected"


@NO_METHOD
def test_hba_missing_file_rejects_everyone(pooler):
    p = _start(pooler, auth_hba_file="{dir}/no-such-hba.conf")
    p.wait_for_log(r"could not open hba config file .*no-such-hba\.conf: No such file")
    assert login(p, "db_trust", "md5user") == "error: no authentication method is found"
