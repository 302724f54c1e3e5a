#!/usr/bin/env bash
# Set up (first time: a .venv and a plain `pip install .`) and run the quick-start distillation.
source "$(dirname "$0")/_venv.sh"
python -m pip install --quiet ".[all]"
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled
stillhouse run "${1:-examples/quickstart.yaml}"
