"""Distil the student from the soft labels of seed, pool and synthetic rows (a Ray Train job)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from stillhouse.components._image import STILLHOUSE_IMAGE


@dsl.component(base_image=STILLHOUSE_IMAGE, install_kfp_package=False)
def distill_student(spec_json: str, data: Input[Dataset], teacher: Input[Model], soft_labels: Input[Dataset],
                    synthetic: Input[Dataset], student: Output[Model]):
    from stillhouse.steps import distill_student_step, run_step

    student.metadata.update(run_step("distill-student", distill_student_step, spec_json=spec_json,
                                     data_dir=data.path, teacher_dir=teacher.path, soft_labels_dir=soft_labels.path,
                                     synthetic_dir=synthetic.path, out_dir=student.path))
