#!/usr/bin/env bash
# Creates .venv with t5prompt and its test dependencies, pinned by requirements/constraints.txt.
# PyTorch is the CPU wheel torch==2.13.0 (any other version pulls GBs of CUDA on these machines).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -c requirements/constraints.txt -e '.[test]'
echo "t5prompt installed in .venv ($(.venv/bin/python -c 'import jax; print("jax", jax.__version__)'))"
