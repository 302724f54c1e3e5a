"""8. Everything serving writes is private: 0600 files, 0700 folders.

Before: the feedback database and its WAL/SHM files — raw texts of recent requests and corrections — were
created world-readable on a host or in a pod shared with other processes.
"""

import os
import sqlite3
import stat

import pytest

from stillhouse.serve.feedback import FeedbackStore
from tests.security.conftest import bearer

pytestmark = [pytest.mark.integration, pytest.mark.security]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_file_and_folder_the_server_wrote_is_private(live):
    client = live["client"]
    rid = client.post("/classify", json={"texts": ["lost my card"]}, headers=bearer()).headers["x-request-id"]
    assert client.post("/feedback", json={"request_id": rid, "label": "negative"}, headers=bearer()).status_code == 200
    client.get("/metrics", headers=bearer())
    folder = live["folder"]
    expected = {"audit.jsonl", "audit.key", "feedback.sqlite", "feedback.sqlite-wal", "feedback.sqlite-shm",
                "serve.yaml"}
    assert expected <= {p.name for p in folder.iterdir()}
    assert mode(folder) == 0o700
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            assert mode(os.path.join(root, name)) == 0o700, name
        for name in files:  # BentoML's own metrics files under the umask too
            assert not mode(os.path.join(root, name)) & 0o077, name


def test_a_world_readable_database_from_before_is_narrowed(tmp_path):
    path = tmp_path / "old.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    os.chmod(path, 0o644)
    store = FeedbackStore(path)
    store.add("a", ["a"], text="t")
    assert mode(path) == 0o600
    for suffix in ("-wal", "-shm"):
        assert mode(f"{path}{suffix}") == 0o600
    store.close()
