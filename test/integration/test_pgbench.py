"""pgbench through the pooler in session mode: every transaction succeeds."""

import re

import harness


def test_pgbench_session_mode(pooler, pg):
    init = harness.pgbench_run(["-i", "-q", "-s", "1"], pg.port, 180)  # directly
    assert init.returncode == 0, init.stderr
    p = pooler(pgbouncer={"pool_mode": "session", "default_pool_size": 20})
    r = harness.pgbench_run(["-c", "16", "-j", "2", "-T", "10", "-n"], p.port, 120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    assert processed and int(processed.group(1)) > 0, out
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert failed and int(failed.group(1)) == 0, out
    assert "error" not in r.stderr.lower(), r.stderr
    clients = re.search(r"number of clients: (\d+)", out)
    assert clients and clients.group(1) == "16"
