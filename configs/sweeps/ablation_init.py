"""Prompt initialisation ablation (Lester et al. 2021, Figure 3b): random uniform, sampled
vocabulary, class label; prompt tuning at every size.

  t5prompt sweep --config configs/sweeps/ablation_init.py --workdir runs/ablation_init
"""

from t5prompt.sweep import Sweep, product

import common  # pylint: disable=import-error


def get_sweep():
  return Sweep(
      name='ablation_init', base_config='configs/prompt_tuning.py',
      runs=product([common.checkpoint(size) for size in common.SIZES],
                   [{'prompt.init': init, 'series': init}
                    for init in ('random_uniform', 'sampled_vocab', 'class_label')],
                   {'task.name': [f'superglue_{task}' for task in common.SUPERGLUE]},
                   {'train.seed': list(common.SEEDS)}))
