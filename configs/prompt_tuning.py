"""Prompt tuning as in the paper (Lester et al. 2021): T5 LM-adapted, prompt length 100,
class-label init, Adafactor LR 0.3, batch 32, 30k steps, early stopping on the dev set.

  t5prompt train --config configs/prompt_tuning.py --workdir runs/pt_rte \
      --config.model.checkpoint=google/t5-base-lm-adapt --config.task.name=superglue_rte
"""

from t5prompt.run_config import default_config


def get_config():
  config = default_config()  # the defaults are the paper's settings
  config.model.size = 't5-lm-adapt-base'
  return config
