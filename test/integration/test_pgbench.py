"""pgbench through the pooler in session mode: every transaction succeeds."""

import os
import re
import subprocess

import harness


def _pgbench(args, port, timeout):
    env = dict(os.environ, PGPASSWORD="md5pass", PGCONNECT_TIMEOUT="15")
    env.pop("PGPASSFILE", None)
    cmd = [harness.pg_tool("pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "md5user"] \
        + args + ["appdb"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def test_pgbench_session_mode(pooler, pg):
    init = _pgbench(["-i", "-q", "-s", "1"], pg.port, 180)  # directly against PostgreSQL
    assert init.returncode == 0, init.stderr
    p = pooler(pgbouncer={"pool_mode": "session", "default_pool_size": 20})
    r = _pgbench(["-c", "16", "-j", "2", "-T", "10", "-n"], p.port, 120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    assert processed and int(processed.group(1)) > 0, out
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert failed and int(failed.group(1)) == 0, out
    assert "error" not in r.stderr.lower(), r.stderr
    clients = re.search(r"number of clients: (\d+)", out)
    assert clients and clients.group(1) == "16"
