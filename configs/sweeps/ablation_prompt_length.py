"""Prompt length ablation (Lester et al. 2021, Figure 3a): lengths 1, 5, 20, 100, 150 at every
size; prompt tuning only.

  t5prompt sweep --config configs/sweeps/ablation_prompt_length.py --workdir runs/ablation_length
"""

from t5prompt.sweep import Sweep, product

import common  # pylint: disable=import-error


def get_sweep():
  return Sweep(
      name='ablation_prompt_length', base_config='configs/prompt_tuning.py',
      runs=product([common.checkpoint(size) for size in common.SIZES],
                   [{'prompt.length': n, 'series': f'length {n}'} for n in (1, 5, 20, 100, 150)],
                   {'task.name': [f'superglue_{task}' for task in common.SUPERGLUE]},
                   {'train.seed': list(common.SEEDS)}))
