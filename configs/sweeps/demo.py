"""The built-in default main job: the scale study in miniature, offline, on a 2-core CPU in
about 10 minutes. A miniature, honestly: no pretrained weights exist on such a machine, so it

  1. pre-trains a ladder of three tiny T5s (ladder-1/2/3: 2.1M, 4.3M, 9.1M params, mostly
     the 32k-token embeddings) briefly on shipped unlabelled text, span corruption then
     LM adaptation (cached in .cache/backbones, so reruns skip it);
  2. runs prompt tuning and model tuning on the shipped CommitmentBank (CB) data at each size,
     two seeds each;
  3. and `t5prompt report` then writes the scale table and plot beside the paper's numbers.

  t5prompt sweep --config configs/sweeps/demo.py --workdir runs/demo && t5prompt report runs/demo

The numbers say nothing about T5 at scale (a few hundred steps of pre-training on 355k tokens);
the pipeline is the real one. Point `model.checkpoint` at real checkpoints (scale_superglue.py)
for the study itself.
"""

from pathlib import Path

from t5prompt import pretrain
from t5prompt.sweep import Sweep, product

CACHE = Path(__file__).resolve().parents[2] / '.cache' / 'backbones'
SIZES = ('ladder-1', 'ladder-2', 'ladder-3')
PRETRAIN = dict(span_steps=150, lm_steps=75, batch_size=16, chunk_length=64, target_length=24,
                learning_rate=0.01, seed=0)


def backbone_overrides(size):
  return {'model.checkpoint': pretrain.pretrained_dirs(size, CACHE, **PRETRAIN)['lm_adapted'],
          'model.label': size}


def pretrain_ladder():
  for size in SIZES:
    pretrain.pretrain(size, CACHE, **PRETRAIN)


def get_sweep():
  return Sweep(
      name='demo', base_config='configs/smoke.py', prepare=pretrain_ladder,
      runs=product([backbone_overrides(size) for size in SIZES],
                   [{'method': 'prompt_tuning', 'prompt.length': 20},
                    {'method': 'model_tuning', 'optimizer.learning_rate': 1e-3,
                     'optimizer.weight_decay': 0.0, 'optimizer.factored': True}],
                   {'task.name': ['superglue_cb']},
                   {'train.seed': [0, 1]},
                   [{'train.steps': 150, 'train.eval_every': 75, 'train.checkpoint_every': 150,
                     'model.dropout_rate': 0.1}]))
