"""A small UDP DNS server for tests, on 127.0.0.1 and a free port.

It answers A and AAAA queries for the names in `answers` (an address or a list of them: the
IPv4 ones in A records, the IPv6 ones in AAAA records; other types get no records), never answers the names in `silent` (a resolver that hangs), and says NXDOMAIN for
everything else. `queries[(name, qtype)]` counts what it was asked (names lower-cased).
`answers` may be changed while the server runs (a name moving to another address).
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

    def set_answer(self, name: str, addrs: str | list[str] | None) -> None:
        """New records for name (None: NXDOMAIN from now on)."""
        with self._lock:
            self.answers[name.lower().rstrip(".")] = addrs

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
        with self._lock:
            addrs = self.answers.get(name)
        if addrs is not None:
            for a in [addrs] if isinstance(addrs, str) else addrs:
                family = socket.AF_INET6 if ":" in a else socket.AF_INET
                if qtype != (QTYPE_AAAA if family == socket.AF_INET6 else QTYPE_A):
                    continue
                packed = socket.inet_pton(family, a)
                records += (struct.pack("!HHHIH", 0xC00C, qtype, 1, 300, len(packed))
                            + packed)
                count += 1
        else:
            rcode = 3  # NXDOMAIN
        header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, count, 0, 0)
        return header + question + records
