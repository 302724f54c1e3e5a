"""Shared storage between a pipeline step and the Ray cluster that trains for it (``runtime.storage``).

Ray pods do not see the step pod's disk, so a KubeRay training job's inputs (the prepared rows, the initial
model), its Ray Train checkpoints and its result go through one URI both sides can reach:

- ``s3://bucket/prefix``: any S3-compatible store through ``pyarrow.fs.S3FileSystem``. Credentials come from
  the usual AWS sources (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, a web identity,
  an instance profile); ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` point at a non-AWS store (MinIO, Ceph),
  ``AWS_REGION``/``AWS_DEFAULT_REGION`` set the region. Never from the spec.
- an absolute path: a ReadWriteMany volume mounted at the same path in every pod (or, locally, a folder).

Ray Train's ``storage_path`` is a folder of the same storage, so a restarted worker group resumes from the
checkpoint stored there rather than from a pod's lost disk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlparse

from stillhouse.errors import StillhouseError


def is_remote(uri: str) -> bool:
    return uri.startswith("s3://")


def join(uri: str, *parts: str) -> str:
    """``uri/part/...`` for an S3 URI or a path."""
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def _s3_filesystem():
    from pyarrow import fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    options = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if endpoint:
        parsed = urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise StillhouseError(f"AWS_ENDPOINT_URL is not an http(s) URL ({parsed.scheme or 'no'} scheme)",
                                  "set it to the store's base URL, e.g. http://minio.storage:9000")
        options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme)
    return fs.S3FileSystem(**options)


def resolve(uri: str):
    """``(pyarrow filesystem, path inside it)`` for an S3 URI or a local/volume path."""
    from pyarrow import fs

    if is_remote(uri):
        return _s3_filesystem(), uri.removeprefix("s3://").rstrip("/")
    return fs.LocalFileSystem(), str(Path(uri).resolve())


def uri_of(filesystem, path: str) -> str:
    """The inverse of :func:`resolve`: a path inside ``filesystem`` as the URI other processes can open."""
    return f"s3://{path}" if filesystem.type_name == "s3" else path


def _storage_error(action: str, uri: str, exc: Exception) -> StillhouseError:
    # pyarrow's message names the bucket and the AWS error code; it never contains credentials.
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StillhouseError(f"could not {action} {uri} on the shared storage: {reason}",
                           "check runtime.storage, that the bucket or volume exists, and the credentials/endpoint in "
                           "the environment (runtime.storage_secret on a cluster)")


def upload(local: str | Path, uri: str) -> None:
    """Copy a local file or folder to ``uri`` (files of the same name there are overwritten)."""
    from pyarrow import fs

    target_fs, target = resolve(uri)
    try:
        target_fs.create_dir(target if Path(local).is_dir() else target.rsplit("/", 1)[0], recursive=True)
        fs.copy_files(str(Path(local).resolve()), target, source_filesystem=fs.LocalFileSystem(),
                      destination_filesystem=target_fs)
    except OSError as exc:
        raise _storage_error("write", uri, exc) from None


def download(uri: str, local: str | Path, replace: bool = True) -> Path:
    """Copy the folder or file at ``uri`` to ``local`` (through a temporary sibling, then a rename); with
    ``replace=False`` a ``local`` that appeared meanwhile (another process's copy) is kept."""
    from pyarrow import fs

    source_fs, source = resolve(uri)
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.parent / f".{local.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        info = source_fs.get_file_info(source)
        if info.type == fs.FileType.NotFound:
            raise FileNotFoundError(f"{uri} does not exist")
        if info.type == fs.FileType.Directory:
            partial.mkdir()
        fs.copy_files(source, str(partial), source_filesystem=source_fs, destination_filesystem=fs.LocalFileSystem())
        if local.exists():
            if not replace:
                return local
            shutil.rmtree(local) if local.is_dir() else local.unlink()
        partial.rename(local)
    except OSError as exc:
        raise _storage_error("read", uri, exc) from None
    finally:
        if partial.exists():
            shutil.rmtree(partial) if partial.is_dir() else partial.unlink()
    return local


def read_text(uri: str) -> str:
    source_fs, source = resolve(uri)
    try:
        with source_fs.open_input_stream(source) as stream:
            return stream.read().decode("utf-8")
    except OSError as exc:
        raise _storage_error("read", uri, exc) from None


def write_text(uri: str, text: str) -> None:
    """Write a small file whole: an S3 PUT is atomic; on a volume, a temporary file is renamed over it."""
    target_fs, target = resolve(uri)
    try:
        target_fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        partial = target if is_remote(uri) else f"{target}.{uuid.uuid4().hex[:8]}.partial"
        with target_fs.open_output_stream(partial) as stream:
            stream.write(text.encode("utf-8"))
        if partial != target:
            target_fs.move(partial, target)
    except OSError as exc:
        raise _storage_error("write", uri, exc) from None


def exists(uri: str) -> bool:
    from pyarrow import fs

    source_fs, source = resolve(uri)
    try:
        return source_fs.get_file_info(source).type != fs.FileType.NotFound
    except OSError as exc:
        raise _storage_error("read", uri, exc) from None


def delete(uri: str) -> None:
    """Remove a folder or file; a missing one is not an error."""
    from pyarrow import fs

    target_fs, target = resolve(uri)
    try:
        kind = target_fs.get_file_info(target).type
        if kind == fs.FileType.Directory:
            target_fs.delete_dir(target)
        elif kind == fs.FileType.File:
            target_fs.delete_file(target)
    except OSError as exc:
        raise _storage_error("delete", uri, exc) from None


def localize(uri: str) -> Path:
    """A local path holding ``uri``: the path itself for a volume/local path; for S3 a per-node cached copy
    (several workers on one node share it; the copy lands under a temporary name and is renamed into place)."""
    if not is_remote(uri):
        return Path(uri)
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    cached = Path(tempfile.gettempdir()) / "stillhouse-inputs" / digest / Path(uri).name
    if not cached.exists():
        try:
            download(uri, cached, replace=False)
        except StillhouseError:
            if not cached.exists():  # else another worker on this node renamed its copy first
                raise
    return cached
