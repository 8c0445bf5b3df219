"""The paper's headline (Lester et al. 2021, Figure 1): SuperGLUE dev score vs T5 size for
prompt tuning, model tuning and multi-task model tuning; the gap should close as the model grows.

  t5prompt sweep --config configs/sweeps/scale_superglue.py --workdir runs/scale_superglue
  t5prompt report runs/scale_superglue

5 sizes x 2 methods x 8 tasks x 3 seeds = 240 single-task runs at the paper's settings (30k
steps, batch 32, prompt length 100, class-label init; model tuning with T5's fine-tuning
optimizer, from its method record), and 5 sizes x 3 seeds = 15 multi-task model-tuning runs on
the SuperGLUE mixture with T5's task prefixes, each scored on all eight tasks.
"""

from t5prompt import studies
from t5prompt.sweep import Stage, Sweep, from_file, product, runs


def get_sweep(workdir):
  del workdir  # every run goes in the sweep's workdir
  overrides = product([studies.checkpoint(size) for size in studies.SIZES],
                      {'method': ['prompt_tuning', 'model_tuning']},
                      {'task.name': list(studies.SUPERGLUE)},
                      {'train.seed': list(studies.SEEDS)})
  overrides += product([studies.checkpoint(size) for size in studies.SIZES],
                       [studies.multitask()], {'train.seed': list(studies.SEEDS)})
  return Sweep('scale_superglue', [Stage('runs', runs(from_file(studies.BASE_CONFIG),
                                                      overrides))])
