"""``python -m stillhouse.serve.worker``: BentoML's service worker, run the way a served student needs it.

``stillhouse serve``'s supervisor (``stillhouse.serve.supervisor``) starts every worker, front and model
services alike, through this module instead of ``_bentoml_impl.worker.service``. Before handing over to
BentoML's worker (same arguments), it:

- asks the kernel to kill the worker when the supervisor dies (``PR_SET_PDEATHSIG``): circus starts each worker
  in a session of its own, so killing the supervisor's process group left workers serving with the old
  configuration (revoked tokens still accepted) and holding the port;
- installs Stillhouse's log hygiene before BentoML logs anything (the umask 077 it inherits from the supervisor);
- has uvicorn use Stillhouse's connection layer (``stillhouse.serve.transport``): connection and head limits,
  deadlines (the TLS handshake's included), the TLS policy, and an audit line for every refusal there;
- settles the logging BentoML set up (``stillhouse.serve.logs.settle_server_logging``): Stillhouse's loggers on,
  each record written once.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from stillhouse.serve.logs import install_log_hygiene

SUPERVISOR_PID_ENV = "STILLHOUSE_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1


def die_with_supervisor() -> None:
    """SIGKILL this process when its parent exits; exit now if the parent is already gone (the race at fork)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    expected = os.environ.get(SUPERVISOR_PID_ENV)
    if expected and os.getppid() != int(expected):
        os._exit(1)


def guard_uvicorn() -> None:
    """Make ``uvicorn.Config`` and ``uvicorn.Server`` — which BentoML's worker builds after loading the service —
    use Stillhouse's connection layer (``stillhouse.serve.transport``) with this worker's audit log."""
    # Imported here, not at the top: main() asks for the parent-death signal and installs the log hygiene first,
    # and a front worker must not load more than its service needs.
    import asyncio

    import uvicorn

    from stillhouse.serve.audit import AuditLog
    from stillhouse.serve.config import load_serve_config
    from stillhouse.serve.logs import settle_server_logging
    from stillhouse.serve.policy import ROUTE_ENV, service_routes
    from stillhouse.serve.refusals import ConnectionGuard
    from stillhouse.serve.transport import tls_handshake_deadline, uvicorn_options

    config = load_serve_config()  # the service's own config, read where BentoML reads it
    limits = config.connections

    class GuardedConfig(uvicorn.Config):
        def __init__(self, *args, **kwargs):
            settle_server_logging()  # BentoML has set up its logging by now
            guard = ConnectionGuard(limits, AuditLog.from_config(config.audit), config.audit.fsync,
                                    service_routes({os.environ.get(ROUTE_ENV, "")} - {""}, config))
            super().__init__(*args, **{**kwargs, **uvicorn_options(limits, bool(kwargs.get("ssl_certfile")), guard)})

    class GuardedServer(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            if self.config.ssl is None:
                return await super().startup(sockets)
            with tls_handshake_deadline(asyncio.get_running_loop(), limits.head_timeout_s):
                await super().startup(sockets)

    uvicorn.Config, uvicorn.Server = GuardedConfig, GuardedServer


def main() -> None:
    die_with_supervisor()
    install_log_hygiene()
    guard_uvicorn()
    from _bentoml_impl.worker.service import main as bentoml_worker

    bentoml_worker()  # click reads sys.argv: the arguments BentoML's supervisor gave this worker


if __name__ == "__main__":
    main()
