"""The second demo: the prompt-method family on the miniature ladder (configs/sweeps/demo.py's).
On CB at every ladder size, seed 0: prompt tuning, P-tuning (LSTM encoder), prefix tuning (MLP
reparameterisation, folded for evaluation), deep prompt tuning (P-tuning v2) and model tuning,
150 steps each; and the prompt-design baseline (hand-written template, zero-shot and 4-shot
from CB's train split), which trains nothing; and AutoPrompt (5 trigger tokens searched for 200
iterations, 3 seeds, a stage of its own: `--stage autoprompt --shard 0/1` runs it alone). The report then
shows one line per method.

  t5prompt sweep --config configs/sweeps/demo_methods.py --workdir runs/demo_methods
  t5prompt report runs/demo_methods

Its settings and its last measured time (30 min on 2 cores with tests sharing the CPU) date
from the earlier 32k-vocabulary ladder; it has not been rerun on the current one.
"""

from t5prompt import miniature
from t5prompt.sweep import Stage, Sweep, from_file, product, runs

PROMPT_LENGTH = 20
TRAINED = [
    {'method': 'prompt_tuning', 'prompt.length': PROMPT_LENGTH},
    {'method': 'p_tuning', 'prompt.length': PROMPT_LENGTH, 'prompt.encoder': 'lstm',
     'prompt.reparam_hidden': 64, 'optimizer.name': 'adam', 'optimizer.learning_rate': 1e-3},
    {'method': 'prefix_tuning', 'prompt.length': PROMPT_LENGTH, 'prompt.reparam_hidden': 64,
     'optimizer.name': 'adam', 'optimizer.learning_rate': 1e-3},
    {'method': 'deep_prompt_tuning', 'prompt.length': PROMPT_LENGTH,
     'optimizer.name': 'adam', 'optimizer.learning_rate': 1e-2},
    {'method': 'model_tuning'},
]
DESIGN = [
    {'method': 'prompt_design', 'prompt.shots': 0, 'series': 'prompt_design_0shot'},
    {'method': 'prompt_design', 'prompt.shots': 4, 'series': 'prompt_design_4shot',
     'task.input_length': 512},
]
# Triggers after the input (T5 answers in its decoder, where AutoPrompt's [MASK] was).
SEARCHED = {'method': 'autoprompt', 'prompt.length': 5, 'prompt.template': '[X] [T]',
            'prompt.candidates': 10, 'train.steps': 200, 'train.eval_every': 50,
            'train.checkpoint_every': 50, 'train.log_every': 10}
TRAINING = {'train.steps': 150, 'train.eval_every': 75, 'train.checkpoint_every': 150,
            'model.dropout_rate': 0.1}


def get_sweep(workdir):
  del workdir  # the runs go in the sweep's workdir; the ladder in the shared cache
  backbones = [miniature.backbone(size) for size in miniature.SIZES]
  task, seed = {'task.name': ['superglue_cb']}, {'train.seed': [0]}
  overrides = (product(backbones, TRAINED, task, seed, [TRAINING])
               + product(backbones, DESIGN, task, seed))
  searched = product(backbones, [SEARCHED], task, {'train.seed': [0, 1, 2]})
  base = from_file('configs/smoke.py')
  return Sweep('demo_methods', [miniature.ladder_stage(), Stage('runs', runs(base, overrides)),
                                Stage('autoprompt', runs(base, searched))])
