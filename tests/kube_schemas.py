"""Offline schema checks for manifests: the KubeRay CRDs in ../shared/schemas/kuberay, as the API server applies
them with strict field validation (``kubectl apply --validate=strict``): typed by the CRD's ``openAPIV3Schema``,
unknown fields refused wherever the schema lists its properties and does not preserve unknown fields."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

KUBERAY_SCHEMAS = Path(os.environ.get("STILLHOUSE_KUBERAY_SCHEMAS", REPO.parent / "shared" / "schemas" / "kuberay"))


def _strict(node):
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@functools.cache
def crd_schema(kind: str) -> dict:
    """The strict JSON schema of a KubeRay kind (``RayJob``, ``RayCluster``); skips where the CRDs are absent."""
    path = KUBERAY_SCHEMAS / f"ray.io_{kind.lower()}s.yaml"
    if not path.is_file():
        pytest.skip(f"KubeRay CRD schemas not found at {KUBERAY_SCHEMAS}")
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return _strict(version["schema"]["openAPIV3Schema"])


def crd_errors(manifest: dict) -> list[str]:
    """Every schema violation of a ``ray.io/v1`` manifest, as ``path: message``."""
    import jsonschema

    validator = jsonschema.Draft7Validator(crd_schema(manifest["kind"]))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
            for e in validator.iter_errors(manifest)]
