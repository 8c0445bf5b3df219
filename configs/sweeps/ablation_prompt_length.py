"""Prompt length ablation (Lester et al. 2021, Figure 3a): lengths 1, 5, 20, 100, 150 at every
size; prompt tuning only.

  t5prompt sweep --config configs/sweeps/ablation_prompt_length.py --workdir runs/ablation_length
"""

from t5prompt import studies
from t5prompt.sweep import Stage, Sweep, from_file, product, runs


def get_sweep(workdir):
  del workdir  # every run goes in the sweep's workdir
  overrides = product([studies.checkpoint(size) for size in studies.SIZES],
                      [{'prompt.length': n, 'series': f'length {n}'}
                       for n in (1, 5, 20, 100, 150)],
                      {'task.name': list(studies.SUPERGLUE)},
                      {'train.seed': list(studies.SEEDS)})
  return Sweep('ablation_prompt_length', [Stage('runs', runs(from_file(studies.BASE_CONFIG),
                                                             overrides))])
