"""Paraphrase domain transfer (Lester et al. 2021, Table 2): train on QQP, evaluate on MRPC,
and the reverse, zero-shot, in one shared format; prompt tuning vs model tuning, T5 XXL.

  t5prompt sweep --config configs/sweeps/robustness_paraphrase.py --workdir runs/robustness_paraphrase
"""

from t5prompt.sweep import Sweep, product

import common  # pylint: disable=import-error

SIZES = ('xxl',)


def get_sweep():
  return Sweep(
      name='robustness_paraphrase', base_config='configs/prompt_tuning.py',
      runs=product([common.checkpoint(size) for size in SIZES],
                   [common.PROMPT_TUNING, common.MODEL_TUNING],
                   [{'task.name': 'paraphrase_qqp',
                     'task.extra_evals': ('paraphrase_mrpc:validation',)},
                    {'task.name': 'paraphrase_mrpc',
                     'task.extra_evals': ('paraphrase_qqp:validation',)}],
                   {'train.seed': list(common.SEEDS)}))
