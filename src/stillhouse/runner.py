"""Running the distillation pipeline on one machine with Kubeflow's local runner, and compiling it.

``run_local`` executes the very pipeline that ``compile_pipeline`` hands to a Kubeflow cluster, through
``kfp.local`` with the subprocess runner in the current environment: each step is its own process, as it
would be its own pod. The run folder ``<output_dir>/<name>/<timestamp>/`` holds::

    spec.yaml       the validated spec (paths resolved)
    pipeline.yaml   the compiled KFP IR that ran
    run.log         everything the steps printed
    run.json        status, model tag, and where each artifact is
    artifacts/      the KFP pipeline root: every step's outputs (data, teacher, soft labels, student, ...)
    validation/     each Great Expectations suite's results and Data Docs, one folder per validating step
                    (also after a failed suite: that is where its full results are)
    metrics.json, report.html, model_card.md   copies of the evaluation's outputs, for people
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from stillhouse.data.io import read_json, write_json
from stillhouse.errors import ERROR_MARKER, StillhouseError
from stillhouse.evaluate.model_card import stamp_tag
from stillhouse.pipelines.distill import build_distill_pipeline
from stillhouse.progress import TAG, say
from stillhouse.registry import code_version
from stillhouse.spec import Spec

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

_EVALUATION_FILES = ("metrics.json", "report.html", "model_card.md")


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    model_tag: str
    artifacts: dict[str, str]
    gate: dict | None = None  # the promotion gate's verdict and checks, for tasks that have one


# Besides Stillhouse's own tagged lines, the console shows the orchestrator's task status lines.
_CONSOLE_MARKERS = (TAG, "Executing task", "finished with status", "Pipeline '", "Traceback", "Error:")


class _Tee:
    """Everything to the run log; to the console, Stillhouse's own lines and task status (or everything,
    when verbose); remember the steps' error lines."""

    def __init__(self, console, log, verbose: bool):
        self.console, self.log, self.verbose = console, log, verbose
        self.errors: list[str] = []
        self._partial = ""

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.verbose:
            self.console.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if ERROR_MARKER in line:  # shown once, in the run's final error message, not also as it happens
                self.errors.append(line.split(ERROR_MARKER, 1)[1].strip())
            elif not self.verbose and any(marker in line for marker in _CONSOLE_MARKERS):
                self.console.write(_ANSI.sub("", line).strip() + "\n")
        return len(text)

    def flush(self) -> None:
        self.console.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return False


def compile_pipeline(out_path: str | Path, spec: Spec | None = None) -> Path:
    """Write the distillation pipeline's IR YAML (what a Kubeflow Pipelines cluster accepts), with ``spec``'s
    cluster settings (``runtime.kubernetes``, images, GPUs) in its platform spec."""
    from kfp import compiler

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_distill_pipeline(spec.runtime if spec is not None else None)
    compiler.Compiler().compile(pipeline, package_path=str(out_path))
    return out_path


def new_run_dir(spec: Spec, now: dt.datetime | None = None) -> Path:
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    run_dir = Path(spec.output_dir) / spec.name / stamp
    suffix = 1
    while run_dir.exists():  # two runs in the same second must not share a folder
        suffix += 1
        run_dir = Path(spec.output_dir) / spec.name / f"{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir.resolve()


def _artifacts(pipeline_root: Path) -> dict[str, str]:
    """Map each step output (``task/output``) to its path under the pipeline root."""
    found = {}
    for run in pipeline_root.iterdir():
        if not run.is_dir() or run.name.startswith("."):
            continue
        for output in sorted(run.glob("*/*")):
            if not output.name.startswith(".") and "-work" not in output.name:
                found[f"{output.parent.name}/{output.name}"] = str(output)
    return found


def _collect_validation(artifacts: dict[str, str], run_dir: Path) -> dict[str, str]:
    """Copy every step's ``validation`` output (GE results + Data Docs) to ``<run>/validation/<step>/``."""
    collected = {}
    for key, path in artifacts.items():
        task, output = key.split("/", 1)
        if output == "validation" and Path(path).is_dir() and any(Path(path).iterdir()):
            target = run_dir / "validation" / task
            shutil.copytree(path, target, dirs_exist_ok=True)
            collected[task] = str(target)
    return collected


def run_local(spec: Spec, verbose: bool = False) -> RunResult:
    """Run the distillation pipeline locally; raise :class:`StillhouseError` with the failing step's message."""
    from kfp import local

    run_dir = new_run_dir(spec)
    (run_dir / "spec.yaml").write_text(spec.to_yaml(), encoding="utf-8")
    compile_pipeline(run_dir / "pipeline.yaml", spec)
    distill_pipeline = build_distill_pipeline(spec.runtime)
    pipeline_root = run_dir / "artifacts"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    status = {"status": "running", "run": spec.name, "spec_hash": spec.spec_hash()}
    write_json(run_dir / "run.json", status)
    say(f"run folder {run_dir} (full log: run.log)")
    with open(run_dir / "run.log", "w", encoding="utf-8") as log:
        tee = _Tee(sys.stdout, log, verbose)
        try:
            with contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee):
                task = distill_pipeline(spec_json=spec.model_dump_json())
        except Exception as exc:  # kfp.local raises RuntimeError naming the failed task
            message = "\n".join(tee.errors) or str(exc).strip().splitlines()[-1]
            artifacts = _artifacts(pipeline_root)
            validation = _collect_validation(artifacts, run_dir)
            for task, copy in validation.items():  # point the user at the run folder's copy, not the KFP root
                message = message.replace(artifacts[f"{task}/validation"], copy)
            write_json(run_dir / "run.json", {**status, "status": "failed", "error": message, "artifacts": artifacts,
                                              "validation": validation})
            raise StillhouseError(f"the pipeline failed:\n{message}", f"see {run_dir / 'run.log'}") from None
    artifacts = _artifacts(pipeline_root)
    evaluation = next(path for key, path in artifacts.items() if key.endswith("/evaluation"))
    tag = task.output
    for name in _EVALUATION_FILES:
        text = (Path(evaluation) / name).read_text(encoding="utf-8")
        (run_dir / name).write_text(stamp_tag(text, tag, code_version(), html=name.endswith(".html")), encoding="utf-8")
    # a promotion gate (tasks that have one) marks the run itself, not only its report
    gate = read_json(Path(evaluation) / "metrics.json").get("gate")
    write_json(run_dir / "run.json", {**status, "status": "succeeded", "model_tag": tag, "artifacts": artifacts,
                                      "validation": _collect_validation(artifacts, run_dir),
                                      **({"gate": gate["verdict"]} if gate else {})})
    return RunResult(run_dir=run_dir, model_tag=tag, artifacts=artifacts, gate=gate)
