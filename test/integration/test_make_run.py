"""`make run` (test/lib/run_demo.py): scratch PostgreSQL + pooler until SIGINT."""

import os
import queue
import re
import signal
import subprocess
import threading
import time

import harness

DEMO = os.path.join(harness.REPO, "test", "lib", "run_demo.py")


def _reader(stream, q):
    for line in stream:
        q.put(line)
    q.put(None)


def _wait_line(q, lines, rx, timeout):
    deadline = time.monotonic() + timeout
    while True:
        for line in lines:
            m = re.search(rx, line)
            if m:
                return m
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            line = q.get(timeout=left)
        except queue.Empty:
            return None
        if line is None:
            return None
        lines.append(line)


def test_make_run(sluice_bin):
    port = harness.free_port()
    env = dict(os.environ, SLUICE_BIN=sluice_bin)
    proc = subprocess.Popen(["/usr/bin/python3", DEMO, "--port", str(port)], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    q: queue.Queue = queue.Queue()
    lines: list = []
    pooler_pid = pg_pid = None
    threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True).start()
    try:
        m = _wait_line(q, lines, rf"^psql -h 127\.0\.0\.1 -p {port} -U (\S+) (\S+)\s*$", 120)
        assert m, "no psql line printed:\n" + "".join(lines)
        user, db = m.group(1), m.group(2)
        assert _wait_line(q, lines, r"^ready$", 30), "".join(lines)
        if os.path.exists(os.path.join(harness.REPO, "etc", "sluice.ini")):
            assert "etc/sluice.ini on 127.0.0.1" in "".join(lines)
        text = "".join(lines)
        pg_dir = re.search(r"^postgres dir: (\S+)", text, re.M).group(1)
        pooler_dir = re.search(r"^pooler dir: (\S+)", text, re.M).group(1)
        pg_pid = int(re.search(r"^postgres pid: (\d+)", text, re.M).group(1))
        pooler_pid = int(re.search(r"^pooler pid: (\d+)", text, re.M).group(1))
        assert os.path.isdir(pg_dir) and os.path.isdir(pooler_dir)
        assert harness.pid_alive(pg_pid) and harness.pid_alive(pooler_pid)

        r = subprocess.run([harness.pg_tool("psql"), "-X", "-At", "-h", "127.0.0.1",
                            "-p", str(port), "-U", user, "-c", "SELECT 1", db],
                           env=dict(os.environ, PGPASSWORD=harness.PASSWORDS[user],
                                    PGCONNECT_TIMEOUT="15"),
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert (r.returncode, r.stdout, r.stderr) == (0, "1\n", "")

        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(90) == 0, "".join(lines)
        assert _wait_line(q, lines, r"^run_demo: stopped$", 10), "".join(lines)
        harness.wait_until(lambda: not harness.pid_alive(pooler_pid), 10, what="pooler exit")
        harness.wait_until(lambda: not harness.pid_alive(pg_pid), 10, what="postgres exit")
        if os.environ.get("SLUICE_KEEP") != "1":
            assert not os.path.exists(pg_dir)
            assert not os.path.exists(pooler_dir)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        for pid in (pooler_pid, pg_pid):
            if pid and harness.pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        harness.release_port(port)
