"""HTTPS through a pinned address: SNI and certificate checks still use the URL's name."""

from __future__ import annotations

import datetime
import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from media_netfakes import FakeResolver

from netguard import LoopbackOnly
from wanserve.errors import MediaError
from wanserve.media.fetch import MediaFetcher

pytestmark = pytest.mark.anyio


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.headers["Host"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    cert_path: Path
    sni_names: list[str | None]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_TLSServer]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for media.test."""
    cert_path, key_path = _self_signed(tmp_path_factory.mktemp("tls"), "media.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server = _TLSServer(("127.0.0.1", 0), _Handler)
    server.cert_path, server.sni_names = cert_path, []
    context.sni_callback = lambda _sock, name, _ctx: server.sni_names.append(name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _fetcher(backend: LoopbackOnly) -> MediaFetcher:
    resolver = FakeResolver({"media.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
    return MediaFetcher(
        allowed_hosts=["127.0.0.1"], resolver=resolver, network_backend=backend, total_timeout=5
    )


async def test_https_keeps_name_for_sni_and_certificate(
    tls_server: _TLSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.cert_path))
    tls_server.sni_names.clear()
    backend = LoopbackOnly()
    port = tls_server.server_address[1]
    body = await _fetcher(backend).fetch(f"https://media.test:{port}/", max_bytes=100, param="p")
    assert body == f"media.test:{port}".encode()
    assert tls_server.sni_names == ["media.test"]
    assert backend.addresses == ["127.0.0.1"]


@pytest.mark.parametrize(("trust", "host"), [(False, "media.test"), (True, "other.test")])
async def test_https_certificate_is_verified(
    trust: bool, host: str, tls_server: _TLSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    if trust:
        monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.cert_path))
    else:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    port = tls_server.server_address[1]
    with pytest.raises(MediaError) as caught:
        await _fetcher(LoopbackOnly()).fetch(f"https://{host}:{port}/", max_bytes=100, param="p")
    assert caught.value.code == "media_fetch_failed"
