"""Hugging Face T5 checkpoints <-> t5prompt's param tree (T5X names).

Reads `config.json` plus `model.safetensors`, sharded safetensors (`model.safetensors.index.json`)
or `pytorch_model.bin`, from a local directory or a hub id, and writes our params back to a
directory that transformers' `T5ForConditionalGeneration.from_pretrained` loads.

Two config dialects exist. Checkpoints saved by transformers 4.x (all of the hub's) say
`tie_word_embeddings: false` for v1.1 and have a separate `lm_head.weight`; transformers 5 always
writes `tie_word_embeddings: true` and marks v1.1's unscaled output with
`scale_decoder_outputs: false`. So: scaling comes from `scale_decoder_outputs` when present, else
from `tie_word_embeddings`; the head is untied exactly when the checkpoint holds an
`lm_head.weight` that differs from `shared.weight` (transformers 5's own rule).
"""

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from t5prompt.models import streaming
from t5prompt.models.sizes import T5Config

Params = dict[str, Any]

_ATTENTION = {'q': 'query', 'k': 'key', 'v': 'value', 'o': 'out'}
_WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin')


class CheckpointError(ValueError):
  """A checkpoint directory that cannot be read as a T5 checkpoint."""


# ----------------------------------------------------------------------------- config
def config_from_hf(hf_config: Mapping[str, Any], state: Mapping[str, np.ndarray],
                   **overrides) -> T5Config:
  """Our T5Config from an HF config.json dict and the checkpoint's tensors."""
  feed_forward_proj = hf_config.get('feed_forward_proj', 'relu')
  if feed_forward_proj not in ('relu', 'gated-gelu'):
    raise CheckpointError(
        f"feed_forward_proj {feed_forward_proj!r} is not supported (T5 v1.0 uses 'relu', "
        "v1.1 and LM-adapted 'gated-gelu').")
  if 'scale_decoder_outputs' in hf_config:
    scale = bool(hf_config['scale_decoder_outputs'])
  else:
    scale = hf_config.get('tie_word_embeddings', True) is not False
  tied = not ('lm_head.weight' in state and
              not _same_tensor(state['lm_head.weight'], state['shared.weight']))
  num_layers = hf_config.get('num_layers', 6)
  return T5Config(
      vocab_size=hf_config.get('vocab_size', 32128),
      d_model=hf_config.get('d_model', 512),
      d_kv=hf_config.get('d_kv', 64),
      d_ff=hf_config.get('d_ff', 2048),
      num_heads=hf_config.get('num_heads', 8),
      num_encoder_layers=num_layers,
      num_decoder_layers=hf_config.get('num_decoder_layers') or num_layers,
      relative_attention_num_buckets=hf_config.get('relative_attention_num_buckets', 32),
      relative_attention_max_distance=hf_config.get('relative_attention_max_distance', 128),
      dropout_rate=hf_config.get('dropout_rate', 0.1),
      layer_norm_epsilon=hf_config.get('layer_norm_epsilon', 1e-6),
      feed_forward_proj=feed_forward_proj,
      tie_word_embeddings=tied,
      scale_decoder_outputs=scale,
  ).replace(**overrides)


def _same_tensor(a, b, rows: int = 4096) -> bool:
  """Whether two [vocab, d] tensors are equal, compared a block of rows at a time (a lazy
  tensor is never read whole)."""
  if a.shape != b.shape:
    return False
  block = lambda x, start: (x.block((slice(start, start + rows),)) if streaming.is_lazy(x)
                            else np.asarray(x[start:start + rows]))
  return all(np.array_equal(block(a, start), block(b, start))
             for start in range(0, a.shape[0], rows))


def config_to_hf(config: T5Config) -> dict[str, Any]:
  """An HF config.json dict that transformers 4.x and 5.x both read as this architecture."""
  return {
      'architectures': ['T5ForConditionalGeneration'],
      'model_type': 't5',
      'vocab_size': config.vocab_size,
      'd_model': config.d_model,
      'd_kv': config.d_kv,
      'd_ff': config.d_ff,
      'num_heads': config.num_heads,
      'num_layers': config.num_encoder_layers,
      'num_decoder_layers': config.num_decoder_layers,
      'relative_attention_num_buckets': config.relative_attention_num_buckets,
      'relative_attention_max_distance': config.relative_attention_max_distance,
      'dropout_rate': config.dropout_rate,
      'layer_norm_epsilon': config.layer_norm_epsilon,
      'feed_forward_proj': config.feed_forward_proj,
      'tie_word_embeddings': config.tie_word_embeddings,
      'scale_decoder_outputs': config.scale_decoder_outputs,
      'is_encoder_decoder': True,
      'pad_token_id': 0,
      'eos_token_id': 1,
      'decoder_start_token_id': 0,
  }


# ----------------------------------------------------------------------------- tensors
def _attention_from_hf(state, prefix: str, config: T5Config) -> Params:
  h, k, d = config.num_heads, config.d_kv, config.d_model
  out = {}
  for hf_name, name in _ATTENTION.items():
    weight = state[f'{prefix}.{hf_name}.weight']  # torch Linear: [out, in]
    if hf_name == 'o':
      out[name] = {'kernel': weight.T.reshape(h, k, d)}
    else:
      out[name] = {'kernel': weight.T.reshape(d, h, k)}
  return out


def _mlp_from_hf(state, prefix: str, config: T5Config) -> Params:
  names = ('wi_0', 'wi_1', 'wo') if config.is_gated else ('wi', 'wo')
  return {name: {'kernel': state[f'{prefix}.{name}.weight'].T} for name in names}


def _scale(state, name: str) -> Params:
  return {'scale': state[name]}


# Each stack's sublayers in HF's order: (our norm, our module, HF's module; an HF module named
# DenseReluDense is the MLP, any other attention).
_SUBLAYERS = {
    'encoder': (('pre_attention_layer_norm', 'attention', 'SelfAttention'),
                ('pre_mlp_layer_norm', 'mlp', 'DenseReluDense')),
    'decoder': (('pre_self_attention_layer_norm', 'self_attention', 'SelfAttention'),
                ('pre_cross_attention_layer_norm', 'encoder_decoder_attention',
                 'EncDecAttention'),
                ('pre_mlp_layer_norm', 'mlp', 'DenseReluDense')),
}
_MLP = 'DenseReluDense'


def _stack_from_hf(state, stack: str, num_layers: int, config: T5Config) -> Params:
  relpos = f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight'
  tree = {'relpos_bias': {'rel_embedding': state[relpos].T},
          f'{stack}_norm': _scale(state, f'{stack}.final_layer_norm.weight')}
  for i in range(num_layers):
    layer = {}
    for index, (norm, name, hf_name) in enumerate(_SUBLAYERS[stack]):
      prefix = f'{stack}.block.{i}.layer.{index}'
      layer[norm] = _scale(state, f'{prefix}.layer_norm.weight')
      from_hf = _mlp_from_hf if hf_name == _MLP else _attention_from_hf
      layer[name] = from_hf(state, f'{prefix}.{hf_name}', config)
    tree[f'layers_{i}'] = layer
  return tree


def params_from_hf_state(state: Mapping[str, np.ndarray], config: T5Config) -> Params:
  """HF state dict (numpy, or lazy tensors: `streaming`) -> our unscanned param tree, each
  leaf the HF tensor transposed / reshaped (its dtype kept)."""
  encoder = _stack_from_hf(state, 'encoder', config.num_encoder_layers, config)
  decoder = _stack_from_hf(state, 'decoder', config.num_decoder_layers, config)
  if not config.tie_word_embeddings:
    decoder['logits_dense'] = {'kernel': state['lm_head.weight'].T}
  return {'token_embedder': {'embedding': state['shared.weight']},
          'encoder': encoder, 'decoder': decoder}


def _attention_to_hf(params: Params, prefix: str, config: T5Config) -> dict[str, np.ndarray]:
  inner = config.num_heads * config.d_kv
  out = {}
  for hf_name, name in _ATTENTION.items():
    kernel = np.asarray(params[name]['kernel'])
    flat = kernel.reshape(inner, -1) if hf_name == 'o' else kernel.reshape(-1, inner)
    out[f'{prefix}.{hf_name}.weight'] = flat.T
  return out


def params_to_hf_state(params: Params, config: T5Config) -> dict[str, np.ndarray]:
  """Our unscanned param tree -> an HF state dict (float32, contiguous numpy)."""
  state = {'shared.weight': params['token_embedder']['embedding']}
  for stack, num_layers in (('encoder', config.num_encoder_layers),
                            ('decoder', config.num_decoder_layers)):
    tree = params[stack]
    state[f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight'] = (
        np.asarray(tree['relpos_bias']['rel_embedding']).T)
    state[f'{stack}.final_layer_norm.weight'] = tree[f'{stack}_norm']['scale']
    for i in range(num_layers):
      layer = tree[f'layers_{i}']
      for index, (norm, name, hf_name) in enumerate(_SUBLAYERS[stack]):
        prefix = f'{stack}.block.{i}.layer.{index}'
        state[f'{prefix}.layer_norm.weight'] = layer[norm]['scale']
        if hf_name == _MLP:
          state.update({f'{prefix}.{_MLP}.{mlp}.weight': np.asarray(value['kernel']).T
                        for mlp, value in layer[name].items()})
        else:
          state.update(_attention_to_hf(layer[name], f'{prefix}.{hf_name}', config))
  if not config.tie_word_embeddings:
    state['lm_head.weight'] = np.asarray(params['decoder']['logits_dense']['kernel']).T
  return {name: np.ascontiguousarray(value, np.float32) for name, value in state.items()}


# ----------------------------------------------------------------------------- layouts
def stack_layers(params: Params) -> Params:
  """Unscanned (`layers_0`, `layers_1`, ...) -> scanned (`layers` with a leading axis)."""
  out = {**params}
  for stack in ('encoder', 'decoder'):
    tree = dict(params[stack])
    names = sorted((name for name in tree if name.startswith('layers_')),
                   key=lambda name: int(name.split('_')[1]))
    layers = [tree.pop(name) for name in names]
    tree['layers'] = _tree_map(lambda *xs: streaming.stack(xs), *layers)
    out[stack] = tree
  return out


def unstack_layers(params: Params) -> Params:
  """Scanned -> unscanned numpy (lazy leaves stay lazy); the inverse of `stack_layers`.
  Unscanned trees pass through."""
  params = _tree_map(lambda x: x if streaming.is_lazy(x) else np.asarray(x), params)
  out = {**params}
  for stack in ('encoder', 'decoder'):
    tree = dict(params[stack])
    if 'layers' not in tree:
      continue
    stacked = tree.pop('layers')
    num_layers = next(iter(_flatten(stacked).values())).shape[0]
    for i in range(num_layers):
      tree[f'layers_{i}'] = _tree_map(
          lambda x, i=i: x.layers[i] if streaming.is_lazy(x) else x[i], stacked)
    out[stack] = tree
  return out


def _float32(params: Params) -> Params:
  """Every leaf as float32 numpy (lazy leaves read as float32 when read)."""
  return _tree_map(lambda x: x if streaming.is_lazy(x) else np.asarray(x, np.float32), params)


def _tree_map(fn, *trees):
  if isinstance(trees[0], Mapping):
    return {key: _tree_map(fn, *(tree[key] for tree in trees)) for key in trees[0]}
  return fn(*trees)


# ----------------------------------------------------------------------------- files
def is_local(path_or_hub_id: str) -> bool:
  """Whether a checkpoint name is a local path (a hub id is `owner/name` or a bare name)."""
  return (Path(path_or_hub_id).expanduser().exists() or path_or_hub_id.startswith(('.', '/', '~'))
          or path_or_hub_id.count('/') > 1)


def _resolve_directory(path_or_hub_id: str) -> Path:
  """A local directory as is; otherwise a hub id fetched into the HF cache."""
  path = Path(path_or_hub_id).expanduser()
  if path.is_dir():
    return path
  if is_local(path_or_hub_id):
    raise CheckpointError(f'{path_or_hub_id} is not a directory holding a T5 checkpoint.')
  import huggingface_hub  # pylint: disable=import-outside-toplevel
  try:
    return Path(huggingface_hub.snapshot_download(
        path_or_hub_id, allow_patterns=['config.json', '*.safetensors', '*.safetensors.index.json',
                                        'pytorch_model.bin']))
  except Exception as error:  # the hub client raises many types; all mean "not fetched"
    raise CheckpointError(
        f'{path_or_hub_id!r} is not a local directory, and fetching it from the Hugging Face hub '
        f'failed ({type(error).__name__}: {error}). Pass a directory with config.json and '
        f'{" or ".join(_WEIGHT_FILES)}, or go online (HF_HUB_OFFLINE unset).') from error


def read_state(directory: Path, lazy: bool = False) -> dict[str, np.ndarray]:
  """All tensors of the checkpoint in `directory`, as numpy arrays (with `lazy`, safetensors
  tensors as `streaming.LazyTensor`s: nothing read yet)."""
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  if lazy:
    tensors = streaming.lazy_tensors(directory, 'model.safetensors',
                                     'model.safetensors.index.json')
    if tensors is not None:
      return tensors
  if (directory / 'model.safetensors').exists():
    return load_file(directory / 'model.safetensors')
  index_file = directory / 'model.safetensors.index.json'
  if index_file.exists():
    shards = sorted(set(json.loads(index_file.read_text())['weight_map'].values()))
    state = {}
    for shard in shards:
      state.update(load_file(directory / shard))
    return state
  if (directory / 'pytorch_model.bin').exists():
    import torch  # pylint: disable=import-outside-toplevel
    state = torch.load(directory / 'pytorch_model.bin', map_location='cpu', weights_only=True)
    return {name: tensor.float().numpy() for name, tensor in state.items()}
  present = sorted(p.name for p in directory.iterdir())[:20]
  raise CheckpointError(
      f'No T5 weights in {directory}: expected one of {", ".join(_WEIGHT_FILES)}; found '
      f'{present or "an empty directory"}.')


def _check_shapes(params: Params, config: T5Config, directory: Path):
  """Every tensor has the shape its config implies; names the first that does not."""
  import jax  # pylint: disable=import-outside-toplevel
  expected = _expected_shapes(config.replace(scan_layers=False))
  got = jax.tree_util.tree_flatten_with_path(params)[0]
  want = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
  for path, value in got:
    if tuple(value.shape) != tuple(want[path].shape):
      name = '/'.join(str(getattr(key, 'key', key)) for key in path)
      raise CheckpointError(
          f'{directory}: tensor for {name} has shape {tuple(value.shape)}, but config.json '
          f'(d_model={config.d_model}, num_heads={config.num_heads}, d_kv={config.d_kv}, '
          f'd_ff={config.d_ff}, vocab_size={config.vocab_size}) implies {tuple(want[path].shape)}. '
          'The weights and config.json come from different models.')


def _expected_shapes(config: T5Config) -> Params:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from t5prompt.models.t5 import T5  # pylint: disable=import-outside-toplevel
  tokens = jnp.ones((1, 1), jnp.int32)
  shapes = jax.eval_shape(lambda: T5(config).init(jax.random.key(0), tokens, tokens))
  # `.value`, not nn.unbox: under an active mesh unbox would add sharding constraints.
  return jax.tree.map(lambda boxed: boxed.value, shapes['params'],
                      is_leaf=lambda x: isinstance(x, nn.Partitioned))


def load_hf(path_or_hub_id: str, lazy: bool = False,
            **config_overrides) -> tuple[T5Config, Params]:
  """Reads a Hugging Face T5 checkpoint into `(config, params)` in our tree.

  `config_overrides` set fields of our config that HF does not have (dtype, scan_layers,
  remat_policy). Params are float32 numpy arrays, stacked when `scan_layers` (the default);
  with `lazy` (safetensors), unread `streaming` leaves that placing the params reads.
  """
  directory = _resolve_directory(str(path_or_hub_id))
  config_file = directory / 'config.json'
  if not config_file.exists():
    raise CheckpointError(
        f'No config.json in {directory}: a Hugging Face T5 checkpoint directory holds '
        f'config.json and one of {", ".join(_WEIGHT_FILES)}.')
  hf_config = json.loads(config_file.read_text())
  if hf_config.get('model_type', 't5') != 't5':
    raise CheckpointError(f'{config_file} describes a {hf_config["model_type"]!r} model, not T5.')
  state = read_state(directory, lazy)
  config = config_from_hf(hf_config, state, **config_overrides)
  try:
    params = _float32(params_from_hf_state(state, config))
  except KeyError as error:
    raise CheckpointError(
        f'{directory}: tensor {error.args[0]} is missing; config.json describes a '
        f'{config.num_encoder_layers}+{config.num_decoder_layers}-layer '
        f'{config.feed_forward_proj} T5.') from error
  _check_shapes(params, config, directory)
  if config.scan_layers:
    params = stack_layers(params)
  return config, params


def save_hf(directory: str | os.PathLike, config: T5Config, params: Params) -> Path:
  """Writes `config.json` + `model.safetensors` that transformers loads as the same model."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  state = params_to_hf_state(unstack_layers(params), config)
  tmp = directory / 'model.safetensors.tmp'
  save_file(state, tmp, metadata={'format': 'pt'})
  os.replace(tmp, directory / 'model.safetensors')
  (directory / 'config.json').write_text(json.dumps(config_to_hf(config), indent=2) + '\n')
  return directory




# ----------------------------------------------------------------------------- our format
T5PROMPT_CONFIG = 't5prompt_config.json'
VOCABULARY_FILE = 'spiece.model'  # as Hugging Face names a T5's SentencePiece model
T5PROMPT_PARAMS = 'params.safetensors'


def params_hash(params: Params) -> str:
  """sha256 over every leaf's path, shape, dtype and bytes of the unscanned tree: the
  backbone's identity, the same for either layout."""
  import hashlib  # pylint: disable=import-outside-toplevel
  digest = hashlib.sha256()
  for name, value in sorted(_flatten(unstack_layers(params)).items()):
    value = np.ascontiguousarray(value)
    digest.update(f'{name}:{value.shape}:{value.dtype}'.encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def _flatten(tree: Params, prefix: str = '') -> dict[str, np.ndarray]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flatten(value, f'{prefix}{key}/'))
    else:
      out[f'{prefix}{key}'] = value if streaming.is_lazy(value) else np.asarray(value)
  return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> Params:
  tree: Params = {}
  for name, value in flat.items():
    *parents, leaf = name.split('/')
    node = tree
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = value
  return tree


def save_t5prompt(directory: str | os.PathLike, config: T5Config, params: Params,
                  vocabulary_file: str | os.PathLike | None = None) -> str:
  """Writes params (T5X names, unscanned) + config, and the backbone's SentencePiece model as
  `spiece.model` when it has its own; returns the content hash."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  if vocabulary_file and Path(vocabulary_file).resolve() != (directory / VOCABULARY_FILE).resolve():
    shutil.copyfile(vocabulary_file, directory / VOCABULARY_FILE)
  params = unstack_layers(params)
  digest = params_hash(params)
  tmp = directory / (T5PROMPT_PARAMS + '.tmp')
  save_file({k: np.ascontiguousarray(v) for k, v in _flatten(params).items()}, tmp,
            metadata={'params_hash': digest})
  os.replace(tmp, directory / T5PROMPT_PARAMS)
  record = {'config': dataclasses.asdict(config), 'params_hash': digest}
  (directory / T5PROMPT_CONFIG).write_text(json.dumps(record, indent=2) + '\n')
  return digest


def load_backbone(path_or_hub_id: str, lazy: bool = False,
                  **config_overrides) -> tuple[T5Config, Params]:
  """A t5prompt directory (from `save_t5prompt`) or anything `load_hf` reads; with `lazy`,
  its safetensors tensors unread (`streaming`)."""
  directory = Path(str(path_or_hub_id)).expanduser()
  if not (directory / T5PROMPT_CONFIG).exists():
    return load_hf(path_or_hub_id, lazy, **config_overrides)
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  record = json.loads((directory / T5PROMPT_CONFIG).read_text())
  config = T5Config(**record['config']).replace(**config_overrides)
  flat = (streaming.lazy_tensors(directory, T5PROMPT_PARAMS, '') if lazy
          else load_file(directory / T5PROMPT_PARAMS))
  params = _float32(_unflatten(flat))
  _check_shapes(params, config, directory)
  if config.scan_layers:
    params = stack_layers(params)
  return config, params


def convert_checkpoint(source: str, output: str | os.PathLike, output_format: str) -> str:
  """`t5prompt convert`: a checkpoint to t5prompt's format ('t5prompt') or an HF directory
  ('hf'); returns what was written, with the content hash."""
  config, params = load_backbone(source, scan_layers=False)
  if output_format == 'hf':
    save_hf(output, config, params)
    digest = params_hash(params)
  else:
    digest = save_t5prompt(output, config, params)
  return (f'wrote {output_format} checkpoint to {output}\n'
          f'  {config.feed_forward_proj}, d_model={config.d_model}, '
          f'layers={config.num_encoder_layers}+{config.num_decoder_layers}, '
          f'tied head={config.tie_word_embeddings}\n  params_hash={digest}')
