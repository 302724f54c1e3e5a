"""The container image every component names by default on a cluster (built from infra/images/Dockerfile).

``$STILLHOUSE_IMAGE`` overrides it when the components are imported; a spec's ``runtime.image`` (and
``runtime.kubernetes.steps.<step>.image``) overrides it per pipeline at compile time.
"""

import os

from stillhouse.spec.runtime import DEFAULT_IMAGE, IMAGE_ENV

STILLHOUSE_IMAGE = os.environ.get(IMAGE_ENV, DEFAULT_IMAGE)
