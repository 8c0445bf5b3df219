"""Pre-training objective ablation (Lester et al. 2021, Figure 3c): span-corruption-only T5
v1.1 vs the LM-adapted checkpoints, prompt tuning at every size.

  t5prompt sweep --config configs/sweeps/ablation_objective.py --workdir runs/ablation_objective
"""

from t5prompt import studies
from t5prompt.sweep import Stage, Sweep, from_file, product, runs


def get_sweep(workdir):
  del workdir  # every run goes in the sweep's workdir
  overrides = product([{**studies.checkpoint(size, objective), 'series': series}
                       for size in studies.SIZES
                       for objective, series in (('span', 'span corruption'),
                                                 ('lm_adapt', 'LM adapted'))],
                      {'task.name': list(studies.SUPERGLUE)},
                      {'train.seed': list(studies.SEEDS)})
  return Sweep('ablation_objective', [Stage('runs', runs(from_file(studies.BASE_CONFIG),
                                                         overrides))])
