"""Reading data sets (CSV, JSONL, Parquet, shipped-in-a-package, Hugging Face) and writing artifacts atomically.

Every user-facing failure is a :class:`DataError` naming the file and the fix. Every artifact is written to
a temporary sibling and renamed into place, so a failed step never leaves a half-written file behind.
"""

from __future__ import annotations

import codecs
import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pandas as pd

from stillhouse.errors import DataError
from stillhouse.spec import DataSource, RankingDataSpec

_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def resolve_package_path(path: str) -> Path:
    """``package:MODULE/rel/file`` → the file inside the installed package MODULE."""
    module, _, rel = path.removeprefix("package:").partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package `{module}` (from `{path}`) is not installed",
                        f"pip install the package that provides `{module}`")
    return Path(list(spec.submodule_search_locations)[0]) / rel


def _local_path(source: DataSource) -> Path:
    path = resolve_package_path(source.path) if source.path.startswith("package:") else Path(source.path)
    if not path.exists():
        raise DataError(f"data file not found: {path}", "check the path in the spec (relative paths are "
                        "resolved against the spec file's folder)")
    if path.is_dir():
        raise DataError(f"data path is a folder, not a file: {path}", "point to a .csv, .jsonl or .parquet file")
    return path


def check_data_files(spec) -> list[Path]:
    """Every local data file the spec names, after checking that it exists, is a file and can be read (what
    ``stillhouse validate`` reports before a run would find it). Hub data sets are not fetched here."""
    data = spec.data
    if isinstance(data, RankingDataSpec):
        sources = [(name, DataSource(path=getattr(data, name))) for name in ("corpus", "queries", "qrels",
                                                                           "candidates") if getattr(data, name)]
    else:
        sources = [(name, getattr(data, name)) for name in ("seed", "pool", "eval", "feedback")
                   if getattr(data, name) is not None and getattr(data, name).path]
    checked = []
    for name, source in sources:
        try:
            path = _local_path(source)
        except DataError as err:
            raise DataError(f"data.{name}: {err.problem}", err.fix) from None
        if not os.access(path, os.R_OK):
            raise DataError(f"data.{name}: {path} is not readable by this user", "fix the file's permissions")
        checked.append(path)
    return checked


def _binary(path: Path, encoding: str) -> bool:
    """NUL bytes in the first 8 KiB: no 8-bit encoding or UTF-8 text has them; UTF-16/32 text (named in the
    spec, or starting with its byte-order mark) does and is not binary."""
    if encoding.lower().replace("-", "").replace("_", "").startswith(("utf16", "utf32")):
        return False
    with open(path, "rb") as handle:
        head = handle.read(8192)
    boms = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    return b"\x00" in head and not head.startswith(boms)


def _read_file(path: Path, fmt: str, encoding: str) -> pd.DataFrame:
    if fmt == "auto":
        fmt = _FORMATS.get(path.suffix.lower(), "")
        if not fmt:
            raise DataError(f"cannot tell the format of {path} from its extension",
                            "use .csv, .jsonl or .parquet, or set `format:` in the spec")
    if path.stat().st_size == 0:
        raise DataError(f"data file is empty: {path}", "provide a file with a header and at least one row")
    if fmt in ("csv", "jsonl") and _binary(path, encoding):  # no encoding would help: it is not text
        raise DataError(f"{path} is a binary file, not {fmt} text (it contains NUL bytes)",
                        "export the data as CSV, JSONL or Parquet (a spreadsheet: save as CSV UTF-8), or point "
                        "the spec at the right file")
    try:
        if fmt == "csv":
            return pd.read_csv(path, encoding=encoding, dtype=str, keep_default_na=False)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, encoding=encoding, dtype=False)
        return pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid {encoding} text (byte {exc.start}: {exc.reason})",
                        "re-save it as UTF-8, or set `encoding:` for this source in the spec "
                        "(e.g. `encoding: latin-1`)") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data file has no rows or header: {path}", "provide a header and at least one row") from None
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        raise DataError(f"cannot read {path} as {fmt}: {str(exc).splitlines()[0]}",
                        f"check that the file is valid {fmt}, or set `format:` in the spec") from None


def _read_hf(source: DataSource) -> pd.DataFrame:
    try:
        import datasets
    except ImportError:
        raise DataError(f"reading Hugging Face dataset `{source.hf_dataset}` needs the `datasets` package",
                        "pip install datasets, or point `path:` to a local file") from None
    try:
        return datasets.load_dataset(source.hf_dataset, split=source.hf_split).to_pandas()
    except Exception as exc:  # the hub client raises many types; all mean "could not get it"
        raise DataError(f"cannot load Hugging Face dataset `{source.hf_dataset}` ({source.hf_split}): {exc}",
                        "check the name and network access, or download it and use `path:`") from None


def read_source(source: DataSource) -> pd.DataFrame:
    """Read one data source into a DataFrame (all CSV columns as strings)."""
    if source.hf_dataset:
        return _read_hf(source)
    frame = _read_file(_local_path(source), source.format, source.encoding)
    if frame.empty:
        raise DataError(f"data file has a header but no rows: {source.path}", "add rows to the file")
    return frame


def describe_source(source: DataSource) -> str:
    return source.path if source.path else f"hf:{source.hf_dataset}[{source.hf_split}]"


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; rename it to ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: str | Path, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``final``; rename it over ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, payload) -> None:
    with atomic_file(path) as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
