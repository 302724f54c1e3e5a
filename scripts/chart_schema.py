"""Write charts/stillhouse/values.schema.json: the chart's values, typed, with every unknown key refused.

The serving-config sections a student may set (``limits``, ``connections``, ``batching``) are taken from the
pydantic models the server validates with (``stillhouse.serve.config``), so the chart cannot drift from them;
tests/integration/test_chart.py fails when the committed file differs from what this writes.

    python scripts/chart_schema.py          # rewrite the file
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CHART = Path(__file__).resolve().parent.parent / "charts" / "stillhouse"
NAME = {"type": "string", "pattern": r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"}
QUANTITY = {"type": ["string", "integer", "number"],
            "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"}


def strict(properties: dict, required: list[str] | None = None, **extra) -> dict:
    schema = {"type": "object", "additionalProperties": False, "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


def secret_ref(required: bool) -> dict:
    name = {"type": "string", "pattern": r"^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)$" if required else
            r"^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)?$"}
    return strict({"name": name, "key": {"type": "string", "minLength": 1}}, ["name", "key"])


def section(model) -> dict:
    """A serving-config section as JSON schema, from its pydantic model (no refs: the sections are flat)."""
    schema = model.model_json_schema()
    properties = {}
    for name, field in schema["properties"].items():
        field = {k: v for k, v in field.items() if k not in ("title", "default")}
        if "anyOf" in field:  # `x | None`: Helm values have no null for these
            field = {**[option for option in field.pop("anyOf") if option.get("type") != "null"][0], **field}
        properties[name] = field
    return strict(properties)


def resources() -> dict:
    amounts = {"type": "object", "additionalProperties": False,
               "properties": {"cpu": QUANTITY, "memory": QUANTITY}}
    return strict({"requests": amounts, "limits": amounts}, ["requests", "limits"])


def build() -> dict:
    from stillhouse.serve.config import BatchingConfig, ConnectionsConfig, LimitsConfig

    config = strict({
        "limits": section(LimitsConfig),
        "connections": section(ConnectionsConfig),
        "batching": section(BatchingConfig),
        "warmup_texts": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "auth": strict({"open_paths": {"type": "array", "items": {"type": "string", "pattern": "^/"}}}),
        "audit": strict({"fsync": {"enum": ["changes", "always", "never"]}, "log_inputs": {"type": "boolean"}}),
        "feedback": strict({"keep_requests": {"type": "integer", "minimum": 0}}),
    }, description="Serving config sections; the model, auth, audit key and feedback store come from the chart.")
    student = strict({
        "name": NAME,
        "model": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]*:[A-Za-z0-9_.-]+$",
                  "not": {"pattern": ":latest$"}},
        "image": strict({"repository": {"type": "string", "minLength": 1},
                         "tag": {"type": "string", "minLength": 1, "not": {"const": "latest"}}},
                        ["repository", "tag"]),
        "replicas": {"type": "integer", "minimum": 1},
        "resources": resources(),
        "config": config,
    }, ["name", "model", "image"])
    peers = {"type": "array", "items": {"type": "object"}}
    schema = strict({
        "nameOverride": {"type": "string"},
        "fullnameOverride": {"type": "string"},
        "students": {"type": "array", "items": student},
        "image": strict({"pullPolicy": {"enum": ["IfNotPresent", "Always", "Never"]},
                         "pullSecrets": {"type": "array", "items": NAME}}),
        "replicas": {"type": "integer", "minimum": 1},
        "resources": resources(),
        "autoscaling": strict({"enabled": {"type": "boolean"}, "minReplicas": {"type": "integer", "minimum": 1},
                               "maxReplicas": {"type": "integer", "minimum": 1},
                               "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1, "maximum": 100}}),
        "podDisruptionBudget": strict({"enabled": {"type": "boolean"},
                                       "maxUnavailable": {"type": ["integer", "string"]}}),
        "auth": strict({"enabled": {"type": "boolean"}, "tokenHashesSecret": secret_ref(False)}),
        "audit": strict({"keySecret": secret_ref(False)}),
        "tls": strict({"secretName": {"type": "string"}}),
        "feedback": strict({"url": {"type": "string", "pattern": r"^$|^postgres(ql)?://[^:@/]+@[^/]+/[^/?]+",
                                    "not": {"pattern": r"^postgres(ql)?://[^/@]*:[^/@]*@"}},
                            "passwordSecret": secret_ref(False)}),
        "featureStore": strict({
            "enabled": {"type": "boolean"}, "project": {"type": "string", "pattern": r"^([a-z0-9_]+)?$"},
            "registry": {"type": "string", "pattern": r"^$|^postgres(ql)?(\+psycopg)?://[^:@/]+@[^/]+/[^/?]+",
                         "not": {"pattern": r"^postgres[^/]*://[^/@]*:[^/@]*@"}},
            "registryPasswordSecret": secret_ref(False),
            "redis": strict({"connectionString": {"type": "string", "pattern": r"^$|^[A-Za-z0-9.-]+:[0-9]+$"},
                             "passwordSecret": secret_ref(False)})}),
        "persistence": strict({"storageClass": {"type": "string"},
                               "accessModes": {"type": "array", "minItems": 1, "items": {
                                   "enum": ["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]}},
                               "size": QUANTITY}),
        "networkPolicy": strict({"enabled": {"type": "boolean"}, "ingressFrom": peers, "egressTo": peers}),
        "service": strict({"type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                           "port": {"type": "integer", "minimum": 1, "maximum": 65535}}),
        "runAsUser": {"type": "integer", "minimum": 1},
        "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
        "tolerations": {"type": "array", "items": {"type": "object"}},
        "affinity": {"type": "object"},
        "commonLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "rayJobs": strict({"enabled": {"type": "boolean"}, "serviceAccounts": {"type": "array", "items": strict(
            {"name": NAME, "namespace": NAME}, ["name", "namespace"])}}),
    })
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema["title"] = "Values of the Stillhouse chart"
    schema["allOf"] = [
        # Students need their Secrets named: tokens (unless auth is off) and the audit key.
        {"if": {"properties": {"students": {"minItems": 1}}, "required": ["students"]},
         "then": {"properties": {"audit": {"properties": {"keySecret": {"properties": {"name": {"minLength": 1}}}}}}}},
        {"if": {"properties": {"students": {"minItems": 1}, "auth": {"properties": {"enabled": {"const": True}}}},
                "required": ["students"]},
         "then": {"properties": {"auth": {"properties": {"tokenHashesSecret": {
             "properties": {"name": {"minLength": 1}}}}}}}},
        # A feature store needs its project, registry and online store named.
        {"if": {"properties": {"featureStore": {"properties": {"enabled": {"const": True}}}}},
         "then": {"properties": {"featureStore": {"properties": {
             "project": {"minLength": 1}, "registry": {"minLength": 1},
             "redis": {"properties": {"connectionString": {"minLength": 1}}}}}}}},
        # More than one replica shares feedback: only a server database keeps it whole (see _helpers.tpl too).
        {"if": {"anyOf": [{"properties": {"replicas": {"type": "integer", "minimum": 2}}, "required": ["replicas"]},
                          {"properties": {"autoscaling": {"properties": {"enabled": {"const": True}}}}}]},
         "then": {"properties": {"feedback": {"properties": {"url": {"minLength": 1}}}}}},
    ]
    return schema


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    target = CHART / "values.schema.json"
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)
