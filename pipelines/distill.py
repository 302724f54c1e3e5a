"""The distillation pipeline: validate → teacher → synthesize → soft labels → student (+ hard-label baseline) →
evaluate → package.

The same function runs locally (``stillhouse run``, kfp.local) and compiles to IR YAML for a Kubeflow cluster
(``stillhouse compile``). Its one parameter is the validated spec as JSON.
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


@dsl.pipeline(name="stillhouse-distill", description="Distil a teacher into a small student, evaluate, package.")
def distill_pipeline(spec_json: str) -> str:
    data = prepare_data(spec_json=spec_json).set_display_name("validate data")
    teacher = train_teacher(spec_json=spec_json, data=data.outputs["data"]).set_display_name("train teacher")
    synthetic = synthesize(spec_json=spec_json, data=data.outputs["data"],
                           teacher=teacher.outputs["teacher"]).set_display_name("synthesize")
    labels = soft_label(spec_json=spec_json, data=data.outputs["data"], teacher=teacher.outputs["teacher"],
                        synthetic=synthetic.outputs["synthetic"]).set_display_name("soft-label")
    student = distill_student(spec_json=spec_json, data=data.outputs["data"], teacher=teacher.outputs["teacher"],
                              soft_labels=labels.outputs["soft_labels"],
                              synthetic=synthetic.outputs["synthetic"]).set_display_name("distill student")
    baseline = train_baseline(spec_json=spec_json, data=data.outputs["data"],
                              teacher=teacher.outputs["teacher"]).set_display_name("hard-label baseline")
    evaluation = evaluate(spec_json=spec_json, data=data.outputs["data"], teacher=teacher.outputs["teacher"],
                          student=student.outputs["student"], baseline=baseline.outputs["baseline"],
                          synthetic=synthetic.outputs["synthetic"],
                          soft_labels=labels.outputs["soft_labels"]).set_display_name("evaluate")
    packaged = package(spec_json=spec_json, data=data.outputs["data"], teacher=teacher.outputs["teacher"],
                       student=student.outputs["student"],
                       evaluation=evaluation.outputs["evaluation"]).set_display_name("package")
    return packaged.outputs["Output"]
