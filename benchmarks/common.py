"""Shared plumbing for benchmark programs: machine facts, the JSON shape, target rows, the results folder."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("STILLHOUSE_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# Taken when the benchmark starts: a long run must record the code it ran, not a commit made while it ran.
STARTED_AT_COMMIT = commit()


def target(name: str, value: float | None, goal: float, op: str) -> dict:
    met = value is not None and (value >= goal if op == ">=" else value > goal if op == ">" else value <= goal)
    return {"name": name, "value": value, "target": goal, "op": op, "met": bool(met)}


def write_result(name: str, config: dict, rows: list[dict], targets: list[dict], out: str | None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "commit": STARTED_AT_COMMIT, "machine": machine(), "config": config, "rows": rows,
               "targets": targets}
    path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value if value is not None else "-")
