"""The miniature: a ladder of tiny T5s pre-trained on shipped text, the backbones of the offline
demos (configs/sweeps/demo*.py). Their pre-training is a cached sweep stage: every demo shares
it, and a rerun finds it finished.
"""

import os
from pathlib import Path

from t5prompt import pretrain
from t5prompt.sweep import Stage

# Shared by every demo and kept between sweeps (delete it to pre-train again).
CACHE = Path(os.environ.get('T5PROMPT_CACHE', Path(__file__).resolve().parents[1] / '.cache'))
LADDER = CACHE / 'ladder'
SIZES = ('ladder-1', 'ladder-2', 'ladder-3')
PRETRAIN = dict(span_steps=150, lm_steps=75, batch_size=16, chunk_length=64, target_length=24,
                learning_rate=0.01, seed=0)


def ladder_stage() -> Stage:
  """Pre-training of every ladder size (span corruption, then LM adaptation)."""
  configs = []
  for size in SIZES:
    config = pretrain.default_config()
    config.update(size=size, **PRETRAIN)
    configs.append((size, config))
  return Stage('ladder', configs, root=LADDER, pretrain=True)


def backbone(size: str) -> dict:
  """Overrides naming a ladder size's LM-adapted backbone."""
  return {'model.checkpoint': str(LADDER / size / 'lm_adapted'), 'model.label': size}
