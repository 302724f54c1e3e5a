"""Feedback on a student's answers, stored durably, and exported as seed data for re-distillation.

SQLite in WAL mode with ``synchronous=FULL``: a write is acknowledged only after its transaction is on disk, so
an acknowledged correction survives the server being killed right after (tested with SIGKILL). Several worker
processes may share the file (WAL lets readers and one writer proceed together; writers wait up to 10 s).

So that feedback can cite a request id instead of resending the text, the service remembers the texts of the
last ``keep_requests`` requests in the same database. That table holds raw customer text like any training
data set does; it is never logged, and ``keep_requests: 0`` turns it off.
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

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, request_id TEXT, text TEXT NOT NULL,
    label TEXT NOT NULL, comment TEXT, principal TEXT, model_tag TEXT);
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT UNIQUE NOT NULL, received_at REAL NOT NULL,
    texts TEXT NOT NULL, model_tag TEXT);
"""


def connect(path: str | Path, synchronous: str = "FULL") -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.executescript(SCHEMA)
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

    def remember_request(self, request_id: str, texts: list[str], model_tag: str) -> None:
        if self.keep_requests <= 0:
            return
        with self._lock:
            self._recent.execute("INSERT OR REPLACE INTO requests (request_id, received_at, texts, model_tag) "
                                 "VALUES (?, ?, ?, ?)", (request_id, time.time(), json.dumps(texts), model_tag))
            self._recent.execute("DELETE FROM requests WHERE seq <= (SELECT MAX(seq) FROM requests) - ?",
                                 (self.keep_requests,))

    def add(self, label: str, labels: list[str], *, text: str | None = None, request_id: str | None = None,
            index: int = 0, comment: str | None = None, principal: str | None = None,
            model_tag: str = "") -> int:
        """Store one correction after checking it; return its id once committed."""
        if label not in labels:
            raise RequestError(f"label is not one of the model's {len(labels)} labels",
                               f"use one of: {', '.join(labels[:20])}{' …' if len(labels) > 20 else ''}")
        if (text is None) == (request_id is None):
            raise RequestError("feedback needs exactly one of `text` and `request_id`",
                               "send the corrected input's text, or the X-Request-ID of the answer being corrected")
        with self._lock:
            if request_id is not None:
                row = self._db.execute("SELECT texts, model_tag FROM requests WHERE request_id = ?",
                                       (request_id,)).fetchone()
                if row is None:
                    raise RequestError("unknown request_id (never seen, or older than the requests kept)",
                                       "send the text itself instead of the request id")
                texts = json.loads(row[0])
                if not 0 <= index < len(texts):
                    raise RequestError(f"index is outside the request's {len(texts)} text(s)",
                                       "give the position of the corrected text in that request, from 0")
                text, model_tag = texts[index], model_tag or row[1]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(
                    "INSERT INTO feedback (received_at, request_id, text, label, comment, principal, model_tag) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", (time.time(), request_id, text, label, comment, principal,
                                                     model_tag))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return int(cursor.lastrowid)

    def close(self) -> None:
        self._db.close()
        self._recent.close()


def export_feedback(db_path: str | Path, out: str | Path, text_field: str = "text",
                    label_field: str = "label") -> int:
    """Write the feedback as a CSV the pipeline reads as seed data (``data.seed``); return the row count.

    Columns: ``text_field``, ``label_field``, then provenance (id, received_at, request_id, model_tag, comment).
    The latest correction of the same text wins: a reviewer who changes their mind should not leave two labels.
    """
    if not Path(db_path).is_file():
        raise DataError(f"feedback database {db_path} does not exist", "point to the service's feedback.path")
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT id, received_at, request_id, text, label, comment, model_tag FROM feedback "
                          "WHERE id IN (SELECT MAX(id) FROM feedback GROUP BY text) ORDER BY id").fetchall()
    finally:
        db.close()
    with atomic_file(out, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow([text_field, label_field, "feedback_id", "received_at", "request_id", "model_tag", "comment"])
        for fid, received, request_id, text, label, comment, tag in rows:
            writer.writerow([text, label, fid, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(received)),
                             request_id or "", tag or "", comment or ""])
    return len(rows)
