"""Paraphrase domain transfer (Lester et al. 2021, Table 2): train on QQP, evaluate on MRPC,
and the reverse, zero-shot, in one shared format; prompt tuning vs model tuning, T5 XXL.

  t5prompt sweep --config configs/sweeps/robustness_paraphrase.py --workdir runs/robustness_paraphrase
"""

from t5prompt import studies
from t5prompt.sweep import Stage, Sweep, from_file, product, runs

SIZES = ('xxl',)


def get_sweep(workdir):
  del workdir  # every run goes in the sweep's workdir
  overrides = product([studies.checkpoint(size) for size in SIZES],
                      {'method': ['prompt_tuning', 'model_tuning']},
                      [{'task.name': 'paraphrase_qqp',
                        'task.extra_evals': ('paraphrase_mrpc:validation',)},
                       {'task.name': 'paraphrase_mrpc',
                        'task.extra_evals': ('paraphrase_qqp:validation',)}],
                      {'train.seed': list(studies.SEEDS)})
  return Sweep('robustness_paraphrase', [Stage('runs', runs(from_file(studies.BASE_CONFIG),
                                                            overrides))])
