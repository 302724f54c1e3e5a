"""Teacher vs distilled student vs hard-label student: metrics, report, model card."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from stillhouse.components._image import STILLHOUSE_IMAGE


@dsl.component(base_image=STILLHOUSE_IMAGE, install_kfp_package=False)
def evaluate(spec_json: str, data: Input[Dataset], teacher: Input[Model], student: Input[Model],
             baseline: Input[Model], synthetic: Input[Dataset], soft_labels: Input[Dataset],
             evaluation: Output[Artifact], metrics: Output[Metrics]):
    from stillhouse.steps import evaluate_step, headline_metrics, run_step

    result = run_step("evaluate", evaluate_step, spec_json=spec_json, data_dir=data.path, teacher_dir=teacher.path,
                      student_dir=student.path, baseline_dir=baseline.path, out_dir=evaluation.path,
                      synthetic_dir=synthetic.path, soft_labels_dir=soft_labels.path)
    for name, value in headline_metrics(result).items():
        metrics.log_metric(name, value)
