# Sourced by the other scripts: create .venv (Python 3.11) if needed and activate it; `stage` runs one step
# of the set-up and prints what it is doing and how long it took.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

stage() {  # stage "what" command args...
  local what=$1 started=$SECONDS
  shift
  echo "stillhouse: ${what} ..."
  "$@"
  echo "stillhouse: ${what}: done in $((SECONDS - started)) s"
}

if [ ! -x .venv/bin/python ]; then
  stage "creating .venv with $($PYTHON --version)" "$PYTHON" -m venv .venv
  stage "upgrading pip" .venv/bin/python -m pip install --quiet --upgrade pip
fi
# shellcheck disable=SC1091
. .venv/bin/activate
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
stage "installing torch 2.13.0 (CPU build; about 200 MB the first time)" python -m pip install --quiet "torch==2.13.0"
