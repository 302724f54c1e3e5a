"""A student with a pruned vocabulary behind a real `stillhouse serve`: it answers /classify with the same auth
and limits, and the tokens it read as [UNK] are counted in /metrics."""

import re

import pytest

from stillhouse.serve.local import stop_process_group
from tests.conftest import package_tiny_student, serve_with_tls_and_token

pytestmark = pytest.mark.integration

TOKEN = "pruned-token-of-ci"
TRAINING_TEXTS = ["great service and a kind agent", "terrible delay and a rude agent"]


@pytest.mark.timeout(600)
def test_a_pruned_student_serves_and_counts_the_tokens_it_cannot_read(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from stillhouse.models.prune import kept_token_ids

    tag = package_tiny_student("tiny-pruned", ["negative", "positive"], tiny_model_dir, prune_to=TRAINING_TEXTS)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    kept = set(kept_token_ids(tokenizer, TRAINING_TEXTS, floor=0)[0].tolist())
    unseen = "the parcel vanished yesterday"
    lost = sum(i not in kept for i in tokenizer(unseen)["input_ids"])
    assert lost >= 3

    process, client = serve_with_tls_and_token(tag, tmp_path, TOKEN)
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.post("/classify", json={"texts": [unseen]}).status_code == 401
        assert client.post("/classify", content=b"x" * 2_000_000, headers=auth).status_code == 413
        known = client.post("/classify", json={"texts": TRAINING_TEXTS}, headers=auth)
        assert known.status_code == 200 and len(known.json()["results"]) == 2
        answer = client.post("/classify", json={"texts": [unseen]}, headers=auth)
        assert answer.status_code == 200 and set(answer.json()["results"][0]["probabilities"]) == {"negative",
                                                                                                  "positive"}
        metrics = client.get("/metrics", headers=auth)
        assert metrics.status_code == 200
        counted = [float(v) for v in re.findall(r'^stillhouse_unknown_tokens_total\{[^}]*\} ([0-9.e+]+)$',
                                                metrics.text, re.MULTILINE)]
        assert counted and sum(counted) == lost, metrics.text[-2000:]
    finally:
        stop_process_group(process)
