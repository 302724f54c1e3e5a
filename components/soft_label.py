"""The teacher's logits for every seed and pool row."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from stillhouse.components._image import STILLHOUSE_IMAGE


@dsl.component(base_image=STILLHOUSE_IMAGE, install_kfp_package=False)
def soft_label(spec_json: str, data: Input[Dataset], teacher: Input[Model], soft_labels: Output[Dataset]):
    from stillhouse.steps import run_step, soft_label_step

    soft_labels.metadata.update(run_step("soft-label", soft_label_step, spec_json=spec_json, data_dir=data.path,
                                         teacher_dir=teacher.path, out_dir=soft_labels.path))
