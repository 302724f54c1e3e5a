"""9. TLS is modern by default: TLS 1.2 with AEAD suites or TLS 1.3, and the start line says https://.

Before: TLS 1.2 was limited to CBC suites with SHA-1 MACs (uvicorn's default cipher string `TLSv1`), so an
AEAD-only TLS 1.2 client was refused, and BentoML's start line said http:// under TLS.
"""

import ssl

import pytest

from tests.security.conftest import tls_socket

pytestmark = [pytest.mark.integration, pytest.mark.security]


def client_context(live, version: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(live["cert"]))
    context.minimum_version = context.maximum_version = version
    if ciphers:
        context.set_ciphers(ciphers)
    return context


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                                    "ECDHE-ECDSA-CHACHA20-POLY1305"])
def test_a_tls12_aead_handshake_succeeds(live, cipher):
    with tls_socket(live, context=client_context(live, ssl.TLSVersion.TLSv1_2, cipher)) as sock:
        assert sock.version() == "TLSv1.2" and sock.cipher()[0] == cipher


def test_tls13_is_offered(live):
    with tls_socket(live, context=client_context(live, ssl.TLSVersion.TLSv1_3)) as sock:
        assert sock.version() == "TLSv1.3"


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA",
                                    "ECDHE-ECDSA-AES128-SHA256"])
def test_a_client_offering_only_cbc_suites_is_refused(live, cipher):
    with pytest.raises(ssl.SSLError):
        tls_socket(live, context=client_context(live, ssl.TLSVersion.TLSv1_2, cipher))


def test_the_start_line_names_https(live):
    started = [line for line in live["log"].read_text().splitlines() if "listening on" in line]
    assert started and all(f"https://127.0.0.1:{live['port']}" in line for line in started)
    assert not any("http://" in line for line in started)
