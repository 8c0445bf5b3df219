"""Model tuning, the paper's baseline: every T5 weight trains, no prompt, same loop and data.

  t5prompt train --config configs/model_tuning.py --workdir runs/mt_rte \
      --config.model.checkpoint=google/t5-base-lm-adapt
"""

from t5prompt.run_config import default_config


def get_config():
  config = default_config()
  config.method = 'model_tuning'
  config.model.size = 't5-lm-adapt-base'
  config.optimizer.learning_rate = 1e-3  # T5's fine-tuning LR with Adafactor
  config.optimizer.weight_decay = 0.0
  config.optimizer.factored = True  # T5's Adafactor: row/column statistics for the big weights
  return config
