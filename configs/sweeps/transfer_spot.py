"""Prompt transfer (SPoT, Vu et al. 2022) in two stages.

  1. sources: prompt tuning on every SuperGLUE task at every size (one seed), plus one prompt
     on the mixture of all eight (generic SPoT), in <workdir>/sources;
  2. targets: every target task from scratch, from the mixture prompt and from every other
     task's source prompt, 3 seeds: the source x target matrix, in <workdir>/targets.

  t5prompt sweep --config configs/sweeps/transfer_spot.py --workdir runs/transfer_spot
  t5prompt report runs/transfer_spot            # gains, similarity vs gain, top-1 vs oracle
  t5prompt library add runs/transfer_spot/sources/* --library runs/library   # for retrieval
"""

from t5prompt import run_dir, studies
from t5prompt.sweep import Stage, Sweep, from_file, product, runs

GENERIC = {'task.mixture': studies.SUPERGLUE[1:], 'series': 'generic_spot'}


def _source(size: str, task: str, mixture: dict | None = None) -> dict:
  return {**studies.checkpoint(size), 'task.name': task, **(mixture or {}), 'train.seed': 0}


def get_sweep(workdir):
  base = from_file(studies.BASE_CONFIG)
  sources = [_source(size, task) for size in studies.SIZES for task in studies.SUPERGLUE]
  sources += [_source(size, studies.SUPERGLUE[0], GENERIC) for size in studies.SIZES]
  source_runs = runs(base, sources)
  source_dir = {(o['model.label'], o['task.name'], 'task.mixture' in o): workdir / 'sources' / name
                for o, (name, _) in zip(sources, source_runs)}

  def init_from(size, task, generic=False):
    prompt = source_dir[(size, task, generic)] / run_dir.PROMPT
    return {'series': 'spot', 'prompt.init': 'file', 'prompt.init_file': str(prompt)}

  targets = []
  for size in studies.SIZES:
    for target in studies.SUPERGLUE:
      inits = [{'series': 'prompt_tuning'}, init_from(size, studies.SUPERGLUE[0], True)] + [
          init_from(size, source) for source in studies.SUPERGLUE if source != target]
      targets += product([{**studies.checkpoint(size), 'task.name': target}], inits,
                         {'train.seed': list(studies.SEEDS)})
  return Sweep('transfer_spot', [Stage('sources', source_runs, root=workdir / 'sources'),
                                 Stage('targets', runs(base, targets), root=workdir / 'targets')])
