"""Serving decisions without a server: redaction, tokens, config, request checks, feedback store, audit lines."""

import csv
import json

import pytest

from stillhouse.errors import DataError, RequestError, ServeConfigError
from stillhouse.serve.audit import AuditLog, client_request_id, input_digest, new_request_id, output_summary
from stillhouse.serve.config import AuthConfig, LimitsConfig, load_serve_config
from stillhouse.serve.feedback import FeedbackStore, backup_feedback, export_feedback
from stillhouse.serve.redact import redact
from stillhouse.serve.schemas import check_classify, check_feedback
from stillhouse.serve.tokens import TokenTable, hash_token, new_token

PII = {
    "EMAIL": "jane.doe@bank.co.uk",
    "IBAN": "DE89 3704 0044 0532 0130 00",
    "CARD": "4111 1111 1111 1111",
    "PHONE": "+44 20 7946 0958",
}


@pytest.mark.parametrize("kind", sorted(PII))
def test_redaction_masks_each_kind_and_keeps_the_rest(kind):
    text = f"please check {PII[kind]} about my 3 cards today"
    assert redact(text) == f"please check [{kind}] about my 3 cards today"


def test_redaction_masks_compact_forms_and_leaves_plain_numbers():
    assert redact("iban gb82west12345698765432 / 4111-1111-1111-1111") == "iban [IBAN] / [CARD]"
    assert redact("order 12345 in 2024 for 120 dollars") == "order 12345 in 2024 for 120 dollars"


@pytest.mark.parametrize("text, kind", [
    ("ｊａｎｅ．ｄｏｅ＠ｂａｎｋ．ｃｏ．ｕｋ", "EMAIL"),  # full-width
    ("jane.doe(at)bank(dot)co(dot)uk", "EMAIL"),
    ("jane.doe [at] bank [dot] co [dot] uk", "EMAIL"),
    ("jane.doe{at}bank.co.uk", "EMAIL"),
    ("jane dot doe at bank dot co dot uk", "EMAIL"),
    ("jane.doe AT bank DOT co DOT uk", "EMAIL"),
    ("jane\u200b.doe@ba\u200dnk.co\u2060.uk", "EMAIL"),  # zero-width characters inside the address
    ("jane.doe@bank\uff0eco\uff0euk", "EMAIL"),
    ("4111.1111.1111.1111", "CARD"),
    ("4111\u200b1111\u200b1111\u200b1111", "CARD"),
    ("４１１１ １１１１ １１１１ １１１１", "CARD"),
    ("4111 1111 1111 1111".replace(" ", "\u00a0"), "CARD"),
    ("john\u034f@example.com", "EMAIL"),  # combining grapheme joiner: default-ignorable, not a format character
    ("john@exam\ufe0fple.com", "EMAIL"),  # a variation selector
    ("jo\u3164hn@example.com", "EMAIL"),  # a Hangul filler
    ("a.b.c.d.e.f.g.h.i.j.k.l@bank.com", "EMAIL"),  # many dots in the local part: none of it left
])
def test_redaction_sees_through_the_usual_obfuscations(text, kind):
    assert redact(f"reach me: {text} thanks") == f"reach me: [{kind}] thanks"


def test_redaction_leaves_ordinary_sentences_with_at_and_dot_alone():
    for text in ("meet me at the branch at noon", "see section 3.2 at page 4", "I was at home. Then I left",
                 "the dot at the end"):
        assert redact(text) == text


def test_tokens_verify_by_hash_and_name_the_principal():
    alice, bob = new_token(), new_token()
    table = TokenTable.parse(f"# team tokens\nalice {hash_token(alice)}\nbob {hash_token(bob)}  # ci\n", "tokens")
    assert table.principal(alice) == "alice" and table.principal(bob) == "bob"
    assert table.principal("wrong") is None and table.principal(alice + "x") is None
    assert TokenTable.parse(f"alice {hash_token(alice)},bob {hash_token(bob)}", "$ENV").principal(bob) == "bob"


@pytest.mark.parametrize("text", ["alice plain-token", f"alice {hash_token('t')[:-2]}", "", "# only a comment"])
def test_bad_token_tables_are_clear_errors(text):
    with pytest.raises(ServeConfigError, match="stillhouse token new"):
        TokenTable.parse(text, "tokens.txt")


def test_auth_without_tokens_says_how_to_configure(monkeypatch, tmp_path):
    monkeypatch.delenv("STILLHOUSE_TOKEN_HASHES", raising=False)
    with pytest.raises(ServeConfigError, match="no tokens are configured"):
        AuthConfig().token_table()
    with pytest.raises(ServeConfigError, match="does not exist"):
        AuthConfig(tokens_file=str(tmp_path / "missing")).token_table()
    monkeypatch.setenv("STILLHOUSE_TOKEN_HASHES", f"ci {hash_token('secret')}")
    assert AuthConfig().token_table().principal("secret") == "ci"


def test_serve_config_loads_and_names_bad_fields(tmp_path, monkeypatch):
    path = tmp_path / "serve.yaml"
    path.write_text("model: demo:latest\nlimits: {max_texts: 8}\n")
    monkeypatch.setenv("STILLHOUSE_SERVE_CONFIG", str(path))
    config = load_serve_config()
    assert config.model == "demo:latest" and config.limits.max_texts == 8 and config.auth.enabled
    path.write_text("model: demo\nlimits: {max_txts: 8}\n")
    with pytest.raises(ServeConfigError, match="limits.max_txts"):
        load_serve_config(path)
    with pytest.raises(ServeConfigError, match="does not exist"):
        load_serve_config(tmp_path / "nope.yaml")


LIMITS = LimitsConfig(max_texts=3, max_text_chars=20)


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"text": "hi"}', "unknown field"),
    (b'{"texts": "hi"}', "not a list"),
    (b'{"texts": []}', "is empty"),
    (b'{"texts": ["a", "b", "c", "d"]}', "4 texts in one request; the limit is 3"),
    (b'{"texts": ["ok", 5]}', r"texts\[1\] is not a string"),
    (b'{"texts": ["ok", "   "]}', r"texts\[1\] is empty"),
    (b'{"texts": ["jane.doe@bank.co.uk wrote a long text"]}', r"texts\[0\] has 37 characters; the limit is 20"),
])
def test_classify_checks_name_the_problem_without_echoing_the_input(body, message):
    with pytest.raises(RequestError, match=message) as err:
        check_classify(body, LIMITS)
    assert "jane.doe" not in str(err.value)


def test_classify_and_feedback_checks_pass_good_bodies():
    assert check_classify(b'{"texts": ["a", "b"]}', LIMITS).texts == ["a", "b"]
    assert check_feedback(b'{"label": "x", "text": "a text"}', LIMITS).texts == ["a text"]
    checked = check_feedback(b'{"label": "x", "request_id": "r1", "index": 1}', LIMITS)
    assert checked.texts == [] and checked.payload == {"label": "x", "request_id": "r1", "index": 1}
    for body in (b'{"text": "a"}', b'{"label": "x", "index": -1}', b'{"label": "x", "colour": 1}',
                 b'{"label": "x", "comment": "' + b"c" * 21 + b'"}'):
        with pytest.raises(RequestError):
            check_feedback(body, LIMITS)


@pytest.fixture(params=["sqlite", "postgresql"])
def feedback_location(request, tmp_path):
    """The same feedback tests on both stores: a SQLite file, and a real PostgreSQL server (see conftest)."""
    if request.param == "sqlite":
        return str(tmp_path / "fb.sqlite")
    return request.getfixturevalue("postgres_url")


def test_feedback_by_text_or_request_id_and_export_as_seed(feedback_location, tmp_path):
    store = FeedbackStore(feedback_location, keep_requests=2)
    labels = ["billing", "card_lost"]
    store.remember_request("alice", "r1", ["lost my card", "wrong charge"], "student:v1")
    first = store.add("card_lost", labels, request_id="r1", index=0, principal="alice")
    store.add("billing", labels, text="double charge", comment="reviewed")
    store.add("billing", labels, request_id="r1", index=0, principal="alice")  # changed their mind: latest wins
    assert first == 1
    with pytest.raises(RequestError, match="not one of the model's 2 labels"):
        store.add("refund", labels, text="x")
    with pytest.raises(RequestError, match="exactly one of"):
        store.add("billing", labels)
    with pytest.raises(RequestError, match="outside the request's 2 text"):
        store.add("billing", labels, request_id="r1", index=2, principal="alice")
    with pytest.raises(RequestError, match="unknown request_id"):
        store.add("billing", labels, request_id="r1", principal="bob")  # only alice may cite her request
    store.remember_request("alice", "r2", ["a"], "t")
    store.remember_request("alice", "r3", ["b"], "t")  # keeps the last 2: r1 is forgotten
    with pytest.raises(RequestError, match="unknown request_id"):
        store.add("billing", labels, request_id="r1", principal="alice")
    store.close()
    count = export_feedback(feedback_location, tmp_path / "seed.csv", label_field="intent")
    rows = list(csv.DictReader(open(tmp_path / "seed.csv", encoding="utf-8")))
    assert count == 2 and [(r["text"], r["intent"]) for r in rows] == [("double charge", "billing"),
                                                                         ("lost my card", "billing")]
    assert rows[1]["model_tag"] == "student:v1" and rows[0]["comment"] == "reviewed"
    with pytest.raises(DataError, match="does not exist"):
        export_feedback(tmp_path / "none.sqlite", tmp_path / "x.csv")


def test_an_idempotency_key_stores_a_retry_once_on_every_store(feedback_location):
    labels = ["billing", "card_lost"]
    stores = [FeedbackStore(feedback_location), FeedbackStore(feedback_location)]  # two replicas, one database
    first = stores[0].add("billing", labels, text="charged twice", principal="crm", idempotency_key="k-1")
    assert stores[1].add("billing", labels, text="charged twice", principal="crm", idempotency_key="k-1") == first
    with pytest.raises(RequestError, match="already used for a different correction"):
        stores[1].add("card_lost", labels, text="charged twice", principal="crm", idempotency_key="k-1")
    # Another principal's key of the same name is its own; so is the anonymous principal's.
    assert stores[1].add("billing", labels, text="charged twice", principal="app", idempotency_key="k-1") != first
    anonymous = stores[0].add("billing", labels, text="t", idempotency_key="k-2")
    assert stores[1].add("billing", labels, text="t", idempotency_key="k-2") == anonymous
    assert len(stores[0].latest()) == 2  # two texts; the retries stored nothing
    for store in stores:
        store.close()


@pytest.mark.parametrize("url, words", [
    ("postgresql://app:s3cret@db:5432/feedback", "contains a password"),
    ("mysql://db/feedback", "must be postgresql://"),
    ("postgresql://db:5432", "must be postgresql://"),
])
def test_a_feedback_url_with_a_password_or_no_database_is_refused(url, words):
    from stillhouse.serve.config import validate_config

    with pytest.raises(ServeConfigError) as err:
        validate_config({"model": "m:v", "feedback": {"url": url}}, "serve.yaml")
    assert "feedback.url" in str(err.value) and words in str(err.value) and "s3cret" not in str(err.value)


def test_audit_lines_hold_no_raw_text_unless_enabled_and_then_redacted(tmp_path):
    key = b"k" * 32
    log = AuditLog(tmp_path / "audit.jsonl", key)
    summary = output_summary({"results": [{"label": "billing", "confidence": 0.91234567, "probabilities": {}}],
                              "model_tag": "s:v", "error": "jane.doe@bank.co.uk"})
    log.write(request_id="r1", principal="alice", method="POST", endpoint="/classify", status=200,
              latency_ms=3.14159, body=b'{"texts": ["mail jane.doe@bank.co.uk"]}', model_tag="s:v",
              model_version="v", summary=summary, inputs=["mail jane.doe@bank.co.uk"])
    AuditLog(tmp_path / "audit.jsonl", key, log_inputs=True).write(
        request_id="r2", principal=None, method="POST", endpoint="/classify", status=422, latency_ms=1.0,
        reason="invalid_request", inputs=["mail jane.doe@bank.co.uk"])
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert lines[0]["output_summary"] == {"labels": ["billing"], "confidence": [0.9123]}
    assert "inputs" not in lines[0] and lines[0]["latency_ms"] == 3.14
    assert lines[0]["input_hmac"] == input_digest(b'{"texts": ["mail jane.doe@bank.co.uk"]}', key)
    assert lines[1]["inputs"] == ["mail [EMAIL]"] and lines[1]["reason"] == "invalid_request"
    assert "jane.doe" not in (tmp_path / "audit.jsonl").read_text()


def test_the_body_digest_is_keyed_so_a_guessed_text_cannot_be_confirmed_without_the_key():
    import hashlib

    body = b'{"texts": ["yes"]}'
    assert input_digest(body, b"a" * 32) != input_digest(body, b"b" * 32)
    assert hashlib.sha256(body).hexdigest() not in {input_digest(body, b"a" * 32), input_digest(body, b"b" * 32)}


def test_request_ids_are_the_servers_and_client_ids_are_kept_only_when_plain():
    assert len({new_request_id() for _ in range(100)}) == 100 and len(new_request_id()) == 32
    assert client_request_id("abc-123_X.y") == "abc-123_X.y"
    assert {client_request_id(v) for v in (None, "", "has space", "x" * 65, "jane@bank.com", "a\r\nb")} == {None}


def test_a_sqlite_file_another_process_holds_is_unavailable_and_nothing_is_half_written(tmp_path):
    import sqlite3

    from stillhouse.errors import Unavailable

    path = tmp_path / "feedback.sqlite"
    store = FeedbackStore(path)
    first = store.add("billing", ["billing"], text="double charge")
    for connection in (store._db._db, store._db._recent):
        connection.execute("PRAGMA busy_timeout = 50")  # not the 10 s a server waits
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, past the busy timeout
    with pytest.raises(Unavailable, match="cannot be written or read now") as refused:
        store.add("billing", ["billing"], text="a secret text")
    assert "a secret text" not in str(refused.value) and "retry later" in refused.value.fix
    with pytest.raises(Unavailable):
        store.remember_request("alice", "r1", ["t"], "m")
    holder.execute("ROLLBACK")
    holder.close()
    assert [row[0] for row in store.latest()] == [first]  # the refused correction left nothing behind
    assert store.add("billing", ["billing"], text="another") == first + 1


def posix_locks_on(path) -> int:
    """How many POSIX locks this process holds on ``path`` (Linux /proc/locks)."""
    import os

    inode, pid = os.stat(path).st_ino, str(os.getpid())
    with open("/proc/locks") as locks:
        return sum(1 for line in locks if line.split()[4] == pid and line.split()[5].endswith(f":{inode}"))


@pytest.mark.skipif(not __import__("os").path.exists("/proc/locks"), reason="needs Linux /proc/locks")
def test_an_open_sqlite_store_keeps_its_lock_on_the_database_file(tmp_path):
    """The lock is what tells another process that opens and closes the file not to delete the WAL. Before, the
    mode check opened and closed a second descriptor of the live file, which dropped it."""
    path = tmp_path / "feedback.sqlite"
    store = FeedbackStore(path)
    store.add("a", ["a"], text="t")
    assert posix_locks_on(path) >= 1
    second = FeedbackStore(path)  # another store on the same file in the same process (a chain beside a student)
    second.add("a", ["a"], text="u")
    assert posix_locks_on(path) >= 1
    second.close()
    store.add("a", ["a"], text="v")
    assert posix_locks_on(path) >= 1


def test_a_backup_while_serving_holds_every_committed_correction_and_is_private(tmp_path):
    import os
    import sqlite3

    path = tmp_path / "feedback.sqlite"
    store = FeedbackStore(path)  # open and writing, as a server: the newest rows are in the WAL only
    for i in range(20):
        store.add("a", ["a"], text=f"correction {i}")
    assert (tmp_path / "feedback.sqlite-wal").stat().st_size > 0
    assert backup_feedback(path, tmp_path / "copy.sqlite") == 20
    copy = sqlite3.connect(tmp_path / "copy.sqlite")
    assert copy.execute("SELECT COUNT(*) FROM feedback").fetchone() == (20,)
    assert os.stat(tmp_path / "copy.sqlite").st_mode & 0o777 == 0o600
    store.add("a", ["a"], text="after the backup")  # the server's database is untouched and still writable
    assert len(store.latest()) == 21 and [p.name for p in tmp_path.iterdir() if ".partial" in p.name] == []
    with pytest.raises(DataError, match="pg_dump"):
        backup_feedback("postgresql://user@db:5432/feedback", tmp_path / "x.sqlite")
    with pytest.raises(DataError, match="does not exist"):
        backup_feedback(tmp_path / "missing.sqlite", tmp_path / "x.sqlite")


def test_postgres_that_stays_down_is_unavailable_not_an_unhandled_error(postgres_url):
    import psycopg

    from stillhouse.errors import Unavailable

    store = FeedbackStore(postgres_url)
    store.add("billing", ["billing"], text="double charge")
    backend = store._db
    pid = backend._db.info.backend_pid
    backend.url = "postgresql://postgres@127.0.0.1:1/test"  # the server "moves away": reconnecting fails
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(Unavailable, match="feedback database cannot be reached"):
        store.add("billing", ["billing"], text="another")
    with pytest.raises(Unavailable):
        store.remember_request("alice", "r1", ["t"], "m")
