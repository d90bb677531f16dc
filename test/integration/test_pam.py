"""auth_type = pam: PAM (service "pgbouncer", /etc/pam.d/pgbouncer, as PgBouncer) checks the
cleartext password, auth_file plays no part, and the servers log in with the password PAM
accepted. The module installs a PAM service whose auth step is pam_exec running a script:
it accepts the cluster users' real passwords, and for the password "hold" it waits until
the test releases it (a check in progress, without timing). The account step refuses the
users listed in a file. An existing /etc/pam.d/pgbouncer is put back afterwards."""

import os
import re
import shutil
import socket

import psycopg
import pytest

import harness

SERVICE_FILE = "/etc/pam.d/pgbouncer"

AUTH_SCRIPT = """#!/bin/bash
# pam_exec expose_authtok: the password on stdin, NUL-terminated; the user in PAM_USER.
IFS= read -r -d '' pw
dir=$(dirname "$0")
if [ "$pw" = hold ]; then
    touch "$dir/started"
    for _ in $(seq 1 300); do
        [ -e "$dir/release" ] && break
        sleep 0.05
    done
    exit 1
fi
while read -r user pass; do
    [ "$user" = "$PAM_USER" ] && [ "$pass" = "$pw" ] && exit 0
done < "$dir/passwords"
exit 1
"""

ACCOUNT_SCRIPT = """#!/bin/bash
grep -qx "$PAM_USER" "$(dirname "$0")/locked" && exit 1
exit 0
"""


@pytest.fixture(scope="module")
def pam_service():
    """Installs the test PAM service; yields its directory (scripts, passwords, markers)."""
    if os.geteuid() != 0:
        pytest.skip("installing a PAM service (/etc/pam.d/pgbouncer) needs root")
    d = harness.make_tempdir("sluice-pam-")
    os.chmod(d, 0o777)  # the scripts run as the pooler's user and write markers here
    files = {"auth.sh": AUTH_SCRIPT, "account.sh": ACCOUNT_SCRIPT, "locked": "",
             "passwords": "".join(f"{u} {p}\n" for u, p in harness.PASSWORDS.items())}
    for name, text in files.items():
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755 if name.endswith(".sh") else 0o666)
    saved = None
    if os.path.exists(SERVICE_FILE):
        with open(SERVICE_FILE) as f:
            saved = f.read()
    with open(SERVICE_FILE, "w") as f:
        # pam_exec fails with "System error": pam_deny gives the usual failure codes
        f.write(f"auth [success=done default=ignore] pam_exec.so expose_authtok quiet "
                f"{d}/auth.sh\nauth requisite pam_deny.so\n"
                f"account [success=done default=ignore] pam_exec.so quiet {d}/account.sh\n"
                f"account requisite pam_deny.so\n")
    try:
        yield d
    finally:
        if saved is None:
            os.unlink(SERVICE_FILE)
        else:
            with open(SERVICE_FILE, "w") as f:
                f.write(saved)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def pam(pam_service):
    """The service directory with no check held and nobody locked."""
    for name in ("started", "release"):
        if os.path.exists(os.path.join(pam_service, name)):
            os.unlink(os.path.join(pam_service, name))
    with open(os.path.join(pam_service, "locked"), "w"):
        pass
    return pam_service


def _fatal(stderr):
    m = re.search(r"FATAL:\s+(.*)$", stderr, re.M)
    assert m, f"no FATAL in psql output: {stderr!r}"
    return m.group(1).strip()


def test_pam_login_uses_the_accepted_password_for_servers(pooler, pam):
    """auth_file holds wrong passwords (it is not consulted): PAM accepts the real ones, and
    the server logins that follow use them (md5 and SCRAM users)."""
    p = pooler(pgbouncer={"auth_type": "pam"},
               userlist=['"md5user" "not-this"', '"scramuser" "nor-this"'])
    for user in ("md5user", "scramuser"):
        rc, out, err = p.psql("-c", "SELECT current_user", user=user)
        assert (rc, out, err) == (0, f"{user}\n", ""), p.log_text()
    # a second client of the pool is checked by PAM again and shares the server
    with p.connect("md5user") as a, p.connect("md5user") as b:
        assert a.execute("SELECT 1").fetchone() == (1,)
        assert b.execute("SELECT 2").fetchone() == (2,)


def test_pam_wrong_password(pooler, pam):
    p = pooler(pgbouncer={"auth_type": "pam"})
    rc, out, err = p.psql("-c", "SELECT 1", password="wrong-password")
    assert rc != 0 and out == ""
    assert _fatal(err) == "PAM authentication failed"
    log = p.log_text()
    assert re.search(r"WARNING pam_authenticate\(\) failed: Authentication failure", log), log
    assert re.search(r"closing because: PAM authentication failed", log), log
    # an unknown user fails the same way, and the pooler serves on
    rc, out, err = p.psql("-c", "SELECT 1", user="nosuchuser", password="x")
    assert _fatal(err) == "PAM authentication failed"
    assert p.psql("-c", "SELECT 1") == (0, "1\n", "")


def test_pam_account_refused(pooler, pam):
    with open(os.path.join(pam, "locked"), "w") as f:
        f.write("scramuser\n")
    p = pooler(pgbouncer={"auth_type": "pam"})
    rc, out, err = p.psql("-c", "SELECT 1", user="scramuser")
    assert _fatal(err) == "PAM authentication failed"
    assert re.search(r"WARNING pam_acct_mgmt\(\) failed: ", p.log_text()), p.log_text()
    assert p.psql("-c", "SELECT 1", user="md5user") == (0, "1\n", "")


def _login(p, password):
    with psycopg.connect(host="127.0.0.1", port=p.port, user="md5user", dbname="appdb",
                         password=password, connect_timeout=20) as c:
        return c.execute("SELECT 1").fetchone()[0]


def test_pam_check_in_progress_blocks_nobody(pooler, pam):
    """While PAM works on one login (the script holds it), logged-in clients are served: the
    check runs outside the event loop. Released, that login fails ("hold" is no password)."""
    p = pooler(pgbouncer={"auth_type": "pam"})
    with p.connect("scramuser") as c:
        th, result = harness.in_thread(_login, p, "hold")
        harness.wait_until(lambda: os.path.exists(os.path.join(pam, "started")), 15,
                           what="the PAM check to start")
        for i in range(20):
            assert c.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        assert th.is_alive() and not result  # still with PAM
        open(os.path.join(pam, "release"), "w").close()
        th.join(20)
        assert "PAM authentication failed" in str(result.get("error")), result
        assert c.execute("SELECT 42").fetchone() == (42,)


@pytest.mark.differs_from_pgbouncer_1_18(
    "sluice only: PgBouncer reads nothing from a client while PAM checks it, so it notices "
    "the client left only when the check ends")
def test_pam_client_gone_during_check(pooler, pam):
    """A client that goes away while PAM checks its password is closed at once (its half
    close is answered by the pooler's); the answer, when it comes, is dropped and the pooler
    serves on."""
    p = pooler(pgbouncer={"auth_type": "pam"})
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    try:
        body = b"user\0md5user\0database\0appdb\0\0"
        s.sendall((8 + len(body)).to_bytes(4, "big") + (196608).to_bytes(4, "big") + body)
        assert s.recv(1) == b"R"  # AuthenticationCleartextPassword
        s.recv(64)
        s.sendall(b"p" + (4 + 5).to_bytes(4, "big") + b"hold\0")
        harness.wait_until(lambda: os.path.exists(os.path.join(pam, "started")), 15,
                           what="the PAM check to start")
        s.shutdown(socket.SHUT_WR)
        assert s.recv(64) == b""  # closed by the pooler while PAM still holds the check
        assert not os.path.exists(os.path.join(pam, "release"))
    finally:
        s.close()
    open(os.path.join(pam, "release"), "w").close()
    assert p.psql("-c", "SELECT 1") == (0, "1\n", "")
    assert p.alive()


def test_pam_console_login(pooler, pam):
    """The console takes PAM logins too; admin_users decides what they may do."""
    p = pooler(pgbouncer={"auth_type": "pam", "admin_users": "md5user"})
    rc, out, err = p.psql("-c", "SHOW VERSION", dbname="pgbouncer")
    assert rc == 0, err
    assert "PgBouncer" in out or "sluice" in out
    rc, out, err = p.psql("-c", "SHOW VERSION", dbname="pgbouncer", password="wrong")
    assert _fatal(err) == "PAM authentication failed"


def test_pam_with_database_auth_user_is_a_config_error(pooler, pam):
    p = pooler(pgbouncer={"auth_type": "pam"},
               databases={"appdb": "host=127.0.0.1 port={pg_port} dbname=appdb "
                                   "auth_user=postgres"})
    rc, out, err = p.psql("-c", "SELECT 1")
    assert _fatal(err) == "bouncer config error"
    assert "PAM can't be used together with database authentication" in p.log_text()
