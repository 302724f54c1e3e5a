"""Start a student (or chain) service with `bentoml serve`: check everything first, then hand over.

``stillhouse serve`` builds a :class:`~stillhouse.serve.config.ServeConfig` from its flags, checks what would
otherwise fail only inside a worker (the model tag exists, tokens load, TLS files exist), writes the config
into the serving folder and runs ``bentoml serve`` on the installed service module with
``$STILLHOUSE_SERVE_CONFIG`` pointing at it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from stillhouse.data.io import atomic_file
from stillhouse.errors import ServeConfigError
from stillhouse.serve.config import CONFIG_ENV, ServeConfig

STUDENT_SERVICE = "stillhouse.serving.student_service:Student"


def check_config(config: ServeConfig) -> None:
    """Fail before serving on what a worker would only find at start-up."""
    from stillhouse.serve.student import ServedStudent

    if config.auth.enabled:
        config.auth.token_table()
    ServedStudent.check_tag(config.model)


def write_config(config: ServeConfig, folder: str | Path) -> Path:
    path = Path(folder) / "serve.yaml"
    with atomic_file(path) as handle:
        yaml.safe_dump(config.model_dump(mode="json"), handle, sort_keys=False)
    return path


def serve_command(config_path: Path, host: str, port: int, certfile: str | None = None,
                  keyfile: str | None = None, service: str = STUDENT_SERVICE) -> tuple[list[str], dict]:
    """The ``bentoml serve`` command line and its environment."""
    if bool(certfile) != bool(keyfile):
        raise ServeConfigError("TLS needs both a certificate and its key", "pass --ssl-certfile and --ssl-keyfile")
    for path in (certfile, keyfile):
        if path and not Path(path).is_file():
            raise ServeConfigError(f"TLS file {path} does not exist", "check the --ssl-certfile/--ssl-keyfile paths")
    command = [sys.executable, "-m", "bentoml", "serve", service, "--host", host, "--port", str(port)]
    if certfile:
        command += ["--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)]
    return command, {**os.environ, CONFIG_ENV: str(Path(config_path).resolve())}
