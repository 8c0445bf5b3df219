"""Key/value prefixes at every attention layer: prefix tuning and deep prompt tuning.

* Prefix tuning (Li & Liang 2021): the prefixes come from a small MLP over a [P, d_model]
  matrix (`reparam_hidden` > 0): `tanh(E W1 + b1) W2 + b2`, one output block per attention kind
  and layer. The MLP exists for training stability only: `fold` computes its output once and
  returns the direct params, so inference runs the same `Prefix` without it.
* Deep prompt tuning / P-tuning v2 (Liu et al. 2022): the prefixes are trained directly
  (`reparam_hidden` = 0), optionally with a different length per layer (`layer_lengths`; shorter
  layers are left-padded to the longest and masked).

Prefixes are projected keys/values ([layers, P, heads, d_kv], the layout of a KV cache), so they
cost no projection. They sit at positions 0..P-1 before the sequence, where T5's relative
position bias (and PEFT's past_key_values on the PyTorch T5) place a past.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from t5prompt.models.sizes import T5Config
from t5prompt.models.t5 import PrefixKV

# Attention kinds a prefix can join (T5's three kinds of attention layer).
ATTENTION_KINDS = ('encoder', 'decoder_self', 'decoder_cross')
# Logical axes: per-layer prefixes follow the backbone's 'layers' and 'heads' axes, so their
# shards sit with the key/value activations they join.
PREFIX_AXES = ('layers', 'prefix', 'heads', 'kv')
_NEG_INF = np.float32(-1e10)


def torch_linear_init(fan_in: int):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), torch.nn.Linear's default for weights and biases."""
  bound = fan_in ** -0.5

  def init(rng, shape, dtype=jnp.float32):
    return jax.random.uniform(rng, shape, dtype, -bound, bound)
  return init


def num_layers(config: T5Config, kind: str) -> int:
  return config.num_encoder_layers if kind == 'encoder' else config.num_decoder_layers


def check_prefix_options(config: T5Config, length: int, attention, layer_lengths) -> None:
  """Raises ValueError naming the bad option (used by the module and by config validation)."""
  if not attention or any(kind not in ATTENTION_KINDS for kind in attention):
    raise ValueError(f'prompt.attention must name some of {ATTENTION_KINDS}, got {attention}.')
  if layer_lengths:
    for kind in attention:
      if len(layer_lengths) != num_layers(config, kind):
        raise ValueError(f'prompt.layer_lengths has {len(layer_lengths)} entries but the '
                         f'{kind} stack has {num_layers(config, kind)} layers; give one length '
                         'per layer.')
    if min(layer_lengths) < 0 or max(layer_lengths) <= 0:
      raise ValueError(f'prompt.layer_lengths must be >= 0 with one > 0, got {layer_lengths}.')
  elif length <= 0:
    raise ValueError(f'The prefix length must be positive, got {length}.')


class Prefix(nn.Module):
  """() -> {kind: PrefixKV} for each attention kind in `attention`.

  Params (under the model's top-level `prefix/`):
    direct (reparam_hidden = 0): `<kind>_key`, `<kind>_value` [layers, P, heads, d_kv];
    prefix tuning: `embedding` [P, d_model], `mlp_in` [d_model, H] + `mlp_in_bias` [H],
      and per kind `<kind>_out` [H, layers, 2, heads, d_kv] + `<kind>_out_bias` (2 = key/value).
  """
  config: T5Config
  length: int
  attention: tuple[str, ...] = ATTENTION_KINDS
  layer_lengths: tuple[int, ...] = ()  # deep prompts: one length per layer; () = `length`
  reparam_hidden: int = 0

  @property
  def max_length(self) -> int:
    return max(self.layer_lengths) if self.layer_lengths else self.length

  def _padding_bias(self, kind: str) -> jax.Array:
    layers = num_layers(self.config, kind)
    lengths = np.array(self.layer_lengths or (self.length,) * layers)
    used = np.arange(self.max_length)[None, :] >= self.max_length - lengths[:, None]
    return jnp.asarray(np.where(used, 0, _NEG_INF), jnp.float32)  # [layers, P]

  @nn.compact
  def __call__(self) -> dict[str, PrefixKV]:
    config = self.config
    check_prefix_options(config, self.length, self.attention, self.layer_lengths)
    if self.reparam_hidden and self.layer_lengths:
      raise ValueError('Per-layer prompt lengths are for deep prompt tuning (no MLP); prefix '
                       'tuning uses one length.')
    length, heads, d_kv = self.max_length, config.num_heads, config.d_kv
    partitioned = nn.with_logical_partitioning
    if self.reparam_hidden:
      embedding = self.param('embedding', partitioned(nn.initializers.normal(1.0),
                                                      ('prompt', 'prompt_embed')),
                             (length, config.d_model))
      w_in = self.param('mlp_in', partitioned(torch_linear_init(config.d_model),
                                              ('prompt_embed', 'prefix_mlp')),
                        (config.d_model, self.reparam_hidden))
      b_in = self.param('mlp_in_bias', partitioned(torch_linear_init(config.d_model),
                                                   ('prefix_mlp',)), (self.reparam_hidden,))
      hidden = jnp.tanh(embedding @ w_in + b_in)  # [P, H]
    prefixes = {}
    for kind in self.attention:
      layers = num_layers(config, kind)
      if self.reparam_hidden:
        out_init = torch_linear_init(self.reparam_hidden)
        w_out = self.param(f'{kind}_out', partitioned(
            out_init, ('prefix_mlp', 'layers', None, 'heads', 'kv')),
                           (self.reparam_hidden, layers, 2, heads, d_kv))
        b_out = self.param(f'{kind}_out_bias', partitioned(
            out_init, ('layers', None, 'heads', 'kv')), (layers, 2, heads, d_kv))
        key_value = jnp.einsum('pm,mlzhk->lzphk', hidden, w_out) + b_out[:, :, None]
        key, value = key_value[:, 0], key_value[:, 1]
      else:
        shape = (layers, length, heads, d_kv)
        key = self.param(f'{kind}_key', partitioned(nn.initializers.normal(1.0), PREFIX_AXES),
                         shape)
        value = self.param(f'{kind}_value', partitioned(nn.initializers.normal(1.0),
                                                        PREFIX_AXES), shape)
      key = nn.with_logical_constraint(key, PREFIX_AXES)
      value = nn.with_logical_constraint(value, PREFIX_AXES)
      prefixes[kind] = PrefixKV(key, value, self._padding_bias(kind))
    return prefixes

  def folded(self, params: dict) -> tuple['Prefix', dict]:
    """Prefix tuning's MLP computed away: (direct module, its params) with identical prefixes;
    direct prefixes as they are. `params` is the module's own subtree (`params['prefix']`)."""
    if not self.reparam_hidden:
      return self, params
    prefixes = self.clone(parent=None).apply({'params': params})
    folded = {}
    for kind, prefix in prefixes.items():
      folded[f'{kind}_key'] = prefix.key
      folded[f'{kind}_value'] = prefix.value
    return self.clone(reparam_hidden=0, parent=None), folded
