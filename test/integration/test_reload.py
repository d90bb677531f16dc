"""SIGHUP and RELOAD re-read the ini: a raised default_pool_size lets a queued client through,
removed and auto databases, and a database repointed to another cluster (switchover)."""

import os
import re
import threading

import psycopg
import pytest

import harness


def _md5user_backends(pg):
    return pg.sql("SELECT count(*) FROM pg_stat_activity "
                  "WHERE usename = 'md5user' AND datname = 'appdb' "
                  "AND backend_type = 'client backend'")[0][0]


def test_sighup_raises_pool_size(pooler, pg):
    p = pooler(pgbouncer={"default_pool_size": 1})
    a = p.connect()
    a.execute("BEGIN")
    pid_a = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert _md5user_backends(pg) == 1

    result = {}
    done = threading.Event()

    def client_b():
        try:
            with p.connect(connect_timeout=60) as b:
                result["pid"] = b.execute("SELECT pg_backend_pid()").fetchone()[0]
        except Exception as e:  # noqa: BLE001 - asserted below
            result["error"] = repr(e)
        finally:
            done.set()

    t = threading.Thread(target=client_b, daemon=True)
    t.start()
    # B logs in and queues: the pool holds one server and A keeps it.
    harness.wait_until(lambda: len(re.findall(r"login attempt: db=appdb user=md5user\b",
                                              p.log_text())) >= 2, 15, what="client B login")
    assert not done.is_set(), f"B got a server with pool size 1 while A held it: {result}"
    assert _md5user_backends(pg) == 1

    mark = p.log_mark()
    p.write_ini(harness.make_ini(pgbouncer={"default_pool_size": 2}))
    p.reload()
    p.wait_for_log(r"got SIGHUP, re-reading config", since=mark)

    assert done.wait(60), "queued client did not get a server after the reload"
    t.join(5)
    assert "error" not in result, result["error"]
    assert result["pid"] != pid_a
    # A's transaction was untouched by the reload
    assert a.execute("SELECT pg_backend_pid()").fetchone()[0] == pid_a
    a.execute("COMMIT")
    a.close()
    assert p.alive()


def test_sighup_with_unchanged_config_keeps_serving(pooler):
    p = pooler()
    with p.connect() as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        mark = p.log_mark()
        p.reload()
        p.wait_for_log(r"got SIGHUP, re-reading config", since=mark)
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    assert p.psql("-c", "SELECT 1")[:2] == (0, "1\n")


@pytest.mark.parametrize("databases_only", [False, True], ids=["empty", "databases-only"])
def test_reload_of_a_file_without_main_section_changes_nothing(pooler, databases_only):
    """The ini loses its [pgbouncer] section (emptied by config management, only [databases]
    left), then SIGHUP: PgBouncer's "main section missing" and "config file loading failed",
    and the running configuration stays. sluice used to apply the built-in defaults: every
    database dropped, auth_file and admin_users gone, so the console was locked too."""
    p = pooler()
    c = p.connect()
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    mark = p.log_mark()
    p.write_ini(harness.make_ini().split("[pgbouncer]")[0] if databases_only else "")
    p.reload()
    p.wait_for_log(r"ERROR load_init_file: main section missing from config file\n"
                   r"(.*\n)?.*WARNING config file loading failed\n", since=mark)
    assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    assert {"appdb", "postgres"} <= {r["name"] for r in p.show("DATABASES")}
    assert p.show("CONFIG") and p.psql("-c", "SELECT 1")[:2] == (0, "1\n")
    assert "dropping database" not in p.log_text()[mark:]


@pytest.mark.parametrize("how", ["set", "ini-line"])
def test_reload_reads_the_file_conffile_names(pooler, how):
    """RELOAD and SIGHUP read the file conffile names, as PgBouncer does: one named by SET
    conffile on the console, or by a conffile line in the file (a relative path is taken
    from the working directory, the pooler's dir here). SHOW CONFIG names that file, and
    later reloads go on reading it. sluice used to re-read the command-line file."""
    other = harness.make_ini(pgbouncer={"default_pool_size": "9"})
    if how == "set":
        p = pooler(files={"other.ini": other})
        p.admin(f"SET conffile = '{p.dir}/other.ini'")
        want = f"{p.dir}/other.ini"
    else:
        p = pooler(files={"other.ini": other}, pgbouncer={"conffile": "other.ini"})
        want = "other.ini"

    def config(key):
        return {r["key"]: r["value"] for r in p.show("CONFIG")}[key]

    assert config("conffile") == want
    assert config("default_pool_size") == "20"
    for n in (1, 2):  # the command-line file is not read again
        mark = p.log_mark()
        if how == "set":
            assert p.admin("RELOAD") == []
        else:
            p.reload()
            p.wait_for_log(r"got SIGHUP, re-reading config", since=mark)
        harness.wait_until(lambda: config("default_pool_size") == "9", 10,
                           what=f"default_pool_size of other.ini after reload {n}")
        assert config("conffile") == want
        p.write_ini(harness.make_ini(pgbouncer={"default_pool_size": "3"}))
    assert {r["name"]: r["pool_size"] for r in p.show("DATABASES")}["appdb"] == 9


@pytest.mark.differs_from_pgbouncer_1_18(
    "sluice only: a RELOAD whose logfile cannot be opened goes on (PgBouncer exits)")
def test_reload_with_a_logfile_that_cannot_be_opened_keeps_serving(pooler):
    p = pooler()
    with open(p.ini_path) as f:
        ini = f.read()
    with open(p.ini_path, "w") as f:
        f.write(re.sub(r"(?m)^logfile = .*$", "logfile = /nonexistent-sluice-dir/pooler.log",
                       ini))
    p.reload()
    harness.wait_until(lambda: "cannot open logfile '/nonexistent-sluice-dir/pooler.log': No "
                               "such file or directory; logging to stderr only"
                       in p.stderr_text(), 10, what="the reload's logfile error on stderr")
    assert p.alive()
    assert p.psql("-c", "SELECT 1")[:2] == (0, "1\n")


def test_reload_without_auth_file_applies_the_config_and_keeps_users(pooler):
    """The auth_file cannot be read at RELOAD (a deploy replacing it, a wrong path): the
    error is logged, the users and secrets already loaded stay, and the rest of the new
    config applies; the console's RELOAD succeeds, as PgBouncer's."""
    p = pooler()
    userlist = p.substitute("{dir}/userlist.txt")
    os.rename(userlist, userlist + ".moved")
    mark = p.log_mark()
    p.write_ini(harness.make_ini(databases={"newdb": "host={pg_host} port={pg_port} "
                                                      "dbname=appdb"}))
    assert p.admin("RELOAD") == []
    p.wait_for_log(r"ERROR could not open auth_file \S*userlist\.txt", since=mark)
    with p.connect(dbname="newdb") as c:  # the new line, an md5 user from the old list
        assert c.execute("SELECT current_database()").fetchone() == ("appdb",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        p.connect(password="wrong")


@pytest.mark.parametrize("how", ["deleted", "empty"])
def test_reload_without_an_auth_file_value_keeps_users(pooler, pg, how):
    """The auth_file line is deleted from the ini, or left empty ("auth_file ="), then RELOAD:
    the users loaded before still log in and the rest of the new config applies, as in
    PgBouncer. A deleted line keeps the running auth_file (PgBouncer's RELOAD resets only
    settings that have a default): SHOW CONFIG still names it and each RELOAD reads it again.
    An empty value names a file that cannot be opened: PgBouncer's ERROR, and the users
    stay. sluice used to drop every auth_file user, the console's admin included."""
    p = pooler()
    userlist = p.substitute("{dir}/userlist.txt")
    mark = p.log_mark()
    p.write_ini(harness.make_ini(pgbouncer={"auth_file": None if how == "deleted" else ""},
                                 databases={"newdb": "host={pg_host} port={pg_port} "
                                                     "dbname=appdb"}))
    assert p.admin("RELOAD") == []
    with p.connect(dbname="newdb") as c:  # the new line, an md5 user from the old list
        assert c.execute("SELECT current_database()").fetchone() == ("appdb",)
    if how == "empty":
        p.wait_for_log(r"ERROR could not open auth_file : No such file or directory\n",
                       since=mark)
    else:
        assert {r["key"]: r["value"] for r in p.show("CONFIG")}["auth_file"] == userlist
        assert "auth_file" not in p.log_text()[mark:]
    # md5user leaves that file: the next RELOAD reads it for a deleted line only
    p.write_userlist([f'"postgres" "{pg.passwords["postgres"]}"'])
    assert p.admin("RELOAD") == []
    if how == "deleted":
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            p.connect()
    else:
        with p.connect() as c:
            assert c.execute("SELECT 1").fetchone() == (1,)


def _removed_from_config(p, keep_fallback):
    """appdb's [databases] line goes away (and the "*" line too unless keep_fallback), then a
    RELOAD. Returns the log mark taken before the reload."""
    mark = p.log_mark()
    gone = {"appdb": None} if keep_fallback else {"appdb": None, "*": None}
    p.write_ini(harness.make_ini(databases=gone))
    p.reload()
    p.wait_for_log(r"got SIGHUP, re-reading config", since=mark)
    return mark


@pytest.mark.parametrize("keep_fallback", [True, pytest.param(False, marks=(
    pytest.mark.differs_from_pgbouncer_1_18(
        "PgBouncer 1.18 bug: a removed * line goes on serving new database names"),))])
@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_database_removed_by_reload(pooler, pg, keep_fallback, pool_mode):
    """A database whose line is removed is dropped as PgBouncer does: its clients and servers
    are closed ("database removed") and its pools freed. With a "*" line the name then works as an
    auto-database for new clients; without one it is "no such database" (PgBouncer 1.18 goes
    on using the removed "*" line, so that case fails against it). The database used to stay
    behind with its old settings: its clients were still served, every release reopened the
    server, and new clients were refused even with a "*" line. In session mode the server a
    client held between queries was closed "database configuration changed" as the client
    went (PgBouncer: "database removed", as for every server of the dropped database)."""
    p = pooler(pgbouncer={"pool_mode": pool_mode})
    old = p.connect()
    pid = old.execute("SELECT pg_backend_pid()").fetchone()[0]
    mark = _removed_from_config(p, keep_fallback)
    p.wait_for_log(r"WARNING dropping database 'appdb' as it does not exist anymore or "
                   r"inactive auto-database\n", since=mark)
    with pytest.raises(psycopg.OperationalError, match="database removed"):
        old.execute("SELECT 1")
    p.wait_for_log(r"S-0x[0-9a-f]+: appdb/md5user@\S+ closing because: database removed",
                   since=mark)
    assert "database configuration changed" not in p.log_text()[mark:]
    harness.wait_until(lambda: pid not in {r[0] for r in pg.sql(
        "SELECT pid FROM pg_stat_activity WHERE datname = 'appdb'")}, 10, what="server closed")
    # Its pools are freed as PgBouncer frees them: no SHOW POOLS or SHOW STATS row is left.
    assert "appdb" not in {r["database"] for r in p.show("POOLS")}
    assert "appdb" not in {r["database"] for r in p.show("STATS")}
    if keep_fallback:
        with p.connect() as new:
            assert new.execute("SELECT current_database()").fetchone() == ("appdb",)
            assert new.execute("SELECT 1").fetchone() == (1,)
    else:
        with pytest.raises(psycopg.OperationalError, match="no such database: appdb"):
            p.connect()
    # other databases are untouched
    with p.connect(dbname="postgres") as other:
        assert other.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: auto-databases keep the old target when the * line changes, and "
    "stay when it is removed")
def test_auto_database_follows_the_fallback_line(pooler, pg):
    """Databases made from the "*" line take its new settings on RELOAD (PgBouncer's
    behaviour: a changed target replaces their servers); once the line is gone they are
    dropped like a removed entry, with one warning however many reloads follow (PgBouncer
    1.18 keeps serving through a removed "*" line, so that half fails against it)."""
    pg.sql("DROP DATABASE IF EXISTS autoreload")
    pg.sql("CREATE DATABASE autoreload OWNER md5user")
    try:
        p = pooler(pgbouncer={"pool_mode": "transaction"})
        c = p.connect(dbname="autoreload")
        assert c.execute("SELECT current_database()").fetchone() == ("autoreload",)
        mark = p.log_mark()
        p.write_ini(harness.make_ini(pgbouncer={"pool_mode": "transaction"},
                                     databases={"*": "host={pg_host} port={pg_port} dbname=appdb"}))
        p.reload()
        p.wait_for_log(r"got SIGHUP, re-reading config", since=mark)
        # The very next transaction of the same client runs on the new target: the idle
        # server of the old one is not handed out again (PgBouncer: "obsolete connection").
        assert c.execute("SELECT current_database()").fetchone() == ("appdb",)
        with p.connect(dbname="autoreload") as new:
            assert new.execute("SELECT current_database()").fetchone() == ("appdb",)
        mark = p.log_mark()
        p.write_ini(harness.make_ini(pgbouncer={"pool_mode": "transaction"}, databases={"*": None}))
        p.reload()
        p.wait_for_log(r"WARNING dropping database 'autoreload' as it does not exist anymore",
                       since=mark)
        with pytest.raises(psycopg.OperationalError, match="database removed"):
            c.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError, match="no such database: autoreload"):
            p.connect(dbname="autoreload")
        for n in (2, 3):  # one at a time: two SIGHUPs sent together may arrive as one
            p.reload()
            harness.wait_until(lambda: p.log_text()[mark:].count("got SIGHUP") >= n, 10,
                               what=f"reload {n}")
        # (counted after a query: the last reload has then surely run to its end)
        assert p.connect().execute("SELECT 1").fetchone() == (1,)
        assert p.log_text()[mark:].count("dropping database 'autoreload'") == 1
    finally:
        pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
               "WHERE datname = 'autoreload'")
        pg.sql("DROP DATABASE IF EXISTS autoreload")


def test_idle_auto_database_is_dropped(pooler, pg):
    """autodb_idle_timeout: an auto-database without clients or servers that long goes, with
    its pools (PgBouncer's janitor does the same); the next client registers it anew."""
    pg.sql("DROP DATABASE IF EXISTS autoidle")
    pg.sql("CREATE DATABASE autoidle OWNER md5user")
    try:
        p = pooler(pgbouncer={"pool_mode": "transaction", "autodb_idle_timeout": 1,
                              "server_idle_timeout": 1})
        with p.connect(dbname="autoidle") as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
        p.wait_for_log(r"WARNING dropping database 'autoidle' as it does not exist anymore or "
                       r"inactive auto-database\n", timeout=15)
        assert "autoidle" not in {r["name"] for r in p.show("DATABASES")}
        assert "autoidle" not in {r["database"] for r in p.show("POOLS")}
        mark = p.log_mark()
        with p.connect(dbname="autoidle") as c:
            assert c.execute("SELECT current_database()").fetchone() == ("autoidle",)
        p.wait_for_log(r"registered new auto-database: db=autoidle", since=mark)
        # explicit databases never go, however idle
        assert "appdb" in {r["name"] for r in p.show("DATABASES")}
    finally:
        pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
               "WHERE datname = 'autoidle'")
        pg.sql("DROP DATABASE IF EXISTS autoidle")


@pytest.fixture
def standby_pg():
    """A second cluster for switchover tests (the shared one keeps serving others)."""
    cluster = harness.PgCluster(max_connections=50)
    yield cluster
    cluster.stop()


@pytest.mark.parametrize("paused", [False, True], ids=["reload", "pause-reload-resume"])
def test_reload_repoints_a_database_to_another_server(pooler, pg, standby_pg, paused):
    """A switchover as operators script it: the [databases] entry is rewritten to name
    another server and the console's RELOAD is given (alone, or between PAUSE and RESUME
    as Patroni-style callbacks do) while clients work in transaction mode. Nobody gets an
    error; every transaction that starts after the RELOAD runs on the new server; a
    transaction already open (without PAUSE, which would wait for it) finishes on the old
    one and the client's next one runs on the new; and the pooler then holds no connection
    to the old server."""
    def ini(port):
        return harness.make_ini(
            pgbouncer={"pool_mode": "transaction", "default_pool_size": "4",
                       "log_connections": "0", "log_disconnections": "0"},
            databases={"appdb": f"host=127.0.0.1 port={port} dbname=appdb"})
    p = pooler(ini(pg.port))
    old, new = pg.port, standby_pg.port
    port_sql = "SELECT current_setting('port')::int"
    stop = threading.Event()
    reloading, reloaded = threading.Event(), threading.Event()
    errors, before, after = [], [], []

    def work():
        with p.connect(prepare_threshold=None) as c:
            while not stop.is_set():
                started_after = reloaded.is_set()
                try:
                    port = c.execute(port_sql).fetchone()[0]
                except psycopg.Error as e:
                    errors.append(str(e))
                    continue
                if started_after:
                    after.append(port)
                elif not reloading.is_set():  # over before the ini was rewritten
                    before.append(port)

    # A transaction left open across the RELOAD (not under PAUSE, which waits for it).
    held = None if paused else p.connect(prepare_threshold=None, autocommit=False)
    if held:
        assert held.execute(port_sql).fetchone()[0] == old
    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        harness.wait_until(lambda: len(before) >= 50, 30, what="work on the old server")
        reloading.set()
        if paused:
            p.admin("PAUSE appdb")
        p.write_ini(ini(new))
        p.admin("RELOAD")
        reloaded.set()
        if paused:
            p.admin("RESUME appdb")
        harness.wait_until(lambda: len(after) >= 200, 30, what="work after the RELOAD")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:3]
    assert set(before) == {old}
    assert set(after) == {new}
    if held:
        assert held.execute(port_sql).fetchone()[0] == old  # still its transaction
        held.commit()
        assert held.execute(port_sql).fetchone()[0] == new
        held.commit()
        held.close()
    harness.wait_until(lambda: _md5user_backends(pg) == 0, 10,
                       what="no connection left to the old server")
    assert {int(r["port"]) for r in p.show("SERVERS")} == {new}


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 bug: a client waiting for a pool's first server login when a RELOAD "
    "changes the target is not served (its connect times out)", strict=False)
def test_reload_retires_a_server_still_logging_in_to_the_old_target(pooler, pg, standby_pg):
    """A server connection whose login to the old target is still under way when a RELOAD
    names a new one is closed once its login is done, not given to clients: the client that
    waited for it is served by the new target."""
    gated = harness.Forwarder(pg.port, gated=True)
    try:
        def ini(port):
            return harness.make_ini(
                pgbouncer={"pool_mode": "transaction", "default_pool_size": "1"},
                databases={"appdb": f"host=127.0.0.1 port={port} dbname=appdb"})
        p = pooler(ini(gated.port))
        box = {}

        def client():
            try:
                with p.connect(prepare_threshold=None) as c:
                    box["port"] = c.execute("SELECT current_setting('port')::int").fetchone()[0]
            except psycopg.Error as e:
                box["error"] = str(e)
        t = threading.Thread(target=client)
        t.start()
        assert gated.accepted.wait(10), "the pooler did not start a server login"
        p.write_ini(ini(standby_pg.port))
        p.admin("RELOAD")
        gated.open()  # the old login completes now
        t.join(30)
        assert not t.is_alive()
        assert box == {"port": standby_pg.port}
        harness.wait_until(lambda: {int(r["port"]) for r in p.show("SERVERS")}
                           <= {standby_pg.port}, 10, what="only servers of the new target")
    finally:
        gated.close()


def test_reload_to_a_target_that_refuses_tells_the_queue(pooler):
    """After a RELOAD points a database at a target that refuses logins (here a database
    that does not exist), a client that needs a server gets the server's error at once,
    although a transaction still holds a server of the old target: that server is retired,
    so it does not count as one that will serve the queue."""
    def ini(dbname):
        return harness.make_ini(
            pgbouncer={"pool_mode": "transaction", "query_wait_timeout": "30"},
            databases={"appdb": "host={pg_host} port={pg_port} dbname=" + dbname})
    p = pooler(ini("appdb"))
    held = p.connect(prepare_threshold=None, autocommit=False)
    held.execute("SELECT 1")
    p.write_ini(ini("nosuchdb"))
    p.admin("RELOAD")
    with pytest.raises(psycopg.OperationalError, match='database "nosuchdb" does not exist'):
        with p.connect(prepare_threshold=None) as c:
            c.execute("SELECT 1")
    assert held.execute("SELECT 2").fetchone() == (2,)  # its transaction goes on
    held.rollback()
    held.close()
