#!/usr/bin/env bash
# One machine, all its accelerators (or N virtual CPU devices for a dry run):
#   launch/local.sh configs/prompt_tuning.py runs/pt_rte --config.partitioning.mesh='(-1, 1)'
#   CPU_DEVICES=8 launch/local.sh configs/smoke.py runs/smoke_8dev --config.train.batch_size=16
# Everything after the workdir is passed to `t5prompt train` (config overrides).
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG WORKDIR [--config.key=value ...]}
workdir=${2:?usage: launch/local.sh CONFIG WORKDIR [--config.key=value ...]}
shift 2
cd "$(dirname "$0")/.."
if [[ -n "${CPU_DEVICES:-}" ]]; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${CPU_DEVICES}"
fi
exec .venv/bin/t5prompt train --config "$config" --workdir "$workdir" "$@"
