"""Feedback on a student's answers, stored durably, and exported as seed data for re-distillation.

A write is acknowledged only after its transaction is on disk, so an acknowledged correction survives the server
being killed right after (tested with SIGKILL): a SQLite file in WAL mode with ``synchronous=FULL`` for one
server (its worker processes share the file), or a PostgreSQL database for several replicas
(:mod:`stillhouse.serve.feedback_db`).

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
import os
import sqlite3
import threading
import time
from pathlib import Path

from stillhouse.data.io import atomic_file
from stillhouse.errors import DataError, RequestError
from stillhouse.serve.feedback_db import LATEST_FEEDBACK, PostgresFeedback, is_database_url, open_feedback_db
from stillhouse.serve.files import private_file

ANONYMOUS = ""  # the principal of requests served with auth off


class FeedbackStore:
    """Checks and stores corrections in a SQLite file (``location`` a path) or PostgreSQL (a ``postgresql://``
    URL; see :mod:`stillhouse.serve.feedback_db`)."""

    def __init__(self, location: str | Path, keep_requests: int = 100_000):
        self.location = location
        self.keep_requests = keep_requests
        self._db = open_feedback_db(location)
        self._lock = threading.Lock()  # the connections are shared by the service's threads

    def remember_request(self, principal: str | None, request_id: str, texts: list[str], model_tag: str) -> None:
        """Keep ``texts`` under (``principal``, ``request_id``): only the same principal can cite them later."""
        if self.keep_requests <= 0:
            return
        with self._lock:
            self._db.remember(principal or ANONYMOUS, request_id, texts, model_tag, self.keep_requests)

    def _cited_text(self, principal: str | None, request_id: str, index: int) -> tuple[str, str]:
        row = self._db.cited(principal or ANONYMOUS, request_id)
        if row is None:
            # the same answer for another principal's id as for one never seen: ids reveal nothing
            raise RequestError("unknown request_id (not one of your requests, or older than the requests kept)",
                               "send the X-Request-ID this service returned to you, or the text itself")
        texts = json.loads(row[0])
        if not 0 <= index < len(texts):
            raise RequestError(f"index is outside the request's {len(texts)} text(s)",
                               "give the position of the corrected text in that request, from 0")
        return texts[index], row[1]

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
            row = (time.time(), request_id, text, label, comment, principal, model_tag, idempotency_key)
            feedback_id, replayed = self._db.insert(row, principal, idempotency_key)
        if replayed is not None and replayed != (request_id, text, label, comment):
            raise RequestError("this Idempotency-Key was already used for a different correction",
                               "use a new key for each new correction; reuse a key only to retry the same one")
        return feedback_id

    def latest(self) -> list[tuple]:
        """The newest correction of every text: (id, received_at, request_id, text, label, comment, model_tag)."""
        with self._lock:
            return self._db.latest()

    def close(self) -> None:
        self._db.close()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    """``cell`` with a leading ``'`` if a spreadsheet would read it as a formula (OWASP CSV injection)."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def export_feedback(db_path: str | Path, out: str | Path, text_field: str = "text",
                    label_field: str = "label") -> int:
    """Write the feedback (a SQLite file, or a ``postgresql://`` URL) as a seed data set the pipeline reads
    (``data.seed``); return the row count.

    Columns: ``text_field``, ``label_field``, then provenance (feedback_id, received_at, request_id, model_tag,
    comment). The latest correction of the same text wins: a reviewer who changes their mind should not leave
    two labels. ``out`` ending in ``.jsonl`` keeps every text exactly (use it for re-distillation); ``.csv`` is for
    people, who open it in a spreadsheet: cells that would run as formulas get a leading ``'``.
    """
    suffix = Path(out).suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise DataError(f"cannot tell the export format of {out} from its extension", "name it .jsonl or .csv")
    if is_database_url(str(db_path)):
        store = PostgresFeedback(str(db_path))
        try:
            rows = store.latest()
        finally:
            store.close()
    else:
        if not Path(db_path).is_file():
            raise DataError(f"feedback database {db_path} does not exist", "point to the service's feedback.path")
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            rows = db.execute(LATEST_FEEDBACK).fetchall()
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


def backup_feedback(db_path: str | Path, out: str | Path) -> int:
    """Copy a SQLite feedback database to ``out`` while its server may be writing to it; the corrections copied.

    SQLite's online backup API reads a consistent snapshot, committed rows still in the WAL included, and takes
    the locks SQLite expects: a plain ``cp`` of the database file alone misses what is in the WAL, and copying or
    deleting the ``-wal``/``-shm`` files loses acknowledged corrections. ``out`` is written whole (0600, then
    renamed), so an interrupted backup leaves no partial file under its name.
    """
    if is_database_url(str(db_path)):
        raise DataError("a PostgreSQL feedback database is backed up by the database's own tools",
                        "use pg_dump (or the managed database's snapshots) on the database feedback.url names")
    if not Path(db_path).is_file():
        raise DataError(f"feedback database {db_path} does not exist", "point to the service's feedback.path")
    out = Path(out)
    partial = private_file(out.with_name(f".{out.name}.{os.getpid()}.partial"))
    try:
        source = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
        target = sqlite3.connect(str(partial))
        try:
            source.backup(target)
            count = target.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]
        finally:
            target.close()
            source.close()
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return int(count)
