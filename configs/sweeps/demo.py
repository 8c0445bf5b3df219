"""The built-in default main job: the scale study in miniature, offline, on a 2-core CPU. A
miniature, honestly: no pretrained weights exist on such a machine, so it

  1. pre-trains a ladder of three tiny T5s (ladder-1/2/3: 2.1M, 4.3M, 9.1M params, mostly
     the 32k-token embeddings) briefly on shipped unlabelled text, span corruption then
     LM adaptation (a cached stage in .cache/ladder, so reruns skip it);
  2. runs prompt tuning and model tuning on the shipped CommitmentBank (CB) data at each size,
     two seeds each;
  3. and `t5prompt report` then writes the scale table and plot beside the paper's numbers.

  t5prompt sweep --config configs/sweeps/demo.py --workdir runs/demo --report

The numbers say nothing about T5 at scale (a few hundred steps of pre-training on 355k tokens);
the pipeline is the real one. Point `model.checkpoint` at real checkpoints (scale_superglue.py)
for the study itself.
"""

from t5prompt import miniature
from t5prompt.sweep import Stage, Sweep, from_file, product, runs


def get_sweep(workdir):
  del workdir  # the runs go in the sweep's workdir; the ladder in the shared cache
  overrides = product([miniature.backbone(size) for size in miniature.SIZES],
                      [{'method': 'prompt_tuning', 'prompt.length': 20},
                       {'method': 'model_tuning'}],
                      {'task.name': ['superglue_cb']},
                      {'train.seed': [0, 1]},
                      [{'train.steps': 150, 'train.eval_every': 75, 'train.checkpoint_every': 150,
                        'model.dropout_rate': 0.1}])
  return Sweep('demo', [miniature.ladder_stage(),
                        Stage('runs', runs(from_file('configs/smoke.py'), overrides))])
