"""What the paper's sweeps share (configs/sweeps/*.py): the sizes, the SuperGLUE tasks, the
seeds, the checkpoint each size and pre-training objective names, and the multi-task baseline.

Checkpoints are hub ids (downloaded once by huggingface_hub) or local directories: set
T5PROMPT_CHECKPOINTS to a directory holding `t5-<size>-lm-adapt/` etc. to run offline.
"""

import os

SIZES = ('small', 'base', 'large', 'xl', 'xxl')
SUPERGLUE = tuple(f'superglue_{task}' for task in ('boolq', 'cb', 'copa', 'multirc', 'record',
                                                   'rte', 'wic', 'wsc'))
SEEDS = (0, 1, 2)
BASE_CONFIG = 'configs/prompt_tuning.py'  # the paper's prompt-tuning settings


def checkpoint(size: str, objective: str = 'lm_adapt') -> dict:
  """Overrides naming the backbone: LM-adapted (the paper's) or span-corruption-only v1.1."""
  name = f't5-{size}-lm-adapt' if objective == 'lm_adapt' else f't5-v1_1-{size}'
  root = os.environ.get('T5PROMPT_CHECKPOINTS')
  source = os.path.join(root, name) if root else f'google/{name}'
  return {'model.checkpoint': source, 'model.label': size}


def multitask(tasks=SUPERGLUE) -> dict:
  """Overrides of the paper's multi-task model-tuning baseline: one model tuned on the tasks'
  examples-proportional mixture, each input led by T5's task prefix, and scored on every task
  of the mixture at each eval (the best step: their mean). The report gives each task a cell
  of the series `model_tuning_multitask`."""
  prefixed = [f'{task}_prefixed' for task in tasks]
  return {'series': 'model_tuning_multitask', 'method': 'model_tuning', 'task.name': prefixed[0],
          'task.mixture': tuple(prefixed[1:]),
          'task.extra_evals': tuple(f'{task}:validation' for task in prefixed[1:])}
