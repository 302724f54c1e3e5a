"""The task registry and the layering around it: steps and components name no task; the library imports
neither the step layer nor the adapters; no module imports itself back through others; tasks/ is the top floor
(nothing else in the library imports a task package, and nothing outside it decides by a task's name)."""

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


# The spec's task registry: the task sections (one per task, with its own settings) and the map from name to section.
SPEC_TASK_REGISTRY = {"stillhouse.spec", "stillhouse.spec.task", "stillhouse.spec.tabular"}


def _outside_tasks(modules: dict[str, Path]) -> dict[str, Path]:
    return {name: path for name, path in modules.items()
            if name != "stillhouse.tasks" and not name.startswith("stillhouse.tasks.")}


def test_floors_nothing_outside_tasks_imports_a_task_package():
    """Shared code (models, teachers, distill, evaluate, serve, the registry, the CLI...) sits below tasks/ and
    reaches a task only through the registry (stillhouse.tasks.task_for). Above the library, a task's own BentoML
    service module (the one its ``serving.service`` names) may use its task's package; no other adapter may."""
    modules = _modules()
    own_service = {}
    for name in known_tasks():
        serving = getattr(task_for(name), "serving", None)
        if serving is not None:
            own_service[serving.service.partition(":")[0]] = f"stillhouse.tasks.{name}"
    offenders = {}
    for name, path in _outside_tasks(modules).items():
        allowed = own_service.get(name)
        imported = sorted(t for t in _imports(path, modules) if t.startswith("stillhouse.tasks.")
                          and not (allowed and (t == allowed or t.startswith(allowed + "."))))
        if imported:
            offenders[name] = imported
    assert not offenders, f"modules outside tasks/ importing a task package: {offenders}"


def _task_decisions(path: Path, task_names: set[str], student_files: set[str]) -> list[str]:
    """Where a module names a task (a string equal to a task's name), sniffs a task's student file (its file name
    anywhere but the constant that defines it), or compares ``task.type``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defining = {id(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and all(isinstance(t, ast.Name) and t.id.endswith("_FILE") for t in node.targets)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in task_names or (node.value in student_files and id(node) not in defining):
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) and node.left.attr == "type" \
                and "task" in ast.unparse(node.left.value):
            found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    return found


def test_nothing_outside_tasks_decides_by_a_task_s_name_or_student_file():
    names = set(known_tasks())
    files = {task_for(n).serving.student_file for n in names if getattr(task_for(n), "serving", None)} \
        or {"classifier.json", "reranker.json", "tabular.json"}
    modules = _outside_tasks(_modules())
    found = {name: hits for name, path in modules.items() if name not in SPEC_TASK_REGISTRY
             and (hits := _task_decisions(path, names, files))}
    assert not found, f"task names decided outside tasks/: {found}"
