"""The distillation pipeline: validate → teacher → synthesize → soft labels → student (+ hard-label baseline) →
evaluate → package.

The same function runs locally (``stillhouse run``, kfp.local) and compiles to IR YAML for a Kubeflow cluster
(``stillhouse compile`` / ``submit``). Its one parameter is the validated spec as JSON. Built for a spec's
``runtime`` section, every task gets that spec's cluster settings (:func:`stillhouse.cluster.platform.configure_step`:
image, resources, GPUs, secrets, volumes, placement, timeout); kfp.local ignores them.
"""

from kfp import dsl
from stillhouse.components.distill_student import distill_student
from stillhouse.components.evaluate import evaluate
from stillhouse.components.package import package
from stillhouse.components.prepare_data import prepare_data
from stillhouse.components.soft_label import soft_label
from stillhouse.components.synthesize import synthesize
from stillhouse.components.train_baseline import train_baseline
from stillhouse.components.train_teacher import train_teacher

from stillhouse.cluster.platform import configure_step
from stillhouse.spec.runtime import RuntimeSpec


def build_distill_pipeline(runtime: RuntimeSpec | None = None):
    """The pipeline function, with ``runtime``'s cluster settings on every step (defaults when ``None``)."""
    runtime = runtime or RuntimeSpec()

    def step(task, name: str, title: str):
        return configure_step(task, name, runtime).set_display_name(title)

    @dsl.pipeline(name="stillhouse-distill", description="Distil a teacher into a small student, evaluate, package.")
    def distill_pipeline(spec_json: str) -> str:
        data = step(prepare_data(spec_json=spec_json), "prepare-data", "validate data")
        teacher = step(train_teacher(spec_json=spec_json, data=data.outputs["data"]), "train-teacher", "train teacher")
        synthetic = step(synthesize(spec_json=spec_json, data=data.outputs["data"], teacher=teacher.outputs["teacher"]),
                         "synthesize", "synthesize")
        labels = step(soft_label(spec_json=spec_json, data=data.outputs["data"], teacher=teacher.outputs["teacher"],
                                 synthetic=synthetic.outputs["synthetic"]), "soft-label", "soft-label")
        student = step(distill_student(spec_json=spec_json, data=data.outputs["data"],
                                       teacher=teacher.outputs["teacher"], soft_labels=labels.outputs["soft_labels"],
                                       synthetic=synthetic.outputs["synthetic"]), "distill-student", "distill student")
        baseline = step(train_baseline(spec_json=spec_json, data=data.outputs["data"],
                                       teacher=teacher.outputs["teacher"]), "train-baseline", "hard-label baseline")
        evaluation = step(evaluate(spec_json=spec_json, data=data.outputs["data"], teacher=teacher.outputs["teacher"],
                                   student=student.outputs["student"], baseline=baseline.outputs["baseline"],
                                   synthetic=synthetic.outputs["synthetic"], soft_labels=labels.outputs["soft_labels"]),
                          "evaluate", "evaluate")
        packaged = step(package(spec_json=spec_json, data=data.outputs["data"], teacher=teacher.outputs["teacher"],
                                student=student.outputs["student"], evaluation=evaluation.outputs["evaluation"]),
                        "package", "package")
        return packaged.outputs["Output"]

    return distill_pipeline


distill_pipeline = build_distill_pipeline()
