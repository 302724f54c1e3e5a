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


def handshake_in_memory(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """The cipher a TLS handshake between the two contexts agrees on (memory BIOs: no socket, no thread)."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c = client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    done = {s: False, c: False}
    for _ in range(10):
        for obj, peer_in, own_out in ((c, s_in, c_out), (s, c_in, s_out)):
            if not done[obj]:
                try:
                    obj.do_handshake()
                    done[obj] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(own_out.read())
        if all(done.values()):
            return c.cipher()[0]
    raise ssl.SSLError("handshake did not finish")


def test_every_configured_tls12_suite_can_be_negotiated(tmp_path):
    """Before: the policy (and the README) listed DHE suites, which a server without DH parameters never offers."""
    from stillhouse.serve.transport import tls_context
    from tests.conftest import self_signed

    pairs = {"ECDSA": self_signed(tmp_path), "RSA": self_signed(tmp_path, "rsa")}

    def server_context(kind):
        def factory():
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*map(str, pairs[kind]))
            return context
        return tls_context(None, factory)

    configured = [c["name"] for c in server_context("RSA").get_ciphers() if c["protocol"] == "TLSv1.2"]
    refused = []
    for cipher in configured:
        kind = "ECDSA" if "ECDSA" in cipher else "RSA"
        client = ssl.create_default_context(cafile=str(pairs[kind][0]))
        client.minimum_version = client.maximum_version = ssl.TLSVersion.TLSv1_2
        client.set_ciphers(cipher)
        try:
            assert handshake_in_memory(server_context(kind), client) == cipher
        except ssl.SSLError:
            refused.append(cipher)
    assert configured and not refused
