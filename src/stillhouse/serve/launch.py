"""Start a student (or chain) service: check everything first, then hand over to the supervisor.

``stillhouse serve`` builds a :class:`~stillhouse.serve.config.ServeConfig` from its flags, checks what would
otherwise fail only inside a worker (the model tag exists, tokens and the audit key load, TLS files exist),
writes the config into the private serving folder and becomes ``python -m stillhouse.serve.supervisor`` (BentoML's
server, hardened) on the installed service module with ``$STILLHOUSE_SERVE_CONFIG`` pointing at it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from stillhouse.data.io import atomic_file
from stillhouse.errors import ServeConfigError
from stillhouse.serve.audit import config_key
from stillhouse.serve.chain import CHAIN_ROUTE, load_chain
from stillhouse.serve.config import CONFIG_ENV, ServeConfig, read_config_file, validate_config
from stillhouse.serve.feedback_db import PostgresFeedback
from stillhouse.serve.files import private_dir
from stillhouse.serve.policy import ROUTE_ENV
from stillhouse.serve.stored import labels_of, task_of

CHAIN_SERVICE = "stillhouse.serving.chain_service:Chain"


def config_from_flags(config_file: str | None, folder: str | Path, model: str | None = None,
                      chain: str | None = None, tokens_file: str | None = None, no_auth: bool = False,
                      no_batching: bool = False, passages: str | None = None) -> ServeConfig:
    """The config file (if any) with the command line's choices on top; logs default into ``folder``."""
    raw = read_config_file(config_file) if config_file else {}
    if model or chain:  # the command line names what to serve: it replaces the file's target
        raw.update(model=model, chain=str(Path(chain).resolve()) if chain else None)
    if passages:
        raw["passages"] = str(Path(passages).resolve())
    if not raw.get("model") and not raw.get("chain"):
        raise ServeConfigError("nothing to serve", "give a student's model tag (`stillhouse models list`), "
                               "--chain FILE, or --config FILE")
    overrides = {
        "auth": {**({"enabled": False} if no_auth else {}),
                 **({"tokens_file": str(Path(tokens_file).resolve())} if tokens_file else {})},
        "batching": {"enabled": False} if no_batching else {},
    }
    defaults = {"audit": {"path": str(Path(folder, "audit.jsonl").resolve())},
                "feedback": {"path": str(Path(folder, "feedback.sqlite").resolve())}}
    for key in ("auth", "batching", "audit", "feedback"):
        section = raw.get(key) or {}  # `auth:` left empty in YAML reads as null
        if isinstance(section, dict):  # anything else is reported by validation, naming the field
            raw[key] = {**defaults.get(key, {}), **section, **overrides.get(key, {})}
    return validate_config(raw, config_file or "(command line)")


def check_config(config: ServeConfig) -> None:
    """Fail before serving on what a worker would only find at start-up."""
    if config.auth.enabled:
        config.auth.token_table()
    config_key(config.audit)  # a bad key file fails here; a missing default key is generated now
    if config.feedback.url:  # an unreachable database or a wrong password fails here, before any worker starts
        PostgresFeedback(config.feedback.url).close()
    if config.chain:
        chain = load_chain(config.chain)
        unchainable = [step.name for step in chain.steps if not task_of(step.model).serving.chainable]
        if unchainable:
            raise ServeConfigError(f"chain step(s) {unchainable} serve a student that answers no labels; chain steps "
                                   "classify and route on labels", "serve such a student on its own: "
                                   "stillhouse serve TAG")
        chain.check_labels({step.name: labels_of(step.model) for step in chain.steps})
    else:
        task_of(config.model).serving.check_config(config)  # e.g. a re-ranker's passage file


def service_for(config: ServeConfig) -> str:
    """The BentoML service (``module:Class``) that serves ``config``: the chain's, or the student's task's."""
    return CHAIN_SERVICE if config.chain else task_of(config.model).serving.service


def route_for(config: ServeConfig) -> str:
    """The route that service answers beside /feedback."""
    return CHAIN_ROUTE if config.chain else task_of(config.model).serving.route


def write_config(config: ServeConfig, folder: str | Path) -> Path:
    path = private_dir(folder) / "serve.yaml"
    with atomic_file(path) as handle:
        yaml.safe_dump(config.model_dump(mode="json"), handle, sort_keys=False)
    return path


def serve_command(config_path: Path, config: ServeConfig, host: str, port: int, certfile: str | None = None,
                  keyfile: str | None = None) -> tuple[list[str], dict]:
    """The supervisor's command line serving ``config`` (written at ``config_path``) and its environment."""
    if bool(certfile) != bool(keyfile):
        raise ServeConfigError("TLS needs both a certificate and its key", "pass --ssl-certfile and --ssl-keyfile")
    for path in (certfile, keyfile):
        if path and not Path(path).is_file():
            raise ServeConfigError(f"TLS file {path} does not exist", "check the --ssl-certfile/--ssl-keyfile paths")
    command = [sys.executable, "-m", "stillhouse.serve.supervisor", service_for(config), "--host", host, "--port",
               str(port)]
    if certfile:
        command += ["--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)]
    # telemetry off from the supervisor's first instruction (the supervisor sets it again for direct use)
    return command, {**os.environ, CONFIG_ENV: str(Path(config_path).resolve()), ROUTE_ENV: route_for(config),
                     "BENTOML_DO_NOT_TRACK": "True"}
