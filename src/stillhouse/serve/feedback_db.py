"""Where feedback is kept: a SQLite file (one server) or a PostgreSQL database (any number of replicas).

:class:`~stillhouse.serve.feedback.FeedbackStore` checks corrections and decides; a backend only stores and reads,
with the same tables and the same guarantees on both:

- an acknowledged correction is durable: SQLite in WAL mode with ``synchronous=FULL``; PostgreSQL commits with
  its default ``synchronous_commit = on`` (the WAL is flushed before the commit returns);
- the recent-request texts are a cache for feedback by request id and skip the flush (SQLite ``NORMAL``,
  PostgreSQL ``synchronous_commit = off`` for that transaction only);
- an ``Idempotency-Key`` is unique per principal in the database itself (a partial unique index), so two
  replicas receiving the same retry store it once.

PostgreSQL is named by a ``postgresql://user@host:port/db?sslmode=...`` URL without a password: libpq reads it
from ``$PGPASSWORD`` or a password file (``$PGPASSFILE``), which a Kubernetes Secret provides.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from stillhouse.errors import ServeConfigError, Unavailable
from stillhouse.serve.files import narrow_to_private, private_file

_TABLES = {
    "sqlite": """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, request_id TEXT, text TEXT NOT NULL,
    label TEXT NOT NULL, comment TEXT, principal TEXT, model_tag TEXT, idempotency_key TEXT);
CREATE TABLE IF NOT EXISTS recent_requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, principal TEXT NOT NULL, request_id TEXT NOT NULL,
    received_at REAL NOT NULL, texts TEXT NOT NULL, model_tag TEXT, UNIQUE (principal, request_id));
-- before request ids were the server's and owned: a client could overwrite another client's stored texts
DROP TABLE IF EXISTS requests;
""",
    "postgresql": """
CREATE TABLE IF NOT EXISTS feedback (
    id BIGSERIAL PRIMARY KEY, received_at DOUBLE PRECISION NOT NULL, request_id TEXT, text TEXT NOT NULL,
    label TEXT NOT NULL, comment TEXT, principal TEXT, model_tag TEXT, idempotency_key TEXT);
CREATE TABLE IF NOT EXISTS recent_requests (
    seq BIGSERIAL PRIMARY KEY, principal TEXT NOT NULL, request_id TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL, texts TEXT NOT NULL, model_tag TEXT, UNIQUE (principal, request_id));
""",
}
# One partial unique index on both: the database, not a lock in one process, makes a key count once.
_IDEMPOTENCY_INDEX = ("CREATE UNIQUE INDEX IF NOT EXISTS feedback_idempotency ON feedback "
                      "(COALESCE(principal, ''), idempotency_key) WHERE idempotency_key IS NOT NULL")
LATEST_FEEDBACK = ("SELECT id, received_at, request_id, text, label, comment, model_tag FROM feedback "
           "WHERE id IN (SELECT MAX(id) FROM feedback GROUP BY text) ORDER BY id")
_REPLAY = ("SELECT id, request_id, text, label, comment FROM feedback "
           "WHERE COALESCE(principal, '') = COALESCE({p}, '') AND idempotency_key = {p}")
_INSERT = ("INSERT INTO feedback (received_at, request_id, text, label, comment, principal, model_tag, "
           "idempotency_key) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})")
_CITED = "SELECT texts, model_tag FROM recent_requests WHERE principal = {p} AND request_id = {p}"
_TRIM = "DELETE FROM recent_requests WHERE seq <= (SELECT MAX(seq) FROM recent_requests) - {p}"


def is_database_url(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def check_database_url(url: str) -> str:
    """Refuse a URL that is not PostgreSQL or that carries a password (it would sit in a ConfigMap and logs)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("postgresql", "postgres") or not parsed.hostname or not parsed.path.strip("/"):
        raise ServeConfigError("feedback.url must be postgresql://user@host:5432/database",
                               "name the server, port and database (options such as ?sslmode=verify-full after it)")
    if parsed.password:
        raise ServeConfigError("feedback.url contains a password",
                               "remove it from the URL; give it in $PGPASSWORD or a password file ($PGPASSFILE) "
                               "from a Secret")
    return url


# One store opening at a time in a process: creating the file (a descriptor opened and closed) cannot then race
# another thread's connection to the same path.
_OPENING = threading.Lock()


class SQLiteFeedback:
    """One file, shared by the worker processes of one server (WAL: readers and one writer together)."""

    placeholder = "?"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with _OPENING:
            # Modes are settled before the first connection and only ever by path: a descriptor of the database
            # opened and closed beside SQLite's would drop the locks its connections hold (see files.private_file).
            # Created 0600, SQLite gives the -wal and -shm files the database file's mode; those an older version
            # left wider are narrowed too.
            private_file(self.path)
            for suffix in ("-wal", "-shm"):
                narrow_to_private(f"{self.path}{suffix}")
            self._db = self._connect("FULL")
            # Remembering every request's texts must not cost an fsync per /classify: in WAL mode NORMAL survives a
            # killed process (only a power cut can lose the newest entries, which are a cache for feedback by id).
            self._recent = self._connect("NORMAL")

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.executescript(_TABLES["sqlite"])
        columns = {row[1] for row in db.execute("PRAGMA table_info(feedback)")}
        if "idempotency_key" not in columns:  # databases written before Idempotency-Key existed
            db.execute("ALTER TABLE feedback ADD COLUMN idempotency_key TEXT")
        db.execute(_IDEMPOTENCY_INDEX)  # a file from before keeps its (principal, key) index: as good under BEGIN
        # IMMEDIATE, which makes one writer at a time check and insert
        return db

    @staticmethod
    def _run(work):
        """``work()``; a file SQLite cannot use now (locked past the busy timeout by another process, disk full,
        an I/O error) is :class:`Unavailable` (the service answers 503), never an unhandled error. The
        transaction was rolled back, so nothing is half-written."""
        try:
            return work()
        except sqlite3.OperationalError as exc:
            raise Unavailable(f"the feedback database cannot be written or read now ({exc})",
                              "retry later; the operator checks the disk and the processes sharing "
                              "feedback.path") from None

    def remember(self, principal: str, request_id: str, texts: list[str], model_tag: str, keep: int) -> None:
        def work():
            self._recent.execute("INSERT OR REPLACE INTO recent_requests (principal, request_id, received_at, "
                                 "texts, model_tag) VALUES (?, ?, ?, ?, ?)",
                                 (principal, request_id, time.time(), json.dumps(texts), model_tag))
            self._recent.execute(_TRIM.format(p="?"), (keep,))
        self._run(work)

    def cited(self, principal: str, request_id: str) -> tuple[str, str] | None:
        return self._run(lambda: self._db.execute(_CITED.format(p="?"), (principal, request_id)).fetchone())

    def insert(self, row: tuple, principal: str | None, key: str | None) -> tuple[int, tuple | None]:
        """Insert unless ``key`` was used: ``(new id, None)``, or ``(first id, its fields)`` for a replay."""
        def work():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                found = self._db.execute(_REPLAY.format(p="?"), (principal, key)).fetchone() if key else None
                if found is not None:
                    self._db.execute("ROLLBACK")
                    return int(found[0]), tuple(found[1:])
                cursor = self._db.execute(_INSERT.format(p="?"), row)
                self._db.execute("COMMIT")
                return int(cursor.lastrowid), None
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return self._run(work)

    def latest(self) -> list[tuple]:
        return self._run(lambda: self._db.execute(LATEST_FEEDBACK).fetchall())

    def close(self) -> None:
        self._db.close()
        self._recent.close()


class PostgresFeedback:
    """One database for every replica. Reconnects once when the server dropped the connection (a restart)."""

    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError:
            raise ServeConfigError("feedback.url names PostgreSQL but psycopg is not installed",
                                   "pip install 'stillhouse[postgres]'") from None
        self._psycopg = psycopg
        self.url = check_database_url(url)
        self._lock = threading.Lock()
        self._db = self._connect()
        with self._db.transaction():
            for statement in _TABLES["postgresql"].split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(_IDEMPOTENCY_INDEX)

    def _connect(self):
        try:
            return self._psycopg.connect(self.url, autocommit=True, connect_timeout=10,
                                         application_name="stillhouse-serve")
        except self._psycopg.OperationalError as exc:
            # libpq's message names host and database, never the password
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
            raise ServeConfigError(f"cannot connect to the feedback database: {first}",
                                   "check feedback.url, the server, and $PGPASSWORD / $PGPASSFILE") from None

    def _run(self, work):
        """``work(connection)``, retried once on a fresh connection if the old one broke; a server that stays
        unreachable is :class:`Unavailable` (the service answers 503), never an unhandled error."""
        with self._lock:
            try:
                try:
                    return work(self._db)
                except self._psycopg.OperationalError:
                    if not self._db.closed and not self._db.broken:
                        raise
                    self._db = self._connect()
                    return work(self._db)
            except (self._psycopg.OperationalError, ServeConfigError):
                raise Unavailable("the feedback database cannot be reached",
                                  "retry later; the operator checks the server that feedback.url names") from None

    def remember(self, principal: str, request_id: str, texts: list[str], model_tag: str, keep: int) -> None:
        def work(db):
            with db.transaction():
                db.execute("SET LOCAL synchronous_commit = off")
                db.execute("INSERT INTO recent_requests (principal, request_id, received_at, texts, model_tag) "
                           "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (principal, request_id) DO UPDATE SET "
                           "received_at = EXCLUDED.received_at, texts = EXCLUDED.texts, "
                           "model_tag = EXCLUDED.model_tag",
                           (principal, request_id, time.time(), json.dumps(texts), model_tag))
                db.execute(_TRIM.format(p="%s"), (keep,))
        self._run(work)

    def cited(self, principal: str, request_id: str) -> tuple[str, str] | None:
        return self._run(lambda db: db.execute(_CITED.format(p="%s"), (principal, request_id)).fetchone())

    def insert(self, row: tuple, principal: str | None, key: str | None) -> tuple[int, tuple | None]:
        def work(db):
            # ON CONFLICT on the partial index: a concurrent replica's insert of the same key wins, this one reads it
            inserted = db.execute(_INSERT.format(p="%s") + " ON CONFLICT ((COALESCE(principal, '')), idempotency_key) "
                                  "WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id", row).fetchone()
            if inserted is not None:
                return int(inserted[0]), None
            found = db.execute(_REPLAY.format(p="%s"), (principal, key)).fetchone()
            return int(found[0]), tuple(found[1:])
        return self._run(work)

    def latest(self) -> list[tuple]:
        return self._run(lambda db: db.execute(LATEST_FEEDBACK).fetchall())

    def close(self) -> None:
        self._db.close()


def open_feedback_db(location: str | Path):
    """The backend for a SQLite path or a ``postgresql://`` URL."""
    if isinstance(location, str) and is_database_url(location):
        return PostgresFeedback(location)
    return SQLiteFeedback(location)
