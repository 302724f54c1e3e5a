# Sourced by the other scripts: create .venv (Python 3.11) if needed and activate it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "stillhouse: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
# shellcheck disable=SC1091
. .venv/bin/activate
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
python -m pip install --quiet "torch==2.13.0"
