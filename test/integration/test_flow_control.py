"""Flow control under load: a client that stops reading a large result is held back at its
socket (PostgreSQL's bytes wait in the kernel, not in sluice's memory) while the other
clients go on through the other server, and when it reads again every row arrives, in
order. Several sockets are ready in most loop turns here, so sluice's sends to them go
through the send batch (doc/pooling.md, "Sends"), including the short sends to the stalled
client's full socket."""

import threading
import time

import harness
import pgwire

ROWS = 40000
WIDTH = 1000  # about 40 MB of result: more than the sockets' buffers on both sides hold


def _rss_kib(pid):
    rss = harness.proc_status(pid, "VmRSS")
    assert rss, "no VmRSS"
    return int(rss[0])


def _connect(port):
    return pgwire.Conn.connect(port=port, user="md5user", database="appdb",
                               password="md5pass", timeout=60)


def test_stalled_reader_holds_back_only_itself(pooler):
    p = pooler(pgbouncer={"pool_mode": "transaction", "default_pool_size": 2,
                          "max_client_conn": 50})
    slow = _connect(p.port)
    rss_before = _rss_kib(p.pid)
    slow.send(pgwire.m.query(
        f"SELECT g, repeat(chr(97 + g % 26), {WIDTH}) FROM generate_series(1, {ROWS}) g"))
    time.sleep(1)  # the result starts flowing and stops at the full socket

    done, errors = [], []

    def worker(i):
        try:
            c = _connect(p.port)
            for k in range(150):
                v = i * 1000 + k
                got = c.scalar(f"SELECT {v}")
                assert got == str(v), (got, v)
            c.close(terminate=True)
            done.append(i)
        except Exception as e:  # reported below
            errors.append(f"worker {i}: {e!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    assert sorted(done) == [0, 1, 2, 3]

    # Nothing of the stalled result piled up in sluice.
    grown = _rss_kib(p.pid) - rss_before
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB while a 40 MB result was held back"
    # PostgreSQL's backend is still sending: the result has not all left it.
    servers = p.show("SERVERS")
    assert any(s["state"] == "active" for s in servers), servers

    msgs = slow.read_until_rfq(timeout=120)
    rows = [pgwire.parse_data_row(m.body) for m in msgs if m.type == "D"]
    assert len(rows) == ROWS
    for g, (num, text) in enumerate(rows, start=1):
        if int(num) != g or text != chr(97 + g % 26) * WIDTH:
            raise AssertionError(f"row {g}: got {num}, {text[:20]!r}...")
    assert msgs[-1].type == "Z"
    assert slow.scalar("SELECT 'still fine'") == "still fine"
    slow.close(terminate=True)
