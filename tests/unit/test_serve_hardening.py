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
from stillhouse.serve.connections import IDLE, PARTIAL_HEAD, ConnectionTable, client_key
from stillhouse.serve.refusals import ConnectionGuard
from stillhouse.serve.feedback import spreadsheet_safe
from stillhouse.serve.files import private_dir
from stillhouse.serve.logs import escape_controls, format_exception_withheld, sanitize_record
from stillhouse.serve.schemas import check_content_type, decode_json_object
from stillhouse.serve.refusals import refusal_response
from stillhouse.serve.transport import tls_context, uvicorn_options


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


def test_the_table_closes_a_waiting_connection_of_the_largest_client_and_never_a_busy_one():
    table = ConnectionTable(max_connections=5, max_per_client=10)
    flood = [object() for _ in range(3)]
    for connection in flood:
        table.admit(connection, "203.0.113.9", now=0)
    legit_idle, legit_busy = object(), object()
    table.admit(legit_idle, "198.51.100.1", now=1)
    table.waiting(legit_idle, IDLE, now=2)
    table.admit(legit_busy, "198.51.100.2", now=2)
    table.busy(legit_busy)
    newcomer = object()
    admission = table.admit(newcomer, "198.51.100.3", now=10)
    assert admission.evict == [flood[0]] and admission.refuse is None  # the flood's, oldest first
    table.busy(flood[1])
    table.busy(flood[2])
    # the flood's are busy now: a waiting connection of one of the (equally small) other clients makes room
    assert table.admit(object(), "198.51.100.4", now=20).evict[0] in (newcomer, legit_idle)
    assert len(table) == 5


def test_within_a_client_what_sent_nothing_goes_first_then_half_heads_then_idle_then_the_newest():
    table = ConnectionTable(max_connections=100, max_per_client=3)
    idle, partial, fresh = object(), object(), object()
    for connection in (idle, partial, fresh):
        table.admit(connection, "10.0.0.1", now=0)
    table.waiting(idle, IDLE, now=1)
    table.waiting(partial, PARTIAL_HEAD, now=1)
    busy = object()
    assert table.admit(busy, "10.0.0.1", now=5).evict == [fresh]  # sent nothing for 5 s
    table.busy(busy)
    newest = object()
    assert table.admit(newest, "10.0.0.1", now=6).evict == [partial]  # the newcomer is never its own victim
    assert table.admit(object(), "10.0.0.1", now=6.1).evict == [idle]  # newest's head is on its way: spared
    assert table.admit(object(), "10.0.0.1", now=6.2).evict == [newest]  # nothing else waits: the oldest young
    table.busy(fresh)  # no effect: it left the table
    assert table.count("10.0.0.1") == 3


def test_a_flood_opening_connections_faster_and_faster_does_not_close_a_newcomer_whose_head_is_on_its_way():
    table = ConnectionTable(max_connections=100, max_per_client=4)
    flood = [object() for _ in range(4)]
    for i, connection in enumerate(flood):
        table.admit(connection, "10.0.0.1", now=i * 0.5)
    legit = object()
    assert table.admit(legit, "10.0.0.1", now=3.0).evict == [flood[0]]
    for i in range(3):  # a new flood connection every 10 ms while the newcomer's head is on its way
        assert legit not in table.admit(object(), "10.0.0.1", now=3.01 + i / 100).evict


def test_a_client_at_its_cap_with_every_connection_busy_is_refused_and_unix_peers_are_never_evicted():
    table = ConnectionTable(max_connections=3, max_per_client=2)
    mine = [object(), object()]
    for connection in mine:
        table.admit(connection, "10.0.0.1", now=0)
        table.busy(connection)
    assert table.admit(object(), "10.0.0.1", now=1).refuse == "client_connection_limit"
    internal = object()
    assert table.admit(internal, None, now=1).refuse is None  # a Unix socket: the worker's limit only
    assert table.admit(object(), "10.0.0.2", now=9).refuse == "server_busy"  # only busy and internal ones left
    assert len(table) == 3 and table.count("10.0.0.1") == 2
    table.remove(object())  # idempotent, unknown connections included


def test_ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4():
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7" and client_key("192.0.2.7") == "192.0.2.7"
    assert client_key(None) is None


def test_refusal_lines_are_logged_once_a_minute_per_kind_with_the_count_between(caplog):
    class Clock:
        now = 0.0

        def time(self):
            return self.now

    clock, guard = Clock(), ConnectionGuard(ConnectionsConfig())
    with caplog.at_level(logging.WARNING, logger="stillhouse.serving"):
        for t in (0, 1, 2, 30, 61, 62):
            clock.now = t
            guard.record(clock, "head_timeout", None, None, 0.0)
        guard.record(clock, "url_too_long", "GET", None, 0.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused a request before the service saw it: head_timeout (408)",
                     "refused a request before the service saw it: head_timeout (408); 3 more since the last such "
                     "line", "refused a request before the service saw it: url_too_long (414)"]


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
        "logging.getLogger('somelib').addHandler(logging.NullHandler())  # as urllib3 and most libraries do\n"
        "settle_server_logging()\n"
        "logging.getLogger('uvicorn.error').warning('uvicorn-line')\n"
        "logging.getLogger('stillhouse.serving').warning('stillhouse-line')\n"
        "logging.getLogger('somelib').warning('library-line')\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert [text.count(f"{name}-line") for name in ("uvicorn", "stillhouse", "library")] == [1, 1, 1], text


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
