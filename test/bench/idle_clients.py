"""Open many idle PostgreSQL client connections (startup + md5 auth done) with asyncio.

Used by bench.py for the "RSS per idle client" figure; runnable alone for a quick look:

    /usr/bin/python3 test/bench/idle_clients.py PORT N [USER PASSWORD DATABASE]

Each connection sends a v3 StartupMessage, answers AuthenticationMD5Password (or
AuthenticationCleartextPassword / AuthenticationOk), reads up to ReadyForQuery and then
sits idle until hold() returns, when it sends Terminate and closes. Only the standard
library is used; the md5 digest comes from test/lib/pgwire.py.
"""

from __future__ import annotations

import asyncio
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from pgwire import md5_password  # noqa: E402

PROTOCOL_3_0 = 196608


class LoginError(Exception):
    pass


def _startup(user: str, database: str) -> bytes:
    body = struct.pack("!i", PROTOCOL_3_0)
    for k, v in (("user", user), ("database", database), ("application_name", "idle-bench")):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def _msg(t: bytes, body: bytes) -> bytes:
    return t + struct.pack("!i", len(body) + 4) + body


def _error_text(body: bytes) -> str:
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return f"{fields.get('S', 'ERROR')} {fields.get('C', '')}: {fields.get('M', '')}"


async def _login(host: str, port: int, user: str, password: str, database: str):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(_startup(user, database))
        await writer.drain()
        while True:
            hdr = await reader.readexactly(5)
            t, n = hdr[:1], struct.unpack("!i", hdr[1:])[0]
            body = await reader.readexactly(n - 4) if n > 4 else b""
            if t == b"R":
                code = struct.unpack("!i", body[:4])[0]
                if code == 0:
                    continue
                if code == 5:
                    pw = md5_password(user, password, body[4:8])
                elif code == 3:
                    pw = password
                else:
                    raise LoginError(f"unsupported authentication request {code}")
                if isinstance(pw, str):
                    pw = pw.encode()
                writer.write(_msg(b"p", pw + b"\0"))
                await writer.drain()
            elif t == b"E":
                raise LoginError(_error_text(body))
            elif t == b"Z":
                return reader, writer
            # S (ParameterStatus), K (BackendKeyData), N (notice): ignore
    except BaseException:
        writer.close()
        raise


async def hold(host: str, port: int, n: int, user: str, password: str, database: str,
               while_open, concurrency: int = 64, login_timeout: float = 60.0) -> dict:
    """Open n logged-in connections, call while_open() (a plain function) while they are
    all open, then close them. Returns {'opened', 'failed', 'errors', 'login_secs',
    'result': while_open()'s value}."""
    sem = asyncio.Semaphore(concurrency)
    conns: list = []
    errors: dict[str, int] = {}

    async def one():
        async with sem:
            try:
                conns.append(await asyncio.wait_for(
                    _login(host, port, user, password, database), login_timeout))
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError,
                    LoginError) as e:
                key = f"{type(e).__name__}: {e}"[:200]
                errors[key] = errors.get(key, 0) + 1

    t0 = time.monotonic()
    try:
        await asyncio.gather(*(one() for _ in range(n)))
        login_secs = time.monotonic() - t0
        await asyncio.sleep(0.5)  # let the pooler settle (buffers released, timers run)
        result = while_open()
    finally:
        for _, w in conns:
            try:
                w.write(_msg(b"X", b""))
                w.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        for _, w in conns:
            try:
                await asyncio.wait_for(w.wait_closed(), 5)
            except Exception:  # noqa: BLE001
                pass
    return {"opened": len(conns), "failed": n - len(conns), "errors": errors,
            "login_secs": login_secs, "result": result}


def main(argv: list[str]) -> int:
    port, n = int(argv[1]), int(argv[2])
    user, password, db = (argv[3:6] + ["md5user", "md5pass", "appdb"][len(argv[3:6]):])
    r = asyncio.run(hold("127.0.0.1", port, n, user, password, db,
                         lambda: input(f"{n} clients open; press Enter to close ")))
    print({k: v for k, v in r.items() if k != "result"})
    return 0 if r["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
