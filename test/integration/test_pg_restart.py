"""PostgreSQL goes away and comes back while clients work through the pooler: a restart
(`pg_ctl stop -m fast`, then start) and an immediate stop (`-m immediate`: backends are
killed without a goodbye, which is what a crash looks like to the pooler), each with the
server down for a second.

While it is down, clients get the pooler's errors (PgBouncer's texts: `server conn
crashed?` for a server that died under a query, `server login has been failing, ...` while
server_login_retry holds new logins back) or PostgreSQL's own FATAL for the shutdown.
Once it is back, every client is served again without anyone touching the pooler: in
transaction mode over the connection it already had (also a client that stayed idle the
whole time), in session mode a client whose server died is disconnected and its next
connection is served. Afterwards every server the pooler holds is a live backend of the
new postmaster, and the pooler holds no socket or object of the connections that died.
The cluster here is the test's own (the shared one is not restarted under other tests)."""

import re
import threading
import time

import psycopg
import pytest

import harness

# What a client may be told while the server is down or going down.
DOWN_ERRORS = re.compile(
    r"server conn crashed\?|server login has been failing"
    r"|terminating connection due to administrator command"
    r"|the database system is (shutting down|starting up|not yet accepting connections)"
    r"|server closed the connection unexpectedly")


@pytest.fixture
def own_pg():
    cluster = harness.PgCluster(max_connections=50)
    yield cluster
    cluster.stop()


class Workers:
    """Clients in threads, each running short queries in a loop and connecting again when
    its connection was closed. Records every error and the time of each success."""

    def __init__(self, p, n):
        self.p = p
        self.stop = threading.Event()
        self.errors = []
        self.last_ok = [0.0] * n
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, i):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self.p.connect(prepare_threshold=None)
                conn.execute("SELECT pg_sleep(0.005)")
                self.last_ok[i] = time.monotonic()
            except psycopg.Error as e:
                self.errors.append(str(e))
                if conn is not None and conn.closed:
                    conn = None
                time.sleep(0.02)
        if conn is not None:
            conn.close()

    def all_served_since(self, t):
        return all(x > t for x in self.last_ok)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads)


def _restart_under_load(pooler, own_pg, mode, how):
    # transaction mode: 7 clients share 4 servers; session mode: one server each
    size = 4 if mode == "transaction" else 8
    p = pooler(pgbouncer={"pool_mode": mode, "default_pool_size": str(size),
                          "server_login_retry": "1", "query_wait_timeout": "30",
                          "log_connections": "0", "log_disconnections": "0"},
               databases={"appdb": f"host=127.0.0.1 port={own_pg.port} dbname=appdb"})
    idle = p.connect(prepare_threshold=None)
    idle.execute("SELECT 1")
    before = p.footprint()
    work = Workers(p, 6)
    try:
        harness.wait_until(lambda: work.all_served_since(0), 30, what="every worker served")
        old_backends = {r[0] for r in own_pg.sql("SELECT pid FROM pg_stat_activity "
                                                 "WHERE usename = 'md5user'")}
        own_pg.restart(how, down=1.0)
        up = time.monotonic()
        harness.wait_until(lambda: work.all_served_since(up), 30,
                           what="every worker served after the restart")
    finally:
        work.finish()
    unexpected = [e for e in work.errors if not DOWN_ERRORS.search(e)]
    assert not unexpected, unexpected[:5]
    assert work.errors, "nobody noticed the server going away"
    return p, idle, before, old_backends


def _servers_are_new_backends(p, own_pg, old_backends):
    backends = {r[0] for r in own_pg.sql("SELECT pid FROM pg_stat_activity "
                                         "WHERE usename = 'md5user'")}
    servers = {int(r["remote_pid"]) for r in p.show("SERVERS") if r["database"] == "appdb"}
    assert servers and servers <= backends, (servers, backends)
    assert not servers & old_backends


@pytest.mark.parametrize("how", ["fast", "immediate"])
def test_transaction_mode_serves_everyone_after_postgres_restarts(pooler, own_pg, how):
    p, idle, before, old_backends = _restart_under_load(pooler, own_pg, "transaction", how)
    # the client that stayed idle through it all still has its connection, and a server
    assert idle.execute("SELECT 41 + 1").fetchone() == (42,)
    _servers_are_new_backends(p, own_pg, old_backends)
    idle.close()
    p.assert_footprint_back({**before, "clients": before["clients"] - 1,
                             "fds": before["fds"] - 1})


def test_session_mode_drops_the_sessions_of_dead_servers(pooler, own_pg):
    p, idle, before, old_backends = _restart_under_load(pooler, own_pg, "session",
                                                         "immediate")
    # its session's server died: the client was told and disconnected, a new one is served
    with pytest.raises(psycopg.OperationalError, match=r"server conn crashed\?"):
        idle.execute("SELECT 1")
    again = p.connect(prepare_threshold=None)
    assert again.execute("SELECT 41 + 1").fetchone() == (42,)
    again.close()
    _servers_are_new_backends(p, own_pg, old_backends)
    p.assert_footprint_back({**before, "clients": before["clients"] - 1,
                             "fds": before["fds"] - 1})
