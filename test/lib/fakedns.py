"""A small UDP DNS server for tests, on 127.0.0.1 and a free port.

It answers A queries for the names in `answers` (an address or a list of them), answers other types of those names with no
records, never answers the names in `silent` (a resolver that hangs), and says NXDOMAIN for
everything else. `queries[(name, qtype)]` counts what it was asked (names lower-cased).
`write_resolv_conf(path)` writes a resolv.conf that points libevent's resolver at it."""

import collections
import os
import socket
import struct
import threading

QTYPE_A = 1
QTYPE_AAAA = 28


class FakeDns:
    def __init__(self, answers: dict[str, str | list[str]], silent=()):
        self.answers = {k.lower().rstrip("."): v for k, v in answers.items()}
        self.silent = {s.lower().rstrip(".") for s in silent}
        self.queries = collections.Counter()
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def count(self, name: str, qtype: int = QTYPE_A) -> int:
        with self._lock:
            return self.queries[(name.lower(), qtype)]

    def write_resolv_conf(self, path: str, timeout: int = 1) -> str:
        with open(path, "w") as f:
            # libevent reads "address:port" on nameserver lines.
            f.write(f"nameserver 127.0.0.1:{self.port}\n"
                    f"options timeout:{timeout} attempts:1\n")
        os.chmod(path, 0o644)
        return path

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self._answer(data)
            if reply is not None:
                try:
                    self.sock.sendto(reply, peer)
                except OSError:
                    pass

    def _answer(self, data: bytes) -> bytes | None:
        if len(data) < 12:
            return None
        qid, _flags, qdcount = struct.unpack("!HHH", data[:6])
        if qdcount != 1:
            return None
        labels, pos = [], 12
        while pos < len(data) and data[pos] != 0:
            n = data[pos]
            labels.append(data[pos + 1:pos + 1 + n].decode("ascii", "replace"))
            pos += 1 + n
        pos += 1
        if pos + 4 > len(data):
            return None
        qtype, _qclass = struct.unpack("!HH", data[pos:pos + 4])
        question = data[12:pos + 4]  # echoed as sent (the resolver may randomize the case)
        name = ".".join(labels).lower()
        with self._lock:
            self.queries[(name, qtype)] += 1
        if name in self.silent:
            return None
        records = b""
        count = 0
        rcode = 0
        if name in self.answers:
            if qtype == QTYPE_A:
                addrs = self.answers[name]
                for a in [addrs] if isinstance(addrs, str) else addrs:
                    records += (struct.pack("!HHHIH", 0xC00C, QTYPE_A, 1, 300, 4)
                                + socket.inet_aton(a))
                    count += 1
        else:
            rcode = 3  # NXDOMAIN
        header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, count, 0, 0)
        return header + question + records
