"""Server host names: resolved without blocking the pooler (libevent's resolver, pointed at a
fake DNS server through resolv_conf), cached for dns_max_ttl, failures reported clearly."""

import os
import shutil
import threading
import time

import pytest

import harness
from fakedns import QTYPE_A, FakeDns

# Every test but the last points the resolver at a FakeDns through resolv_conf.
RESOLV_CONF = pytest.mark.differs_from_pgbouncer_1_18(
    "Debian's PgBouncer resolves with c-ares, which ignores resolv_conf (only the evdns "
    "backend, which sluice uses, reads it)")


def _resolv_conf(dns, timeout=1):
    d = harness.make_tempdir("sluice-dns-")
    return d, dns.write_resolv_conf(os.path.join(d, "resolv.conf"), timeout=timeout)


@RESOLV_CONF
def test_name_resolves_once_for_several_servers(pooler):
    with FakeDns({"db.sluice.test": "127.0.0.1"}) as dns:
        d, conf = _resolv_conf(dns)
        try:
            p = pooler(pgbouncer={"pool_mode": "session", "resolv_conf": conf},
                       databases={"appdb": "host=db.sluice.test port={pg_port}"})
            conns = []
            for _ in range(3):
                c = p.connect()
                c.execute("BEGIN")
                assert c.execute("SELECT 1").fetchone() == (1,)
                conns.append(c)
            # Three server connections, one lookup: the answer is cached (dns_max_ttl 15 s).
            assert dns.count("db.sluice.test", QTYPE_A) == 1
            assert [r["addr"] for r in p.show("SERVERS")] == ["127.0.0.1"] * 3
            hosts = p.show("DNS_HOSTS")
            assert [(h["hostname"], h["addrs"]) for h in hosts] == [("db.sluice.test",
                                                                     "127.0.0.1")]
            assert 0 <= hosts[0]["ttl"] <= 15
            lists = {r["list"]: r["items"] for r in p.show("LISTS")}
            assert (lists["dns_names"], lists["dns_queries"], lists["dns_pending"]) == (1, 0, 0)
            for c in conns:
                c.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)


@RESOLV_CONF
def test_slow_resolver_does_not_stall_others(pooler):
    with FakeDns({"db.sluice.test": "127.0.0.1"}, silent={"slow.sluice.test"}) as dns:
        d, conf = _resolv_conf(dns, timeout=5)
        try:
            p = pooler(pgbouncer={"resolv_conf": conf, "client_login_timeout": "8",
                                  "server_login_retry": "1"},
                       databases={"slowdb": "host=slow.sluice.test port={pg_port} "
                                            "dbname=appdb"})
            result = {}

            def slow_client():
                t0 = time.monotonic()
                result["rc"], _out, result["err"] = p.psql("-c", "SELECT 1", dbname="slowdb")
                result["secs"] = time.monotonic() - t0

            th = threading.Thread(target=slow_client)
            th.start()
            harness.wait_until(lambda: dns.count("slow.sluice.test", QTYPE_A) >= 1, 10)
            # The lookup hangs; everyone else is served meanwhile.
            lists = {r["list"]: r["items"] for r in p.show("LISTS")}
            assert lists["dns_queries"] == 1 and lists["dns_pending"] == 1
            t0 = time.monotonic()
            for _ in range(20):
                assert p.psql("-c", "SELECT 1")[:2] == (0, "1\n")
            assert time.monotonic() - t0 < 4  # well inside the 5 s the lookup hangs
            th.join(60)
            assert not th.is_alive()
            # The name never resolved: the client waited for its first server until
            # client_login_timeout.
            assert result["rc"] != 0 and "client_login_timeout" in result["err"], result
            p.wait_for_log(r'\] WARNING DNS lookup failed: slow\.sluice\.test: result=-?\d+\n')
            p.wait_for_log(r'LOG S-0x[0-9a-f]+: slowdb/md5user@\(bad-af\):0 closing because: '
                           r'server DNS lookup failed \(age=')
            # libevent's resolver speaks through our log, not a bare "[msg]" on stderr.
            p.wait_for_log(r'LOG libevent: Nameserver 127\.0\.0\.1:\d+ has failed')
            # The failure is remembered (dns_nxdomain_ttl): one lookup, one warning; the
            # client that waited on got one new attempt per server_login_retry (1 s over the
            # 3 s left), not a storm of them.
            log = p.log_text()
            assert log.count('DNS lookup failed: slow.sluice.test') == 1, log
            tries = log.count('closing because: server DNS lookup failed')
            assert 2 <= tries <= 6, tries
            assert p.psql("-c", "SELECT 1")[:2] == (0, "1\n")
        finally:
            shutil.rmtree(d, ignore_errors=True)


@RESOLV_CONF
def test_unknown_name_fails_clearly(pooler):
    with FakeDns({}) as dns:
        d, conf = _resolv_conf(dns)
        try:
            p = pooler(pgbouncer={"resolv_conf": conf, "query_wait_timeout": "3",
                                  "server_login_retry": "5"},
                       databases={"appdb": "host=missing.sluice.test port={pg_port}"})
            rc, _out, err = p.psql("-c", "SELECT 1")
            assert rc != 0
            p.wait_for_log(r'DNS lookup failed: missing\.sluice\.test: result=-?\d+\n')
            # Within server_login_retry the next client is told why at once, and the
            # failure is remembered (dns_nxdomain_ttl): no second query.
            asked = dns.count("missing.sluice.test", QTYPE_A)
            t0 = time.monotonic()
            rc, _out, err = p.psql("-c", "SELECT 1")
            assert rc != 0 and "could not resolve" in err
            assert time.monotonic() - t0 < 3
            assert dns.count("missing.sluice.test", QTYPE_A) == asked
        finally:
            shutil.rmtree(d, ignore_errors=True)


@RESOLV_CONF
def test_refused_address_is_skipped_at_once(pooler):
    """The name has two addresses and the server listens on one (as `localhost` with
    127.0.0.1 and ::1 often is): a connect refused on one address goes on to the next at once,
    as libpq does, instead of counting as a login failure that holds the pool for
    server_login_retry."""
    with FakeDns({"two.sluice.test": ["127.0.0.2", "127.0.0.1"]}) as dns:
        d, conf = _resolv_conf(dns)
        try:
            p = pooler(pgbouncer={"pool_mode": "session", "resolv_conf": conf,
                                  "server_login_retry": "30", "query_wait_timeout": "10"},
                       databases={"appdb": "host=two.sluice.test port={pg_port}"})
            conns = []
            t0 = time.monotonic()
            for _ in range(4):  # each holds its server: four connects, two refused
                c = p.connect()
                c.execute("BEGIN")
                assert c.execute("SELECT 1").fetchone() == (1,)
                conns.append(c)
            assert time.monotonic() - t0 < 8
            assert [r["addr"] for r in p.show("SERVERS")] == ["127.0.0.1"] * 4
            hosts = p.show("DNS_HOSTS")
            assert [(h["hostname"], h["addrs"]) for h in hosts] == [
                ("two.sluice.test", "127.0.0.2,127.0.0.1")]
            log = p.log_text()
            assert "127.0.0.2" in log and "connect failed: Connection refused" in log
            for c in conns:
                c.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)


@RESOLV_CONF
def test_answer_expires_after_dns_max_ttl(pooler):
    """A cached answer is used for dns_max_ttl seconds; the next server connection after that
    asks again."""
    with FakeDns({"db.sluice.test": "127.0.0.1"}) as dns:
        d, conf = _resolv_conf(dns)
        try:
            p = pooler(pgbouncer={"pool_mode": "session", "resolv_conf": conf,
                                  "dns_max_ttl": "1"},
                       databases={"appdb": "host=db.sluice.test port={pg_port}"})
            first = p.connect()
            first.execute("BEGIN")  # holds its server: the next client needs a new one
            assert dns.count("db.sluice.test", QTYPE_A) == 1
            time.sleep(1.5)
            second = p.connect()
            assert second.execute("SELECT 1").fetchone() == (1,)
            assert dns.count("db.sluice.test", QTYPE_A) == 2
            first.close()
            second.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)


@RESOLV_CONF
def test_connections_to_an_address_the_name_left_are_retired(pooler):
    """A DNS switchover: the name moves from 127.0.0.1 to ::1 while the old address still
    accepts connections. The next lookup (a new server connection after dns_max_ttl) retires
    every server connection to 127.0.0.1 in each pool whose database names the host: idle ones
    close at once, busy ones when released, so no client lands on the old server again."""
    with FakeDns({"db.sluice.test": "127.0.0.1"}) as dns:
        d, conf = _resolv_conf(dns)
        try:
            p = pooler(pgbouncer={"pool_mode": "session", "resolv_conf": conf,
                                  "dns_max_ttl": "1"},
                       databases={"one": "host=db.sluice.test port={pg_port} dbname=appdb",
                                  "two": "host=db.sluice.test port={pg_port} dbname=appdb"})
            busy = p.connect(dbname="one")
            busy.execute("BEGIN")  # holds its server through the switchover
            assert busy.execute("SELECT 1").fetchone() == (1,)
            with p.connect(dbname="one") as c:  # a second server, idle once c leaves
                assert c.execute("SELECT 1").fetchone() == (1,)

            def servers(db):
                return sorted((r["addr"], r["close_needed"]) for r in p.show("SERVERS")
                              if r["database"] == db)

            harness.wait_until(lambda: servers("one") == [("127.0.0.1", 0)] * 2, 10)
            dns.set_answer("db.sluice.test", "::1")
            time.sleep(1.5)  # the cached answer expires
            other = p.connect(dbname="two")  # a new server connection: a fresh lookup
            assert other.execute("SELECT 1").fetchone() == (1,)
            assert servers("two") == [("::1", 0)]
            # In pool "one" the idle server is gone and the busy one is marked.
            harness.wait_until(lambda: servers("one") == [("127.0.0.1", 1)], 10)
            assert busy.execute("SELECT 2").fetchone() == (2,)  # its session goes on
            busy.execute("COMMIT")
            busy.close()
            harness.wait_until(lambda: servers("one") == [], 10)
            again = p.connect(dbname="one")
            assert again.execute("SELECT 1").fetchone() == (1,)
            assert servers("one") == [("::1", 0)]
            log = p.log_text()
            assert ("DNS: db.sluice.test no longer resolves to 127.0.0.1; "
                    "2 server connection(s) to it retired") in log
            assert "obsolete connection" in log
            other.close()
            again.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)


@RESOLV_CONF
def test_zone_check_period_looks_names_up_again(pooler):
    """dns_zone_check_period: the names of pools with server connections are looked up again
    every period, so a pool that opens no new connection still leaves a moved name's old
    address. A refresh that fails keeps the cached answer in use."""
    with FakeDns({"db.sluice.test": "127.0.0.1"}) as dns:
        d, conf = _resolv_conf(dns)
        try:
            p = pooler(pgbouncer={"pool_mode": "session", "resolv_conf": conf,
                                  "dns_max_ttl": "60", "dns_zone_check_period": "1"},
                       databases={"appdb": "host=db.sluice.test port={pg_port}"})
            busy = p.connect()
            busy.execute("BEGIN")
            assert busy.execute("SELECT 1").fetchone() == (1,)
            asked = dns.count("db.sluice.test", QTYPE_A)

            # The name vanishes: the refresh fails, the cached answer stays in use.
            dns.set_answer("db.sluice.test", None)
            harness.wait_until(lambda: dns.count("db.sluice.test", QTYPE_A) > asked, 10)
            p.wait_for_log(r"\] WARNING DNS lookup failed: db\.sluice\.test: result=-?\d+\n")
            time.sleep(0.5)
            with p.connect() as c:  # a second server, from the cached answer
                assert c.execute("SELECT 1").fetchone() == (1,)
            assert [(h["hostname"], h["addrs"]) for h in p.show("DNS_HOSTS")] == [
                ("db.sluice.test", "127.0.0.1")]

            # The name moves: the next refresh retires the connections to 127.0.0.1.
            dns.set_answer("db.sluice.test", "::1")

            def servers():
                return sorted((r["addr"], r["close_needed"]) for r in p.show("SERVERS"))

            harness.wait_until(lambda: servers() == [("127.0.0.1", 1)], 10)
            with p.connect() as c:
                assert c.execute("SELECT 1").fetchone() == (1,)
                assert servers() == [("127.0.0.1", 1), ("::1", 0)]
            busy.execute("COMMIT")
            busy.close()
            harness.wait_until(lambda: servers() == [("::1", 0)], 10)
        finally:
            shutil.rmtree(d, ignore_errors=True)


def test_lookup_failure_log_lines(pooler):
    """PgBouncer's lines for a name that does not resolve: one WARNING per lookup, without a
    connection prefix (the number is the resolver's code: 0 from c-ares, a getaddrinfo code
    from evdns), then each server connection that needed it closes under PgBouncer's name for
    an address it does not have. A remembered failure (dns_nxdomain_ttl) closes the next
    server connections without a new lookup or warning. The name is a .onion one, which
    c-ares refuses without asking anyone; sluice asks a FakeDns, which says NXDOMAIN."""
    with FakeDns({}) as dns:
        d, conf = _resolv_conf(dns)
        try:
            p = pooler(pgbouncer={"resolv_conf": conf, "query_wait_timeout": "3",
                                  "server_login_retry": "1"},
                       databases={"appdb": "host=missing.onion port={pg_port}"})
            rc, _out, _err = p.psql("-c", "SELECT 1")
            assert rc != 0
            p.wait_for_log(r"\[\d+\] WARNING DNS lookup failed: missing\.onion: result=-?\d+\n"
                           r"[^\n]* LOG S-0x[0-9a-f]+: appdb/md5user@\(bad-af\):0 closing because: "
                           r"server DNS lookup failed \(age=\d+s\)\n")
            # The client waited query_wait_timeout, with a new server attempt every
            # server_login_retry: each one closed, only the first lookup warned.
            log = p.log_text()
            assert log.count("DNS lookup failed: missing.onion") == 1, log
            assert log.count("closing because: server DNS lookup failed") >= 2, log
        finally:
            shutil.rmtree(d, ignore_errors=True)
