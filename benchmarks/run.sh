#!/usr/bin/env bash
# Every benchmark, each printing its table and writing JSON to benchmarks/results/ (~20 min on
# 2 CPU cores). Ratios are measured side by side within each script.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python benchmarks/bench_backbone.py "$@"
.venv/bin/python benchmarks/bench_training.py
.venv/bin/python benchmarks/bench_methods.py
