"""Pre-training of one size of the miniature ladder, the backbones of the offline demos:
T5's span corruption, then LM adaptation (prefix LM), on the shipped text (t5prompt.data.text),
with a 4,000-piece SentencePiece vocabulary trained on that text.

  t5prompt pretrain --config configs/pretrain/ladder.py:ladder-2 --workdir .cache/ladder/ladder-2

The demos run it as their first, cached stage for every size (t5prompt/miniature.py). The
steps per size are what the whole ladder affords in about two hours on a 2-core CPU; the
README's table gives each size's measured minutes, losses and encoder reliance.
"""

from t5prompt import pretrain

VOCABULARY = 'miniature-4000'
# size -> (span-corruption steps, LM-adaptation steps)
STEPS = {'ladder-0': (1000, 1000), 'ladder-1': (1000, 1000), 'ladder-2': (1000, 1000),
         'ladder-3': (1000, 1000)}


def get_config(size: str = 'ladder-1'):
  config = pretrain.default_config(size, VOCABULARY)
  for stage, steps in zip(pretrain.STAGES, STEPS[size]):
    config[stage].train.steps = steps
  return config
