"""Content fingerprints: the lineage that links a student to the exact data and teacher it came from."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable


def text_fingerprint(text: str) -> str:
    """16 hex chars of SHA-256 over the UTF-8 text: identifies an input row independent of its position."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def rows_fingerprint(texts: Iterable[str], labels: Iterable[str] | None = None) -> str:
    """Order-independent SHA-256 over (text, label) rows: the same set of rows always gives the same value."""
    pairs = sorted(zip(texts, labels)) if labels is not None else sorted((t, "") for t in texts)
    digest = hashlib.sha256()
    for text, label in pairs:
        digest.update(text.encode("utf-8") + b"\x1f" + str(label).encode("utf-8") + b"\x1e")
    return digest.hexdigest()


def dir_fingerprint(path: str | Path) -> str:
    """SHA-256 over the relative names and contents of every file under ``path`` (a saved model)."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
