"""Domain shift (Lester et al. 2021, Table 1): train on SQuAD, evaluate on SQuAD dev and the
six MRQA out-of-domain dev sets; prompt tuning vs model tuning, T5 XXL LM-adapted (change
SIZES to study others).

  t5prompt sweep --config configs/sweeps/robustness_mrqa.py --workdir runs/robustness_mrqa
"""

from t5prompt.sweep import Sweep, product

import common  # pylint: disable=import-error

SIZES = ('xxl',)
OUT_OF_DOMAIN = ('textbookqa', 'bioasq', 'race', 'relation_extraction', 'duorc', 'drop')


def get_sweep():
  return Sweep(
      name='robustness_mrqa', base_config='configs/prompt_tuning.py',
      runs=product([common.checkpoint(size) for size in SIZES],
                   [{**common.PROMPT_TUNING, 'prompt.init': 'sampled_vocab'},
                    common.MODEL_TUNING],
                   [{'task.name': 'mrqa_squad', 'task.eval_mode': '',
                     'task.extra_evals': tuple(f'mrqa_{name}:validation'
                                               for name in OUT_OF_DOMAIN)}],
                   {'train.seed': list(common.SEEDS)}))
