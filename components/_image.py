"""The container image every component runs in on a cluster (built from infra/; override per deployment)."""

import os

STILLHOUSE_IMAGE = os.environ.get("STILLHOUSE_IMAGE", "ghcr.io/stillhouse/stillhouse:0.1.0")
