"""Domain shift (Lester et al. 2021, Table 1): train on SQuAD, evaluate on SQuAD dev and the
six MRQA out-of-domain dev sets; prompt tuning vs model tuning, T5 XXL LM-adapted (change
SIZES to study others).

  t5prompt sweep --config configs/sweeps/robustness_mrqa.py --workdir runs/robustness_mrqa
"""

from t5prompt import studies
from t5prompt.sweep import Stage, Sweep, from_file, product, runs

SIZES = ('xxl',)
OUT_OF_DOMAIN = ('textbookqa', 'bioasq', 'race', 'relation_extraction', 'duorc', 'drop')


def get_sweep(workdir):
  del workdir  # every run goes in the sweep's workdir
  overrides = product([studies.checkpoint(size) for size in SIZES],
                      [{'method': 'prompt_tuning', 'prompt.init': 'sampled_vocab'},
                       {'method': 'model_tuning'}],
                      [{'task.name': 'mrqa_squad', 'task.eval_mode': '',
                        'task.extra_evals': tuple(f'mrqa_{name}:validation'
                                                  for name in OUT_OF_DOMAIN)}],
                      {'train.seed': list(studies.SEEDS)})
  return Sweep('robustness_mrqa', [Stage('runs', runs(from_file(studies.BASE_CONFIG),
                                                      overrides))])
