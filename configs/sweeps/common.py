"""Pieces the paper's sweeps share: sizes, the two methods with their optimizers, tasks, seeds.

Checkpoints are hub ids (downloaded once by huggingface_hub) or local directories: set
T5PROMPT_CHECKPOINTS to a directory holding `t5-<size>-lm-adapt/` etc. to run offline.
"""

import os

SIZES = ('small', 'base', 'large', 'xl', 'xxl')
SUPERGLUE = ('boolq', 'cb', 'copa', 'multirc', 'record', 'rte', 'wic', 'wsc')
SEEDS = (0, 1, 2)

PROMPT_TUNING = {'method': 'prompt_tuning'}  # the run config's defaults are the paper's
MODEL_TUNING = {'method': 'model_tuning', 'optimizer.learning_rate': 1e-3,
                'optimizer.weight_decay': 0.0, 'optimizer.factored': True}


def checkpoint(size: str, objective: str = 'lm_adapt') -> dict:
  """Overrides naming the backbone: LM-adapted (the paper's) or span-corruption-only v1.1."""
  name = f't5-{size}-lm-adapt' if objective == 'lm_adapt' else f't5-v1_1-{size}'
  root = os.environ.get('T5PROMPT_CHECKPOINTS')
  source = os.path.join(root, name) if root else f'google/{name}'
  return {'model.checkpoint': source, 'model.label': size}
