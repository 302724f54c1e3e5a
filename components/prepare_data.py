"""Read, check, sample and validate (Great Expectations seed suite) the spec's data into seed / pool / eval."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Output
from stillhouse.components._image import STILLHOUSE_IMAGE


@dsl.component(base_image=STILLHOUSE_IMAGE, install_kfp_package=False)
def prepare_data(spec_json: str, data: Output[Dataset], validation: Output[Artifact]):
    from stillhouse.steps import prepare_step, run_step

    data.metadata.update(run_step("prepare-data", prepare_step, spec_json=spec_json, out_dir=data.path,
                                  validation_dir=validation.path))
