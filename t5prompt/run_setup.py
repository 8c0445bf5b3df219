"""What every run (trained or not) sets up from its config: the frozen backbone, the task spec
and the eval sets. Shared by the train loop and the prompt-design evaluation."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import linen as nn

from t5prompt.data import pipeline
from t5prompt.data.tasks import get_task_spec
from t5prompt.data.templates import template_task
from t5prompt.models import T5, T5Config, get_size
from t5prompt.models.convert import load_backbone, params_hash


@dataclasses.dataclass(frozen=True)
class Backbone:
  config: T5Config
  params: dict  # unboxed, float32
  source: str  # checkpoint path / hub id, or 'random:<size>:seed<N>'
  params_hash: str


def load_model_backbone(model_config) -> Backbone:
  """The frozen backbone a config names: a checkpoint, or a named size with random weights."""
  overrides = dict(dtype=model_config.dtype, dropout_rate=model_config.dropout_rate,
                   scan_layers=model_config.scan_layers, remat_policy=model_config.remat_policy)
  if model_config.checkpoint:
    config, params = load_backbone(model_config.checkpoint, **overrides)
    source = model_config.checkpoint
  else:
    config = get_size(model_config.size).replace(**overrides)
    tokens = jnp.ones((1, 8), jnp.int32)
    params = nn.unbox(jax.jit(T5(config).init)(jax.random.key(model_config.init_seed),
                                               tokens, tokens)['params'])
    source = f'random:{model_config.size}:seed{model_config.init_seed}'
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  return Backbone(config, params, source, params_hash(params))


def backbone_from_source(source: str) -> Backbone:
  """The backbone a run or library entry records as its source (`random:<size>:seed<N>` or a
  checkpoint), for evaluation: no dropout."""
  from t5prompt.run_config import default_config  # pylint: disable=import-outside-toplevel
  model_config = default_config().model
  model_config.dropout_rate = 0.0
  if source.startswith('random:'):
    _, size, seed = source.split(':')
    model_config.size, model_config.init_seed = size, int(seed.removeprefix('seed'))
  else:
    model_config.checkpoint = source
  return load_model_backbone(model_config)


def model_label(config) -> str:
  """The backbone's name in reports: model.label, else the size, else the checkpoint's name."""
  if config.model.label:
    return config.model.label
  if config.model.checkpoint:
    return Path(config.model.checkpoint.rstrip('/')).name
  return config.model.size


def task_spec(config, task_name: str = ''):
  """The TaskSpec of the config's task (or `task_name`), with the config's eval_mode if set;
  prompt design reads the task through its hand-written template."""
  name = task_name or config.task.name
  spec = get_task_spec(template_task(name) if config.method == 'prompt_design' else name)
  if config.task.eval_mode and spec.label_names:
    spec = dataclasses.replace(spec, eval_mode=config.task.eval_mode)
  return spec


def target_length(config, spec) -> int:
  return config.task.target_length or spec.target_length


def load_eval_sets(config, splits: tuple[str, ...] = ()) -> dict:
  """{name: (spec, tokenized split)}: the task's eval splits (named by split), then the
  domain-shift sets of `task.extra_evals` (named `task:split`)."""
  eval_sets = {}
  for split in splits or config.task.eval_splits:
    spec = task_spec(config)
    eval_sets[split] = (spec, pipeline.load_tokenized(
        spec.name, split, config.task.input_length, target_length(config, spec)))
  for entry in () if splits else config.task.extra_evals:
    task_name, _, split = entry.partition(':')
    spec = task_spec(config, task_name)
    eval_sets[entry] = (spec, pipeline.load_tokenized(
        spec.name, split or 'validation', config.task.input_length, target_length(config, spec)))
  return eval_sets


