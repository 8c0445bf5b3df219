"""A run directory: its files, its typed `Result`, the manifest a resume must match, the lock,
and the exported prompt. The one module that names a run's files.

  config.json      the config it ran            manifest.json  backbone source + hash, identity
  metrics.jsonl    train and eval records       tensorboard/   the same as TensorBoard events
  checkpoints/     latest-N (trainable + optimizer state + step + data position + RNG)
  best/            the trainable params at the best dev score
  prompt.npy       the best input prompt [P, d] (or prefix.npz: the folded prefixes)
  prompt.json      the prompt's record (backbone, task, init, score, nearest tokens)
  prompts/<task>/  a per-task method's prompt of each task (prompt.npy, prompt.json)
  triggers.json    AutoPrompt's best trigger tokens (ids, pieces, text, template)
  search.json      AutoPrompt's search state, rewritten as it goes (its checkpoint)
  result.json      the outcome (written last, atomically)
  failed.json      why a sweep's run failed (removed when it runs again)
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from t5prompt import atomic
from t5prompt.data.sources import local_path

CONFIG = 'config.json'
MANIFEST = 'manifest.json'
METRICS = 'metrics.jsonl'
RESULT = 'result.json'
FAILED = 'failed.json'
PROMPT = 'prompt.npy'
PREFIX = 'prefix.npz'
PROMPT_RECORD = 'prompt.json'
LOCK = '.lock'
ENSEMBLE = 'ensemble.json'  # `t5prompt ensemble`'s output directory holds it
# An exported backbone's record (`train.export_backbone`): where it came from, on what text, its
# losses and encoder reliance. Its weights are a t5prompt checkpoint (models.convert).
BACKBONE_RECORD = 'backbone.json'
PER_TASK_PROMPTS = 'prompts'  # a per-task method's prompts: prompts/<task>/prompt.npy
TRIGGERS = 'triggers.json'
SEARCH_STATE = 'search.json'


@dataclasses.dataclass(frozen=True)
class Result:
  """What a finished run reports (`result.json`; the DESIGN contract)."""
  config: dict  # the full config it ran
  model_size: str
  method: str
  task: str
  seed: int
  metrics: dict  # {eval set: {metric: value, 'score': the task's official score}} at best_step
  series: str = ''  # its line in reports ('' = the method)
  num_params: int = 0  # the backbone's
  num_non_embedding_params: int = 0  # the backbone's, without embeddings and LM head
  d_model: int = 0
  prompt_length: int = 0
  init: dict | None = None  # the record of the prompt init that ran
  steps: int = 0
  stopped_early: bool = False
  metric: str = ''
  best_step: int | None = None
  initial_metrics: dict | None = None  # the untrained prompt's (train.eval_at_start)
  num_trainable_params: int = 0
  num_stored_params: int = 0  # what the task keeps: the folded prompt/prefix or the model
  truncated: dict = dataclasses.field(default_factory=dict)  # {split: [inputs, targets] cut}
  backbone: dict = dataclasses.field(default_factory=dict)  # {'source', 'params_hash'}
  wall_time_s: float = 0.0
  device_kind: str = ''
  num_devices: int = 0
  path: str = dataclasses.field(default='', compare=False)  # the run it was read from; not saved

  REQUIRED = ('model_size', 'method', 'task', 'seed', 'metrics', 'config')

  @classmethod
  def from_json(cls, record: dict, path: str = '') -> 'Result':
    missing = [key for key in cls.REQUIRED if key not in record]
    if missing:
      raise ValueError(f'missing {", ".join(missing)}')
    return cls(**{**known_fields(cls, record), 'path': path})

  def to_json(self) -> dict:
    record = dataclasses.asdict(self)
    del record['path']
    return record

  @property
  def identity(self) -> str:
    """What the run computed: its config without the fields that only lay it out on the
    hardware. Two results with one identity are one measurement."""
    return json.dumps(_without_layout(self.config), sort_keys=True)

  @property
  def series_name(self) -> str:
    return self.series or self.method

  @property
  def in_domain(self) -> str:
    """The eval set best-step selection used: the first of the task's eval splits."""
    return self.config['task']['eval_splits'][0]

  @property
  def score(self) -> float:
    return self.metrics[self.in_domain]['score']

  @property
  def task_metrics(self) -> dict[str, dict]:
    """{task: in-domain metrics}: the run's task, and for a run on a mixture every mixed-in
    task it evaluated (`<task>:<split>` in `task.extra_evals`), as the multi-task baseline is
    scored."""
    out = {self.task: self.metrics[self.in_domain]}
    for name in self.config.get('task', {}).get('mixture', ()):
      if f'{name}:{self.in_domain}' in self.metrics:
        out[name] = self.metrics[f'{name}:{self.in_domain}']
    return out


class RunDir:
  """One run's directory (it need not exist yet)."""

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)

  def __truediv__(self, name: str) -> Path:
    return self.path / name

  @property
  def checkpoints(self) -> Path:
    return self.path / 'checkpoints'

  @property
  def best(self) -> Path:
    return self.path / 'best'

  @property
  def tensorboard(self) -> Path:
    return self.path / 'tensorboard'

  @property
  def metrics(self) -> Path:
    return self.path / METRICS

  # --- the outcome ------------------------------------------------------------------------
  def result(self) -> Result | None:
    """The finished run's result; None when it has not finished (no result.json)."""
    path = self.path / RESULT
    if not path.is_file():
      return None
    return Result.from_json(json.loads(path.read_text()), str(self.path))

  def finished(self, config, defaults=None) -> bool:
    """Whether result.json holds a finished run of this config: every field equal but those
    that only lay the run out on the hardware (`LAYOUT_FIELDS`). A field the saved config lacks
    (added to t5prompt since the run) matches when it holds its value in `defaults` (the
    default config): new fields default to the old behaviour."""
    try:
      result = self.result()
    except (ValueError, json.JSONDecodeError):
      return False
    if result is None:
      return False
    current = json.loads(config.to_json())
    defaults = json.loads(defaults.to_json()) if defaults is not None else {}
    return not _diff(_without_layout(result.config), _without_layout(current),
                     added_since=_without_layout(defaults))

  def write_result(self, result: Result) -> None:
    atomic.write_json(self.path / RESULT, result.to_json())

  def write_config(self, config) -> None:
    atomic.write_json(self.path / CONFIG, json.loads(config.to_json()))

  def config_record(self) -> dict:
    path = self.path / CONFIG
    if not path.is_file():
      raise FileNotFoundError(f'{self.path} is not a run directory (no {CONFIG}); give the '
                              '--workdir a `t5prompt train` wrote.')
    return json.loads(path.read_text())

  def record_failure(self, error: BaseException | str, **details) -> None:
    """Why the run failed: an exception (with its traceback) or a message, and `details`."""
    if isinstance(error, BaseException):
      details['traceback'] = traceback.format_exc()
      error = f'{type(error).__name__}: {error}'
    atomic.write_json(self.path / FAILED, {'error': error, **details,
                                           'time': time.strftime('%Y-%m-%d %H:%M:%S')})

  def failure(self) -> dict | None:
    path = self.path / FAILED
    return json.loads(path.read_text()) if path.is_file() else None

  def clear_failure(self) -> None:
    (self.path / FAILED).unlink(missing_ok=True)

  # --- the manifest: what a resume must share with the run that wrote the checkpoints -----
  def saved_manifest(self) -> dict | None:
    path = self.path / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None

  def check_or_write_manifest(self, manifest: dict, write: bool = True,
                              defaults: dict | None = None) -> bool:
    """Writes the manifest of a new run (if `write`: one host writes), or checks a resumed
    run's against it (a field added to t5prompt since the run started matches while it holds
    its value in `defaults`, the default config's manifest). Returns True when the run
    directory already had one (a resume)."""
    saved = self.saved_manifest()
    if saved is None:
      if write:
        atomic.write_json(self.path / MANIFEST, manifest)
      return False
    differences = _diff(saved, json.loads(json.dumps(manifest)),
                        added_since=None if defaults is None else json.loads(json.dumps(defaults)))
    if differences:
      raise ValueError(
          f'{self.path} holds a run of a different backbone or config; refusing to resume it:\n'
          + '\n'.join(differences) + '\nUse a new --workdir, or rerun with the saved values.')
    return True

  # --- the lock ---------------------------------------------------------------------------
  @contextlib.contextmanager
  def lock(self, enabled: bool = True):
    """Holds `<run>/.lock` while a process works here, so a second process on the same run
    directory is refused rather than interleaving its writes (multi-host: only host 0). The
    file goes when the lock is released."""
    if not enabled:
      yield
      return
    self.path.mkdir(parents=True, exist_ok=True)
    with open(self.path / LOCK, 'a+', encoding='utf-8') as handle:
      try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError as error:
        handle.seek(0)
        holder = handle.read().strip()
        raise WorkdirBusyError(f'{self.path} is in use by another t5prompt process ({holder}); '
                               'wait for it to finish or stop it, or use another --workdir.'
                               ) from error
      handle.seek(0)
      handle.truncate()
      handle.write(f'pid {os.getpid()} on {os.uname().nodename}')
      handle.flush()
      try:
        yield
      finally:
        (self.path / LOCK).unlink(missing_ok=True)  # still holding it: nobody else can start
        fcntl.flock(handle, fcntl.LOCK_UN)

  # --- the exported prompt ----------------------------------------------------------------
  def export_prompt(self, arrays: dict[str, np.ndarray], record: dict) -> Path:
    """The portable prompt with its record beside it: `prompt.npy` (float32 [P, d]) for an
    input prompt ({'prompt': array}), else `prefix.npz` ({'<kind>_key': [layers, P, heads,
    d_kv], ...})."""
    self.path.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.asarray(array, np.float32) for name, array in arrays.items()}
    if list(arrays) == ['prompt']:
      path = atomic.write_npy(self.path / PROMPT, arrays['prompt'])
    else:
      def write(name):
        with open(name, 'wb') as stream:  # a stream: np.savez would add '.npz' to the temp name
          np.savez(stream, **arrays)
      path = atomic.write_bytes_with(self.path / PREFIX, write)
    atomic.write_json(self.path / PROMPT_RECORD, {
        **record, 'file': path.name, 'dtype': 'float32',
        'shape': list(arrays['prompt'].shape) if 'prompt' in arrays else None,
        'shapes': {name: list(array.shape) for name, array in arrays.items()}})
    return path

  def task_prompt(self, task: str) -> 'RunDir':
    """Where a per-task method keeps one task's prompt (a prompt export of its own)."""
    return RunDir(self.path / PER_TASK_PROMPTS / task)

  def artefact_path(self, kind: str) -> Path:
    """Where the exported artefact of a method's kind ('prompt' or 'prefix') lives."""
    return self.path / (PROMPT if kind == 'prompt' else PREFIX)

  def prompt(self) -> np.ndarray:
    """The exported input prompt [P, d]."""
    path = self.path / PROMPT
    if not path.is_file():
      raise FileNotFoundError(f'{self.path} exported no {PROMPT} (an unfinished run, or a '
                              'method without an input prompt).')
    return np.load(path)

  # --- a discrete search's state and artefact (AutoPrompt) -------------------------------
  def write_search_state(self, record: dict) -> None:
    atomic.write_json(self.path / SEARCH_STATE, record)

  def search_state(self) -> dict | None:
    path = self.path / SEARCH_STATE
    return json.loads(path.read_text()) if path.is_file() else None

  def write_triggers(self, record: dict) -> None:
    atomic.write_json(self.path / TRIGGERS, record)

  def triggers(self) -> dict:
    path = self.path / TRIGGERS
    if not path.is_file():
      raise FileNotFoundError(f'{self.path} has no {TRIGGERS} (not a finished autoprompt run).')
    return json.loads(path.read_text())

  def write_backbone_record(self, record: dict) -> None:
    atomic.write_json(self.path / BACKBONE_RECORD, record)

  def backbone_record(self) -> dict:
    path = self.path / BACKBONE_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}

  def train_losses(self) -> list[tuple[int, float]]:
    """(step, loss) of every train record in metrics.jsonl."""
    if not self.metrics.is_file():
      return []
    records = [json.loads(line) for line in self.metrics.read_text().splitlines() if line]
    return [(r['step'], r['loss']) for r in records if r['kind'] == 'train']

  def prompt_record(self) -> dict:
    path = self.path / PROMPT_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


class WorkdirBusyError(RuntimeError):
  """Another process holds the run directory."""
  user_facing = True  # the CLI prints the message alone


# Config fields that say how a run is laid out on the hardware, not what it computes: a run
# finished on another mesh or layer layout (`model.scan_layers` None picks it by backend) is
# the same run.
LAYOUT_FIELDS = (('partitioning',), ('model', 'scan_layers'), ('model', 'remat_policy'))


def _without_layout(config: dict) -> dict:
  config = json.loads(json.dumps(config))  # a copy
  for *parents, leaf in LAYOUT_FIELDS:
    node = config
    for key in parents:
      node = node.get(key, {})
    node.pop(leaf, None)
  return config


def known_fields(cls, record: dict) -> dict:
  """The entries of a saved `record` that are fields of the dataclass `cls`: a record written by
  another version of t5prompt may hold fields this one does not know."""
  names = {field.name for field in dataclasses.fields(cls)}
  return {key: value for key, value in record.items() if key in names}


def _diff(saved: Any, current: Any, prefix: str = '', added_since: Any = None) -> list[str]:
  """The fields that differ, one line each. With `added_since` (the defaults), a field only
  `current` has is no difference while it holds its default."""
  if isinstance(saved, dict) and isinstance(current, dict):
    lines = []
    defaults = added_since if isinstance(added_since, dict) else {}
    for key in sorted(set(saved) | set(current)):
      if key not in saved and key in defaults:  # added since: the run had its default value
        if defaults[key] != current[key]:
          lines.append(f'  {prefix}{key}: saved before the field existed (so {defaults[key]!r}),'
                       f' now {current[key]!r}')
        continue
      lines += _diff(saved.get(key), current.get(key), f'{prefix}{key}.',
                     defaults.get(key) if added_since is not None else None)
    return lines
  return [] if _same(saved, current) else [f'  {prefix[:-1]}: saved {saved!r}, now {current!r}']


def _same(saved: Any, current: Any) -> bool:
  """Equal, or one checkpoint under two names: its path and its `cache:` reference (runs
  recorded before the miniature's configs named its backbones by reference)."""
  if isinstance(saved, str) and isinstance(current, str):
    return local_path(saved) == local_path(current)
  return saved == current


def manifest(config, backbone, method) -> dict[str, Any]:
  """What a resumed run of `method` (a `prompts.methods.Method`) must share with the run that
  wrote the checkpoints."""
  model = {'dtype': config.model.dtype, 'dropout_rate': config.model.dropout_rate}
  if method.trains_backbone:  # its checkpoints hold the layers, in the layout they were loaded
    model['scan_layers'] = backbone.config.scan_layers  # (None in the config: by backend)
  return {
      'backbone': {'source': backbone.source, 'params_hash': backbone.params_hash,
                   'd_model': backbone.config.d_model},
      'method': config.method,
      'prompt': config.prompt.to_dict() if method.uses_prompt else None,
      'task': {key: config.task[key] for key in ('name', 'train_split', 'input_length',
                                                 'target_length')},
      'mixture': list(config.task.mixture),
      'optimizer': config.optimizer.to_dict(),
      'model': model,
      'train': {'batch_size': config.train.batch_size, 'seed': config.train.seed},
  }


def find_results(directory: str | os.PathLike) -> list[RunDir]:
  """Every run directory under `directory` that holds a result (sorted by path)."""
  return [RunDir(path.parent) for path in sorted(Path(directory).rglob(RESULT))]
