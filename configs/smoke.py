"""A prompt trained on a tiny random T5 with the shipped CommitmentBank (CB) data: the whole
loop (data, train, eval, checkpoints, prompt export) in under 2 minutes on a CPU.

  t5prompt train --config configs/smoke.py --workdir runs/smoke

A random backbone knows no language, so expect the prompt to learn the label prior (dev
accuracy rises from the untrained prompt's), not the task.
"""

from t5prompt.run_config import default_config


def get_config():
  config = default_config()
  config.model.size = 'tiny-v1_0'
  config.model.dropout_rate = 0.0
  config.prompt.length = 8
  config.task.name = 'superglue_cb'
  config.task.input_length = 128
  config.train.steps = 300
  config.train.batch_size = 16
  config.train.eval_every = 100
  config.train.eval_at_start = True
  config.train.checkpoint_every = 100
  config.train.log_every = 20
  return config
