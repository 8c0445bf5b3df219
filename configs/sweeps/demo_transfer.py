"""The third demo: a small prompt-transfer matrix (SPoT) on the tiny ladder, offline, on a 2-core
CPU in about 17 minutes (after the demo's cached pre-training).

  1. `prepare` trains a source prompt for each shipped task with a full train set (CB, RTE,
     COPA, WSC) at each ladder size and adds it to a prompt library (.cache/transfer_library;
     cached: reruns skip finished sources);
  2. the runs train each target task's prompt (CB, RTE) from scratch and from every other
     task's source prompt of the same size (prompt.init=file, the library entry);
  3. `t5prompt report` then writes the transfer matrix (gain over scratch per source), how
     well prompt similarity predicts the gain, and top-1 retrieval vs scratch vs the oracle.

  t5prompt sweep --config configs/sweeps/demo_transfer.py --workdir runs/demo_transfer
  t5prompt report runs/demo_transfer
  t5prompt retrieve --library .cache/transfer_library --target superglue_cb
"""

from pathlib import Path

import demo  # pylint: disable=import-error  (beside this file; load_sweep puts it on the path)

from t5prompt.sweep import Sweep, config_for, product

ROOT = Path(__file__).resolve().parents[2] / '.cache'
LIBRARY = ROOT / 'transfer_library'
SOURCE_RUNS = ROOT / 'transfer_sources'
SOURCES = ('superglue_cb', 'superglue_rte', 'superglue_copa', 'superglue_wsc')
TARGETS = ('superglue_cb', 'superglue_rte')
PROMPT = {'method': 'prompt_tuning', 'prompt.length': 20, 'prompt.init': 'sampled_vocab',
          'optimizer.name': 'adam', 'optimizer.learning_rate': 0.01}
TRAINING = {'train.steps': 100, 'train.eval_every': 50, 'train.checkpoint_every': 100,
            'train.max_eval_examples': 128, 'model.dropout_rate': 0.1}


def entry_name(task: str, size: str) -> str:
  return f'{task}-{size}'


def prepare():
  from t5prompt.library import PromptLibrary  # pylint: disable=import-outside-toplevel
  from t5prompt.train import train  # pylint: disable=import-outside-toplevel
  demo.pretrain_ladder()
  library = PromptLibrary(LIBRARY)
  for size in demo.SIZES:
    for task in SOURCES:
      run_dir = SOURCE_RUNS / size / task
      train(config_for('configs/smoke.py', {**demo.backbone_overrides(size), **PROMPT,
                                            **TRAINING, 'task.name': task}), run_dir)
      if entry_name(task, size) not in library.names():
        library.add_run(run_dir, entry_name(task, size))


def get_sweep():
  runs = []
  for size in demo.SIZES:
    inits = [{'series': 'prompt_tuning'}] + [
        {'series': 'spot', 'prompt.init': 'file',
         'prompt.init_file': str(LIBRARY / entry_name(source, size) / 'prompt.npy')}
        for source in SOURCES]
    for target in TARGETS:
      for init in inits:
        if init.get('prompt.init_file', '').find(f'/{target}-') >= 0:
          continue  # a task's own prompt is not a transfer
        runs.append({**demo.backbone_overrides(size), **PROMPT, **TRAINING,
                     'task.name': target, **init})
  return Sweep(name='demo_transfer', base_config='configs/smoke.py', prepare=prepare,
               runs=product(runs))
