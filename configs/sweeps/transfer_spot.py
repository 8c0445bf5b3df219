"""Prompt transfer, stage 2: every target task from scratch and from every other task's source
prompt (and the generic mixture prompt), at every size: the SPoT source x target matrix. The
report then gives the gain per source, the similarity-vs-gain correlation and top-1 retrieval vs
the oracle. Stage 1 (configs/sweeps/transfer_sources.py) fills the library first.

  T5PROMPT_LIBRARY=runs/library t5prompt sweep --config configs/sweeps/transfer_spot.py \\
      --workdir runs/transfer_spot && t5prompt report runs/transfer_spot
"""

import os
from pathlib import Path

from t5prompt.sweep import Sweep

import common  # configs/sweeps/common.py  pylint: disable=import-error

LIBRARY = Path(os.environ.get('T5PROMPT_LIBRARY', 'runs/library'))
TASKS = tuple(f'superglue_{task}' for task in common.SUPERGLUE)
MIXTURE = f'{TASKS[0]}-mix{len(TASKS)}'


def _from_library(entry: str, size: str) -> dict:
  return {'series': 'spot', 'prompt.init': 'file',
          'prompt.init_file': str(LIBRARY / f'{entry}-{size}-prompt_tuning-s0' / 'prompt.npy')}


def get_sweep():
  runs = []
  for size in common.SIZES:
    for target in TASKS:
      inits = [{'series': 'prompt_tuning'}, _from_library(MIXTURE, size)] + [
          _from_library(source, size) for source in TASKS if source != target]
      for init in inits:
        for seed in common.SEEDS:
          runs.append({**common.checkpoint(size), **common.PROMPT_TUNING, 'task.name': target,
                       'train.seed': seed, **init})
  return Sweep(name='transfer_spot', base_config='configs/prompt_tuning.py', runs=runs)
