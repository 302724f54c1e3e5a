"""Save the student with its lineage to the BentoML model store."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from stillhouse.components._image import STILLHOUSE_IMAGE


@dsl.component(base_image=STILLHOUSE_IMAGE, install_kfp_package=False)
def package(spec_json: str, data: Input[Dataset], teacher: Input[Model], student: Input[Model],
            evaluation: Input[Artifact], bento_model: Output[Artifact]) -> str:
    from stillhouse.steps import package_step, run_step

    tag = run_step("package", package_step, spec_json=spec_json, data_dir=data.path, teacher_dir=teacher.path,
                   student_dir=student.path, evaluation_dir=evaluation.path, out_path=bento_model.path)
    bento_model.metadata["tag"] = tag
    return tag
