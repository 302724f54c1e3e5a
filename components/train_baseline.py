"""The same student on hard labels only: the baseline distillation must beat (a Ray Train job)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from stillhouse.components._image import STILLHOUSE_IMAGE


@dsl.component(base_image=STILLHOUSE_IMAGE, install_kfp_package=False)
def train_baseline(spec_json: str, data: Input[Dataset], teacher: Input[Model], baseline: Output[Model]):
    from stillhouse.steps import run_step, train_baseline_step

    baseline.metadata.update(run_step("train-baseline", train_baseline_step, spec_json=spec_json,
                                      data_dir=data.path, teacher_dir=teacher.path, out_dir=baseline.path))
