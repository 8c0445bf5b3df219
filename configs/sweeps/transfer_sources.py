"""Prompt transfer, stage 1 (SPoT, Vu et al. 2022): source prompts for the prompt library.

Prompt tuning on every SuperGLUE task at every size (one seed), plus one prompt on the mixture of
all eight (generic SPoT). Then put them in the library, where stage 2 finds them by name:

  t5prompt sweep --config configs/sweeps/transfer_sources.py --workdir runs/transfer_sources
  t5prompt library add runs/transfer_sources/* --library runs/library
  t5prompt sweep --config configs/sweeps/transfer_spot.py --workdir runs/transfer_spot

(library entries are named <task>[-mix8]-<size>-prompt_tuning-s0).
"""

from t5prompt.sweep import Sweep, product

import common  # configs/sweeps/common.py  pylint: disable=import-error

TASKS = tuple(f'superglue_{task}' for task in common.SUPERGLUE)


def get_sweep():
  single = [{'task.name': task} for task in TASKS]
  mixture = [{'task.name': TASKS[0], 'task.mixture': TASKS[1:], 'series': 'generic_spot'}]
  return Sweep(
      name='transfer_sources', base_config='configs/prompt_tuning.py',
      runs=product([common.checkpoint(size) for size in common.SIZES], [common.PROMPT_TUNING],
                   single + mixture, {'train.seed': [0]}))
