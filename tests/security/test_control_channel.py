"""1. The process supervisor's control channel: only the server itself may use it.

BentoML's supervisor (circus) takes commands, "start this program" among them, on ZeroMQ endpoints that
`bentoml serve` binds to two TCP ports on 127.0.0.1 without authentication: any process in the pod or on the
host could use them. Under `stillhouse serve` they are Unix sockets in a folder only the server's user can enter.
"""

import os
import socket
import stat
from pathlib import Path

import psutil
import pytest

from tests.security.conftest import supervisor_sockets

pytestmark = [pytest.mark.integration, pytest.mark.security]


def server_processes(live) -> list[psutil.Process]:
    root = psutil.Process(live["process"].pid)
    return [root, *root.children(recursive=True)]


def test_no_tcp_port_is_listening_but_the_services_own(live):
    ports = {conn.laddr.port for proc in server_processes(live)
             for conn in proc.net_connections(kind="tcp") if conn.status == psutil.CONN_LISTEN}
    assert ports == {live["port"]}


def control_sockets(live) -> list[Path]:
    return supervisor_sockets(live["process"].pid)


def test_the_control_endpoints_are_private_unix_sockets(live):
    sockets = control_sockets(live)
    assert {path.name for path in sockets} == {"control.sock", "pubsub.sock"}
    folder = sockets[0].parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == os.getuid()
    for path in sockets:
        assert stat.S_ISSOCK(path.stat().st_mode) and not path.stat().st_mode & 0o077


def connect_as_nobody(path: Path) -> str:
    """Try ``path`` from a forked child running as ``nobody``: what another user's process would get."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, try, report, exit without running any test machinery
        outcome = b"connected"
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            socket.socket(socket.AF_UNIX).connect(str(path))
        except PermissionError:
            outcome = b"refused"
        except OSError as exc:
            outcome = type(exc).__name__.encode()
        os.write(write, outcome)
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as answer:
        return answer.read().decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to try the socket as another user (nobody)")
def test_another_user_cannot_reach_the_supervisor(live):
    control = next(p for p in control_sockets(live) if p.name == "control.sock")
    assert connect_as_nobody(control) == "refused"
    with socket.socket(socket.AF_UNIX) as own:  # the server's own user still can: the channel works
        own.connect(str(control))
