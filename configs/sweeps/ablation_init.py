"""Prompt initialisation ablation (Lester et al. 2021, Figure 3b): random uniform, sampled
vocabulary, class label; prompt tuning at every size.

  t5prompt sweep --config configs/sweeps/ablation_init.py --workdir runs/ablation_init
"""

from t5prompt import studies
from t5prompt.sweep import Stage, Sweep, from_file, product, runs


def get_sweep(workdir):
  del workdir  # every run goes in the sweep's workdir
  overrides = product([studies.checkpoint(size) for size in studies.SIZES],
                      [{'prompt.init': init, 'series': init}
                       for init in ('random_uniform', 'sampled_vocab', 'class_label')],
                      {'task.name': list(studies.SUPERGLUE)},
                      {'train.seed': list(studies.SEEDS)})
  return Sweep('ablation_init', [Stage('runs', runs(from_file(studies.BASE_CONFIG), overrides))])
