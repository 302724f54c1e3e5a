"""4. Bodies are decoded strictly by Stillhouse before BentoML sees them; no framework error quotes one.

Before: bodies that passed Stillhouse's checks but failed in BentoML — a byte-order mark, UTF-16/32, a lone
surrogate, form or multipart content types — made BentoML log a traceback quoting the body (PII included) and
answer 400/500. Now each is Stillhouse's 4xx, with a message and a fix, and nothing of the body in any log.
"""

import httpx
import pytest

from tests.security.conftest import bearer, logs_of

pytestmark = [pytest.mark.integration, pytest.mark.security]

SECRET = "jane.doe@bank.co.uk owes 4111 1111 1111 1111"
JSON = "application/json"


def variants():
    plain = '{"texts": ["%s"]}' % SECRET
    return {
        "bom": (b"\xef\xbb\xbf" + plain.encode(), JSON),
        "utf-16": (plain.encode("utf-16"), JSON),
        "utf-16-declared": (plain.encode("utf-16-le"), "application/json; charset=utf-16"),
        "utf-32": (plain.encode("utf-32"), JSON),
        "escaped-lone-surrogate": (('{"texts": ["%s \\ud800"]}' % SECRET).encode(), JSON),
        "encoded-surrogate": (plain.encode()[:-3] + b"\xed\xa0\x80\"]}", JSON),
        "latin-1": (plain.replace("owes", "doit \xe0").encode("latin-1"), JSON),
        "form": (f"texts={SECRET}".encode(), "application/x-www-form-urlencoded"),
        "multipart": (b'--b\r\nContent-Disposition: form-data; name="texts"\r\n\r\n' + SECRET.encode()
                      + b"\r\n--b--\r\n", "multipart/form-data; boundary=b"),
        "text-plain": (plain.encode(), "text/plain"),
        "no-content-type": (plain.encode(), None),
        "not-json": (SECRET.encode(), JSON),
        "json-array": (('["%s"]' % SECRET).encode(), JSON),
    }


@pytest.mark.parametrize("name", sorted(variants()))
@pytest.mark.parametrize("route", ["/classify", "/feedback"])
def test_each_malformed_body_is_a_4xx_from_stillhouse_within_a_second(live, name, route):
    body, content_type = variants()[name]
    headers = {**bearer(), **({"Content-Type": content_type} if content_type else {})}
    response = live["client"].post(route, content=body, headers=headers, timeout=httpx.Timeout(5.0))
    assert response.status_code in (415, 422), (name, response.status_code)
    answer = response.json()
    assert set(answer) == {"error", "fix"} and SECRET.split()[0] not in response.text


def test_a_re_ranker_s_route_refuses_each_malformed_body_too(asgi):
    """/rerank is a re-ranker's route (a classifier's service has none: 404), checked by the same strict decoder."""
    client, _ = asgi(task="reranking")
    for name, (body, content_type) in variants().items():
        headers = {**bearer(), **({"Content-Type": content_type} if content_type else {})}
        response = client.post("/rerank", content=body, headers=headers)
        assert response.status_code in (415, 422), (name, response.status_code)
        assert set(response.json()) == {"error", "fix"} and SECRET.split()[0] not in response.text


def test_no_log_holds_any_part_of_the_malformed_bodies(live):
    for route in ("/classify", "/feedback"):
        for body, content_type in variants().values():
            live["client"].post(route, content=body, headers={**bearer(), "Content-Type": content_type or JSON})
    logs = logs_of(live)
    for fragment in ("jane.doe", "4111 1111", "owes", "Traceback", "input_value"):
        assert fragment not in logs


def test_the_service_is_given_the_checked_object_not_the_clients_bytes(asgi):
    client, _ = asgi()
    # equal as JSON, unusual as bytes (escapes, spacing): answered like the plain form
    odd = client.post("/classify", content=b'{ "texts" :\n [ "gr\\u0065at" ] }', headers={
        **bearer(), "Content-Type": "application/json; charset=UTF-8"})
    plain = client.post("/classify", json={"texts": ["great"]}, headers=bearer())
    assert odd.status_code == plain.status_code == 200
    assert odd.json()["results"] == plain.json()["results"]


def test_a_chunked_body_is_refused_with_411_before_it_is_read(asgi):
    """Chunked bodies carry chunk extensions and trailers, which the parser accumulates without a bound the head
    limits could apply; every client of a JSON API can send a Content-Length."""
    client, folder = asgi()

    def body():
        yield b'{"texts": ["fine"]}'

    response = client.post("/classify", content=body(), headers={**bearer(), "Content-Type": JSON})
    assert response.status_code == 411 and "Content-Length" in response.json()["fix"]
    from tests.security.conftest import audit_lines

    assert audit_lines(folder / "audit.jsonl")[-1]["reason"] == "length_required"


def test_a_probe_with_a_body_is_refused_at_once(asgi):
    """Before: probe paths are open (no token), and their body was read for up to body_timeout_s: connections
    holding such requests locked others out without any credential."""
    client, _ = asgi()
    response = client.post("/livez", content=b"x" * 100, headers={"Content-Type": JSON})
    assert response.status_code == 413 and "no body" in response.json()["error"]
    assert client.get("/livez").status_code == 200
