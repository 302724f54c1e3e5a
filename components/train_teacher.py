"""Fine-tune the teacher on the seed set (a Ray Train job)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from stillhouse.components._image import STILLHOUSE_IMAGE


@dsl.component(base_image=STILLHOUSE_IMAGE, install_kfp_package=False)
def train_teacher(spec_json: str, data: Input[Dataset], teacher: Output[Model]):
    from stillhouse.steps import run_step, train_teacher_step

    teacher.metadata.update(run_step("train-teacher", train_teacher_step, spec_json=spec_json,
                                     data_dir=data.path, out_dir=teacher.path))
