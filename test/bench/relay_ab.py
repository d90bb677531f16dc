"""The byte relay on epoll against the same relay on io_uring, in interleaved pairs.

    make bench-relays                              30 pairs, -M simple -c 1, one CPU
    /usr/bin/python3 test/bench/relay_ab.py --help

What an io_uring read path could save a pooler at -c 1 before it does any work of its own
(doc/bench.md, "the floor at -c 1"). One run starts a scratch PostgreSQL as `make bench`
does and both relays (test/bench/relay.cpp, and with --uring), each in a session of its own,
then runs pgbench -S -c 1 (or --clients N) through one and the other, alternating which goes
first, and reads each relay's CPU per transaction from /proc/PID/stat. A difference of a
microsecond or two per transaction is below what one pair of runs can show on this machine,
so the answer is the count of pairs in which the io_uring relay was cheaper, and the median
difference. (With more than one client the epoll relay sends each message by itself while
the io_uring one submits a loop pass's sends together, as sluice's send batch does: that
comparison is the batching as much as the read path.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402


def start_relay(b: bench.Bench, binary: str, uring: bool) -> tuple[subprocess.Popen, int]:
    name = "io_uring" if uring else "epoll"
    log_path = os.path.join(b.work, f"relay-{name}.log")
    proc, port, up = bench.spawn_relay(binary, b.pg.port, log_path, uring=uring)
    b.extra_procs.append(proc)  # stopped by b.cleanup()
    if not up:
        raise RuntimeError(f"the {name} relay did not start: {Path(log_path).read_text()[-500:]}")
    return proc, port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--seconds", type=int, default=3, help="pgbench -T of each run")
    ap.add_argument("--mode", default="simple", help="pgbench -M (simple, extended)")
    ap.add_argument("--clients", type=int, default=1, help="pgbench -c (-j 2 above 1)")
    ap.add_argument("--two-cpus", action="store_true",
                    help="leave the processes on every CPU (default: all on one)")
    args = ap.parse_args()
    binary = os.environ.get("RELAY_BIN", str(HERE.parent.parent / "build/bench/relay"))
    b = bench.Bench(bench.parse_args(["--wait-idle", "0"]))
    try:
        b.start_pg()
        relays = {"epoll": start_relay(b, binary, False), "io_uring": start_relay(b, binary, True)}
        cpus = None
        if not args.two_cpus:
            cpus = {max(os.sched_getaffinity(0))}
            bench.set_affinity([p.pid for p, _ in relays.values()] +
                               bench.process_tree(b.pg.pid), cpus)
        cost: dict[str, list[float]] = {name: [] for name in relays}
        for i in range(args.pairs):
            order = list(relays) if i % 2 == 0 else list(reversed(relays))
            for name in order:
                proc, port = relays[name]
                cpu0 = bench.proc_cpu_secs(proc.pid)
                r = b.pgbench(port, ["-n", "-S", "-M", args.mode, "-c", args.clients,
                                     "-j", min(2, args.clients), "-T", args.seconds],
                              timeout=args.seconds + 60, cpus=cpus)
                if not r["ok"]:
                    raise RuntimeError(f"pgbench through the {name} relay failed: {r['error']}")
                cost[name].append((bench.proc_cpu_secs(proc.pid) - cpu0) * 1e6 / r["txns"])
            bench.log(f"pair {i + 1}/{args.pairs}: " +
                      "  ".join(f"{n} {cost[n][-1]:.2f}" for n in relays) + " µs/txn")
        diffs = [u - e for u, e in zip(cost["io_uring"], cost["epoll"])]
        cheaper = sum(d < 0 for d in diffs)
        where = "all on one CPU" if cpus else "on every CPU"
        print(f"-M {args.mode} -c {args.clients}, {where}, {args.pairs} pairs of {args.seconds} s: "
              f"relay CPU per transaction, median epoll {statistics.median(cost['epoll']):.2f} "
              f"µs, io_uring {statistics.median(cost['io_uring']):.2f} µs; io_uring cheaper "
              f"in {cheaper} of {args.pairs} pairs, median difference "
              f"{statistics.median(diffs):+.2f} µs")
    finally:
        b.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
