"""The third demo: a small prompt-transfer matrix (SPoT) on the miniature ladder, offline. Its
settings and its last measured time (17 minutes on 2 cores) date from the earlier
32k-vocabulary ladder; it has not been rerun on the current one.

  1. sources: a source prompt for each shipped task with a full train set (CB, RTE, COPA,
     WSC) at each ladder size (<workdir>/sources);
  2. targets: each target task's prompt (CB, RTE) from scratch and from every other task's
     source prompt of the same size (prompt.init=file; <workdir>/targets);
  3. `t5prompt report` then writes the transfer matrix (gain over scratch per source), how
     well prompt similarity predicts the gain, and top-1 retrieval vs scratch vs the oracle.

  t5prompt sweep --config configs/sweeps/demo_transfer.py --workdir runs/demo_transfer --report
  t5prompt library add runs/demo_transfer/sources/* --library runs/library
  t5prompt retrieve --library runs/library --target superglue_cb
"""

from t5prompt import miniature, run_dir
from t5prompt.sweep import Stage, Sweep, from_file, runs

SOURCES = ('superglue_cb', 'superglue_rte', 'superglue_copa', 'superglue_wsc')
TARGETS = ('superglue_cb', 'superglue_rte')
PROMPT = {'method': 'prompt_tuning', 'prompt.length': 20, 'prompt.init': 'sampled_vocab',
          'optimizer.name': 'adam', 'optimizer.learning_rate': 0.01}
TRAINING = {'train.steps': 100, 'train.eval_every': 50, 'train.checkpoint_every': 100,
            'train.max_eval_examples': 128, 'model.dropout_rate': 0.1}


def get_sweep(workdir):
  base = from_file('configs/smoke.py')
  sources = [{**miniature.backbone(size), **PROMPT, **TRAINING, 'task.name': task}
             for size in miniature.SIZES for task in SOURCES]
  source_runs = runs(base, sources)
  prompt_of = {(o['model.label'], o['task.name']): workdir / 'sources' / name / run_dir.PROMPT
               for o, (name, _) in zip(sources, source_runs)}
  targets = []
  for size in miniature.SIZES:
    for target in TARGETS:
      inits = [{'series': 'prompt_tuning'}] + [
          {'series': 'spot', 'prompt.init': 'file', 'prompt.init_file': str(prompt_of[(size,
                                                                                        source)])}
          for source in SOURCES if source != target]  # a task's own prompt is no transfer
      targets += [{**miniature.backbone(size), **PROMPT, **TRAINING, 'task.name': target, **init}
                  for init in inits]
  return Sweep('demo_transfer', [miniature.ladder_stage(),
                                 Stage('sources', source_runs, root=workdir / 'sources'),
                                 Stage('targets', runs(base, targets), root=workdir / 'targets')])
