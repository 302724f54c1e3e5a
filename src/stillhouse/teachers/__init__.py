"""Teachers: encoders fine-tuned on the seed set, prompted LLMs (local or an endpoint), and ensembles of them.

:func:`build_teacher_folder` is the one place that lays out a teacher's folder; each task supplies how an
encoder teacher is trained and how a prompted one is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from stillhouse.data.io import atomic_dir, read_json, write_json
from stillhouse.spec import EncoderTeacherSpec, EnsembleTeacherSpec

TEACHER_FILE = "teacher.json"  # a prompted teacher's or an ensemble's description (an encoder has its own)


def build_teacher_folder(teacher, out_dir: str | Path, build_encoder: Callable[[object, Path], None],
                         write_prompted: Callable[[object, Path], None], ensemble_fields: dict) -> None:
    """Write ``teacher`` (a teacher spec) to ``out_dir``.

    - encoder: ``build_encoder(teacher, out_dir)`` (it writes the folder itself: training checkpoints to it);
    - prompted LLM: ``write_prompted(teacher, folder)`` into a folder that appears whole or not at all;
    - ensemble: each member built into ``member-<i>/`` the same way, then :data:`TEACHER_FILE` with the
      member names, their weights and ``ensemble_fields`` (e.g. the labels or the task).
    """
    if isinstance(teacher, EncoderTeacherSpec):
        build_encoder(teacher, Path(out_dir))
        return
    with atomic_dir(out_dir) as tmp:
        if isinstance(teacher, EnsembleTeacherSpec):
            members = [f"member-{i}" for i in range(len(teacher.members))]
            for name, member in zip(members, teacher.members):
                build_teacher_folder(member, tmp / name, build_encoder, write_prompted, ensemble_fields)
            write_json(tmp / TEACHER_FILE, {"kind": "ensemble", **ensemble_fields, "members": members,
                                            "weights": teacher.weights or [1.0] * len(members)})
        else:
            write_prompted(teacher, tmp)


def encoder_member(folder: str | Path, model_file: str) -> Path | None:
    """The encoder among a teacher's folders: ``folder`` itself when it holds ``model_file`` (the task's saved
    model file, e.g. ``classifier.json``), else an ensemble's first member that does (depth first), else None."""
    folder = Path(folder)
    if (folder / model_file).is_file():
        return folder
    if (folder / TEACHER_FILE).is_file():
        for member in read_json(folder / TEACHER_FILE).get("members", []):
            found = encoder_member(folder / member, model_file)
            if found is not None:
                return found
    return None
