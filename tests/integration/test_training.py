"""Ray Train jobs on a tiny model: training moves the loss, checkpoints every epoch, resumes after a worker dies."""


import numpy as np
import pandas as pd
import pytest
import torch

from stillhouse.cluster.local_ray import LocalRayLauncher
from stillhouse.distill.training import FAIL_AFTER_EPOCH_ENV, TrainJob, load_trained_state
from stillhouse.models.hf import load_encoder
from stillhouse.models.classifier import ClassifierInfo, TextClassifier, encode_texts, load_classifier, save_classifier
from stillhouse.tasks.classification.train import ITEMS
from tests.conftest import make_rows

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture()
def job_files(tmp_path, tiny_model_dir):
    torch.manual_seed(0)
    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    model = TextClassifier(encoder, 2)
    save_classifier(model, tokenizer, ClassifierInfo(labels=["negative", "positive"], max_length=16), tmp_path / "init")
    rows = make_rows(16)
    pd.DataFrame({"text": [t for t, _ in rows], "label_idx": [int(l == "positive") for _, l in rows]}).to_parquet(
        tmp_path / "train.parquet")
    return tmp_path, rows


def _job(folder, epochs, **kw) -> TrainJob:
    settings = {"workers": 1, "cpus_per_worker": 1, **kw}
    return TrainJob(name="t", init_model_dir=str(folder / "init"), train_file=str(folder / "train.parquet"),
                    storage_dir=str(folder / "ray"), epochs=epochs, batch_size=8, learning_rate=3e-3,
                    head_learning_rate=3e-2, max_length=16, items=ITEMS, **settings)


def _accuracy(folder, state, rows) -> float:
    model, tokenizer, info = load_classifier(folder / "init")
    if state is not None:
        model.load_state_dict(state)
    logits = encode_texts(model, tokenizer, [t for t, _ in rows], 16)
    return float(np.mean(logits.argmax(1) == np.array([int(l == "positive") for _, l in rows])))


def test_training_learns_and_resumes_after_a_worker_dies(job_files, monkeypatch):
    folder, rows = job_files
    before = _accuracy(folder, None, rows)
    # The worker process exits hard after epoch 1 (index 0); Ray restarts the group, which resumes at epoch 2.
    monkeypatch.setenv(FAIL_AFTER_EPOCH_ENV, "0")
    checkpoint = LocalRayLauncher().fit(_job(folder, epochs=6, max_failures=1))
    assert (folder / "ray" / ".failure-injected").exists(), "the injected failure did not happen"
    saved = torch.load(checkpoint / "train_state.pt", weights_only=False)
    # Resumed at epoch index 1 from the first epoch's checkpoint, not from scratch; finished all six.
    assert saved["resumed_at"] == [1] and saved["epoch"] == 5
    after = _accuracy(folder, load_trained_state(checkpoint), rows)
    assert after >= 0.9 and after > before


def test_two_workers_train_data_parallel_with_gloo(job_files):
    folder, rows = job_files
    checkpoint = LocalRayLauncher().fit(_job(folder, epochs=4, workers=2))
    saved = torch.load(checkpoint / "train_state.pt", weights_only=False)
    assert saved["epoch"] == 3 and saved["resumed_at"] == []
    # DDP kept both replicas in step; the one saved (rank 0) learned the task.
    assert _accuracy(folder, load_trained_state(checkpoint), rows) >= 0.9
