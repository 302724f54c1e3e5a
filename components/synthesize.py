"""Generate synthetic rows, have the teacher label them, filter them, validate them (GE synthetic suite)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from stillhouse.components._image import STILLHOUSE_IMAGE


@dsl.component(base_image=STILLHOUSE_IMAGE, install_kfp_package=False)
def synthesize(spec_json: str, data: Input[Dataset], teacher: Input[Model], synthetic: Output[Dataset],
               validation: Output[Artifact]):
    from stillhouse.steps import run_step, synthesize_step

    synthetic.metadata.update(run_step("synthesize", synthesize_step, spec_json=spec_json, data_dir=data.path,
                                       teacher_dir=teacher.path, out_dir=synthetic.path,
                                       validation_dir=validation.path))
