"""``python -m stillhouse.serve.supervisor SERVICE``: BentoML's ``bentoml serve``, with the process around it
hardened. ``stillhouse serve`` checks the config and then becomes this process (``exec``), so its pid is the
server's.

What differs from ``bentoml serve`` (each measured against BentoML 1.4 here):

- **Control channel.** The supervisor (circus) takes commands — including "start this program" — on a ZeroMQ
  endpoint that BentoML binds to two unauthenticated TCP ports on 127.0.0.1, reachable by every process in the
  pod or on the host. Here both endpoints are Unix sockets in a 0700 folder of the server's own
  (``ipc://``), so no TCP port but the service's is open.
- **Workers** run ``stillhouse.serve.worker`` (connection limits, TLS policy, they die with the supervisor).
- **Private files**: umask 077, so what BentoML and SQLite create on their own is private too.
- **Metrics folder** of its own (in its temporary folder, removed at exit): BentoML clears
  ``$BENTOML_HOME/prometheus_multiproc_dir`` at every start, so servers sharing a BentoML home wiped each
  other's metrics.
- **No leftovers**: everything the server puts in a temporary folder (control sockets, BentoML's socket
  folder, the metrics, its workers' ``$TMPDIR``) is in one folder of its own, owned
  (``stillhouse.serve.files.owned_folder``): a start removes those of servers that died without cleaning up
  (SIGKILL, OOM), never those of live ones. It is on the pod's or host's own disk, never the serving folder,
  which replicas may share on a network volume where a lock need not hold across hosts.
- **Telemetry off** (``BENTOML_DO_NOT_TRACK``), and the start line names ``https://`` when serving TLS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from stillhouse.serve.files import PRIVATE_UMASK, owned_folder, remove_stale_folders
from stillhouse.serve.logs import install_log_hygiene, settle_server_logging
from stillhouse.serve.worker import SUPERVISOR_PID_ENV

WORKER_MODULE = "stillhouse.serve.worker"
TEMP_PREFIX = "stillhouse-serve-"  # in the system's temporary folder: a Unix socket's path must stay short


def private_arbiter(control_dir: Path):
    """A replacement for BentoML's ``create_standalone_arbiter`` with the control endpoints on Unix sockets."""
    from bentoml._internal.utils.circus import Arbiter, ThreadedArbiter  # circus's, with an exit stack

    def create(watchers, *, threaded: bool = False, **kwargs):
        arbiter = (ThreadedArbiter if threaded else Arbiter)(
            watchers, endpoint=f"ipc://{control_dir}/control.sock", pubsub_endpoint=f"ipc://{control_dir}/pubsub.sock",
            check_delay=kwargs.pop("check_delay", 10), **kwargs)  # BentoML's value, for the same reason
        arbiter.exit_stack.callback(shutil.rmtree, control_dir, ignore_errors=True)
        return arbiter

    return create


def run_server(service: str, host: str, port: int, certfile: str | None = None,
               keyfile: str | None = None) -> None:
    """Serve ``service`` (an import string or a Bento tag) until stopped; blocks."""
    import _bentoml_impl.server.serving as bentoml_serving
    import bentoml._internal.utils.circus as bentoml_circus
    from _bentoml_impl.loader import load
    from _bentoml_impl.server import serve_http
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.context import server_context
    from bentoml._internal.log import configure_server_logging

    os.umask(PRIVATE_UMASK)
    os.environ.update({"BENTOML_DO_NOT_TRACK": "True", SUPERVISOR_PID_ENV: str(os.getpid())})
    install_log_hygiene()
    server_context.service_type = "supervisor"  # the tag of its log lines
    configure_server_logging()
    settle_server_logging()
    temporary = tempfile.gettempdir()
    remove_stale_folders(temporary, TEMP_PREFIX)
    control_dir, control_lock = owned_folder(temporary, TEMP_PREFIX)  # 0700
    # Everything BentoML and the workers put in a temporary folder goes into this one (its Unix sockets, its
    # clients' folders), so a SIGKILLed server leaves nothing elsewhere that the next start cannot remove.
    tempfile.tempdir = os.environ["TMPDIR"] = str(control_dir)
    try:
        bentoml_circus.create_standalone_arbiter = private_arbiter(control_dir)
        bentoml_serving._SERVICE_WORKER_SCRIPT = WORKER_MODULE
        svc = load(service, working_dir=".")
        svc.inject_config()  # what `bentoml serve` does before serve_http; it reloads BentoML's config
        # a folder of its own inside: BentoML empties the metrics folder it is given at start
        BentoMLContainer.prometheus_multiproc_dir.set(str(control_dir / "metrics"))
        if certfile:
            BentoMLContainer.ssl.enabled.set(True)
        serve_http(service, working_dir=".", host=host, port=port, ssl_certfile=certfile, ssl_keyfile=keyfile)
    finally:
        shutil.rmtree(control_dir, ignore_errors=True)
        os.close(control_lock)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stillhouse.serve.supervisor", description=__doc__.split("\n")[0])
    parser.add_argument("service", help="import string of the service, or a Bento tag")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--ssl-certfile")
    parser.add_argument("--ssl-keyfile")
    args = parser.parse_args(argv)
    run_server(args.service, args.host, args.port, args.ssl_certfile, args.ssl_keyfile)


if __name__ == "__main__":
    main()
