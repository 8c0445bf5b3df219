"""Pre-training objective ablation (Lester et al. 2021, Figure 3c): span-corruption-only T5
v1.1 vs the LM-adapted checkpoints, prompt tuning at every size.

  t5prompt sweep --config configs/sweeps/ablation_objective.py --workdir runs/ablation_objective
"""

from t5prompt.sweep import Sweep, product

import common  # pylint: disable=import-error


def get_sweep():
  return Sweep(
      name='ablation_objective', base_config='configs/prompt_tuning.py',
      runs=product([{**common.checkpoint(size, objective), 'series': series}
                    for size in common.SIZES
                    for objective, series in (('span', 'span corruption'),
                                              ('lm_adapt', 'LM adapted'))],
                   {'task.name': [f'superglue_{task}' for task in common.SUPERGLUE]},
                   {'train.seed': list(common.SEEDS)}))
