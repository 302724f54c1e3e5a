"""A Kubernetes API server for one resource, ``ray.io/v1`` ``rayjobs``, on 127.0.0.1 — for launcher tests.

Why this is not a mock of Stillhouse's code: no kube-apiserver can run on these machines (no container
engine; none installs from a registry), so this replaces exactly that process, at its wire boundary. The
launcher under test is unchanged and talks to it through the real ``kubernetes`` client (kubeconfig, REST
paths, JSON bodies, status codes, the streaming watch protocol). The test scripts what the KubeRay operator
would do: a list of status transitions applied after creation, injected HTTP errors per verb, or — as
``operator="run"`` — running the RayJob's entrypoint as KubeRay's submitter Job would and setting
``Complete``/``SUCCEEDED`` or ``Failed``/``AppFailed`` from its exit status.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

_PATH = re.compile(r"/apis/ray\.io/v1/namespaces/(?P<ns>[^/]+)/rayjobs(?:/(?P<name>[^/]+))?(?P<status>/status)?")


class JsonHandler(BaseHTTPRequestHandler):
    """A request handler that answers JSON and keeps quiet (pytest shows the test's own lines)."""

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class LoopbackServer:
    """An HTTP server on a free 127.0.0.1 port, serving ``self._handler()`` from a daemon thread."""

    def _start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _handler(self):
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeRayJobAPI(LoopbackServer):
    """The RayJob REST resource: create, get, get status, list + watch, delete."""

    def __init__(self, transitions: list[tuple[float, dict]] | None = None, errors: dict[str, list[int]] | None = None,
                 operator: str = "script", env: dict[str, str] | None = None):
        self.transitions = transitions or []
        self.errors = {verb: list(codes) for verb, codes in (errors or {}).items()}
        self.operator, self.env = operator, env
        self.objects: dict[tuple[str, str], dict] = {}
        self.requests: list[tuple[str, str]] = []  # (verb, path)
        self.created: list[dict] = []
        self.deleted: list[str] = []
        self.entrypoint_output = ""
        self._version = 0
        self._changed = threading.Condition()
        self._start()

    def kubeconfig(self, folder: Path, namespace: str = "ml") -> Path:
        path = folder / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "not-a-real-token"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
        }))
        return path

    # -- state -------------------------------------------------------------------------------------------------

    def _bump(self, obj: dict, status: dict | None = None) -> None:
        with self._changed:
            self._version += 1
            if status is not None:
                obj["status"] = {**obj.get("status", {}), **status}
            obj["metadata"]["resourceVersion"] = str(self._version)
            self._changed.notify_all()

    def _run_operator(self, key: tuple[str, str]) -> None:
        obj = self.objects[key]
        if self.operator == "run":
            self._bump(obj, {"jobDeploymentStatus": "Initializing"})
            self._bump(obj, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"})
            done = subprocess.run(shlex.split(obj["spec"]["entrypoint"]), capture_output=True, text=True, env=self.env,
                                  timeout=600)
            self.entrypoint_output = done.stdout + done.stderr
            if key in self.objects:
                final = ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"} if done.returncode == 0 else
                         {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed",
                          "message": "Job entrypoint command failed with exit code 1"})
                self._bump(obj, final)
            return
        for delay, status in self.transitions:
            time.sleep(delay)
            if key not in self.objects:
                return
            self._bump(obj, status)

    def _take_error(self, verb: str) -> int | None:
        codes = self.errors.get(verb)
        return codes.pop(0) if codes else None

    # -- HTTP ----------------------------------------------------------------------------------------------------

    def _handler(self):
        api = self

        class Handler(JsonHandler):
            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                                  "reason": reason, "message": message})

            def _route(self, verb: str):
                url = urlparse(self.path)
                match = _PATH.fullmatch(url.path)
                api.requests.append((verb, url.path))
                if match is None:
                    self._status(404, "NotFound", "the server could not find the requested resource")
                    return None
                code = api._take_error(verb)
                if code is not None:
                    self._status(code, {403: "Forbidden", 404: "NotFound", 409: "AlreadyExists"}.get(code, "Error"),
                                 f"injected {code}")
                    return None
                return match, parse_qs(url.query)

            def do_POST(self):
                routed = self._route("create")
                if routed is None:
                    return
                match, _ = routed
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = (match["ns"], body["metadata"]["name"])
                if key in api.objects:
                    self._status(409, "AlreadyExists", f'rayjobs.ray.io "{key[1]}" already exists')
                    return
                body["metadata"].update(uid=f"uid-{len(api.created)}", creationTimestamp="2026-12-02T00:00:00Z")
                api.objects[key] = body
                api.created.append(json.loads(json.dumps(body)))
                api._bump(body)
                self._send(201, body)
                threading.Thread(target=api._run_operator, args=(key,), daemon=True).start()

            def do_GET(self):
                routed = self._route("watch" if "watch=true" in self.path else "get")
                if routed is None:
                    return
                match, query = routed
                if match["name"] is None:
                    self._watch(match["ns"], query)
                    return
                obj = api.objects.get((match["ns"], match["name"]))
                if obj is None:
                    self._status(404, "NotFound", f'rayjobs.ray.io "{match["name"]}" not found')
                    return
                self._send(200, obj)

            def _watch(self, namespace: str, query: dict) -> None:
                name = query.get("fieldSelector", [""])[0].removeprefix("metadata.name=")
                seen = int(query.get("resourceVersion", ["0"])[0] or 0)
                until = time.monotonic() + float(query.get("timeoutSeconds", ["5"])[0])
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
                while time.monotonic() < until:
                    with api._changed:
                        api._changed.wait(timeout=max(0.0, min(0.5, until - time.monotonic())))
                        obj = api.objects.get((namespace, name))
                        version = int(obj["metadata"]["resourceVersion"]) if obj else seen
                    if obj is not None and version > seen:
                        line = json.dumps({"type": "MODIFIED", "object": obj}) + "\n"
                        self.wfile.write(line.encode())
                        self.wfile.flush()
                        seen = version

            def do_DELETE(self):
                routed = self._route("delete")
                if routed is None:
                    return
                match, _ = routed
                if api.objects.pop((match["ns"], match["name"]), None) is None:
                    self._status(404, "NotFound", f'rayjobs.ray.io "{match["name"]}" not found')
                    return
                api.deleted.append(match["name"])
                with api._changed:
                    api._changed.notify_all()
                self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

        return Handler
