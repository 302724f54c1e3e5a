"""The teacher's logits for every seed, pool and synthetic row, checked by the GE soft-label suite."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from stillhouse.components._image import STILLHOUSE_IMAGE


@dsl.component(base_image=STILLHOUSE_IMAGE, install_kfp_package=False)
def soft_label(spec_json: str, data: Input[Dataset], teacher: Input[Model], synthetic: Input[Dataset],
               soft_labels: Output[Dataset], validation: Output[Artifact]):
    from stillhouse.steps import run_step, soft_label_step

    soft_labels.metadata.update(run_step("soft-label", soft_label_step, spec_json=spec_json, data_dir=data.path,
                                         teacher_dir=teacher.path, synthetic_dir=synthetic.path,
                                         out_dir=soft_labels.path, validation_dir=validation.path))
