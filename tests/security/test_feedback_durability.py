"""12. Acknowledged feedback survives any other process opening the database, and a SIGKILL right after.

Before: after its first connection was open, the server opened and closed another descriptor of the live database
file (to enforce its mode). Closing any descriptor of a file drops every POSIX lock the process holds on it
(SQLite's documented pitfall, "How To Corrupt An SQLite Database File", 2.2), so the server held no lock while
serving. Another process opening the file read-write (an operator's `sqlite3`, a backup script) then saw no
reader, checkpointed and deleted the -wal/-shm files as it closed; the server went on writing into the deleted WAL
and answering 200. Seen: 25 corrections acknowledged, 20 missing after a restart.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest

from stillhouse.serve.local import start_serve, stop_process_group
from stillhouse.serve.tokens import hash_token
from tests.security.conftest import ALICE, bearer

pytestmark = [pytest.mark.integration, pytest.mark.security]

ROUNDS, CORRECTIONS = 3, 25
# Another process: open the database read-write, read, close; again and again until told to stop.
MEDDLER = """
import pathlib, sqlite3, sys, time
path, stop, opened = sys.argv[1], pathlib.Path(sys.argv[2]), 0
while not stop.exists():
    db = sqlite3.connect(path, timeout=10)
    db.execute("SELECT COUNT(*) FROM feedback").fetchone()
    db.close()
    opened += 1
    time.sleep(0.02)
print(opened)
"""


def kill_server(process) -> None:
    """SIGKILL the server's pid alone (no clean-up of any kind) and wait for its workers to die with it."""
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    psutil.wait_procs(tree, timeout=30)


def test_acknowledged_corrections_survive_another_process_opening_the_database_and_a_sigkill(
        tiny_student_tag, tmp_path):
    (tmp_path / "tokens").write_text(f"alice {hash_token(ALICE)}\n")
    args = [tiny_student_tag, "--dir", str(tmp_path / "serve"), "--tokens-file", str(tmp_path / "tokens")]
    database = tmp_path / "serve" / "feedback.sqlite"
    acknowledged: list[str] = []  # texts, not ids: a lost tail of rows lets SQLite hand its ids out again
    for round_ in range(ROUNDS):
        process, client, _ = start_serve(args, tmp_path)
        stop = tmp_path / f"stop-{round_}"
        meddler = None
        try:
            for i in range(CORRECTIONS):
                text = f"round {round_} correction {i}"
                response = client.post("/feedback", json={"text": text, "label": "negative"}, headers=bearer())
                assert response.status_code == 200, response.text
                acknowledged.append(text)
                if meddler is None:  # the database exists once the first correction is in
                    meddler = subprocess.Popen([sys.executable, "-c", MEDDLER, str(database), str(stop)],
                                               stdout=subprocess.PIPE, text=True)
                time.sleep(0.02)
        finally:
            stop.touch()
            opened = int(meddler.communicate(timeout=60)[0]) if meddler else 0
            kill_server(process)
            stop_process_group(process)
        assert opened >= 5, "the other process did not open the database while corrections were acknowledged"
    stored = {row[0] for row in sqlite3.connect(database).execute("SELECT text FROM feedback")}
    missing = [text for text in acknowledged if text not in stored]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged corrections lost: {missing}"
