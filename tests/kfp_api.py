"""The Kubeflow Pipelines v2beta1 REST API, for the few calls ``kfp.Client`` makes to start runs — on 127.0.0.1.

Why not a mock of Stillhouse's code: a KFP server needs a Kubernetes cluster, which cannot run here; this
replaces that server only, at its wire boundary. ``stillhouse submit`` and the real ``kfp.Client`` are
unchanged; the test reads what reached the server (headers, the pipeline spec, parameters, the schedule).
"""

from __future__ import annotations

import json
from urllib.parse import urlparse

from tests.kube_api import JsonHandler, LoopbackServer


class FakeKfpServer(LoopbackServer):
    def __init__(self, refuse_with: int | None = None):
        self.refuse_with = refuse_with
        self.requests: list[dict] = []  # {method, path, headers, body}
        self.experiments: list[dict] = []
        self._start()

    def posted(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == "POST" and r["path"] == path]

    def _handler(self):
        server = self

        class Handler(JsonHandler):
            def _record(self, method: str) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                entry = {"method": method, "path": urlparse(self.path).path, "query": urlparse(self.path).query,
                         "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                server.requests.append(entry)
                return entry

            def do_GET(self):
                entry = self._record("GET")
                if entry["path"] == "/apis/v2beta1/healthz":
                    self._send(200, {"multi_user": False})
                elif server.refuse_with:
                    self._send(server.refuse_with, {"error": "denied", "code": 7, "message": "denied"})
                elif entry["path"] == "/apis/v2beta1/experiments":
                    self._send(200, {"experiments": server.experiments} if server.experiments else {})
                else:
                    self._send(404, {"error": "not found", "code": 5})

            def do_POST(self):
                entry = self._record("POST")
                body = entry["body"] or {}
                if server.refuse_with:
                    self._send(server.refuse_with, {"error": "denied", "code": 7, "message": "denied"})
                elif entry["path"] == "/apis/v2beta1/experiments":
                    experiment = {**body, "experiment_id": f"exp-{len(server.experiments) + 1}"}
                    server.experiments.append(experiment)
                    self._send(200, experiment)
                elif entry["path"] == "/apis/v2beta1/runs":
                    self._send(200, {**body, "run_id": "run-1", "state": "PENDING"})
                elif entry["path"] == "/apis/v2beta1/recurringruns":
                    self._send(200, {**body, "recurring_run_id": "rr-1", "status": "ENABLED"})
                else:
                    self._send(404, {"error": "not found", "code": 5})

        return Handler
