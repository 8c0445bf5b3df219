"""The miniature: a ladder of tiny T5s pre-trained on shipped text, the backbones of the offline
demos (configs/sweeps/demo*.py). Their pre-training (configs/pretrain/ladder.py) is a cached
sweep stage every demo shares: a rerun finds it finished.
"""

from pathlib import Path

from t5prompt.data.sources import cache_dir, cache_reference
from t5prompt.run_config import config_from_file, default_config
from t5prompt.sweep import Stage

SIZES = ('ladder-0', 'ladder-1', 'ladder-2', 'ladder-3')
PRETRAIN_CONFIG = Path(__file__).resolve().parents[1] / 'configs' / 'pretrain' / 'ladder.py'


def ladder() -> Path:
  """Where the ladder's backbones are kept between sweeps (delete it to pre-train again)."""
  return cache_dir() / 'ladder'


def ladder_stage() -> Stage:
  """Pre-training of every ladder size (span corruption, then LM adaptation)."""
  return Stage('ladder', [(size, config_from_file(f'{PRETRAIN_CONFIG}:{size}'))
                          for size in SIZES], root=ladder(), pretrain=True)


def backbone(size: str) -> dict:
  """Overrides naming a ladder size's LM-adapted backbone."""
  return {'model.checkpoint': cache_reference(ladder() / size / 'lm_adapted'),
          'model.label': size}


def run_base():
  """The run settings every miniature study starts from (no dropout, batch 16, an eval before
  training, frequent logs); each study sets its method, task and steps."""
  config = default_config()
  config.model.dropout_rate = 0.0
  config.train.batch_size = 16
  config.train.eval_at_start = True
  config.train.checkpoint_every = 250
  config.train.log_every = 25
  config.train.eval_batch_size = 64
  return config
