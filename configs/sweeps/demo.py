"""The built-in default main job: the scale study in miniature, offline, on a 2-core CPU.

  t5prompt sweep --config configs/sweeps/demo.py --workdir runs/demo --parallel 2 --report

No pretrained weights exist on such a machine, so it

  1. pre-trains the miniature ladder (ladder-0 ... ladder-3: 0.11M to 1.6M non-embedding
     parameters, a 4,000-piece vocabulary) on the shipped text: span corruption, then LM
     adaptation (configs/pretrain/ladder.py; a cached stage in .cache/ladder that reruns skip);
  2. runs prompt tuning and model tuning at each size on CommitmentBank (CB) and MRPC, three
     seeds each, with the prompt settings the README's search chose (Adam at 0.1, 50 tokens);
  3. and `--report` writes the scale table and plot beside the paper's numbers.

The numbers say nothing about T5 at scale (tens of minutes of pre-training on 4M tokens); the
pipeline is the real one. Point `model.checkpoint` at real checkpoints (scale_superglue.py) for
the study itself.
"""

from t5prompt import miniature
from t5prompt.sweep import Stage, Sweep, product, runs

TASKS = {'superglue_cb': 192, 'glue_mrpc': 128}  # task -> input length (tokens)
METHODS = [
    # The measured prompt search (README): Adafactor at 0.3-1.0 and Adam at 0.01-0.03 left
    # every task at the majority class on this ladder; Adam at 0.1 with 50 tokens learned.
    {'method': 'prompt_tuning', 'prompt.length': 50, 'optimizer.name': 'adam',
     'optimizer.learning_rate': 0.1, 'train.steps': 500, 'train.eval_every': 250},
    # Model tuning's own defaults (Adafactor, 1e-3); its score stops rising by ~300 steps.
    {'method': 'model_tuning', 'train.steps': 300, 'train.eval_every': 150},
]
SEEDS = (0, 1, 2)


def get_sweep(workdir):
  del workdir  # the runs go in the sweep's workdir; the ladder in the shared cache
  overrides = product([miniature.backbone(size) for size in miniature.SIZES],
                      [{'task.name': task, 'task.input_length': length}
                       for task, length in TASKS.items()],
                      METHODS,
                      {'train.seed': list(SEEDS)})
  return Sweep('demo', [miniature.ladder_stage(),
                        Stage('runs', runs(miniature.run_base, overrides))])
