"""A plain `pip install .` carries the CLI, the components and the pipelines (not only an editable install)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_wheel_contains_library_components_pipelines_and_cli(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("stillhouse-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("stillhouse/cli.py", "stillhouse/spec/__init__.py", "stillhouse/spec/teachers.py",
                   "stillhouse/synth/synthesize.py", "stillhouse/validate/suites.py", "stillhouse/teachers/llm.py",
                   "stillhouse/components/train_teacher.py", "stillhouse/components/synthesize.py",
                   "stillhouse/components/package.py", "stillhouse/pipelines/distill.py"):
        assert module in names, module
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "stillhouse = stillhouse.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_a_student_packaged_with_its_onnx_file_brings_onnx_runtime_into_its_bento(tmp_path):
    from stillhouse.serve.package import RUNTIME_EXTRAS, runtime_extras, runtime_requirements

    assert runtime_extras(tmp_path) == RUNTIME_EXTRAS  # a torch student: serving + postgres alone
    assert not any(r.startswith("onnxruntime") for r in runtime_requirements(runtime_extras(tmp_path)))
    (tmp_path / "model.onnx").write_bytes(b"")
    assert runtime_extras(tmp_path) == RUNTIME_EXTRAS | {"onnx"}
    assert any(r.startswith("onnxruntime") for r in runtime_requirements(runtime_extras(tmp_path)))


def test_metadata_is_made_storable_for_bentoml_without_losing_positions():
    """BentoML refuses None anywhere in a model's metadata (a tabular run without sensitive features crashed at
    its last step on the gate's unmeasured fairness values)."""
    from stillhouse.registry import storable

    gate = {"verdict": "failed", "checks": [{"limit": "min_auc", "value": 0.8, "passed": True},
                                            {"limit": "min_demographic_parity_ratio", "value": None, "passed": False}]}
    assert storable({"gate_checks": gate["checks"], "features": None, "ci": [None, 0.5], "n": 3}) == {
        "gate_checks": [{"limit": "min_auc", "value": 0.8, "passed": True},
                        {"limit": "min_demographic_parity_ratio", "passed": False}],
        "ci": ["null", 0.5], "n": 3}
