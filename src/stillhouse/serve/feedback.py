"""Feedback on a student's answers, stored durably, and exported as seed data for re-distillation.

SQLite in WAL mode with ``synchronous=FULL``: a write is acknowledged only after its transaction is on disk, so
an acknowledged correction survives the server being killed right after (tested with SIGKILL). Several worker
processes may share the file (WAL lets readers and one writer proceed together; writers wait up to 10 s).

So that feedback can cite a request id instead of resending the text, the service remembers the texts of the
last ``keep_requests`` requests in the same database, keyed by the principal and the server-generated request
id: a client can cite only its own requests, and cannot overwrite anyone's. That table holds raw customer text
like any training data set does; it is never logged, the file is private (0600, like its WAL and SHM files), and
``keep_requests: 0`` turns it off. A client may send an ``Idempotency-Key`` header with a correction so that a
retry after a lost answer stores nothing twice.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import threading
import time
from pathlib import Path

from stillhouse.data.io import atomic_file
from stillhouse.errors import DataError, RequestError
from stillhouse.serve.files import private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, request_id TEXT, text TEXT NOT NULL,
    label TEXT NOT NULL, comment TEXT, principal TEXT, model_tag TEXT, idempotency_key TEXT);
CREATE TABLE IF NOT EXISTS recent_requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, principal TEXT NOT NULL, request_id TEXT NOT NULL,
    received_at REAL NOT NULL, texts TEXT NOT NULL, model_tag TEXT, UNIQUE (principal, request_id));
-- before request ids were the server's and owned: a client could overwrite another client's stored texts
DROP TABLE IF EXISTS requests;
"""
_MIGRATIONS = ["ALTER TABLE feedback ADD COLUMN idempotency_key TEXT"]
_INDEX = ("CREATE UNIQUE INDEX IF NOT EXISTS feedback_idempotency ON feedback (principal, idempotency_key) "
          "WHERE idempotency_key IS NOT NULL")
ANONYMOUS = ""  # the principal of requests served with auth off


def connect(path: str | Path, synchronous: str = "FULL") -> sqlite3.Connection:
    # created 0600 before SQLite opens it: SQLite gives the -wal and -shm files the database file's mode
    private_file(path)
    db = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.executescript(SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(feedback)")}
    if "idempotency_key" not in columns:
        for statement in _MIGRATIONS:
            db.execute(statement)
    db.execute(_INDEX)
    return db


class FeedbackStore:
    def __init__(self, path: str | Path, keep_requests: int = 100_000):
        self.path = Path(path)
        self.keep_requests = keep_requests
        self._db = connect(self.path)
        # Remembering every request's texts must not cost an fsync per /classify: in WAL mode NORMAL survives a
        # killed process (only a power cut can lose the newest entries, which are a cache for feedback by id).
        self._recent = connect(self.path, synchronous="NORMAL")
        self._lock = threading.Lock()  # the connections are shared by the service's threads

    def remember_request(self, principal: str | None, request_id: str, texts: list[str], model_tag: str) -> None:
        """Keep ``texts`` under (``principal``, ``request_id``): only the same principal can cite them later."""
        if self.keep_requests <= 0:
            return
        with self._lock:
            self._recent.execute("INSERT OR REPLACE INTO recent_requests (principal, request_id, received_at, texts, "
                                 "model_tag) VALUES (?, ?, ?, ?, ?)",
                                 (principal or ANONYMOUS, request_id, time.time(), json.dumps(texts), model_tag))
            self._recent.execute("DELETE FROM recent_requests WHERE seq <= (SELECT MAX(seq) FROM recent_requests) - ?",
                                 (self.keep_requests,))

    def _cited_text(self, principal: str | None, request_id: str, index: int) -> tuple[str, str]:
        row = self._db.execute("SELECT texts, model_tag FROM recent_requests WHERE principal = ? AND request_id = ?",
                               (principal or ANONYMOUS, request_id)).fetchone()
        if row is None:
            # the same answer for another principal's id as for one never seen: ids reveal nothing
            raise RequestError("unknown request_id (not one of your requests, or older than the requests kept)",
                               "send the X-Request-ID this service returned to you, or the text itself")
        texts = json.loads(row[0])
        if not 0 <= index < len(texts):
            raise RequestError(f"index is outside the request's {len(texts)} text(s)",
                               "give the position of the corrected text in that request, from 0")
        return texts[index], row[1]

    def _replayed(self, principal: str | None, key: str, fields: tuple) -> int | None:
        row = self._db.execute("SELECT id, request_id, text, label, comment FROM feedback "
                               "WHERE principal IS ? AND idempotency_key = ?", (principal, key)).fetchone()
        if row is None:
            return None
        if tuple(row[1:]) != fields:
            raise RequestError("this Idempotency-Key was already used for a different correction",
                               "use a new key for each new correction; reuse a key only to retry the same one")
        return int(row[0])

    def add(self, label: str, labels: list[str], *, text: str | None = None, request_id: str | None = None,
            index: int = 0, comment: str | None = None, principal: str | None = None,
            model_tag: str = "", idempotency_key: str | None = None) -> int:
        """Store one correction after checking it; return its id once committed.

        With ``idempotency_key``, a retry of the same correction by the same principal returns the first one's
        id and stores nothing new.
        """
        if label not in labels:
            raise RequestError(f"label is not one of the model's {len(labels)} labels",
                               f"use one of: {', '.join(labels[:20])}{' …' if len(labels) > 20 else ''}")
        if (text is None) == (request_id is None):
            raise RequestError("feedback needs exactly one of `text` and `request_id`",
                               "send the corrected input's text, or the X-Request-ID of the answer being corrected")
        with self._lock:
            if request_id is not None:
                text, cited_tag = self._cited_text(principal, request_id, index)
                model_tag = model_tag or cited_tag
            self._db.execute("BEGIN IMMEDIATE")
            try:
                replayed = (self._replayed(principal, idempotency_key, (request_id, text, label, comment))
                            if idempotency_key else None)
                if replayed is not None:
                    self._db.execute("ROLLBACK")
                    return replayed
                cursor = self._db.execute(
                    "INSERT INTO feedback (received_at, request_id, text, label, comment, principal, model_tag, "
                    "idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (time.time(), request_id, text, label, comment, principal, model_tag, idempotency_key))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return int(cursor.lastrowid)

    def close(self) -> None:
        self._db.close()
        self._recent.close()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    """``cell`` with a leading ``'`` if a spreadsheet would read it as a formula (OWASP CSV injection)."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def export_feedback(db_path: str | Path, out: str | Path, text_field: str = "text",
                    label_field: str = "label") -> int:
    """Write the feedback as a seed data set the pipeline reads (``data.seed``); return the row count.

    Columns: ``text_field``, ``label_field``, then provenance (feedback_id, received_at, request_id, model_tag,
    comment). The latest correction of the same text wins: a reviewer who changes their mind should not leave
    two labels. ``out`` ending in ``.jsonl`` keeps every text exactly (use it for re-distillation); ``.csv`` is for
    people, who open it in a spreadsheet: cells that would run as formulas get a leading ``'``.
    """
    if not Path(db_path).is_file():
        raise DataError(f"feedback database {db_path} does not exist", "point to the service's feedback.path")
    suffix = Path(out).suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise DataError(f"cannot tell the export format of {out} from its extension", "name it .jsonl or .csv")
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT id, received_at, request_id, text, label, comment, model_tag FROM feedback "
                          "WHERE id IN (SELECT MAX(id) FROM feedback GROUP BY text) ORDER BY id").fetchall()
    finally:
        db.close()
    columns = [text_field, label_field, "feedback_id", "received_at", "request_id", "model_tag", "comment"]
    records = [[text, label, fid, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(received)), request_id or "",
                tag or "", comment or ""] for fid, received, request_id, text, label, comment, tag in rows]
    with atomic_file(out, "w") as handle:
        if suffix == ".jsonl":
            for record in records:
                handle.write(json.dumps(dict(zip(columns, record)), ensure_ascii=False) + "\n")
        else:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows([[spreadsheet_safe(c) if isinstance(c, str) else c for c in r] for r in records])
    return len(rows)
