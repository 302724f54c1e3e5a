"""Training jobs with their storage on an S3-compatible server: moto's S3 server, started on 127.0.0.1 (a real
HTTP S3 endpoint speaking the AWS wire protocol; pyarrow's S3 client talks to it as it would to MinIO or AWS).

The RayJob entrypoint (``python -m stillhouse.cluster.job``) runs as KubeRay's submitter would start it: its
inputs, Ray Train checkpoints and result all live in the bucket; a worker killed after its first epoch is
restarted by Ray Train and resumes from the checkpoint stored there.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pandas as pd
import pytest
import torch

from stillhouse.cluster import storage
from stillhouse.distill.training import FAIL_AFTER_EPOCH_ENV, TrainJob
from stillhouse.errors import StillhouseError
from stillhouse.models.hf import load_encoder
from stillhouse.models.classifier import ClassifierInfo, TextClassifier, save_classifier
from stillhouse.tasks.classification.train import ITEMS
from tests.conftest import make_rows

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BUCKET = "stillhouse-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 endpoint on 127.0.0.1 with one bucket; yields the environment a pod would get from its Secret."""
    moto_server = pytest.importorskip("moto.server")
    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    yield env
    server.stop()


@pytest.fixture()
def s3_env(s3, monkeypatch):
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    return s3


def test_files_and_folders_round_trip_through_the_bucket(s3_env, tmp_path):
    (tmp_path / "model" / "sub").mkdir(parents=True)
    (tmp_path / "model" / "config.json").write_text('{"a": 1}')
    (tmp_path / "model" / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    base = f"s3://{BUCKET}/roundtrip"
    storage.upload(tmp_path / "model", storage.join(base, "model"))
    storage.write_text(storage.join(base, "job.json"), '{"name": "t"}')
    assert storage.exists(storage.join(base, "model", "sub", "weights.bin"))
    assert json.loads(storage.read_text(storage.join(base, "job.json"))) == {"name": "t"}
    back = storage.download(storage.join(base, "model"), tmp_path / "back")
    assert (back / "sub" / "weights.bin").read_bytes() == b"\x00\x01" * 1000
    local = storage.localize(storage.join(base, "model"))
    assert (local / "config.json").read_text() == '{"a": 1}' and local != tmp_path / "model"
    storage.delete(base)
    assert not storage.exists(storage.join(base, "job.json"))


def test_a_missing_bucket_is_one_clear_error(s3_env, tmp_path):
    with pytest.raises(StillhouseError) as err:
        storage.read_text("s3://no-such-bucket-here/job.json")
    assert "on the shared storage" in str(err.value) and "runtime.storage" in str(err.value)
    assert "testing" not in str(err.value)  # credentials never appear in messages


def test_the_rayjob_entrypoint_trains_from_s3_and_resumes_from_the_checkpoint_there(s3_env, tmp_path,
                                                                                    tiny_model_dir):
    torch.manual_seed(0)
    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    save_classifier(TextClassifier(encoder, 2), tokenizer,
                    ClassifierInfo(labels=["negative", "positive"], max_length=16), tmp_path / "init")
    rows = make_rows(16)
    pd.DataFrame({"text": [t for t, _ in rows], "label_idx": [int(lab == "positive") for _, lab in rows]}).to_parquet(
        tmp_path / "train.parquet")
    folder = f"s3://{BUCKET}/jobs/stillhouse-t-0001"
    storage.upload(tmp_path / "init", storage.join(folder, "init"))
    storage.upload(tmp_path / "train.parquet", storage.join(folder, "train.parquet"))
    job = TrainJob(name="t", init_model_dir=storage.join(folder, "init"),
                   train_file=storage.join(folder, "train.parquet"), storage_dir=storage.join(folder, "ray"),
                   epochs=4, batch_size=8, learning_rate=3e-3, head_learning_rate=3e-2, max_length=16,
                   workers=1, cpus_per_worker=1, max_failures=1, items=ITEMS)
    storage.write_text(storage.join(folder, "job.json"), json.dumps(job.to_config()))

    # A fresh process, as the submitter's: it starts its own Ray; its worker dies hard after epoch 1.
    env = {**os.environ, **s3_env, FAIL_AFTER_EPOCH_ENV: "0", "RAY_TRAIN_V2_ENABLED": "1"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "stillhouse.cluster.job", "--job", storage.join(folder, "job.json")],
                          capture_output=True, text=True, env=env, timeout=500)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]

    assert storage.exists(storage.join(folder, "ray", ".failure-injected")), "the injected failure did not happen"
    result = json.loads(storage.read_text(storage.join(folder, "result.json")))
    assert result["checkpoint"].startswith(f"s3://{BUCKET}/jobs/stillhouse-t-0001/ray/")
    checkpoint = storage.download(result["checkpoint"], tmp_path / "checkpoint")
    saved = torch.load(checkpoint / "train_state.pt", weights_only=False)
    assert saved["resumed_at"] == [1] and saved["epoch"] == 3  # resumed from epoch 1's stored checkpoint


def test_a_job_file_that_is_not_a_job_fails_the_entrypoint_with_one_line(s3_env):
    storage.write_text(f"s3://{BUCKET}/bad/job.json", '{"nme": "t"}')
    env = {**os.environ, **s3_env}
    done = subprocess.run([sys.executable, "-m", "stillhouse.cluster.job", "--job", f"s3://{BUCKET}/bad/job.json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "is not a Stillhouse training job" in done.stderr and "Traceback" not in done.stderr
