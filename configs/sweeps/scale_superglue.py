"""The paper's headline (Lester et al. 2021, Figure 1): SuperGLUE dev score vs T5 size for
prompt tuning and model tuning; the gap should close as the model grows.

  t5prompt sweep --config configs/sweeps/scale_superglue.py --workdir runs/scale_superglue
  t5prompt report runs/scale_superglue

5 sizes x 2 methods x 8 tasks x 3 seeds = 240 runs at the paper's settings (30k steps, batch 32,
prompt length 100, class-label init). Multi-task model tuning is not in this sweep yet: the
loop can train one model on the mixture (`task.mixture`), but the report scores each run on its
own task only, so the one mixture model's eight scores would need their own rows.
"""

from t5prompt.sweep import Sweep, product

import common  # configs/sweeps/common.py  pylint: disable=import-error


def get_sweep():
  return Sweep(
      name='scale_superglue', base_config='configs/prompt_tuning.py',
      runs=product([common.checkpoint(size) for size in common.SIZES],
                   [common.PROMPT_TUNING, common.MODEL_TUNING],
                   {'task.name': [f'superglue_{task}' for task in common.SUPERGLUE]},
                   {'train.seed': list(common.SEEDS)}))
