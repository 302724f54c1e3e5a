"""Attacks on a served student, one module per class of weakness (README: Serving, threat model).

Two ways in, as the behaviour under test lives:
- ``live``: one real ``stillhouse serve`` on 127.0.0.1 (TLS, two principals' tokens, short connection timeouts),
  shared by the modules; its ``server.log`` and audit log are what an operator would read;
- ``asgi``: the student service's ASGI app (real BentoML app, middleware, model store, SQLite) through
  Starlette's TestClient, for what the middleware decides, with a config per test where needed.
"""

from __future__ import annotations

import importlib
import json
import socket
import ssl
from pathlib import Path

import pytest

from stillhouse.serve.local import start_serve, stop_process_group
from stillhouse.serve.tokens import hash_token
from stillhouse.tasks import task_for
from tests.conftest import self_signed


ALICE, BOB = "alice-token-0123456789", "bob-token-9876543210"
HEAD_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 2


def bearer(token: str = ALICE) -> dict:
    return {"Authorization": f"Bearer {token}"}


def audit_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def session_server(tag: str, folder: Path, config: dict, tls: bool):
    """A real ``stillhouse serve`` of ``tag`` with alice's and bob's tokens and ``config``, TLS if asked:
    {client, process, port, folder (serving folder), log, url, cert}; stopped by ``stop_server``."""
    (folder / "tokens").write_text(f"alice {hash_token(ALICE)}\nbob {hash_token(BOB)}\n")
    (folder / "serve.yaml").write_text(json.dumps(config))
    cert, key = self_signed(folder) if tls else (None, None)
    process, client, port = start_serve(
        [tag, "--config", str(folder / "serve.yaml"), "--dir", str(folder / "serve"), "--tokens-file",
         str(folder / "tokens"), *(["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)] if tls else [])],
        folder, cert=cert)
    return {"client": client, "process": process, "port": port, "folder": folder / "serve",
            "log": folder / "server.log", "cert": cert, "url": f"{'https' if tls else 'http'}://127.0.0.1:{port}"}


def stop_server(server: dict) -> None:
    server["client"].close()
    stop_process_group(server["process"])


@pytest.fixture(scope="session")
def live(tiny_student_tag, tmp_path_factory):
    """A real TLS server with short connection timeouts (see session_server)."""
    server = session_server(tiny_student_tag, tmp_path_factory.mktemp("live"),
                            {"connections": {"head_timeout_s": HEAD_TIMEOUT_S, "keep_alive_s": KEEP_ALIVE_S}}, tls=True)
    yield server
    stop_server(server)


# A plain-HTTP server with small connection limits, so that a bounded flood reaches them.
PLAIN_LIMITS = {"head_timeout_s": 6.0, "keep_alive_s": KEEP_ALIVE_S, "max_concurrency": 48, "max_per_client": 16}
PLAIN_PRINCIPAL_CAP = 24


@pytest.fixture(scope="session")
def plain(tiny_student_tag, tmp_path_factory):
    """A real plain-HTTP server with PLAIN_LIMITS and PLAIN_PRINCIPAL_CAP (see session_server)."""
    server = session_server(tiny_student_tag, tmp_path_factory.mktemp("plain"),
                            {"connections": PLAIN_LIMITS,
                             "limits": {"max_requests_per_principal": PLAIN_PRINCIPAL_CAP}}, tls=False)
    yield server
    stop_server(server)


def plain_socket(server: dict, timeout: float = 10.0, source: str | None = None) -> socket.socket:
    """A raw TCP connection to a plain-HTTP server, from ``source`` (another loopback address) if given."""
    return socket.create_connection(("127.0.0.1", server["port"]), timeout=timeout,
                                    source_address=(source, 0) if source else None)


def supervisor_sockets(pid: int) -> list[Path]:
    """The Unix sockets a server's supervisor binds directly in its private temporary folder (its control
    channel; BentoML's sockets for its services are in a folder inside it)."""
    import psutil

    return [Path(conn.laddr) for conn in psutil.Process(pid).net_connections(kind="unix")
            if conn.laddr and Path(conn.laddr).parent.name.startswith("stillhouse-serve-")]


def tls_socket(live: dict, timeout: float = 10.0, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    """A raw TLS connection to the live server (for requests no HTTP client would send)."""
    context = context or ssl.create_default_context(cafile=str(live["cert"]))
    raw = socket.create_connection(("127.0.0.1", live["port"]), timeout=timeout)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def read_until_closed(sock: socket.socket, limit: int = 1 << 16) -> bytes:
    """What the server sends before it closes (or resets) the connection."""
    data = b""
    try:
        while len(data) < limit:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
        pass
    return data


def logs_of(live: dict) -> str:
    return live["log"].read_text(encoding="utf-8", errors="replace") + (live["folder"] / "audit.jsonl").read_text(
        encoding="utf-8", errors="replace")


@pytest.fixture()
def asgi(tiny_student_tag, tiny_reranker_tag, tmp_path, monkeypatch):
    """A factory: ``asgi(task="classification", **config_sections)`` → (TestClient, serving folder) for the app of
    that task's service (a tiny classifier, or a tiny re-ranker)."""
    from starlette.testclient import TestClient

    clients = []

    def make(task: str = "classification", **sections):
        folder = tmp_path / "serve"
        folder.mkdir(exist_ok=True)
        (folder / "tokens").write_text(f"alice {hash_token(ALICE)}\nbob {hash_token(BOB)}\n")
        tag = tiny_reranker_tag if task == "reranking" else tiny_student_tag
        config = {"model": tag, "auth": {"tokens_file": str(folder / "tokens")},
                  "audit": {"path": str(folder / "audit.jsonl")}, "feedback": {"path": str(folder / "fb.sqlite")},
                  **sections}
        (folder / "serve.yaml").write_text(json.dumps(config))
        monkeypatch.setenv("STILLHOUSE_SERVE_CONFIG", str(folder / "serve.yaml"))
        module_name, service = task_for(task).serving.service.split(":")
        module = importlib.reload(importlib.import_module(module_name))  # the service reads its config on import
        forget_service_metrics()  # an app of an earlier test (or module) may have registered them
        client = TestClient(getattr(module, service).to_asgi(), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client, folder

    yield make
    for client in clients:
        client.__exit__(None, None, None)
    forget_service_metrics()


def forget_service_metrics() -> None:
    """Unregister BentoML's request metrics: each app registers them in the process's Prometheus registry at
    start-up, and a second app in the same process (a test with another config) would find them taken."""
    import prometheus_client

    registry = prometheus_client.REGISTRY
    for collector in list(registry._collector_to_names):
        if any(name.startswith("bentoml_") for name in registry._collector_to_names[collector]):
            registry.unregister(collector)
