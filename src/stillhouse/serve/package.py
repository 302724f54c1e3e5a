"""Package a student as a Bento (``bentoml build``, no Docker): service code, model, model card, serving config.

The Bento carries the installed ``stillhouse`` package itself (copied into its source folder, so this works
after a plain ``pip install .`` with no checkout), the student model by exact tag, the student's model card as
the Bento's description and as ``MODEL_CARD.md``, and the serving config as the Bento argument
``stillhouse_serve_config`` (``$STILLHOUSE_SERVE_CONFIG`` still wins where set). Python requirements are the
package's own, unlocked (``lock_packages: false``), so the CPU torch pin stays as written and no CUDA build gets
locked in. At run time the container needs ``$STILLHOUSE_TOKEN_HASHES``
(a Kubernetes Secret), or a serving config with auth off.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import stillhouse
from stillhouse.errors import ModelError
from stillhouse.models.onnx_runtime import ONNX_FILE
from stillhouse.serve.config import BENTO_ARGUMENT, CONFIG_ENV, ServeConfig
from stillhouse.serve.launch import service_for
from stillhouse.serve.stored import check_tag

# postgres: a containerized student may keep its feedback in PostgreSQL (feedback.url; the chart, several replicas).
RUNTIME_EXTRAS = {"serving", "postgres"}


def runtime_extras(student_folder: Path) -> set[str]:
    """The extras a packaged student needs to serve: :data:`RUNTIME_EXTRAS`, and ``onnx`` for a student
    packaged with its ONNX file (``package.runtime: onnx``)."""
    return RUNTIME_EXTRAS | ({"onnx"} if (student_folder / ONNX_FILE).is_file() else set())


def runtime_requirements(extras: set[str] = RUNTIME_EXTRAS) -> list[str]:
    """The installed stillhouse's core requirements plus those of ``extras``, as pip requirements."""
    out = []
    for requirement in metadata.requires("stillhouse") or []:
        spec, _, marker = requirement.partition(";")
        extra = re.search(r'extra\s*==\s*"([^"]+)"', marker)
        if not marker.strip() or (extra and extra.group(1) in extras):
            out.append(spec.strip())
    return out


def package_student(tag: str, config: ServeConfig | None = None) -> str:
    """Build a Bento serving the student ``tag``; return the Bento's tag."""
    import bentoml

    stored = check_tag(tag)
    card = Path(stored.path) / "model_card.md"
    if not card.is_file():
        raise ModelError(f"model `{tag}` has no model card (model_card.md)",
                         "package a student written by `stillhouse run`, which writes its card")
    exact = str(stored.tag)
    served = (config or ServeConfig(model=exact)).model_copy(update={"model": exact})
    # Relative paths: a Bento runs from its source folder (/home/bentoml/bento/src in the container).
    served = served.model_copy(update={
        "audit": served.audit.model_copy(update={"path": "stillhouse-serve/audit.jsonl"}),
        "feedback": served.feedback.model_copy(update={"path": "stillhouse-serve/feedback.sqlite"})})
    with tempfile.TemporaryDirectory(prefix="stillhouse-bento-") as ctx:
        ctx_path = Path(ctx)
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(Path(stillhouse.__file__).parent, ctx_path / "stillhouse", ignore=skip)
        # An editable install maps stillhouse.serving to the checkout's serving/ folder, outside src/stillhouse.
        # Found, not imported: the library does not import the services that adapt it.
        serving = importlib.util.find_spec("stillhouse.serving").submodule_search_locations[0]
        shutil.copytree(serving, ctx_path / "stillhouse" / "serving", ignore=skip, dirs_exist_ok=True)
        shutil.copy2(card, ctx_path / "MODEL_CARD.md")
        previous = os.environ.pop(CONFIG_ENV, None)  # the build imports the service: it must read the argument
        try:
            bento = bentoml.bentos.build(
                service_for(served), name=f"{stored.tag.name}-service", build_ctx=ctx,
                labels={"framework": "stillhouse", "student": exact}, description=card.read_text(encoding="utf-8"),
                include=["stillhouse/**", "MODEL_CARD.md"], models=[exact],
                args={BENTO_ARGUMENT: served.model_dump_json()},
                python={"packages": runtime_requirements(runtime_extras(Path(stored.path) / "student")),
                        "lock_packages": False})
        finally:
            if previous is not None:
                os.environ[CONFIG_ENV] = previous
    return str(bento.tag)
