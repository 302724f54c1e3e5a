"""10. A killed server takes its workers with it, and servers sharing a BentoML home keep their own metrics.

Before: killing the server's process group left BentoML's workers (each in a session of its own) serving with
the old configuration — revoked tokens still accepted — and holding the port; and every server start cleared
`$BENTOML_HOME/prometheus_multiproc_dir`, the metrics of every other server using that home.
"""

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from stillhouse.serve.local import start_serve, stop_process_group
from stillhouse.serve.tokens import hash_token
from tests.security.conftest import ALICE, BOB, bearer, supervisor_sockets

pytestmark = [pytest.mark.integration, pytest.mark.security]


def metrics_files(pid: int) -> tuple[set[str], str]:
    """The files in the server's metrics folder (named in its workers' environment), and the folder."""
    folder = next(p for p in psutil.Process(pid).children(recursive=True)
                  if "PROMETHEUS_MULTIPROC_DIR" in p.environ()).environ()["PROMETHEUS_MULTIPROC_DIR"]
    return set(os.listdir(folder)), folder


def gone(processes: list[psutil.Process], within_s: float = 30) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes):
            return True
        time.sleep(0.2)
    return False


def test_sigkill_takes_the_workers_and_a_restart_binds_the_port(live, tiny_student_tag, tmp_path):
    (tmp_path / "tokens").write_text(f"alice {hash_token(ALICE)}\n")
    args = [tiny_student_tag, "--dir", str(tmp_path / "serve"), "--tokens-file", str(tmp_path / "tokens")]
    live["client"].get("/metrics", headers=bearer())
    live_metrics, live_folder = metrics_files(live["process"].pid)
    process, client, port = start_serve(args, tmp_path)
    assert client.post("/classify", json={"texts": ["great"]}, headers=bearer(ALICE)).status_code == 200
    # a second server on the same BentoML home left the first one's metrics alone
    assert live_folder != metrics_files(process.pid)[1] and live_metrics <= metrics_files(live["process"].pid)[0]
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    assert len(tree) >= 3  # supervisor, front, model service
    os.kill(process.pid, signal.SIGKILL)  # the server's pid only: no clean-up of any kind
    process.wait(30)
    assert gone(tree), [p.cmdline() for p in tree if p.is_running()]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    (tmp_path / "tokens").write_text(f"bob {hash_token(BOB)}\n")  # alice's token revoked
    process, client, _ = start_serve(args, tmp_path, port=port)
    try:
        assert client.post("/classify", json={"texts": ["great"]}, headers=bearer(ALICE)).status_code == 401
        assert client.post("/classify", json={"texts": ["great"]}, headers=bearer(BOB)).status_code == 200
    finally:
        stop_process_group(process)


def control_folder(pid: int) -> Path:
    """The server's private temporary folder, found by its control sockets (circus's, bound by the supervisor)."""
    sockets = supervisor_sockets(pid)
    assert sockets, "no control socket found"
    return sockets[0].parent


def test_the_next_start_removes_what_a_sigkilled_server_left_and_a_stopped_one_leaves_nothing(live, tiny_student_tag,
                                                                                              tmp_path):
    """Before: a SIGKILLed server left its control-socket folder and BentoML's socket and client folders in the
    temporary folder and its metrics folder in the serving folder, for good. Now all of them are in one temporary
    folder of the server's own, owned (a lock the kernel drops with its process), and a start removes those whose
    owner is gone, never a live server's."""
    args = [tiny_student_tag, "--dir", str(tmp_path / "serve"), "--no-auth"]
    process, _, _ = start_serve(args, tmp_path)
    control, metrics = control_folder(process.pid), Path(metrics_files(process.pid)[1])
    assert {p.name.split("-")[-2] for p in control.iterdir() if p.name.startswith("bentoml-")} >= {"uds"}
    assert metrics.parent == control
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    assert gone(tree)
    assert control.exists() and metrics.exists()  # nothing can clean up after a SIGKILL
    process, _, _ = start_serve(args, tmp_path)
    try:
        assert not control.exists() and not metrics.exists()
        assert control_folder(live["process"].pid).exists()  # a live server's folders are left alone
        control, metrics = control_folder(process.pid), Path(metrics_files(process.pid)[1])
    finally:
        stop_process_group(process)  # SIGTERM: a clean stop
    assert not control.exists() and not metrics.exists()
