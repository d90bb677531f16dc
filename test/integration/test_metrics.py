"""The opt-in OpenMetrics endpoint (sluice-only; doc/admin.md "Metrics endpoint").

Scrapes /metrics under a pgbench load and parses every scrape with prometheus_client's
OpenMetrics parser (Debian's python3-prometheus-client), then checks counters, gauges and
that the histogram buckets add up."""

import urllib.error
import urllib.request

import psycopg
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import harness

pytestmark = pytest.mark.differs_from_pgbouncer_1_18("sluice only: the metrics endpoint (metrics_listen_addr)")

HISTOGRAMS = ("sluice_transaction_duration_seconds", "sluice_query_duration_seconds",
              "sluice_wait_duration_seconds")


@pytest.fixture
def metrics_port():
    port = harness.free_port()
    yield port
    harness.release_port(port)


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        text = r.read().decode()
    assert text.endswith("# EOF\n")
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(families, family, name=None, **labels):
    return [s for s in families[family].samples
            if (name is None or s.name == name)
            and all(s.labels.get(k) == v for k, v in labels.items())]


def value(families, family, name, **labels):
    found = samples(families, family, name, **labels)
    assert len(found) == 1, (family, name, labels, found)
    return found[0].value


def check_histograms(families):
    for h in HISTOGRAMS:
        f = families[h]
        assert f.type == "histogram" and f.unit == "seconds"
        for db in {s.labels["database"] for s in f.samples}:
            buckets = [s for s in f.samples if s.name == h + "_bucket"
                       and s.labels["database"] == db]
            les = [float(s.labels["le"]) for s in buckets]
            assert les == sorted(les) and les[-1] == float("inf")
            counts = [s.value for s in buckets]
            assert counts == sorted(counts), (h, db, counts)  # cumulative
            assert value(families, h, h + "_count", database=db) == counts[-1]
            assert value(families, h, h + "_sum", database=db) >= 0


def test_metrics_under_pgbench(pooler, pg, metrics_port):
    init = harness.pgbench_run(["-i", "-q", "-s", "1"], pg.port, 120)
    assert init.returncode == 0, init.stderr
    p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": 3,
                          "metrics_listen_addr": "127.0.0.1",
                          "metrics_listen_port": str(metrics_port)})
    bench = harness.pgbench_start(["-c", "6", "-j", "2", "-T", "4", "-n"], p.port)
    saw_load = False
    while bench.poll() is None:
        fams = scrape(metrics_port)  # parses: the parser raises on malformed text
        check_histograms(fams)
        active = samples(fams, "sluice_pool_client_connections", database="appdb",
                         user="md5user", state="active")
        if active and active[0].value > 0:
            saw_load = True
    out, err = bench.communicate()
    assert bench.returncode == 0, out + err
    assert saw_load

    fams = scrape(metrics_port)
    check_histograms(fams)
    assert value(fams, "sluice_build", "sluice_build_info", pgbouncer_compatible="1.26.1") == 1
    db = {"database": "appdb"}
    xacts = value(fams, "sluice_transactions", "sluice_transactions_total", **db)
    queries = value(fams, "sluice_queries", "sluice_queries_total", **db)
    assert xacts > 100 and queries >= xacts
    for fam in ("sluice_server_assignments", "sluice_received_bytes", "sluice_sent_bytes",
                "sluice_client_logins", "sluice_transaction_time_seconds",
                "sluice_query_time_seconds"):
        assert fams[fam].type == "counter"
        assert value(fams, fam, fam + "_total", **db) > 0, fam
    assert value(fams, "sluice_client_logins", "sluice_client_logins_total", **db) >= 6
    # every query is in the query histogram; transactions and waits in theirs
    assert value(fams, "sluice_query_duration_seconds", "sluice_query_duration_seconds_count",
                 **db) == queries
    assert 0 < value(fams, "sluice_transaction_duration_seconds",
                     "sluice_transaction_duration_seconds_count", **db) <= xacts
    assert value(fams, "sluice_wait_duration_seconds", "sluice_wait_duration_seconds_count",
                 **db) <= value(fams, "sluice_server_assignments",
                                "sluice_server_assignments_total", **db)
    # gauges agree with SHOW POOLS after the load: pgbench is gone, servers stay idle
    pool = {"database": "appdb", "user": "md5user"}
    assert value(fams, "sluice_pool_client_connections", None, state="active", **pool) == 0
    servers = sum(s.value for s in samples(fams, "sluice_pool_server_connections", **pool))
    show = [r for r in p.show("POOLS") if r["database"] == "appdb"][0]
    assert servers == show["sv_idle"] + show["sv_active"] + show["sv_used"] + show["sv_login"]
    assert 0 < servers <= 3
    assert value(fams, "sluice_pool_size", None, **pool) == 3
    assert value(fams, "sluice_pool_max_wait_seconds", None, **pool) == 0
    assert fams["sluice_pool_max_wait_seconds"].unit == "seconds"
    assert value(fams, "sluice_database_paused", None, **db) == 0
    # the database's own pause, as SHOW DATABASES "paused"; a global PAUSE is sluice_paused
    p.admin("PAUSE")
    fams = scrape(metrics_port)
    assert (value(fams, "sluice_paused", None), value(fams, "sluice_database_paused", None,
                                                      **db)) == (1, 0)
    p.admin("RESUME")
    p.admin("PAUSE appdb")
    fams = scrape(metrics_port)
    assert (value(fams, "sluice_paused", None), value(fams, "sluice_database_paused", None,
                                                      **db)) == (0, 1)
    p.admin("RESUME appdb")
    # the console is not a pool of interest: not exported
    assert not samples(fams, "sluice_pool_client_connections", database="pgbouncer")


def test_metrics_labels_escaped_and_404(pooler, metrics_port):
    p = pooler(pgbouncer={"metrics_listen_addr": "127.0.0.1",
                          "metrics_listen_port": str(metrics_port)})
    odd = 'odd"db\\name'
    with pytest.raises(psycopg.OperationalError):
        p.connect(dbname=odd)  # the "*" entry creates the pool; PostgreSQL has no such db
    fams = scrape(metrics_port)
    assert samples(fams, "sluice_pool_client_connections", database=odd)
    assert samples(fams, "sluice_database_client_connections", database=odd)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/other", timeout=10)
    assert e.value.code == 404


def test_metrics_off_by_default(pooler):
    p = pooler()
    config = {r["key"]: r for r in p.show("CONFIG")}
    assert config["metrics_listen_addr"]["value"] == ""
    assert config["metrics_listen_addr"]["changeable"] == "no"
    assert config["metrics_listen_port"]["default"] == "9127"
