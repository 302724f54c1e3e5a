"""`stillhouse package TAG`: a real `bentoml build` (no Docker) whose Bento then serves on 127.0.0.1."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stillhouse.serve.local import free_port, stop_process_group, wait_ready
from stillhouse.serve.tokens import hash_token

pytestmark = pytest.mark.integration

TOKEN = "bento-token"


def test_package_builds_a_bento_with_card_model_and_unlocked_cpu_requirements(tiny_student_tag, tmp_path):
    import bentoml

    result = subprocess.run([sys.executable, "-m", "stillhouse.cli", "package", tiny_student_tag],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    bento_tag = result.stdout.split("built Bento ")[1].split()[0]
    bento = bentoml.bentos.get(bento_tag)
    folder = Path(bento.path)
    manifest = yaml.safe_load((folder / "bento.yaml").read_text())
    assert "A tiny test student" in (folder / "README.md").read_text()  # the Bento's description
    assert "A tiny test student" in (folder / "src" / "MODEL_CARD.md").read_text()
    assert [m["tag"] for m in manifest["models"]] == [tiny_student_tag]
    assert json.loads(manifest["args"]["stillhouse_serve_config"])["model"] == tiny_student_tag
    requirements = (folder / "env" / "python" / "requirements.txt").read_text()
    assert "torch==2.13.0" in requirements and "bentoml" in requirements and "nvidia" not in requirements
    assert "psycopg" in requirements  # PostgreSQL feedback works in the containerized Bento too (feedback.url)
    assert (folder / "src" / "stillhouse" / "serving" / "classification_service.py").is_file()

    port = free_port()
    log = open(tmp_path / "bento.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", bento_tag, "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
                               env={**os.environ, "STILLHOUSE_TOKEN_HASHES": f"ci {hash_token(TOKEN)}"})
    try:
        client = wait_ready(process, f"http://127.0.0.1:{port}", tmp_path / "bento.log")
        answer = client.post("/classify", json={"texts": ["great"]}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200 and answer.json()["model_tag"] == tiny_student_tag
    finally:
        stop_process_group(process)
        log.close()
