"""Private file modes for everything serving writes: 0700 folders, 0600 files.

The audit log, the feedback database (raw texts of recent requests, corrections) and its WAL/SHM files, the
audit key and the written config live on a host or in a pod shared with other processes; none of them is for
anyone but the server's own user. ``stillhouse serve`` also sets the process umask to 077 (``PRIVATE_UMASK``)
so that files BentoML and SQLite create on their own (metrics, sockets, journals) are private too; these helpers
make the modes explicit where Stillhouse creates the file, whatever the umask of the process that imports it.

The server's per-run folders (control sockets, metrics) are *owned*: each holds a lock its server keeps for life,
so a server started after one that was SIGKILLed removes what that one left behind, and never a live one's.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

PRIVATE_UMASK = 0o077
OWNER_LOCK = "owner.lock"


def private_dir(path: str | Path) -> Path:
    """``path`` as an existing folder; created (with its missing parents) with mode 0700 if it is missing.

    An existing folder keeps its mode: it may be shared on purpose (``/var/log``), and the files Stillhouse puts
    in it are private on their own.
    """
    path = Path(path)
    if not path.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask; this one is meant
    return path


def private_file(path: str | Path) -> Path:
    """``path`` as an existing file with mode 0600: created empty if missing, narrowed if wider.

    Narrowing matters for files an older version (or another tool) created world-readable. An existing file is
    never opened here, only changed by path: closing *any* descriptor of a file drops every POSIX lock the process
    holds on it, and for a live SQLite database that lock is what tells other processes a reader is there (without
    it, one that opens and closes the database deletes the WAL the server is still writing to).
    """
    path = Path(path)
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        narrow_to_private(path)
    else:
        os.close(fd)  # created just now: nothing of this process has it open
    return path


def narrow_to_private(path: str | Path) -> None:
    """Mode 0600 for ``path`` if it exists with a wider one (by path: no descriptor is opened, see private_file)."""
    try:
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
    except FileNotFoundError:
        pass


def owned_folder(parent: str | Path, prefix: str) -> tuple[Path, int]:
    """A new private folder ``parent/prefix*`` that this process owns for as long as it keeps the returned
    descriptor open: an exclusive ``flock`` on ``owner.lock`` inside, which the kernel drops when the process dies
    however it dies, so that the next server can tell a folder that a SIGKILLed one left (see
    :func:`remove_stale_folders`)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=private_dir(parent)))
    pending = folder / f".{OWNER_LOCK}"
    fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(pending, folder / OWNER_LOCK)  # named only once locked: a live folder never looks abandoned
    return folder, fd


def remove_stale_folders(parent: str | Path, prefix: str) -> int:
    """Remove this user's ``parent/prefix*`` folders whose owner (:func:`owned_folder`) is gone; how many.

    A folder without ``owner.lock`` (one being created, or one an older version made) is left alone: only a lock
    nobody holds proves its owner dead.
    """
    removed = 0
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if (not entry.name.startswith(prefix) or not entry.is_dir(follow_symlinks=False)
                or entry.stat(follow_symlinks=False).st_uid != os.getuid()):
            continue
        try:
            fd = os.open(os.path.join(entry.path, OWNER_LOCK), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # its server is alive
        try:  # the lock file last: a folder that could not be emptied is still recognised next time
            for child in os.scandir(entry.path):
                if child.name != OWNER_LOCK:
                    _remove(child)
            os.unlink(os.path.join(entry.path, OWNER_LOCK))
            os.rmdir(entry.path)
            removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _remove(entry: os.DirEntry) -> None:
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path)
    else:
        os.unlink(entry.path)
