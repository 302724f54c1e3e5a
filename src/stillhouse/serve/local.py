"""Run a service on this machine as a child process and wait until it is ready: for tests, benchmarks, scripts.

The process gets its own process group, so that stopping it also stops the workers ``bentoml serve`` forks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_serve(args: list[str], folder: Path, env: dict | None = None, cert: Path | None = None,
                timeout_s: float = 180, port: int | None = None):
    """``stillhouse serve ARGS --port P`` logging to ``folder/server.log``: (process, httpx client, port) once ready.

    ``cert`` is the certificate a TLS server presents (and the client trusts); ``port`` defaults to a free one;
    raises RuntimeError with the log's tail if the server exits or is not ready within ``timeout_s``.
    """
    port = port or free_port()
    log = Path(folder) / "server.log"
    with open(log, "a") as handle:
        process = subprocess.Popen([sys.executable, "-m", "stillhouse.cli", "serve", *args, "--port", str(port)],
                                   stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **(env or {})})
    url = f"{'https' if cert else 'http'}://127.0.0.1:{port}"
    return process, wait_ready(process, url, log, cert, timeout_s), port


def wait_ready(process: subprocess.Popen, url: str, log: Path, cert: Path | None = None, timeout_s: float = 180):
    """An httpx client for ``url`` once its /readyz answers 200; otherwise kill the process and raise."""
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
            client.close()
            stop_process_group(process, signal.SIGKILL)
            raise RuntimeError(f"{url} did not become ready; end of {log}:\n" + Path(log).read_text()[-3000:])
        time.sleep(1)


def stop_process_group(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
    """Signal the process's whole group; escalate to SIGKILL if it has not exited within ``timeout_s``.

    BentoML's workers run in sessions of their own; ``stillhouse serve``'s workers die with their supervisor, but
    a server started otherwise may leave them, so every descendant found before signalling is killed afterwards
    if it is still there.
    """
    import psutil

    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout_s)
    for child in descendants:
        try:
            child.wait(timeout=5 if sig != signal.SIGKILL else 0.1)
        except psutil.TimeoutExpired:
            child.kill()
        except psutil.NoSuchProcess:
            pass
