"""The request policy (stillhouse.serve.policy) without a server: each decision the security middleware asks of it,
with its status, reason code and message."""

import json
import logging
import os

import pytest

from stillhouse.serve import policy as policy_module
from stillhouse.serve.audit import AuditLog, route_name
from stillhouse.serve.config import validate_config
from stillhouse.serve.policy import (Admission, AuditHealth, PrincipalSlots, Refusal, RequestPolicy, body_incomplete,
                                     body_length, body_timeout, body_too_large, forwarded, refuse_repeated_headers)
from stillhouse.serve.schemas import check_classify, check_feedback
from stillhouse.serve.tokens import hash_token

TOKEN = "s3cret-token-value"


def config(tmp_path, **sections):
    (tmp_path / "tokens").write_text(f"alice {hash_token(TOKEN)}\n")
    raw = {"model": "m:v", "auth": {"tokens_file": str(tmp_path / "tokens")},
           "audit": {"path": str(tmp_path / "audit.jsonl")}, "feedback": {"path": str(tmp_path / "fb.sqlite")},
           **sections}
    return validate_config(raw, "serve.yaml")


@pytest.fixture()
def policy(tmp_path):
    return RequestPolicy(config(tmp_path), {"/classify": check_classify, "/feedback": check_feedback})


def refusal(call, *args) -> Refusal:
    with pytest.raises(Refusal) as caught:
        call(*args)
    return caught.value


JSON = [(b"content-type", b"application/json")]


def test_a_repeated_single_header_is_a_400_and_other_repeats_pass():
    refused = refusal(lambda: refuse_repeated_headers([(b"authorization", b"a"), (b"authorization", b"b")]))
    assert (refused.status, refused.reason) == (400, "repeated_header") and "more than once" in refused.payload["error"]
    refuse_repeated_headers([(b"accept", b"a"), (b"accept", b"b"), (b"authorization", b"x")])


def test_the_bearer_token_names_the_principal_and_anything_else_is_a_bare_401(policy, tmp_path):
    assert policy.authenticate([(b"authorization", f"Bearer {TOKEN}".encode())]) == "alice"
    for headers in ([], [(b"authorization", b"Bearer wrong")], [(b"authorization", f"Basic {TOKEN}".encode())]):
        refused = refusal(policy.authenticate, headers)
        assert (refused.status, refused.payload) == (401, {"error": "unauthorized"})
        assert refused.headers == [(b"www-authenticate", b"Bearer")]
    off = RequestPolicy(config(tmp_path, auth={"enabled": False}), {})
    assert off.authenticate([]) is None


def test_a_principal_holds_at_most_its_cap_of_requests_in_flight():
    slots = PrincipalSlots(2)
    slots.take("alice"), slots.take("alice"), slots.take("bob")
    refused = refusal(lambda: slots.take("alice"))
    assert (refused.status, refused.reason, refused.headers) == (429, "principal_concurrency_limit",
                                                                 [(b"retry-after", b"1")])
    slots.release("alice")
    slots.take("alice")
    slots.release("bob")
    assert dict(slots.in_flight) == {"alice": 2}  # a principal with none in flight is forgotten


def test_a_body_needs_a_length_within_the_limit_and_open_paths_take_none(policy):
    limits = policy.config.limits
    assert body_length(limits, [(b"content-length", b"12")], open_path=False) == 12
    assert body_length(limits, [], open_path=True) == 0
    cases = [([(b"transfer-encoding", b"chunked")], False, 411, "length_required"),
             ([(b"content-length", b"5")], True, 413, "body_too_large"),
             ([(b"content-length", str(limits.max_body_bytes + 1).encode())], False, 413, "body_too_large"),
             ([(b"content-length", b"-1")], False, 413, "body_too_large")]
    for headers, open_path, status, reason in cases:
        refused = refusal(body_length, limits, headers, open_path)
        assert (refused.status, refused.reason) == (status, reason)


def test_a_body_that_did_not_arrive_whole_is_refused_with_its_own_status(tmp_path):
    limits = config(tmp_path, limits={"max_body_bytes": 2000, "body_timeout_s": 2.5}).limits
    too_large, cut_off, late = body_too_large(limits), body_incomplete(), body_timeout(limits)
    assert (too_large.status, too_large.reason, too_large.payload["error"]) == (413, "body_too_large",
                                                                                "request body over 2,000 bytes")
    assert (cut_off.status, cut_off.reason) == (400, "body_incomplete") and "closed" in cut_off.payload["error"]
    assert (late.status, late.reason, late.payload["error"]) == (408, "body_timeout",
                                                                 "the body did not arrive within 2.5 s")


def test_only_the_service_s_own_routes_are_checked(policy):
    checked = policy.check_body("/classify", "POST", JSON, b'{"texts": ["hello"]}')
    assert checked.payload == {"texts": ["hello"]} and checked.texts == ["hello"]
    # another task's route is not this service's: unchecked here, BentoML answers 404
    assert policy.check_body("/rerank", "POST", JSON, b"not json at all") is None
    assert policy.check_body("/classify", "GET", [], b"") is None
    assert "/rerank" not in policy.routes and {"/classify", "/feedback", "/readyz", "/metrics"} <= policy.routes


def test_the_audit_line_names_only_the_service_s_routes_probes_and_open_paths(tmp_path):
    policy = RequestPolicy(config(tmp_path, auth={"tokens_file": str(tmp_path / "tokens"),
                                                  "open_paths": ["/healthz", "/status"]}), {"/classify": None})
    # every service answers /feedback beside its own route; another task's route is not named
    named = {path: route_name(path, policy.routes) for path in
             ("/classify", "/feedback", "/rerank", "/metrics", "/readyz", "/status", "/classify/../etc")}
    assert named == {"/classify": "/classify", "/feedback": "/feedback", "/rerank": "unknown", "/metrics": "/metrics",
                     "/readyz": "/readyz", "/status": "/status", "/classify/../etc": "unknown"}
    assert policy.is_open("/status") and not policy.is_open("/readyz")


def test_a_bad_body_on_a_checked_route_is_a_415_or_a_422_that_never_quotes_it(policy):
    cases = [([(b"content-type", b"text/plain")], b'{"texts": ["x"]}', 415, "unsupported_media_type"),
             (JSON, b'{"texts": "secret-input"}', 422, "invalid_request"),
             (JSON, b'{"texts": ["x"], "extra": "secret-input"}', 422, "invalid_request")]
    for headers, body, status, reason in cases:
        refused = refusal(policy.check_body, "/classify", "POST", headers, body)
        assert (refused.status, refused.reason) == (status, reason)
        assert "secret-input" not in json.dumps(refused.payload)
    no_key = refusal(lambda: policy.check_body("/feedback", "POST", [*JSON, (b"idempotency-key", b"bad key!")],
                                               b'{"label": "x"}'))
    assert (no_key.status, no_key.reason) == (422, "invalid_request")


def test_a_check_that_fails_unforeseen_is_a_422_not_a_500(tmp_path):
    def broken(body, limits):
        raise KeyError("secret-input")

    policy = RequestPolicy(config(tmp_path), {"/classify": broken})
    refused = refusal(lambda: policy.check_body("/classify", "POST", JSON, b"{}"))
    assert (refused.status, refused.reason) == (422, "unreadable_body") and "secret" not in str(refused.payload)


@pytest.mark.parametrize("fsync, path, reason, synced", [
    ("always", "/classify", "unauthorized", True), ("changes", "/feedback", None, True),
    ("changes", "/feedback", "unauthorized", False), ("changes", "/classify", None, False),
    ("never", "/feedback", None, False)])
def test_which_audit_lines_wait_for_an_fsync(tmp_path, fsync, path, reason, synced):
    policy = RequestPolicy(config(tmp_path, audit={"path": str(tmp_path / "a.jsonl"), "fsync": fsync}), {})
    assert policy.audit_sync(path, reason) is synced


def test_the_service_gets_the_checked_object_and_only_the_middleware_s_identity_headers(policy):
    checked = policy.check_body("/classify", "POST", JSON, '{"texts": ["café"] }'.encode())
    headers = [*JSON, (b"content-length", b"99"), (b"x-stillhouse-principal", b"mallory"),
               (b"x-request-id", b"forged"), (b"accept", b"*/*")]
    out, body = forwarded(headers, b"ignored", checked, "rid-1", "alice")
    assert body == '{"texts":["café"]}'.encode()
    assert out == [(b"accept", b"*/*"), (b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), (b"x-request-id", b"rid-1"),
                   (b"x-stillhouse-principal", b"alice")]
    unchecked, raw = forwarded([(b"accept", b"*/*")], b"raw", None, "rid-2", None)
    assert raw == b"raw" and unchecked[-1] == (b"x-stillhouse-principal", b"")


def test_an_unwritable_audit_log_refuses_requests_and_readiness_until_a_line_can_be_written(tmp_path):
    audit = AuditLog(tmp_path / "logs" / "audit.jsonl", b"k" * 32)
    health = AuditHealth(audit)
    (tmp_path / "logs" / "audit.jsonl").mkdir()  # a log that cannot be opened for writing
    refused = refusal(health.open)
    assert (refused.status, refused.reason) == (503, "audit_unavailable") and health.failing
    assert health.ready() is False
    (tmp_path / "logs" / "audit.jsonl").rmdir()
    assert health.ready() is True and not health.failing
    lines = [json.loads(line) for line in (tmp_path / "logs" / "audit.jsonl").read_text().splitlines()]
    assert [line["reason"] for line in lines] == ["audit_recovered"]
    assert health.ready() is True and len((tmp_path / "logs" / "audit.jsonl").read_text().splitlines()) == 1
    os.close(health.open())


def test_an_audit_log_that_cannot_be_opened_is_said_once_a_minute(tmp_path, monkeypatch, caplog):
    health = AuditHealth(AuditLog(tmp_path / "audit.jsonl", b"k" * 32))
    (tmp_path / "audit.jsonl").mkdir()
    clock = iter([1000.0, 1030.0, 1061.0])
    monkeypatch.setattr(policy_module.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.ERROR, logger="stillhouse.serving"):
        for _ in range(3):
            refused = refusal(health.open)
            assert refused.payload["fix"].startswith("retry later; operators:")
    assert [r.getMessage().split(" (")[1] for r in caplog.records] == ["IsADirectoryError): refusing requests"] * 2


def admission(policy, tmp_path, path, headers) -> Admission:
    return Admission(policy, AuditHealth(AuditLog(tmp_path / "audit.jsonl", b"k" * 32)), path, headers)


BEARER = (b"authorization", f"Bearer {TOKEN}".encode())
CHUNKED = (b"transfer-encoding", b"chunked")


def test_the_checks_before_the_body_refuse_in_their_order(policy, tmp_path):
    """Each request fails two checks: the earlier one in the order is the answer."""
    (tmp_path / "broken" / "audit.jsonl").mkdir(parents=True)  # a log that cannot be opened for writing
    broken = admission(policy, tmp_path / "broken", "/classify", [BEARER, BEARER])
    assert refusal(broken.admit).reason == "audit_unavailable"  # before the repeated header
    cases = [([BEARER, BEARER, (b"authorization", b"Bearer x")], "repeated_header"),  # before the token
             ([(b"authorization", b"Bearer wrong"), CHUNKED], "unauthorized"),  # before the body
             ([BEARER, CHUNKED], "length_required")]
    for headers, reason in cases:
        request = admission(policy, tmp_path, "/classify", headers)
        assert refusal(request.admit).reason == reason
        request.release()
    policy.slots.cap = 1
    first = admission(policy, tmp_path, "/classify", [BEARER])
    assert first.admit() == 0 and first.principal == "alice"
    assert refusal(admission(policy, tmp_path, "/classify", [BEARER, CHUNKED]).admit).reason == \
        "principal_concurrency_limit"  # the slot before the body
    first.release()
    assert first.fd is None and not policy.slots.in_flight


def test_a_refused_request_keeps_its_grants_until_it_is_released(policy, tmp_path):
    request = admission(policy, tmp_path, "/classify", [BEARER, (b"content-length", b"x")])
    assert refusal(request.admit).status == 413
    assert request.fd is not None and request.principal == "alice" and policy.slots.in_flight["alice"] == 1
    fd = request.fd
    request.release()
    request.release()  # a second release gives nothing back twice
    assert request.fd is None and not policy.slots.in_flight
    with pytest.raises(OSError):
        os.fstat(fd)


def test_open_paths_take_no_token_no_audit_line_and_no_body(policy, tmp_path):
    probe = admission(policy, tmp_path, "/healthz", [])
    assert probe.admit() == 0 and (probe.fd, probe.principal) == (None, None)
    refused = refusal(admission(policy, tmp_path, "/healthz", [(b"content-length", b"3")]).admit)
    assert (refused.status, refused.payload["error"]) == (413, "probe and open paths take no body")
    auth_off = RequestPolicy(config(tmp_path, auth={"enabled": False}), {})
    anyone = admission(auth_off, tmp_path, "/classify", [])
    assert anyone.admit() == 0 and anyone.fd is not None and not auth_off.slots.in_flight
    anyone.release()
    (tmp_path / "broken" / "audit.jsonl").mkdir(parents=True)
    unready = admission(policy, tmp_path / "broken", "/readyz", [])
    refused = refusal(unready.admit)  # readiness is open, yet fails while no line could be written
    assert (refused.status, refused.reason, unready.fd) == (503, "audit_unavailable", None)
