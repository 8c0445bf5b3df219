"""The frozen backbone a run config names: a checkpoint (HF or t5prompt, local or hub), or a
named size with random weights; with its source, content hash and vocabulary (a checkpoint
directory's own `spiece.model`, else `model.vocabulary`, else T5's)."""

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from t5prompt import xla_cpu
from t5prompt.atomic import write_json
from t5prompt.data.sources import cache_dir, local_path
from t5prompt.data.vocab import get_vocabulary
from t5prompt.models import T5, T5Config, get_size
from t5prompt.models.convert import VOCABULARY_FILE, load_backbone, params_hash, unstack_layers
from t5prompt.models.streaming import fingerprint, is_lazy


@dataclasses.dataclass(frozen=True)
class Backbone:
  config: T5Config
  # unboxed, float32 (or unread streamed checkpoint tensors; or, for the planner, their shapes)
  params: dict
  source: str  # checkpoint path / hub id, or 'random:<size>:seed<N>[:<vocabulary>]'
  params_hash: str
  vocabulary_name: str = ''  # a `vocab.get_vocabulary` name or file; '' = T5's

  @property
  def vocabulary(self) -> Any:
    return get_vocabulary(self.vocabulary_name)


def checkpoint_vocabulary(checkpoint: str) -> str:
  """The vocabulary file a checkpoint directory holds (the miniature's backbones), else ''."""
  own = Path(local_path(checkpoint)).expanduser() / VOCABULARY_FILE
  return str(own) if checkpoint and own.is_file() else ''


def _vocabulary_name(model_config) -> str:
  """A checkpoint directory's own vocabulary file if it has one, else the config's."""
  return checkpoint_vocabulary(model_config.checkpoint) or model_config.vocabulary


def scan_layers(setting: Optional[bool]) -> bool:
  """`model.scan_layers`, None chosen by backend: unrolled on CPU (XLA's CPU runtime copies
  each layer's weights out of a stack every step), scanned on GPU/TPU."""
  return jax.default_backend() != 'cpu' if setting is None else setting


def load_model_backbone(model_config, stream: bool = False) -> Backbone:
  """The frozen backbone a config's `model` section names. With `stream`, a safetensors
  checkpoint's params stay unread (`models.streaming`) until they are placed on their
  shardings, a block per device: no whole float32 copy on the host (the train loop)."""
  xla_cpu.free_memory_for_loading()  # until `build` has placed the params
  overrides = dict(dtype=model_config.dtype, dropout_rate=model_config.dropout_rate,
                   scan_layers=scan_layers(model_config.scan_layers),
                   remat_policy=model_config.remat_policy)
  if model_config.checkpoint:
    config, params = load_backbone(local_path(model_config.checkpoint), lazy=stream,
                                   **overrides)
    source = model_config.checkpoint  # as the config names it: `cache:` stays portable
  else:
    config = get_size(model_config.size).replace(**overrides)
    params = random_params(config, model_config.init_seed)
    source = f'random:{model_config.size}:seed{model_config.init_seed}'
    if model_config.vocabulary:
      source += f':{model_config.vocabulary}'
  params = jax.tree.map(lambda x: x if is_lazy(x) else jnp.asarray(x, jnp.float32), params)
  return Backbone(config, params, source, _params_hash(params), _vocabulary_name(model_config))


def random_params(config: T5Config, seed: int) -> dict:
  """Random weights of `config` (T5X's init). Drawn as a layer stack in either layout, so a
  seed names the same weights on every backend; jitted (an eager init is ~2x slower on a CPU)."""
  tokens = jnp.ones((1, 8), jnp.int32)
  params = nn.unbox(jax.jit(T5(config.replace(scan_layers=True)).init)(
      jax.random.key(seed), tokens, tokens)['params'])
  return params if config.scan_layers else unstack_layers(params)


def _params_hash(params) -> str:
  """`params_hash`, which reads every weight. A streamed checkpoint's is kept in the cache under
  the `fingerprint` of what it reads, so only the first load of a checkpoint reads it twice
  (hash, then placement); a sweep's later runs and resumes read only what they place."""
  leaves = {jax.tree_util.keystr(path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
  if not leaves or not all(is_lazy(leaf) for leaf in leaves.values()):
    return params_hash(params)
  remembered = cache_dir() / 'params_hash' / f'{fingerprint(leaves)}.json'
  if remembered.is_file():
    return json.loads(remembered.read_text())['params_hash']
  digest = params_hash(params)
  try:
    write_json(remembered, {'params_hash': digest})
  except OSError:  # a read-only cache: the next load hashes again
    pass
  return digest


def abstract_backbone(config: T5Config) -> Backbone:
  """A backbone of shapes only (no weights, no compute): what the planner builds runs on."""
  tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  shapes = jax.eval_shape(T5(config).init, jax.random.key(0), tokens, tokens)['params']
  return Backbone(config, nn.unbox(shapes), f'shapes:{config}', '')


def backbone_from_source(source: str) -> Backbone:
  """The backbone a run or library entry records as its source (`random:<size>:seed<N>` or a
  checkpoint), for evaluation: no dropout."""
  from t5prompt.run_config import default_config  # pylint: disable=import-outside-toplevel
  model_config = default_config().model
  model_config.dropout_rate = 0.0
  if source.startswith('random:'):
    _, size, seed, *vocabulary = source.split(':', 3)
    model_config.size, model_config.init_seed = size, int(seed.removeprefix('seed'))
    model_config.vocabulary = vocabulary[0] if vocabulary else ''
  else:
    model_config.checkpoint = source
  return load_model_backbone(model_config)
