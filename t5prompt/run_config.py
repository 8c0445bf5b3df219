"""The run config: its fields with defaults (the paper's prompt-tuning settings), loading a
config file with command-line overrides, and validation before any compute.

Config files (`configs/*.py`) define `get_config()` returning `default_config()` with changes;
`--config.train.steps=100` style overrides follow. Every key must be one of the fields below.
"""

import ast
import importlib.util
import os
from pathlib import Path
from typing import Any

import ml_collections

from t5prompt.prompts import methods
from t5prompt.prompts.initializers import PPT_CHOICES
from t5prompt.prompts.prefix import ATTENTION_KINDS
from t5prompt.prompts.prompt_encoder import ENCODER_KINDS
from t5prompt.data.vocab import check_name as check_vocabulary
from t5prompt.run_dir import RunDir

DTYPES = ('float32', 'bfloat16')
EVAL_MODES = ('', 'rank', 'decode')
RANK_SCORINGS = ('sum', 'mean')


def default_config(method: str = 'prompt_tuning') -> ml_collections.ConfigDict:
  """Every field with its default (the paper's prompt-tuning settings), for `method` with that
  method's default optimizer settings (e.g. model tuning's, from its record)."""
  config = ml_collections.ConfigDict()
  config.method = 'prompt_tuning'  # one of prompts.methods.METHODS
  config.series = ''  # this run's line in report tables and plots; '' = the method
  config.model = _model_config()
  config.prompt = _prompt_config()
  config.task = _task_config()
  config.optimizer = _optimizer_config()
  config.partitioning = ml_collections.ConfigDict()
  config.partitioning.mesh = (-1, 1)  # (data, model); -1 = the remaining devices
  config.partitioning.shard_embed = False  # also shard weights' embed axis over data (XL/XXL)
  config.train = _train_config()
  return with_method(config, method)


def with_method(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
  """`config` set to run `method`, with the method's default optimizer settings (an unknown
  method is left for `validate` to report with the others)."""
  config.method = method
  if method in methods.METHODS:
    for key, value in methods.get(method).optimizer:
      config.optimizer[key] = value
  return config


def _model_config() -> ml_collections.ConfigDict:
  model = ml_collections.ConfigDict()
  model.size = 't5-lm-adapt-small'  # a named size; random weights unless `checkpoint`
  model.checkpoint = ''  # HF dir / hub id / t5prompt dir; the frozen backbone
  model.label = ''  # the size's name in reports; '' = model.size (or the checkpoint's)
  model.init_seed = 0  # random backbones only
  # Random backbones: 't5' ('' too), 'miniature-<pieces>' (trained on the shipped text) or a
  # SentencePiece file. A checkpoint directory with its own spiece.model uses that one.
  model.vocabulary = ''
  model.dtype = 'float32'  # compute dtype; params, prompt, optimizer state stay float32
  model.dropout_rate = 0.1
  # Layers as one nn.scan-ned stack (True: one compiled layer body, bounded compile time at
  # XXL) or unrolled layers_0, layers_1, ... (False). None: by backend when the backbone loads,
  # scanned on GPU/TPU, unrolled on CPU (there the same speed in fp32, 10% faster in bf16 at
  # Small, and quicker to compile: README, Benchmarks).
  model.scan_layers = ml_collections.config_dict.placeholder(bool)
  model.remat_policy = 'none'
  return model


def _prompt_config() -> ml_collections.ConfigDict:
  prompt = ml_collections.ConfigDict()
  prompt.length = 100  # virtual tokens (prompt / P-tuning) or prefix positions
  prompt.init = 'class_label'  # random_uniform | sampled_vocab | class_label | text | file | ppt
  prompt.init_text = ''
  prompt.init_file = ''
  # ppt: the pre-trained prompt found under `ppt_runs` (finished runs on the ppt_* tasks) for
  # the task's format ('matching') or for every format ('unified').
  prompt.ppt_runs = ''
  prompt.ppt_choice = 'matching'
  prompt.vocab_population = 5000
  # Prefix methods: the attention kinds that get prefixes; deep prompts may set one length per
  # layer (shorter layers are padded and masked).
  prompt.attention = ATTENTION_KINDS
  prompt.layer_lengths = ()  # () = prompt.length at every layer
  prompt.reparam_hidden = 512  # prefix tuning's MLP / P-tuning's encoder hidden size
  prompt.encoder = 'lstm'  # P-tuning's prompt encoder: lstm | mlp
  prompt.shots = 0  # prompt_design: demonstrations from the task's few-shot split
  # autoprompt: prompt.length trigger tokens placed by the template ([X] the input, [T] the
  # triggers), each starting as `trigger_init`; `candidates` tokens scored per iteration.
  prompt.template = '[X] [T]'
  prompt.trigger_init = 'the'
  prompt.candidates = 10
  return prompt


def _task_config() -> ml_collections.ConfigDict:
  task = ml_collections.ConfigDict()
  task.name = 'superglue_rte'
  task.train_split = 'train'
  task.eval_splits = ('validation',)
  task.input_length = 512
  task.target_length = 0  # 0 = the task's own (8 for classification, 32 for QA)
  task.extra_evals = ()  # domain-shift sets, 'task:split' (e.g. 'mrqa_drop:validation')
  task.eval_mode = ''  # '' = the task's own (rank or decode)
  # Rank classification scores each label by its summed token log-likelihood (T5's) or the mean
  # (length-normalised: a sum favours short labels on a model that ignores its input).
  task.rank_scoring = 'sum'  # sum | mean
  # More training tasks mixed in (examples-proportional), e.g. a generic SPoT source prompt or
  # multi-task model tuning; evaluation stays on task.name (and extra_evals).
  task.mixture = ()
  return task


def _optimizer_config() -> ml_collections.ConfigDict:
  optimizer = ml_collections.ConfigDict()
  optimizer.name = 'adafactor'  # adafactor | adam | adamw
  optimizer.learning_rate = 0.3
  optimizer.warmup_steps = 0
  optimizer.decay_rate = 0.8  # Adafactor's beta2 decay
  optimizer.factored = False  # Adafactor: factor the second moment of 2-D params
  optimizer.weight_decay = 1e-5
  optimizer.b1 = 0.9
  optimizer.b2 = 0.999
  optimizer.grad_clip_norm = 0.0  # 0 = off; over trainable params only
  return optimizer


def _train_config() -> ml_collections.ConfigDict:
  train = ml_collections.ConfigDict()
  train.steps = 30000
  train.batch_size = 32
  train.seed = 0  # data order, dropout and prompt init
  train.eval_every = 1000
  # Also evaluate the untrained prompt: reported as result.json's initial_metrics, a baseline
  # beside the best step, which is always chosen among trained steps (a run that never beats
  # its start shows it, rather than exporting the untrained prompt as its best).
  train.eval_at_start = False
  train.eval_batch_size = 64
  train.max_eval_examples = 0  # 0 = the whole eval split
  train.early_stopping_patience = 0  # evals without improvement; 0 = never stop early
  train.checkpoint_every = 1000
  train.keep_checkpoints = 2
  train.log_every = 50
  # Write the best params as a backbone checkpoint in the run directory (model tuning only:
  # pre-training, or a tuned model other runs start from), with its record (backbone.json).
  train.export_backbone = False
  return train


def python_file(path: Path, function: str, returns: str):
  """`function` of the Python file at `path` (a config: configs/*.py), after running it; a file
  that is not Python, or fails to run, is refused in one line."""
  if not path.is_file():
    raise FileNotFoundError(f'No config file at {path}; configs live in configs/*.py.')
  module_spec = importlib.util.spec_from_file_location(f'_t5prompt_{path.stem}', path)
  if module_spec is None or path.suffix != '.py':
    raise ValueError(f'{path} is not a Python config file (configs/*.py).')
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except (SyntaxError, ValueError) as error:  # not Python; null bytes
    raise ValueError(f'{path} is not a valid Python config file: {error}') from None
  except Exception as error:  # pylint: disable=broad-except  # any failure: one line, not a trace
    raise ValueError(f'{path} failed to run as a Python config file: '
                     f'{type(error).__name__}: {error}') from None
  if not hasattr(module, function):
    raise ValueError(f'{path} must define {function}() returning {returns}.')
  return getattr(module, function)


def config_from_file(spec: str | Path) -> ml_collections.ConfigDict:
  """`get_config()` of a config file, or `get_config(arg)` for `path.py:arg` (big_vision's
  convention, e.g. configs/pretrain/ladder.py:ladder-2)."""
  path, _, arg = str(spec).partition('.py:')
  get_config = python_file(Path(path + '.py' if arg else path), 'get_config', 'a ConfigDict')
  return get_config(arg) if arg else get_config()


def _valid_keys(config: ml_collections.ConfigDict, prefix: str = '') -> list[str]:
  keys = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      keys += _valid_keys(value, f'{prefix}{key}.')
    else:
      keys.append(f'{prefix}{key}')
  return keys


def _check_keys(config, reference, prefix: str = '') -> None:
  for key, value in config.items():
    if key not in reference:
      raise ValueError(f"Unknown config key '{prefix}{key}'. Valid keys: "
                       f'{", ".join(_valid_keys(default_config()))}.')
    if isinstance(value, ml_collections.ConfigDict):
      _check_keys(value, reference[key], f'{prefix}{key}.')


BOOLEANS = {'true': True, 'false': False, '1': True, '0': False, 'yes': True, 'no': False}


def _parse_value(text: str, field_type: type):
  """The override's value: a string field takes the text as it is, a boolean field any of
  true/false/1/0/yes/no, the rest a Python literal (or, failing that, the text)."""
  if field_type is str:
    return text
  if field_type is bool and text.strip().lower() in BOOLEANS:
    return BOOLEANS[text.strip().lower()]
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare string


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
  """`train.steps=100` (a leading `--config.` is accepted) sets that field, type-checked."""
  override = override.removeprefix('--').removeprefix('config.')
  if '=' not in override:
    raise ValueError(f'Override {override!r} must look like --config.train.steps=100.')
  key, text = override.split('=', 1)
  node, leaf = _field(config, key)
  set_field(config, key, _parse_value(text, _field_type(node, leaf)), shown=repr(text))


def set_field(config: ml_collections.ConfigDict, key: str, value: Any, shown: str = '') -> None:
  """Sets the field `key` ('train.steps') to a Python value, type-checked: an int where a float
  goes is widened, a list or a single string where a tuple goes becomes a tuple."""
  node, leaf = _field(config, key)
  current, field_type = node[leaf], _field_type(node, leaf)
  if isinstance(current, tuple) and isinstance(value, (str, list)):
    value = tuple([value] if isinstance(value, str) else value)
  if field_type is float and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if type(value) is not field_type and not (value is None and current is None):
    raise ValueError(f'Config key {key!r} takes a {field_type.__name__} value '
                     f'(now {current!r}); got {shown or repr(value)}.')
  node[leaf] = value


def _field_type(node: ml_collections.ConfigDict, leaf: str) -> type:
  """A field's type; a placeholder (None: chosen later, e.g. by backend) declares its own."""
  current = node[leaf]
  return node.get_ref(leaf).get_type() if current is None else type(current)


def _field(config: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
  """(the ConfigDict holding `key`, the leaf name); an unknown key lists the valid ones."""
  *parents, leaf = key.split('.')
  node = config
  for part in parents:
    node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise ValueError(f'Unknown config key {key!r}. Valid keys: '
                     f'{", ".join(_valid_keys(config))}.')
  return node, leaf


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks types, ranges and choices before any compute; returns the config, locked."""
  _check_keys(config, default_config())
  problems = []

  def need(condition, message):
    if not condition:
      problems.append(message)

  need(config.method in methods.METHODS,
       f'method must be one of {tuple(methods.METHODS)}, got {config.method!r}')
  need(config.model.dtype in DTYPES, f'model.dtype must be one of {DTYPES}')
  try:
    check_vocabulary(config.model.vocabulary)
  except ValueError as error:
    problems.append(f'model.vocabulary: {error}')
  need(0.0 <= config.model.dropout_rate < 1.0, 'model.dropout_rate must be in [0, 1)')
  need(config.prompt.length > 0,
       f'prompt.length must be positive, got {config.prompt.length}')
  need(config.prompt.init in methods.PROMPT_INITS,
       f'prompt.init must be one of {methods.PROMPT_INITS}, got {config.prompt.init!r}')
  need(config.task.input_length > 0, 'task.input_length must be positive')
  need(config.task.target_length >= 0, 'task.target_length must be >= 0 (0: the task\'s own)')
  need(config.task.eval_mode in EVAL_MODES, f'task.eval_mode must be one of {EVAL_MODES}')
  need(config.task.rank_scoring in RANK_SCORINGS,
       f'task.rank_scoring must be one of {RANK_SCORINGS}, got {config.task.rank_scoring!r}')
  need(config.optimizer.learning_rate > 0, 'optimizer.learning_rate must be positive')
  need(config.optimizer.warmup_steps >= 0, 'optimizer.warmup_steps must be >= 0')
  for key in ('steps', 'batch_size', 'eval_every', 'eval_batch_size', 'checkpoint_every',
              'keep_checkpoints', 'log_every'):
    need(config.train[key] > 0, f'train.{key} must be positive, got {config.train[key]}')
  mesh = tuple(config.partitioning.mesh)
  need(len(mesh) == 2 and all(isinstance(n, int) and (n > 0 or n == -1) for n in mesh)
       and mesh.count(-1) <= 1,
       f'partitioning.mesh must be (data, model) with positive sizes or one -1, got {mesh}')
  need(config.train.early_stopping_patience >= 0, 'train.early_stopping_patience must be >= 0')
  problems += _prompt_problems(config.prompt)
  if config.method in methods.METHODS:
    method = methods.get(config.method)
    problems += method.check(config)
    need(method.trains_backbone or not config.train.export_backbone,
         f'train.export_backbone needs a method that trains every weight (model_tuning), not '
         f'{config.method}')
  if problems:
    raise ValueError('Invalid config:\n  ' + '\n  '.join(problems))
  _check_task(config)
  config.lock()
  return config


def _prompt_problems(prompt) -> list[str]:
  """What is wrong with the `prompt` section (every method's: its fields have defaults)."""
  problems = []

  def need(condition, message):
    if not condition:
      problems.append(message)

  if prompt.init == 'file':
    need(bool(prompt.init_file), 'prompt.init="file" needs prompt.init_file')
  if prompt.init == 'text':
    need(bool(prompt.init_text), 'prompt.init="text" needs prompt.init_text')
  if prompt.init == 'ppt':
    need(bool(prompt.ppt_runs), 'prompt.init="ppt" needs prompt.ppt_runs: the directory of '
         'the PPT pre-training runs (the ppt stage of configs/sweeps/few_shot_ppt.py)')
  need(prompt.ppt_choice in PPT_CHOICES,
       f'prompt.ppt_choice must be one of {PPT_CHOICES}, got {prompt.ppt_choice!r}')
  attention = tuple(prompt.attention)
  need(bool(attention) and set(attention) <= set(ATTENTION_KINDS),
       f'prompt.attention must name some of {ATTENTION_KINDS}, got {attention}')
  lengths = tuple(prompt.layer_lengths)
  if lengths:
    need(all(n >= 0 for n in lengths) and max(lengths) > 0,
         f'prompt.layer_lengths must be >= 0 with one > 0, got {lengths}')
  need(prompt.reparam_hidden > 0, 'prompt.reparam_hidden must be positive')
  need(prompt.encoder in ENCODER_KINDS,
       f'prompt.encoder must be one of {ENCODER_KINDS}, got {prompt.encoder!r}')
  need(prompt.shots >= 0, 'prompt.shots must be >= 0')
  return problems


def _check_task(config) -> None:
  """The task names exist (nearest names suggested) before any compute, as the method reads
  them (prompt design: a hand-written template exists)."""
  from t5prompt.data.tasks import get_task_spec  # pylint: disable=import-outside-toplevel
  get_task_spec(config.task.name)
  get_task_spec(methods.get(config.method).eval_task(config.task.name))
  for entry in config.task.extra_evals:
    get_task_spec(entry.partition(':')[0])
  for name in config.task.mixture:
    get_task_spec(name)


def load_config(path: str | Path, overrides: list[str] = ()) -> ml_collections.ConfigDict:
  """A run config file (configs/*.py) with `--config.key=value` overrides, validated."""
  config = config_from_file(path)
  _check_keys(config, default_config())
  for override in overrides:
    apply_override(config, override)
  return validate(config)


def load_run_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The config a run directory ran with (its config.json), validated; fields added since the
  run started keep their defaults."""
  record = RunDir(workdir).config_record()
  config = default_config()
  for section, values in record.items():
    if isinstance(values, dict):
      for key, value in values.items():
        default = config[section][key]
        config[section][key] = tuple(value) if isinstance(default, tuple) else value
    else:
      config[section] = values
  return validate(config)
