"""100 MB through psql's \\copy in transaction mode, in and out: the bytes arrive unchanged
and the pooler streams them (its RSS stays small) instead of holding them."""

import hashlib
import os
import shutil
import threading

import harness

ROWS = 1_050_000  # ~103 bytes a line: a little over 100 MiB
RSS_LIMIT_KB = 64 * 1024


def _md5_file(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _rss_kb(pid):
    rss = harness.proc_status(pid, "VmRSS")
    return int(rss[0]) if rss else 0


class RssSampler:
    """Samples VmRSS of pid every 100 ms in a thread until stopped."""

    def __init__(self, pid):
        self.pid = pid
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            self.samples.append(_rss_kb(self.pid))
            if self._stop.wait(0.1):
                break

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    @property
    def peak_kb(self):
        return max(self.samples, default=0)


def test_copy_100mb_in_and_out_transaction_mode(pooler, pg):
    work = harness.make_tempdir("sluice-copybig-")  # owned by postgres: the server writes here
    src = os.path.join(work, "src.tsv")
    out = os.path.join(work, "out.tsv")
    direct = os.path.join(work, "direct.tsv")
    try:
        pg.sql("DROP TABLE IF EXISTS copy_big", db="appdb")
        pg.sql("CREATE TABLE copy_big (id int, a text, b text)", db="appdb")
        pg.sql("ALTER TABLE copy_big OWNER TO md5user", db="appdb")
        # the source file, written by PostgreSQL itself (fast)
        pg.sql(f"COPY (SELECT i, md5(i::text) || md5((i + 1)::text), repeat('x', 30) "
               f"FROM generate_series(1, {ROWS}) i) TO '{src}'", db="appdb", timeout=120)
        assert os.path.getsize(src) >= 100 * 1024 * 1024
        src_md5 = _md5_file(src)

        p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": 2})
        base_kb = _rss_kb(p.pid)
        assert base_kb > 0

        # COPY in through the pooler
        with RssSampler(p.pid) as rss_in:
            rc, stdout, stderr = p.psql("-c", f"\\copy copy_big FROM '{src}'", timeout=120)
        assert (rc, stderr) == (0, ""), stderr
        assert stdout.strip() == f"COPY {ROWS}"
        assert len(rss_in.samples) > 0
        assert rss_in.peak_kb < RSS_LIMIT_KB, \
            f"pooler RSS peaked at {rss_in.peak_kb} kB during COPY IN (start {base_kb} kB)"

        # what arrived, exported directly by PostgreSQL, is the file byte for byte
        pg.sql(f"COPY (SELECT * FROM copy_big ORDER BY id) TO '{direct}'", db="appdb",
               timeout=120)
        assert _md5_file(direct) == src_md5

        # COPY out through the pooler
        with RssSampler(p.pid) as rss_out:
            rc, stdout, stderr = p.psql(
                "-c", f"\\copy (SELECT * FROM copy_big ORDER BY id) TO '{out}'", timeout=120)
        assert (rc, stderr) == (0, ""), stderr
        assert stdout.strip() == f"COPY {ROWS}"
        assert os.path.getsize(out) == os.path.getsize(src)
        assert _md5_file(out) == src_md5
        assert rss_out.peak_kb < RSS_LIMIT_KB, \
            f"pooler RSS peaked at {rss_out.peak_kb} kB during COPY OUT (start {base_kb} kB)"

        # the server went back to the pool in a usable state
        with p.connect() as c:
            assert c.execute("SELECT count(*) FROM copy_big").fetchone() == (ROWS,)
    finally:
        pg.sql("DROP TABLE IF EXISTS copy_big", db="appdb")
        shutil.rmtree(work, ignore_errors=True)
