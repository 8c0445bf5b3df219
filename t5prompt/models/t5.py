"""The Flax (linen) T5 encoder-decoder, v1.0 and v1.1 / LM-adapted.

Parameter names follow T5X (`encoder/layers_0/attention/query/kernel`, ...; with `scan_layers`
one stacked `encoder/layers/...` subtree with a leading `layers` axis). Every parameter is
created with logical axis names and the main activations are constrained by name, so
`t5prompt.partitioning` can shard them by rules. Numerics mirror transformers' PyTorch
`T5ForConditionalGeneration`: no attention scaling, RMS norm in float32, relative position
buckets computed in float32 exactly as the reference does, bias shared across layers.

Shapes: b = batch, l = length (q/k: query/key length), d = d_model, h = heads, k = d_kv,
f = d_ff, v = vocab.
"""

import functools
import math
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t5prompt.models.dropout import Dropout
from t5prompt.models.sizes import T5Config

Array = jax.Array
_NEG_INF = np.float32(-1e10)


class PrefixKV(NamedTuple):
  """Key/value prefixes of one attention kind, one row per layer (prefix / deep prompt tuning).

  key, value: [layers, P, heads, d_kv], already projected (they join the projected keys and
  values). bias: [layers, P], 0 where a layer uses the position and -1e10 where it is padding
  (layers with shorter prompts are left-padded to P, so their prompt stays next to the text).
  The prefix occupies positions 0..P-1 before the sequence, as a past does in a KV cache; the
  relative position bias sees it there.
  """
  key: jax.Array
  value: jax.Array
  bias: jax.Array


def relative_position_buckets(query_length: int, key_length: int, *, bidirectional: bool,
                              num_buckets: int, max_distance: int,
                              query_offset: int = 0) -> np.ndarray:
  """Bucket index of every (query, key) pair: int array [query_length, key_length].

  Queries sit at positions query_offset.. (after a prefix of that length), keys at 0...
  Computed with NumPy at trace time (lengths are static) in float32, the same operations as
  the reference implementation, so the buckets agree exactly at the logarithmic boundaries.
  """
  query_position = np.arange(query_offset, query_offset + query_length)[:, None]
  key_position = np.arange(key_length)[None, :]
  relative_position = key_position - query_position
  buckets = np.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    buckets += (relative_position > 0).astype(buckets.dtype) * num_buckets
    distance = np.abs(relative_position)
  else:
    distance = -np.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  # Distances below max_exact get their own bucket; the rest share log-spaced buckets.
  # np.maximum(., 1) only avoids log(0) on entries that take the exact branch anyway.
  log_ratio = np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
  scaled = log_ratio / np.float32(math.log(max_distance / max_exact))
  large = max_exact + (scaled * np.float32(num_buckets - max_exact)).astype(np.int64)
  large = np.minimum(large, num_buckets - 1)
  return buckets + np.where(distance < max_exact, distance, large)


def einsum(spec: str, a: Array, b: Array, dtype, b_prerounded: bool = False) -> Array:
  """A two-operand einsum with its operands in `dtype`, accumulated and returned in float32.

  In float32 it is `jnp.einsum`, except that on CPU a kernel's gradient (model tuning's) is one
  row-major matmul over a transposed copy (`_float32_einsum_with_kernel`). In a lower precision
  the backward's matmuls also take `dtype` operands (the cotangent is cast, as T5X/MaxText do),
  with float32 accumulation: XLA's CPU backend runs bf16 x bf16 -> f32 dots on the native bf16
  units (AMX/AVX512-BF16) but converts a bf16-output dot, or one with a float32 operand, to a
  float32 dot. On a CPU without such units the rounded operands are multiplied as float32
  (`native_low_precision_dots`); there a `b_prerounded` `b` (a frozen kernel rounded once and
  kept in float32: `build` decides, and sets `T5Config.prerounded_kernels`) is taken as it is.
  """
  if jnp.dtype(dtype) == jnp.float32:
    if _weight_layout(spec) == 'kernel' and jax.default_backend() == 'cpu':
      return _float32_einsum_with_kernel(spec, a, b)
    return jnp.einsum(spec, a, b)
  if b_prerounded:
    return _low_precision_einsum(spec, a.astype(dtype), b)
  return _low_precision_einsum(spec, a.astype(dtype), b.astype(dtype))


@functools.cache
def native_low_precision_dots() -> bool:
  """Whether bf16 x bf16 -> f32 dots run on native units: GPU/TPU, or a CPU with AMX,
  AVX512-BF16 or (Arm) BF16. Elsewhere XLA emulates them; a float32 dot of the same rounded
  operands gives the same numbers (bf16 products are exact in float32) up to summation order,
  faster: a Small bf16 step on an AVX2-only CPU takes 3.07 s so, 3.84 s emulated."""
  if jax.default_backend() != 'cpu':
    return True
  try:
    flags = set(Path('/proc/cpuinfo').read_text().split())
  except OSError:  # not Linux: leave the dots to XLA
    return True
  return bool(flags & {'amx_bf16', 'avx512_bf16', 'bf16'})


def _operand_specs(spec: str) -> tuple[str, str, str]:
  """'ab,bc->ac' -> ('ab', 'bc', 'ac')."""
  inputs, out_spec = spec.split('->')
  a_spec, b_spec = inputs.split(',')
  return a_spec, b_spec, out_spec


def _float32_accumulating_einsum(spec: str, a: Array, b: Array) -> Array:
  """`spec` as one float32-accumulating dot_general with `a` laid out [batch, free, contracted]
  and `b` [batch, contracted, free] or, when it is stored so (a kernel in the backward),
  [batch, free, contracted]; the result is transposed to the output's order.

  Two-operand specs whose indices each appear in at least two of a, b and the output. XLA's
  CPU runtime has no mixed-precision kernel for a dot with a transposed left operand, which
  `jnp.einsum` may emit ("Unsupported element type for DotThunk: BF16 x BF16 = F32"); a
  transposed right operand is supported, so a kernel is used as stored, not copied each step.
  """
  a_spec, b_spec, out_spec = _operand_specs(spec)
  if not native_low_precision_dots():
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  batch = [c for c in a_spec if c in b_spec and c in out_spec]
  contracted = [c for c in a_spec if c in b_spec and c not in out_spec]
  free_a = [c for c in a_spec if c not in b_spec]
  free_b = [c for c in b_spec if c not in a_spec]
  b_transposed = list(b_spec) == batch + free_b + contracted
  a = jnp.transpose(a, [a_spec.index(c) for c in batch + free_a + contracted])
  b_order = batch + free_b + contracted if b_transposed else batch + contracted + free_b
  b = jnp.transpose(b, [b_spec.index(c) for c in b_order])
  num_batch, num_contracted = len(batch), len(contracted)
  b_contracted = b_order.index(contracted[0]) if contracted else num_batch
  out = jax.lax.dot_general(
      a, b, ((tuple(range(a.ndim - num_contracted, a.ndim)),
              tuple(range(b_contracted, b_contracted + num_contracted))),
             (tuple(range(num_batch)), tuple(range(num_batch)))),
      preferred_element_type=jnp.float32)
  order = batch + free_a + free_b
  return jnp.transpose(out, [order.index(c) for c in out_spec])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _low_precision_einsum(spec: str, a: Array, b: Array) -> Array:
  return _float32_accumulating_einsum(spec, a, b)


def _low_precision_einsum_fwd(spec, a, b):
  return _low_precision_einsum(spec, a, b), (a, b)


def _low_precision_einsum_bwd(spec, operands, cotangent):
  # Every index of an operand appears in the other operand or the output (true of all the
  # model's einsums), so each operand's gradient is one einsum of the cotangent with the other.
  a, b = operands
  a_spec, b_spec, out_spec = _operand_specs(spec)
  low = cotangent.astype(a.dtype)
  grad_a = _float32_accumulating_einsum(f'{out_spec},{b_spec}->{a_spec}', low, b)
  if _weight_layout(spec) and jax.default_backend() == 'cpu':
    # `b` is a weight: its gradient sums over the batch, a float32 matmul (XLA's CPU runtime has
    # no bf16 x bf16 -> f32 kernel for the dot left to it), row-major (`_weight_gradient`). Only
    # model tuning takes it (a frozen weight's gradient is never used).
    grad_b = _weight_gradient(spec, a.astype(jnp.float32), cotangent, b.shape)
  else:
    grad_b = _float32_accumulating_einsum(f'{out_spec},{a_spec}->{b_spec}', low, a)
  return grad_a.astype(a.dtype), grad_b.astype(b.dtype)


_low_precision_einsum.defvjp(_low_precision_einsum_fwd, _low_precision_einsum_bwd)


# A weight's gradient sums over the batch rows: left to XLA, a dot contracting its left operand's
# leading dim, which the CPU runtime runs at about half the rate of a row-major one (40 vs 75
# GFLOP/s for Small's [1024, 512] x [1024, 1024] on one Zen 3 core). So on CPU it is one
# row-major matmul [k, rows] x [rows, n] over a transposed copy of one operand (the copy costs a
# few percent of the matmul). The model's weights are [in, out] kernels ('...y,yz->...z') and
# the tied embedding ('bld,vd->blv'): the batch dims lead `a` and the output. In float32 only
# kernels (a JVP rule: XLA turns the embedding's [d, v] gradient back into the slow dot).


def _num_batch(spec: str) -> int:
  """How many leading dims of `a` (and of the output) a weight's gradient sums over."""
  a_spec, b_spec, _ = _operand_specs(spec)
  return sum(c not in b_spec for c in a_spec)


def _weight_layout(spec: str) -> str | None:
  """'kernel' where `b` is a weight [k..., n...], 'embedding' where it is one [n..., k...] (the
  tied embedding), None where it is not a weight (it has the batch index)."""
  a_spec, b_spec, out_spec = _operand_specs(spec)
  if a_spec[0] != out_spec[0] or a_spec[0] in b_spec:
    return None
  num_batch = _num_batch(spec)
  if b_spec == a_spec[num_batch:] + out_spec[num_batch:]:
    return 'kernel'
  assert b_spec == out_spec[num_batch:] + a_spec[num_batch:], spec
  return 'embedding'


def _rows(x: Array, num_batch: int) -> Array:
  """x [batch..., rest...] -> [batch rows, rest]."""
  return x.reshape(math.prod(x.shape[:num_batch]), -1)


def _transposed_copy(x: Array) -> Array:
  # The barrier keeps XLA from folding the transpose back into a dot's dimension numbers.
  return jax.lax.optimization_barrier(x.T)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _float32_einsum_with_kernel(spec: str, a: Array, b: Array) -> Array:
  return jnp.einsum(spec, a, b)


@functools.partial(_float32_einsum_with_kernel.defjvp, symbolic_zeros=True)
def _float32_einsum_with_kernel_jvp(spec, primals, tangents):
  """A kernel's tangent term reads `a` as a transposed copy, so that its transpose (the kernel's
  gradient under `jax.grad`) is the row-major matmul. A JVP rule, not a VJP one: AutoPrompt's
  search takes forward-mode derivatives through the model. A frozen weight (a symbolic-zero
  tangent) adds no term and no copy."""
  a, b = primals
  a_dot, b_dot = tangents
  out = jnp.einsum(spec, a, b)
  terms = []
  if not isinstance(a_dot, jax.custom_derivatives.SymbolicZero):
    terms.append(jnp.einsum(spec, a_dot, b))
  if not isinstance(b_dot, jax.custom_derivatives.SymbolicZero):
    num_batch = _num_batch(spec)
    a_transposed = _transposed_copy(_rows(a, num_batch))  # [k, rows]
    kernel = b_dot.reshape(a_transposed.shape[0], -1)  # [k, n]
    terms.append(jax.lax.dot_general(a_transposed, kernel, (((0,), (0,)), ((), ())))
                 .reshape(out.shape))
  return out, sum(terms[1:], terms[0])


def _weight_gradient(spec: str, a: Array, cotangent: Array, shape) -> Array:
  """The gradient of the weight `b` [shape] of `spec` on CPU as the row-major matmul (the bf16
  mode's backward)."""
  num_batch = _num_batch(spec)
  a_rows, cotangent_rows = _rows(a, num_batch), _rows(cotangent, num_batch)
  if _weight_layout(spec) == 'kernel':
    return (_transposed_copy(a_rows) @ cotangent_rows).reshape(shape)
  return (_transposed_copy(cotangent_rows) @ a_rows).reshape(shape)


def _fan_in(scale: float, distribution: str, contract_dims: int, ndim: int) -> Callable:
  """T5X's kernel init: variance `scale / fan_in` over the contracted (input) dims of a kernel
  [*inputs, *outputs] (T5X draws it on the flattened 2-D kernel: the same fan-in)."""
  return nn.initializers.variance_scaling(
      scale, 'fan_in', distribution, in_axis=tuple(range(contract_dims)),
      out_axis=tuple(range(contract_dims, ndim)))


class RMSNorm(nn.Module):
  """T5's layer norm: scale only, no mean subtraction, no bias; statistics in float32."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones, ('embed',)),
                       (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    normed = x32 * jax.lax.rsqrt(variance + self.config.layer_norm_epsilon)
    return (normed * scale).astype(self.config.compute_dtype)


class DenseGeneral(nn.Module):
  """A bias-free projection whose kernel keeps its logical axes (e.g. embed x heads x kv).

  Initialised as T5X: variance `init_scale / fan_in`, 'normal' for attention (T5X's
  MultiHeadDotProductAttention), 'truncated_normal' for the MLP and the LM head (its DenseGeneral).
  """
  features: tuple[int, ...]
  kernel_axes: tuple[str, ...]
  contract_dims: int
  dtype: Any
  init_scale: float = 1.0
  distribution: str = 'truncated_normal'
  prerounded: bool = False  # the kernel arrives holding `dtype`'s values (`einsum`)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_shape = x.shape[x.ndim - self.contract_dims:]
    shape = (*in_shape, *self.features)
    init = _fan_in(self.init_scale, self.distribution, self.contract_dims, len(shape))
    kernel = self.param('kernel', nn.with_logical_partitioning(init, self.kernel_axes), shape,
                        jnp.float32)
    # One 2-D matmul over the flattened input and output dims (free reshapes). A dot with
    # several contracted or output dims is canonicalised by XLA with a transposed copy of the
    # kernel in the backward, every step (measured on CPU: 6% of an fp32 step at Small).
    batch_shape = x.shape[:x.ndim - self.contract_dims]
    batch = 'abcdefghijklmnopqrstuvwx'[:len(batch_shape)]
    flat = einsum(f'{batch}y,yz->{batch}z', x.reshape(*batch_shape, math.prod(in_shape)),
                  kernel.reshape(math.prod(in_shape), math.prod(self.features)), self.dtype,
                  b_prerounded=self.prerounded)
    return flat.reshape(*batch_shape, *self.features).astype(self.dtype)


class RelativePositionBias(nn.Module):
  """One [heads, buckets] table per stack, shared by all its layers (as in T5)."""
  config: T5Config
  bidirectional: bool

  @nn.compact
  def __call__(self, query_length: int, key_length: int, query_offset: int = 0) -> Array:
    config = self.config
    table = self.param(
        'rel_embedding',
        # T5X: variance scaling over the average of heads and buckets, uniform.
        nn.with_logical_partitioning(nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform'),
                                     ('heads', 'relpos_buckets')),
        (config.num_heads, config.relative_attention_num_buckets), jnp.float32)
    buckets = relative_position_buckets(
        query_length, key_length, bidirectional=self.bidirectional,
        num_buckets=config.relative_attention_num_buckets,
        max_distance=config.relative_attention_max_distance, query_offset=query_offset)
    return jnp.take(table, buckets, axis=1)[None].astype(config.compute_dtype)  # [1, h, q, k]


class Attention(nn.Module):
  """Multi-head dot-product attention without logit scaling (folded into T5's init).

  With `decode`, keys and values live in the 'cache' collection: self-attention adds one
  position per call; cross-attention (`cross`) projects the encoder output once, when the
  cache is created, and reuses it at every step. A `prefix` (this layer's slice of a `PrefixKV`)
  is joined in front of the keys and values after projection and caching, so the cache holds
  only real positions; `bias` then already has P + k columns.
  """
  config: T5Config
  decode: bool = False
  cross: bool = False
  deterministic: bool = True

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array, bias: Array,
               prefix: Optional[PrefixKV] = None) -> Array:
    """inputs_q [b, q, d], inputs_kv [b, k, d], bias [b|1, h, q, P + k] (mask folded in)."""
    config = self.config
    heads, d_kv, d_model = config.num_heads, config.d_kv, config.d_model
    projection = dict(features=(heads, d_kv), kernel_axes=('embed', 'heads', 'kv'),
                      contract_dims=1, dtype=config.compute_dtype, distribution='normal',
                      prerounded=config.prerounded_kernels)
    # T5 folds the 1/sqrt(d_kv) of dot-product attention into the query's init.
    query = DenseGeneral(**projection, init_scale=1 / d_kv, name='query')(inputs_q)
    query = nn.with_logical_constraint(query, ('batch', 'length', 'heads', 'kv'))

    def project_kv():
      key = DenseGeneral(**projection, name='key')(inputs_kv)
      value = DenseGeneral(**projection, name='value')(inputs_kv)
      return (nn.with_logical_constraint(key, ('batch', 'length', 'heads', 'kv')),
              nn.with_logical_constraint(value, ('batch', 'length', 'heads', 'kv')))

    if self.decode and self.cross:
      key, value = self._cached_cross_kv(project_kv)
    else:
      key, value = project_kv()
    if self.decode and not self.cross:
      key, value, bias = self._update_cache(key, value, bias)
    if prefix is not None:
      key, value, bias = _join_prefix(prefix, key, value, bias)

    logits = einsum('bqhk,bthk->bhqt', query, key, config.compute_dtype) + bias
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(config.compute_dtype)
    weights = Dropout(config.dropout_rate)(weights, self.deterministic)
    mixed = einsum('bhqt,bthk->bqhk', weights, value, config.compute_dtype)
    mixed = mixed.astype(config.compute_dtype)
    mixed = nn.with_logical_constraint(mixed, ('batch', 'length', 'heads', 'kv'))
    return DenseGeneral(features=(d_model,), kernel_axes=('heads', 'kv', 'embed'), contract_dims=2,
                        dtype=config.compute_dtype, distribution='normal',
                        prerounded=config.prerounded_kernels, name='out')(mixed)

  def _cached_cross_kv(self, project_kv):
    """Encoder keys/values: projected when the cache is created, read back afterwards."""
    if self.has_variable('cache', 'cached_key'):
      return self.get_variable('cache', 'cached_key'), self.get_variable('cache', 'cached_value')
    key, value = project_kv()
    self.put_variable('cache', 'cached_key', key)
    self.put_variable('cache', 'cached_value', value)
    return key, value

  def _update_cache(self, key: Array, value: Array, bias: Array):
    """Writes this step's key/value at the cache index; returns the full cache and bias row.

    On the first call (cache creation) the inputs have the full decode length and pass
    through unchanged; afterwards each call brings one position.
    """
    initialized = self.has_variable('cache', 'cached_key')
    cached_key = self.variable('cache', 'cached_key', jnp.zeros, key.shape, key.dtype)
    cached_value = self.variable('cache', 'cached_value', jnp.zeros, value.shape, value.dtype)
    cache_index = self.variable('cache', 'cache_index', lambda: jnp.array(0, jnp.int32))
    if not initialized:
      return key, value, bias
    _, max_length, heads, _ = cached_key.value.shape
    if key.shape[1] != 1:
      raise ValueError(f'Cached decoding takes one position per call, got {key.shape[1]}.')
    index = cache_index.value
    key = jax.lax.dynamic_update_slice(cached_key.value, key, (0, index, 0, 0))
    value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, index, 0, 0))
    cached_key.value, cached_value.value, cache_index.value = key, value, index + 1
    # `bias` is [1, h, L, P + L] for the full decode length (P prefix columns first): take the
    # row of this position and mask the cache positions not yet written.
    num_columns = bias.shape[-1]
    bias = jax.lax.dynamic_slice(bias, (0, 0, index, 0), (1, heads, 1, num_columns))
    visible = jnp.arange(num_columns) <= index + num_columns - max_length
    return key, value, bias + jnp.where(visible, 0, _NEG_INF).astype(bias.dtype)


def _join_prefix(prefix: PrefixKV, key: Array, value: Array, bias: Array):
  """Prefix keys/values (shared by the batch) in front of the layer's own; the prefix's padding
  mask added to the first P bias columns."""
  batch = key.shape[0]
  prefix_key = jnp.broadcast_to(prefix.key.astype(key.dtype)[None], (batch, *prefix.key.shape))
  prefix_value = jnp.broadcast_to(prefix.value.astype(value.dtype)[None],
                                  (batch, *prefix.value.shape))
  columns = jnp.concatenate([prefix.bias, jnp.zeros(key.shape[1], prefix.bias.dtype)])
  return (jnp.concatenate([prefix_key, key], axis=1),
          jnp.concatenate([prefix_value, value], axis=1), bias + columns.astype(bias.dtype))


class Mlp(nn.Module):
  """T5's feed-forward block: ReLU (v1.0) or gated GELU, tanh approximation (v1.1)."""
  config: T5Config
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    config = self.config
    dense = dict(kernel_axes=('embed', 'mlp'), contract_dims=1, dtype=config.compute_dtype,
                 features=(config.d_ff,), prerounded=config.prerounded_kernels)
    if config.is_gated:
      gate = nn.gelu(DenseGeneral(**dense, name='wi_0')(x), approximate=True)
      hidden = gate * DenseGeneral(**dense, name='wi_1')(x)
    else:
      gate = hidden = nn.relu(DenseGeneral(**dense, name='wi')(x))
    # Which feed-forward neurons fire (kept only when 'intermediates' is mutable): the
    # activated-neuron prompt similarity of Su et al. 2022 reads it.
    self.sow('intermediates', 'activated', gate > 0)
    hidden = nn.with_logical_constraint(hidden, ('batch', 'length', 'mlp'))
    hidden = Dropout(config.dropout_rate)(hidden, self.deterministic)
    return DenseGeneral(features=(config.d_model,), kernel_axes=('mlp', 'embed'), contract_dims=1,
                        dtype=config.compute_dtype, prerounded=config.prerounded_kernels,
                        name='wo')(hidden)


def _residual(x: Array, update: Array, config: T5Config, deterministic: bool) -> Array:
  update = Dropout(config.dropout_rate)(update, deterministic)
  return nn.with_logical_constraint(x + update, ('batch', 'length', 'embed'))


class EncoderLayer(nn.Module):
  config: T5Config
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, bias: Array, prefix: Optional[PrefixKV] = None):
    config, deterministic = self.config, self.deterministic
    normed = RMSNorm(config, name='pre_attention_layer_norm')(x)
    attended = Attention(config, deterministic=deterministic, name='attention')(
        normed, normed, bias, prefix)
    x = _residual(x, attended, config, deterministic)
    normed = RMSNorm(config, name='pre_mlp_layer_norm')(x)
    x = _residual(x, Mlp(config, deterministic, name='mlp')(normed), config, deterministic)
    return x, None  # (carry, output) as nn.scan expects


class DecoderLayer(nn.Module):
  config: T5Config
  deterministic: bool = True
  decode: bool = False

  @nn.compact
  def __call__(self, y: Array, encoded: Array, self_bias: Array, cross_bias: Array,
               prefixes: Optional[tuple[Optional[PrefixKV], Optional[PrefixKV]]] = None):
    config, deterministic = self.config, self.deterministic
    self_prefix, cross_prefix = prefixes or (None, None)
    normed = RMSNorm(config, name='pre_self_attention_layer_norm')(y)
    attended = Attention(config, decode=self.decode, deterministic=deterministic,
                         name='self_attention')(normed, normed, self_bias, self_prefix)
    y = _residual(y, attended, config, deterministic)
    normed = RMSNorm(config, name='pre_cross_attention_layer_norm')(y)
    attended = Attention(config, decode=self.decode, cross=True, deterministic=deterministic,
                         name='encoder_decoder_attention')(normed, encoded, cross_bias,
                                                           cross_prefix)
    y = _residual(y, attended, config, deterministic)
    normed = RMSNorm(config, name='pre_mlp_layer_norm')(y)
    y = _residual(y, Mlp(config, deterministic, name='mlp')(normed), config, deterministic)
    return y, None


def _remat_policy(name: str):
  return {'full': None, 'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable}[name]


def _default_unroll(num_layers: int) -> int:
  return num_layers if jax.default_backend() == 'cpu' else 1


def _run_layers(layer_cls, config: T5Config, num_layers: int, x: Array, *args, per_layer=None,
                **layer_kwargs):
  """Applies `num_layers` layers, scanned (params stacked on a leading 'layers' axis) or not.

  `args` go to every layer; `per_layer` (a pytree of [num_layers, ...] arrays, e.g. prefixes)
  gives layer i its slice i, as the layer's last argument.
  """
  if config.remat_policy != 'none':
    layer_cls = nn.remat(layer_cls, prevent_cse=not config.scan_layers,
                         policy=_remat_policy(config.remat_policy))
  if config.scan_layers:
    scanned = nn.scan(layer_cls, variable_axes={'params': 0, 'cache': 0, 'intermediates': 0},
                      split_rngs={'params': True, 'dropout': True},
                      in_axes=(nn.broadcast,) * len(args) + (0,), length=num_layers,
                      metadata_params={nn.PARTITION_NAME: 'layers'},
                      unroll=config.scan_unroll or _default_unroll(num_layers))
    x, _ = scanned(config, **layer_kwargs, name='layers')(x, *args, per_layer)
    return x
  for i in range(num_layers):
    layer_slice = jax.tree.map(lambda array, i=i: array[i], per_layer)
    x, _ = layer_cls(config, **layer_kwargs, name=f'layers_{i}')(x, *args, layer_slice)
  return x


def _prefix_length(prefix: Optional[PrefixKV]) -> int:
  return 0 if prefix is None else prefix.key.shape[1]


def _padding_bias(mask: Array, dtype) -> Array:
  """[b, k] bool key mask -> [b, 1, 1, k] additive bias."""
  return jnp.where(mask[:, None, None, :], 0, _NEG_INF).astype(dtype)


def _with_prefix_columns(mask: Array, num_prefix: int) -> Array:
  """The key mask with `num_prefix` visible columns in front (the prefix masks its own padding)."""
  return jnp.concatenate([jnp.ones((mask.shape[0], num_prefix), bool), mask.astype(bool)], axis=1)


class Encoder(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, embedded: Array, mask: Array, deterministic: bool = True,
               prefix: Optional[PrefixKV] = None) -> Array:
    """embedded [b, l, d] (token embeddings, possibly with a prompt), mask [b, l] bool."""
    config = self.config
    length, num_prefix = embedded.shape[1], _prefix_length(prefix)
    x = Dropout(config.dropout_rate)(embedded, deterministic)
    x = nn.with_logical_constraint(x.astype(config.compute_dtype), ('batch', 'length', 'embed'))
    bias = RelativePositionBias(config, bidirectional=True, name='relpos_bias')(
        length, num_prefix + length, query_offset=num_prefix)
    bias = bias + _padding_bias(_with_prefix_columns(mask, num_prefix), bias.dtype)
    x = _run_layers(EncoderLayer, config, config.num_encoder_layers, x, bias, per_layer=prefix,
                    deterministic=deterministic)
    x = RMSNorm(config, name='encoder_norm')(x)
    return Dropout(config.dropout_rate)(x, deterministic)


class Decoder(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, embedded: Array, encoded: Array, encoder_mask: Array, embedding: Array,
               deterministic: bool = True, decode: bool = False,
               max_decode_length: Optional[int] = None,
               self_prefix: Optional[PrefixKV] = None,
               cross_prefix: Optional[PrefixKV] = None) -> Array:
    """Returns float32 logits [b, l, v]. `embedding` [v, d] is the tied LM head's weight."""
    config = self.config
    y = Dropout(config.dropout_rate)(embedded, deterministic)
    y = nn.with_logical_constraint(y.astype(config.compute_dtype), ('batch', 'length', 'embed'))
    relpos = RelativePositionBias(config, bidirectional=False, name='relpos_bias')
    num_prefix = _prefix_length(self_prefix)
    if decode:
      if max_decode_length is None:
        raise ValueError('Cached decoding needs max_decode_length (the cache size).')
      # The full [L, P + L] table; each attention layer slices the row of its cache index.
      self_bias = relpos(max_decode_length, num_prefix + max_decode_length,
                         query_offset=num_prefix)
    else:
      length = embedded.shape[1]
      causal = np.tril(np.ones((length, length), bool))
      visible = np.concatenate([np.ones((length, num_prefix), bool), causal], axis=1)
      self_bias = (relpos(length, num_prefix + length, query_offset=num_prefix)
                   + jnp.where(visible, 0, _NEG_INF).astype(config.compute_dtype))
    cross_bias = _padding_bias(_with_prefix_columns(encoder_mask, _prefix_length(cross_prefix)),
                               config.compute_dtype)
    prefixes = None if self_prefix is None and cross_prefix is None else (self_prefix, cross_prefix)
    y = _run_layers(DecoderLayer, config, config.num_decoder_layers, y, encoded, self_bias,
                    cross_bias, per_layer=prefixes, deterministic=deterministic, decode=decode)
    y = RMSNorm(config, name='decoder_norm')(y)
    y = Dropout(config.dropout_rate)(y, deterministic)
    if config.scale_decoder_outputs:
      y = y * config.d_model ** -0.5
    if config.tie_word_embeddings:
      logits = einsum('bld,vd->blv', y, embedding, config.compute_dtype)
    else:
      logits = DenseGeneral(features=(config.vocab_size,), kernel_axes=('embed', 'vocab'),
                            contract_dims=1, dtype=config.compute_dtype,
                            prerounded=config.prerounded_kernels, name='logits_dense')(y)
    return nn.with_logical_constraint(logits.astype(jnp.float32), ('batch', 'length', 'vocab'))


class T5(nn.Module):
  """T5 encoder-decoder with two hooks for prompt methods.

  `prompt`: a module `(embedded, mask) -> (embedded, mask)` applied to the embedded encoder
  input (prompt tuning, P-tuning); its params live in the top-level `prompt` subtree. A prompt
  bank also takes `prompt_ids` [b] (one prompt per example: mixed-task batches, ensembles).
  `prefix`: a module `() -> {'encoder' | 'decoder_self' | 'decoder_cross': PrefixKV}` whose
  key/values join those attention layers (prefix tuning, deep prompts); params under `prefix`.
  """
  config: T5Config
  prompt: Optional[nn.Module] = None
  prefix: Optional[nn.Module] = None

  def setup(self):
    self.token_embedder = nn.Embed(
        self.config.vocab_size, self.config.d_model, dtype=self.config.compute_dtype,
        param_dtype=jnp.float32,
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                    ('vocab', 'embed')))
    self.encoder = Encoder(self.config)
    self.decoder = Decoder(self.config)

  def encode(self, encoder_input_tokens: Array, enable_dropout: bool = False,
             prompt_ids: Optional[Array] = None):
    """int32 [b, l] (0 = padding) -> (encoded [b, l', d], mask [b, l'] bool); l' includes a prompt."""
    mask = encoder_input_tokens > 0
    embedded = self.token_embedder(encoder_input_tokens)
    if prompt_ids is not None:
      embedded, mask = self.prompt(embedded, mask, prompt_ids)
    elif self.prompt is not None:
      embedded, mask = self.prompt(embedded, mask)
    return self.encoder(embedded, mask, deterministic=not enable_dropout,
                        prefix=self._prefixes().get('encoder')), mask

  def _prefixes(self) -> dict:
    return {} if self.prefix is None else self.prefix()

  def decode(self, encoded: Array, encoder_mask: Array, decoder_input_tokens: Array,
             enable_dropout: bool = False, decode: bool = False,
             max_decode_length: Optional[int] = None) -> Array:
    """Decoder logits [b, l, v] (float32). With `decode`, one step against the 'cache'."""
    embedded = self.token_embedder(decoder_input_tokens)
    prefixes = self._prefixes()
    return self.decoder(embedded, encoded, encoder_mask, self.token_embedder.embedding,
                        deterministic=not enable_dropout, decode=decode,
                        max_decode_length=max_decode_length,
                        self_prefix=prefixes.get('decoder_self'),
                        cross_prefix=prefixes.get('decoder_cross'))

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               enable_dropout: bool = False, prompt_ids: Optional[Array] = None) -> Array:
    """Teacher-forced logits [b, target_length, vocab] (float32)."""
    encoded, mask = self.encode(encoder_input_tokens, enable_dropout, prompt_ids)
    return self.decode(encoded, mask, decoder_input_tokens, enable_dropout)
