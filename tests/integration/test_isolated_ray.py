"""Each local run has a Ray instance of its own: two runs at once on one host both succeed, and neither prints a
traceback that is not its own failure (before, Ray Train's placement-group cleaner died in the second run with
"Found multiple active Ray instances")."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import tiny_spec_yaml

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_two_runs_at_once_both_succeed_without_a_traceback(tmp_path, tiny_model_dir, tiny_data):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # as a user's shell: no Ray address set
    runs = []
    for name in ("first", "second"):
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(tiny_spec_yaml(tiny_model_dir, tiny_data, tmp_path / "runs", name=f"name: {name}"))
        log = open(tmp_path / f"{name}.log", "w")
        runs.append((name, log, subprocess.Popen([sys.executable, "-m", "stillhouse.cli", "run", str(spec)],
                                                 stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)))
    for name, log, process in runs:
        process.wait(timeout=850)
        log.close()
        console = (tmp_path / f"{name}.log").read_text()
        assert process.returncode == 0, console[-3000:]
        assert "Traceback" not in console and "multiple active Ray instances" not in console, console[-3000:]
        assert "run finished" in console
        (run_log,) = (tmp_path / "runs" / name).glob("*/run.log")  # everything the steps printed, Ray's lines too
        assert "multiple active Ray instances" not in run_log.read_text()
