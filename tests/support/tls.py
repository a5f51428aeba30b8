"""TLS for local test servers: a throwaway CA, a certificate for a name, and a server using it.

The certificates are made by the ``openssl`` command line (no Python dependency), valid for
a day, in a directory the test owns.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.http import ControlledServer


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA certificate a client trusts (SSL_CERT_FILE)
    cert: Path  # the server's certificate, for ``name``
    key: Path


def make_certificates(directory: Path, name: str) -> Certificates:
    """Return a fresh CA and a server certificate for ``name`` signed by it."""
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, request = directory / "server.pem", directory / "server.key", directory / "req.pem"
    directory.mkdir(parents=True, exist_ok=True)
    extensions = directory / "server.ext"
    extensions.write_text(
        f"subjectAltName=DNS:{name}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1",
        "-subj", "/CN=Backstop test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign",
    )  # fmt: skip
    _openssl("req", *ec, "-keyout", key, "-out", request, "-subj", f"/CN={name}")
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "1", "-extfile", extensions,
    )  # fmt: skip
    return Certificates(ca=ca, cert=cert, key=key)


def _openssl(*args: object) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


class TlsServer(ControlledServer):
    """A ControlledServer speaking TLS with ``certificates``; it keeps the SNI of each
    handshake, so a test can tell which host name the client asked for."""

    def __init__(self, certificates: Certificates) -> None:
        super().__init__()
        self.server_names: list[str | None] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificates.cert, certificates.key)
        context.sni_callback = self._record_sni
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _record_sni(self, connection: object, name: str | None, context: object) -> None:
        self.server_names.append(name)


@contextmanager
def tls_server(certificates: Certificates) -> Iterator[TlsServer]:
    server = TlsServer(certificates)
    server.start()
    try:
        yield server
    finally:
        server.stop()
