"""What every run (trained or not) reads from its config besides the backbone: the task spec
(through the method's view of the task), the label names, the train data and the eval sets."""

import dataclasses
from pathlib import Path

from t5prompt.backbone import checkpoint_vocabulary
from t5prompt.data import pipeline, text
from t5prompt.data.sources import CACHE_PREFIX, DataNotFoundError, cache_dir, data_dir, local_path
from t5prompt.data.tasks import get_task_spec
from t5prompt.data.vocab import default_spm_path
from t5prompt.models.convert import CheckpointError, is_local
from t5prompt.prompts import methods
from t5prompt.run_config import default_config
from t5prompt.run_dir import RunDir, manifest


def model_label(config) -> str:
  """The backbone's name in reports: model.label, else the size, else the checkpoint's name."""
  if config.model.label:
    return config.model.label
  if config.model.checkpoint:
    return Path(config.model.checkpoint.rstrip('/')).name
  return config.model.size


def task_spec(config, task_name: str = ''):
  """The TaskSpec of the config's task (or `task_name`) as the method evaluates it (prompt
  design: through its hand-written template), with the config's eval_mode (if set) and
  rank scoring."""
  name = task_name or config.task.name
  spec = get_task_spec(methods.get(config.method).eval_task(name))
  if config.task.eval_mode and spec.label_names:
    spec = dataclasses.replace(spec, eval_mode=config.task.eval_mode)
  return dataclasses.replace(spec, rank_scoring=config.task.rank_scoring)


def target_length(config, spec) -> int:
  return config.task.target_length or spec.target_length


# Model-tuning runs saved before manifests recorded the layer layout held their layers stacked.
_LEGACY_SCAN_LAYERS = True


def in_saved_layout(run_dir: RunDir, config, method: methods.Method):
  """`config`, with `model.scan_layers` None (by backend) replaced by the layer layout of the
  run's checkpoints where they hold the layers (model tuning): a run trained on a GPU (stacked)
  resumes or is evaluated on a CPU (unrolled by default) as it was saved. An explicit setting
  stays, for the manifest check to refuse if it differs."""
  saved = run_dir.saved_manifest()
  if not method.trains_backbone or config.model.scan_layers is not None or saved is None:
    return config
  config = config.copy_and_resolve_references()
  config.model.scan_layers = saved['model'].get('scan_layers', _LEGACY_SCAN_LAYERS)
  return config


def check_or_write_manifest(run_dir: RunDir, config, backbone, method: methods.Method,
                            write: bool = True) -> bool:
  """The run's manifest written (a new run) or checked (a resume: fields added to t5prompt since
  the run started match while they hold the default config's value). True on a resume."""
  defaults = manifest(default_config(), backbone, method)
  if method.trains_backbone:
    defaults['model']['scan_layers'] = _LEGACY_SCAN_LAYERS
  return run_dir.check_or_write_manifest(manifest(config, backbone, method), write=write,
                                         defaults=defaults)


def load_train_data(config, vocabulary) -> pipeline.TokenizedSplit:
  """The training split of the task and of every task mixed in (examples-proportional),
  tokenized with the backbone's vocabulary."""
  spec = task_spec(config)
  return pipeline.concatenate([
      pipeline.load_tokenized(name, config.task.train_split, config.task.input_length,
                              target_length(config, spec), vocabulary)
      for name in (config.task.name, *config.task.mixture)])


def load_eval_sets(config, vocabulary, splits: tuple[str, ...] = ()) -> dict:
  """{name: (spec, tokenized split)}: the task's eval splits (named by split), then the
  domain-shift sets of `task.extra_evals` (named `task:split`), tokenized with the backbone's
  vocabulary."""
  eval_sets = {}
  for split in splits or config.task.eval_splits:
    spec = task_spec(config)
    eval_sets[split] = (spec, pipeline.load_tokenized(
        spec.name, split, config.task.input_length, target_length(config, spec), vocabulary))
  for entry in () if splits else config.task.extra_evals:
    task_name, _, split = entry.partition(':')
    spec = task_spec(config, task_name)
    eval_sets[entry] = (spec, pipeline.load_tokenized(
        spec.name, split or 'validation', config.task.input_length, target_length(config, spec),
        vocabulary))
  return eval_sets


FETCH_HINT = ('Online, `t5prompt data fetch TASK ...` downloads the published copies of the '
              'shipped files (`t5prompt data fetch` alone: what the demo needs).')


def missing_data(config) -> list[tuple[str, str]]:
  """Every piece of data the run needs that is not there (the vocabulary, each task split, the
  pre-training text) as (what, why): where it was looked for and how to get it; [] if none.
  Cheap: it only looks for files, so runs check it before any compute."""
  problems = []
  try:
    _check_vocabulary(config.model)
  except FileNotFoundError as error:
    problems.append(('', str(error)))  # the message names the vocabulary
  needed = [(config.task.name, config.task.train_split)]
  needed += [(name, config.task.train_split) for name in config.task.mixture]
  needed += [(task_spec(config).name, split) for split in config.task.eval_splits]
  for entry in config.task.extra_evals:
    name, _, split = entry.partition(':')
    needed.append((task_spec(config, name).name, split or 'validation'))
  for name, split in dict.fromkeys(needed):
    try:
      get_task_spec(name).source.locate(split)
    except DataNotFoundError as error:
      problems.append((f'{name} {split!r}', str(error)))
  return problems


def describe_missing(problems: list[tuple[str, str]]) -> str:
  """One line per cause, naming everything it stops (the same text file stops several tasks),
  and how to fetch it all."""
  causes: dict[str, list[str]] = {}
  for what, why in problems:
    causes.setdefault(why, [])
    if what not in causes[why]:
      causes[why].append(what)
  return ''.join(f'\n  {", ".join(w for w in whats if w)}{": " if any(whats) else ""}{why}'
                 for why, whats in causes.items()) + (
      f'\n{FETCH_HINT}')


def check_checkpoint(model_config) -> None:
  """Raises CheckpointError, before a run makes its directory, when the local checkpoint it names
  is absent: where it was looked for and how to get it. (A hub id is only known once fetched.)"""
  name = model_config.checkpoint
  path = Path(local_path(name)).expanduser()
  if not name or path.is_dir() or not (name.startswith(CACHE_PREFIX) or is_local(name)):
    return
  message = f'The backbone {name} is not here: {path} is not a directory.'
  if name.startswith(CACHE_PREFIX):
    message += (f' `{CACHE_PREFIX}` names a backbone pre-trained into the cache ($T5PROMPT_CACHE,'
                f' now {cache_dir()}). The demo sweeps pre-train the ladder\'s '
                f'(`{CACHE_PREFIX}ladder/SIZE/lm_adapted`) in their first stage; '
                f'`t5prompt pretrain --config CONFIG --workdir {cache_dir()}/DIRECTORY` pre-trains '
                f'any other. Or point $T5PROMPT_CACHE at the cache that holds it.')
  raise CheckpointError(message)


def _check_vocabulary(model_config) -> None:
  """Raises FileNotFoundError when the backbone's vocabulary cannot be had: a checkpoint
  directory's own, else the one `model.vocabulary` names."""
  if checkpoint_vocabulary(model_config.checkpoint):
    return
  name = model_config.vocabulary
  if name.startswith('miniature-'):
    if not (cache_dir() / 'vocabularies' / f'{name}.model').is_file():
      for relative in text.files():  # it is trained from the pre-training text
        if not (data_dir() / relative).is_file():
          raise FileNotFoundError(f'vocabulary {name} is trained from {data_dir() / relative}, '
                                  f'which is missing. {text.HOW_TO_GET}')
  elif name in ('', 't5'):
    default_spm_path()
