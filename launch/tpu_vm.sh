#!/usr/bin/env bash
# A multi-host Cloud TPU VM slice (e.g. v3-32: 4 hosts x 8 cores): install on every host, then
# start the same command on all hosts; jax.distributed finds its peers from the TPU metadata.
#   launch/tpu_vm.sh my-tpu us-central1-a configs/prompt_tuning.py gs://bucket/runs/pt_xxl_rte \
#       --config.model.checkpoint=/data/t5-xxl-lm-adapt --config.partitioning.mesh='(-1, 4)'
# The workdir must be storage all hosts share (a GCS bucket or an NFS mount).
set -euo pipefail
tpu=${1:?usage: launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]}
zone=${2:?zone}
config=${3:?config}
workdir=${4:?workdir}
shift 4
repo=${T5PROMPT_REPO:-https://github.com/your-org/t5prompt.git}
overrides=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  set -e
  [ -d t5prompt ] || git clone $repo t5prompt
  cd t5prompt && git pull --ff-only
  [ -x .venv/bin/t5prompt ] || (bash scripts/setup.sh && .venv/bin/pip install -q -c requirements/constraints.txt -e '.[tpu]')
  .venv/bin/t5prompt train --distributed --config $config --workdir $workdir $overrides
"
