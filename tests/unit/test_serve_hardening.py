"""The hardening decisions as pure functions: strict JSON decoding, content types, log hygiene, audit vocabulary
and key, private folders, spreadsheet escaping, connection options (the attacks themselves: tests/security)."""

import logging
import os
import stat
from pathlib import Path

import pytest

from stillhouse.errors import RequestError, ServeConfigError
from stillhouse.serve.audit import load_audit_key, method_name, route_name
from stillhouse.serve.config import ConnectionsConfig
from stillhouse.serve.connections import FRESH, IDLE, PARTIAL_HEAD, ConnectionTable
from stillhouse.serve.feedback import spreadsheet_safe
from stillhouse.serve.files import private_dir
from stillhouse.serve.logs import escape_controls, format_exception_withheld, sanitize_record
from stillhouse.serve.schemas import check_content_type, decode_json_object
from stillhouse.serve.transport import refusal_response, tls_context, uvicorn_options


@pytest.mark.parametrize("body, problem", [
    (b"\xef\xbb\xbf{}", "byte-order mark"),
    ('{"a": "é"}'.encode("utf-16"), "not UTF-8"),
    (b'{"a": "\\ud83d"}', "lone surrogate"),
    (b'{"\\udc00": 1}', "lone surrogate"),
    (b'{"a": ' + b"1" * 19 + b"}", "more than 18 digits"),
    (b'{"a": NaN}', "NaN"),
    (b'{"a": -Infinity}', "-Infinity"),
    (b'{"a": 1e400}', "too large for a float"),
    (b'{"a": 1, "a": 2}', "repeats a key"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b'{"a": ', "not valid JSON"),
    (b'["a"]', "not a JSON object"),
])
def test_strict_decoding_refuses_what_parsers_disagree_on(body, problem):
    with pytest.raises(RequestError, match=problem):
        decode_json_object(body)


def test_strict_decoding_keeps_ordinary_json():
    assert decode_json_object('{"texts": ["gr\\u00fc\\u00dfe 😀"], "index": 123456789012345678, "x": 1.5}'
                              .encode()) == {"texts": ["grüße 😀"], "index": 123456789012345678, "x": 1.5}


@pytest.mark.parametrize("value, encoding, ok", [
    ("application/json", None, True), ("Application/JSON; charset=UTF-8", None, True),
    ('application/json; charset="utf-8"', "identity", True), ("application/json; charset=utf-16", None, False),
    ("application/x-www-form-urlencoded", None, False), ("multipart/form-data; boundary=x", None, False),
    (None, None, False), ("application/json", "gzip", False), ("application/jsonx", None, False),
])
def test_only_uncompressed_utf8_json_is_accepted(value, encoding, ok):
    if ok:
        check_content_type(value, encoding)
    else:
        with pytest.raises(RequestError):
            check_content_type(value, encoding)


def test_exception_messages_are_withheld_but_stillhouse_errors_and_frames_kept():
    def parse(body):
        raise ValueError(f"cannot parse {body!r}")

    body = "jane" + "@bank.com"  # built, so that no source line printed in the traceback holds it
    try:
        try:
            parse(body)
        except ValueError as exc:
            raise RequestError("the body is not valid JSON", "send JSON") from exc
    except RequestError as exc:
        text = format_exception_withheld(exc)
    assert "jane@bank.com" not in text and "ValueError: [message withheld" in text
    assert "RequestError: the body is not valid JSON" in text and "in parse" in text
    assert text.index("ValueError") < text.index("RequestError")  # causes first, as Python prints them


def test_records_are_one_line_with_bounded_arguments():
    record = logging.LogRecord("uvicorn", logging.WARNING, __file__, 1, "bad %s then %s", (
        "/p\r\nforged", "x" * 5000), None)
    sanitize_record(record)
    message = record.getMessage()
    assert "\n" not in message and "\\x0d\\x0aforged" in message and len(message) < 700
    assert escape_controls("a\u2028b\x1bc") == "a\\x2028b\\x1bc"


def test_the_audit_vocabulary_is_fixed():
    routes = frozenset({"/classify", "/readyz"})
    assert route_name("/classify", routes) == "/classify"
    assert {route_name(p, routes) for p in ("/classify/", "/x" * 999, "/CLASSIFY", "/classify\r\n")} == {"unknown"}
    assert method_name("POST") == "POST" and method_name("BREW") == "OTHER"


def test_the_audit_key_is_generated_once_privately_and_refused_when_short(tmp_path, monkeypatch):
    monkeypatch.delenv("STILLHOUSE_AUDIT_KEY", raising=False)
    first = load_audit_key(None, "STILLHOUSE_AUDIT_KEY", tmp_path / "logs" / "audit.jsonl")
    assert first == load_audit_key(None, "STILLHOUSE_AUDIT_KEY", tmp_path / "logs" / "audit.jsonl")
    assert stat.S_IMODE((tmp_path / "logs" / "audit.key").stat().st_mode) == 0o600 and len(first) == 64
    monkeypatch.setenv("STILLHOUSE_AUDIT_KEY", "short")
    with pytest.raises(ServeConfigError, match="shorter than 32 bytes"):
        load_audit_key(None, "STILLHOUSE_AUDIT_KEY", tmp_path / "audit.jsonl")
    with pytest.raises(ServeConfigError, match="does not exist"):
        load_audit_key(str(tmp_path / "none"), "STILLHOUSE_AUDIT_KEY", tmp_path / "audit.jsonl")


def test_private_dir_creates_0700_and_leaves_existing_folders_alone(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    assert stat.S_IMODE(private_dir(shared / "serve").stat().st_mode) == 0o700
    private_dir(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755


@pytest.mark.parametrize("cell, safe", [("=1+1", "'=1+1"), ("+44 20", "'+44 20"), ("-5%", "'-5%"),
                                        ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("fine = ok", "fine = ok"),
                                        ("", "")])
def test_spreadsheet_formulas_are_escaped(cell, safe):
    assert spreadsheet_safe(cell) == safe


def test_worker_options_bind_the_limits_and_tls_only_with_a_certificate():
    limits = ConnectionsConfig(max_head_bytes=4096, keep_alive_s=3)
    plain, tls = uvicorn_options(limits, tls=False), uvicorn_options(limits, tls=True)
    assert plain["http"].limits.max_head_bytes == 4096 and plain["timeout_keep_alive"] == 3
    assert plain["ws"] == "none" and "ssl_context_factory" not in plain and tls["ssl_context_factory"] is tls_context
    assert plain["limit_concurrency"] is None  # the protocol's connection table and check replace uvicorn's
    answer = refusal_response("head_too_large", "abc123")
    assert answer.startswith(b"HTTP/1.1 431 ") and b"connection: close" in answer and b"x-request-id: abc123" in answer
    assert b"retry-after: 1" in refusal_response("server_busy", "r")


class Conn:
    """A connection as the table sees it: waiting (kind, since) or busy (None)."""

    def __init__(self, name, kind=FRESH, since=0.0):
        self.name, self.state = name, (kind, since) if kind is not None else None

    def waiting(self):
        return self.state

    def __repr__(self):
        return self.name


def test_the_table_closes_the_cheapest_waiting_connection_first():
    table = ConnectionTable(max_connections=4, max_per_client=10)
    keep_alive, partial, fresh_old, busy = (Conn("keep-alive", IDLE, 1), Conn("partial", PARTIAL_HEAD, 2),
                                            Conn("fresh-old", FRESH, 5), Conn("busy", None))
    for conn, client in ((keep_alive, "10.0.0.1"), (partial, "10.0.0.2"), (fresh_old, "10.0.0.3"), (busy, "10.0.0.4")):
        assert table.admit(conn, client).evict == []
    assert table.admit(Conn("new-1", FRESH, 9), "10.0.0.5").evict == [fresh_old]  # sent nothing: first to go
    assert table.admit(Conn("new-2", FRESH, 9.5), "10.0.0.6").evict[0].name == "new-1"  # then the oldest such
    assert table.admit(Conn("new-3", PARTIAL_HEAD, 10), "10.0.0.7").evict[0].name == "new-2"
    assert table.admit(Conn("new-4", None), "10.0.0.8").evict == [partial]  # a half-sent head before a keep-alive
    assert len(table) == 4


def test_a_client_at_its_cap_makes_room_from_its_own_connections_and_is_refused_when_all_are_busy():
    table = ConnectionTable(max_connections=100, max_per_client=2)
    other = Conn("other-idle", FRESH, 0)
    table.admit(other, "10.0.0.9")
    mine_idle, mine_busy = Conn("mine-idle", IDLE, 1), Conn("mine-busy", None)
    table.admit(mine_idle, "10.0.0.1")
    table.admit(mine_busy, "10.0.0.1")
    assert table.admit(Conn("mine-new", FRESH, 2), "10.0.0.1").evict == [mine_idle]  # never another client's
    table.admit(Conn("mine-busy-2", None), "10.0.0.1")  # makes room from mine-new (waiting)
    refused = Conn("mine-3", FRESH, 3)
    assert table.admit(refused, "10.0.0.1").refuse == "client_connection_limit"
    assert table.count("10.0.0.1") == 2 and len(table) == 3


def test_a_worker_whose_connections_are_all_busy_refuses_and_unix_peers_have_no_address_cap():
    table = ConnectionTable(max_connections=2, max_per_client=1)
    for name in ("a", "b"):
        assert table.admit(Conn(name, None), None).refuse is None  # Unix sockets: the worker's limit only
    admission = table.admit(Conn("c", FRESH, 0), "10.0.0.1")
    assert admission.refuse == "server_busy" and len(table) == 2
    table.remove(Conn("never-added"))  # idempotent, unknown connections included


def test_settled_logging_writes_each_record_once_and_keeps_stillhouses_loggers(tmp_path):
    """BentoML's dictConfig disabled Stillhouse loggers imported before it, and gave uvicorn.error a second
    handler (every uvicorn warning twice in the server log). Run in a child: logging set-up is process-wide."""
    import subprocess
    import sys

    script = (
        "import logging\n"
        "from stillhouse.serve import transport  # creates the stillhouse.serving logger first, as a worker does\n"
        "from bentoml._internal.log import configure_server_logging\n"
        "from stillhouse.serve.logs import settle_server_logging\n"
        "configure_server_logging()\n"
        "settle_server_logging()\n"
        "logging.getLogger('uvicorn.error').warning('uvicorn-line')\n"
        "logging.getLogger('stillhouse.serving').warning('stillhouse-line')\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert text.count("uvicorn-line") == 1 and text.count("stillhouse-line") == 1, text


def test_owned_folders_are_removed_only_once_their_owner_is_gone(tmp_path):
    import subprocess
    import sys

    from stillhouse.serve.files import OWNER_LOCK, owned_folder, remove_stale_folders

    mine, lock = owned_folder(tmp_path, "run-")
    assert (mine / OWNER_LOCK).exists() and stat.S_IMODE(os.stat(mine).st_mode) == 0o700
    child = subprocess.run([sys.executable, "-c", "import sys; from stillhouse.serve.files import owned_folder; "
                            "print(owned_folder(sys.argv[1], 'run-')[0])", str(tmp_path)],
                           capture_output=True, text=True, check=True)  # exits holding its lock: as if killed
    dead = Path(child.stdout.strip())
    legacy = tmp_path / "run-from-an-older-version"
    legacy.mkdir()
    assert remove_stale_folders(tmp_path, "run-") == 1
    assert not dead.exists() and mine.exists() and legacy.exists()
    os.close(lock)
    assert remove_stale_folders(tmp_path, "run-") == 1 and not mine.exists()
