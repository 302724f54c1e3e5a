"""Start a real `stillhouse serve` in its own process group and wait until it is ready (serving tests)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args: list[str], folder: Path, cert: Path | None = None, env: dict | None = None,
                 timeout_s: float = 180):
    """(process, httpx client, port) for `stillhouse serve ARGS --port P`, once /readyz answers 200."""
    port = free_port()
    log = open(folder / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "stillhouse.cli", "serve", *args, "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, **(env or {})})
    scheme = "https" if cert else "http"
    return process, wait_ready(process, f"{scheme}://127.0.0.1:{port}", folder / "server.log", cert, timeout_s), port


def wait_ready(process, url: str, log: Path, cert: Path | None = None, timeout_s: float = 180):
    """An httpx client for ``url`` once its /readyz answers 200; fails the test with the log's tail otherwise."""
    import httpx

    client = httpx.Client(base_url=url, verify=str(cert) if cert else True, timeout=30)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                return client
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_server(process, signal.SIGKILL)
            pytest.fail("server did not become ready:\n" + log.read_text()[-3000:])
        time.sleep(1)


def stop_server(process, sig=signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        process.wait(30)
