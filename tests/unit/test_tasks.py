"""The task registry and the layering around it: steps and components name no task; the library imports
neither the step layer nor the adapters; no module imports itself back through others."""

import ast
import re
from pathlib import Path

import pytest

from stillhouse.errors import SpecError
from stillhouse.spec import parse_spec
from stillhouse.tasks import known_tasks, task_for

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "stillhouse"
ADAPTERS = {"stillhouse.components": REPO / "components", "stillhouse.pipelines": REPO / "pipelines",
            "stillhouse.serving": REPO / "serving"}
# What drives the pipeline from outside the library: the CLI, the local runner and KFP submission (they
# compile stillhouse.pipelines), and the step functions the components call.
ENTRY = {"stillhouse.cli", "stillhouse.runner", "stillhouse.cluster.submit", "stillhouse.steps"}
VERBS = ("prepare", "teacher", "synthesize", "soft_label", "distill", "baseline", "evaluate", "lineage")


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in [("stillhouse", SRC), *ADAPTERS.items()]:
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every stillhouse module ``path`` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        out.update(name for name in names if name in modules)
    return out


def test_every_builtin_task_provides_every_verb():
    assert {"classification", "reranking"} <= set(known_tasks())
    for name in known_tasks():
        task = task_for(name)
        assert task.name == name and task.headline and task.retention
        missing = [verb for verb in VERBS if not callable(getattr(task, verb, None))]
        assert not missing, f"task {name} lacks {missing}"


def test_unknown_task_type_is_a_spec_error_listing_the_known_ones(tmp_path):
    with pytest.raises(SpecError) as err:
        parse_spec("name: x\ntask: {type: regression}\ndata: {seed: s.csv, eval: e.csv}\nteacher: {model: m}\n",
                   tmp_path)
    message = str(err.value)
    assert "task.type" in message and "unknown task type `regression`" in message
    assert all(f"{name}" in message for name in known_tasks())
    with pytest.raises(SpecError, match="known task types: "):
        task_for("regression")


def test_steps_and_components_name_no_task():
    branch = re.compile(r"task\.type\s*(==|!=|in\b)|_reranking\(|\"(classification|reranking|tabular)\"")
    for path in [SRC / "steps.py", *sorted((REPO / "components").glob("*.py"))]:
        hits = [line for line in path.read_text(encoding="utf-8").splitlines() if branch.search(line)]
        assert not hits, f"{path.name} branches on the task: {hits}"


def test_library_imports_neither_the_step_layer_nor_an_adapter():
    modules = _modules()
    library = {name: path for name, path in modules.items()
               if name.startswith("stillhouse.") and name not in ENTRY
               and not any(name == a or name.startswith(a + ".") for a in ADAPTERS)}
    assert "stillhouse.tasks.classification.task" in library
    upward = {name: sorted(target for target in _imports(path, modules)
                           if target in ENTRY or any(target == a or target.startswith(a + ".") for a in ADAPTERS))
              for name, path in library.items()}
    assert not {name: targets for name, targets in upward.items() if targets}


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    cycles, seen = [], set()

    def walk(name: str, trail: list[str]) -> None:
        for target in sorted(graph[name]):
            if target in trail:
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in seen:
                walk(target, trail + [target])
        seen.add(name)

    for name in sorted(graph):
        if name not in seen:
            walk(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles[:5])


def test_no_undefined_names_or_unused_imports():
    """Moving code between modules is how a name goes missing (a re-ranking step lost ``score_groups`` this way,
    seen only when the step ran): pyflakes' checks, through ruff, over every Python file."""
    import subprocess
    import sys

    folders = [str(REPO / name) for name in ("src", "tests", "benchmarks", "components", "pipelines", "serving",
                                             "scripts")]
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "F", *folders],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
