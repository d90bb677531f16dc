"""Test certificates and libpq TLS settings, shared by test/integration/test_tls*.py and the
bench (test/bench/bench.py figure 7).

Certificates are made with the `openssl` command (EC P-256, valid 3 days) in a temp dir
owned by user postgres (the poolers run as postgres and read them from their own dir, see
pooler_files()):

    ca.crt/.key          "sluice test CA"
    other-ca.crt/.key    "some other CA" (unrelated)
    server.crt/.key      CN=localhost, SAN DNS:localhost, IP:127.0.0.1, signed by ca
    client.crt/.key      CN=md5user (clientAuth), signed by ca
    other.crt/.key       a server certificate like server.crt, signed by other-ca
    client-<name>.crt/.key   one per make_certs(clients={name: (ca, cn)}), clientAuth

API
    make_certs(prefix='sluice-tls-', clients=None) -> Certs
    remove_certs(c)            rm -r the dir (kept when SLUICE_KEEP=1)
    Certs: .dir .ca .server_crt .server_key .client_crt .client_key .other_ca .other_crt
           .other_key; .client(name) -> (crt, key); .text(path) -> str
    pooler_files(c) -> {name: text}   server/client/CA files for a pooler's files=
    ssl_env(mode='require', root=None, **extra) -> dict   PGSSLMODE etc. for psql/pgbench,
                               with no client certificate unless PGSSLCERT/PGSSLKEY are given
    fatal(stderr) -> str|None  the message of psql's `FATAL:` line
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import harness


class Certs:
    def __init__(self, d):
        self.dir = d
        self.ca = os.path.join(d, "ca.crt")
        self.server_crt = os.path.join(d, "server.crt")
        self.server_key = os.path.join(d, "server.key")
        self.client_crt = os.path.join(d, "client.crt")
        self.client_key = os.path.join(d, "client.key")
        self.other_ca = os.path.join(d, "other-ca.crt")
        self.other_crt = os.path.join(d, "other.crt")  # server cert signed by the other CA
        self.other_key = os.path.join(d, "other.key")

    def client(self, name):
        """(certificate, key) of an extra client certificate made by make_certs(clients=)."""
        crt = os.path.join(self.dir, f"client-{name}.crt")
        assert os.path.exists(crt), f"no client certificate {name!r} was made"
        return crt, os.path.join(self.dir, f"client-{name}.key")

    def text(self, path):
        with open(path) as f:
            return f.read()


def _openssl(d, *args):
    r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)}:\n{r.stderr}"


def _make_ca(d, name, cn):
    _openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3",
             "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _make_leaf(d, name, ca, cn, ext):
    _openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(ext)
    _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "3", "-extfile", f"{name}.ext")


SERVER_EXT = ("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
              "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
CLIENT_EXT = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n"


def make_certs(prefix: str = "sluice-tls-", clients: dict | None = None) -> Certs:
    """The standard set above, plus client-<name> for each clients={name: (ca, cn)} where
    ca is "ca" or "other-ca"."""
    d = harness.make_tempdir(prefix)
    _make_ca(d, "ca", "sluice test CA")
    _make_ca(d, "other-ca", "some other CA")
    _make_leaf(d, "server", "ca", "localhost", SERVER_EXT)
    _make_leaf(d, "client", "ca", "md5user", CLIENT_EXT)
    _make_leaf(d, "other", "other-ca", "localhost", SERVER_EXT)
    for name, (ca, cn) in (clients or {}).items():
        _make_leaf(d, f"client-{name}", ca, cn, CLIENT_EXT)
    for n in os.listdir(d):
        os.chmod(os.path.join(d, n), 0o600 if n.endswith(".key") else 0o644)
    harness.chown_postgres(d)
    return Certs(d)


def remove_certs(c: Certs) -> None:
    if os.environ.get("SLUICE_KEEP") != "1":
        shutil.rmtree(c.dir, ignore_errors=True)


def pooler_files(c: Certs) -> dict:
    return {"server.crt": c.text(c.server_crt), "server.key": c.text(c.server_key),
            "ca.crt": c.text(c.ca), "client.crt": c.text(c.client_crt),
            "client.key": c.text(c.client_key), "other-ca.crt": c.text(c.other_ca)}


def ssl_env(mode: str = "require", root: str | None = None, **extra) -> dict:
    e = {"PGSSLMODE": mode, "PGSSLCERT": "/nonexistent/client.crt",
         "PGSSLKEY": "/nonexistent/client.key"}
    if root:
        e["PGSSLROOTCERT"] = root
    e.update(extra)
    return e


def fatal(stderr: str) -> str | None:
    m_ = re.search(r"FATAL:\s+(.*)$", stderr, re.M)
    return m_.group(1).strip() if m_ else None
