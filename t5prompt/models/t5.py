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

import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t5prompt.models.sizes import T5Config

Array = jax.Array
_NEG_INF = np.float32(-1e10)


def relative_position_buckets(query_length: int, key_length: int, *, bidirectional: bool,
                              num_buckets: int, max_distance: int) -> np.ndarray:
  """Bucket index of every (query, key) pair: int array [query_length, key_length].

  Computed with NumPy at trace time (lengths are static) in float32, the same operations as
  the reference implementation, so the buckets agree exactly at the logarithmic boundaries.
  """
  query_position = np.arange(query_length)[:, None]
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


def _normal(stddev: float) -> Callable:
  return nn.initializers.normal(stddev=stddev)


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
  """A bias-free projection whose kernel keeps its logical axes (e.g. embed x heads x kv)."""
  features: tuple[int, ...]
  kernel_axes: tuple[str, ...]
  contract_dims: int
  stddev: float
  dtype: Any

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_shape = x.shape[x.ndim - self.contract_dims:]
    kernel = self.param('kernel', nn.with_logical_partitioning(_normal(self.stddev), self.kernel_axes),
                        (*in_shape, *self.features), jnp.float32)
    contract = tuple(range(x.ndim - self.contract_dims, x.ndim))
    return jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype),
                               ((contract, tuple(range(self.contract_dims))), ((), ())))


class RelativePositionBias(nn.Module):
  """One [heads, buckets] table per stack, shared by all its layers (as in T5)."""
  config: T5Config
  bidirectional: bool

  @nn.compact
  def __call__(self, query_length: int, key_length: int) -> Array:
    config = self.config
    table = self.param(
        'rel_embedding',
        nn.with_logical_partitioning(_normal(1.0), ('heads', 'relpos_buckets')),
        (config.num_heads, config.relative_attention_num_buckets), jnp.float32)
    buckets = relative_position_buckets(
        query_length, key_length, bidirectional=self.bidirectional,
        num_buckets=config.relative_attention_num_buckets,
        max_distance=config.relative_attention_max_distance)
    return jnp.take(table, buckets, axis=1)[None].astype(config.compute_dtype)  # [1, h, q, k]


class Attention(nn.Module):
  """Multi-head dot-product attention without logit scaling (folded into T5's init).

  With `decode`, keys and values live in the 'cache' collection: self-attention adds one
  position per call; cross-attention (`cross`) projects the encoder output once, when the
  cache is created, and reuses it at every step.
  """
  config: T5Config
  decode: bool = False
  cross: bool = False
  deterministic: bool = True

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array, bias: Array) -> Array:
    """inputs_q [b, q, d], inputs_kv [b, k, d], bias [b|1, h, q, k] (mask folded in)."""
    config = self.config
    heads, d_kv, d_model = config.num_heads, config.d_kv, config.d_model
    projection = dict(features=(heads, d_kv), kernel_axes=('embed', 'heads', 'kv'),
                      contract_dims=1, dtype=config.compute_dtype)
    query = DenseGeneral(**projection, stddev=(d_model * d_kv) ** -0.5, name='query')(inputs_q)
    query = nn.with_logical_constraint(query, ('batch', 'length', 'heads', 'kv'))

    def project_kv():
      key = DenseGeneral(**projection, stddev=d_model ** -0.5, name='key')(inputs_kv)
      value = DenseGeneral(**projection, stddev=d_model ** -0.5, name='value')(inputs_kv)
      return (nn.with_logical_constraint(key, ('batch', 'length', 'heads', 'kv')),
              nn.with_logical_constraint(value, ('batch', 'length', 'heads', 'kv')))

    if self.decode and self.cross:
      key, value = self._cached_cross_kv(project_kv)
    else:
      key, value = project_kv()
    if self.decode and not self.cross:
      key, value, bias = self._update_cache(key, value, bias)

    logits = jnp.einsum('bqhk,bthk->bhqt', query, key) + bias
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(config.compute_dtype)
    weights = nn.Dropout(config.dropout_rate)(weights, deterministic=self.deterministic)
    mixed = jnp.einsum('bhqt,bthk->bqhk', weights, value)
    mixed = nn.with_logical_constraint(mixed, ('batch', 'length', 'heads', 'kv'))
    return DenseGeneral(features=(d_model,), kernel_axes=('heads', 'kv', 'embed'), contract_dims=2,
                        stddev=(heads * d_kv) ** -0.5, dtype=config.compute_dtype,
                        name='out')(mixed)

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
    batch, max_length, heads, _ = cached_key.value.shape
    if key.shape[1] != 1:
      raise ValueError(f'Cached decoding takes one position per call, got {key.shape[1]}.')
    index = cache_index.value
    key = jax.lax.dynamic_update_slice(cached_key.value, key, (0, index, 0, 0))
    value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, index, 0, 0))
    cached_key.value, cached_value.value, cache_index.value = key, value, index + 1
    # `bias` is [1, h, L, L] for the full decode length: take the row of this position and
    # mask the positions not yet written.
    bias = jax.lax.dynamic_slice(bias, (0, 0, index, 0), (1, heads, 1, max_length))
    visible = jnp.arange(max_length) <= index
    return key, value, bias + jnp.where(visible, 0, _NEG_INF).astype(bias.dtype)


class Mlp(nn.Module):
  """T5's feed-forward block: ReLU (v1.0) or gated GELU, tanh approximation (v1.1)."""
  config: T5Config
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    config = self.config
    dense = dict(kernel_axes=('embed', 'mlp'), contract_dims=1, stddev=config.d_model ** -0.5,
                 dtype=config.compute_dtype, features=(config.d_ff,))
    if config.is_gated:
      hidden = (nn.gelu(DenseGeneral(**dense, name='wi_0')(x), approximate=True)
                * DenseGeneral(**dense, name='wi_1')(x))
    else:
      hidden = nn.relu(DenseGeneral(**dense, name='wi')(x))
    hidden = nn.with_logical_constraint(hidden, ('batch', 'length', 'mlp'))
    hidden = nn.Dropout(config.dropout_rate)(hidden, deterministic=self.deterministic)
    return DenseGeneral(features=(config.d_model,), kernel_axes=('mlp', 'embed'), contract_dims=1,
                        stddev=config.d_ff ** -0.5, dtype=config.compute_dtype, name='wo')(hidden)


def _residual(x: Array, update: Array, config: T5Config, deterministic: bool) -> Array:
  update = nn.Dropout(config.dropout_rate)(update, deterministic=deterministic)
  return nn.with_logical_constraint(x + update, ('batch', 'length', 'embed'))


class EncoderLayer(nn.Module):
  config: T5Config
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, bias: Array):
    config, deterministic = self.config, self.deterministic
    normed = RMSNorm(config, name='pre_attention_layer_norm')(x)
    attended = Attention(config, deterministic=deterministic, name='attention')(normed, normed, bias)
    x = _residual(x, attended, config, deterministic)
    normed = RMSNorm(config, name='pre_mlp_layer_norm')(x)
    x = _residual(x, Mlp(config, deterministic, name='mlp')(normed), config, deterministic)
    return x, None  # (carry, output) as nn.scan expects


class DecoderLayer(nn.Module):
  config: T5Config
  deterministic: bool = True
  decode: bool = False

  @nn.compact
  def __call__(self, y: Array, encoded: Array, self_bias: Array, cross_bias: Array):
    config, deterministic = self.config, self.deterministic
    normed = RMSNorm(config, name='pre_self_attention_layer_norm')(y)
    attended = Attention(config, decode=self.decode, deterministic=deterministic,
                         name='self_attention')(normed, normed, self_bias)
    y = _residual(y, attended, config, deterministic)
    normed = RMSNorm(config, name='pre_cross_attention_layer_norm')(y)
    attended = Attention(config, decode=self.decode, cross=True, deterministic=deterministic,
                         name='encoder_decoder_attention')(normed, encoded, cross_bias)
    y = _residual(y, attended, config, deterministic)
    normed = RMSNorm(config, name='pre_mlp_layer_norm')(y)
    y = _residual(y, Mlp(config, deterministic, name='mlp')(normed), config, deterministic)
    return y, None


def _remat_policy(name: str):
  return {'full': None, 'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable}[name]


def _run_layers(layer_cls, config: T5Config, num_layers: int, x: Array, *args, **layer_kwargs):
  """Applies `num_layers` layers, scanned (params stacked on a leading 'layers' axis) or not."""
  if config.remat_policy != 'none':
    layer_cls = nn.remat(layer_cls, prevent_cse=not config.scan_layers,
                         policy=_remat_policy(config.remat_policy))
  if config.scan_layers:
    scanned = nn.scan(layer_cls, variable_axes={'params': 0, 'cache': 0},
                      split_rngs={'params': True, 'dropout': True},
                      in_axes=(nn.broadcast,) * len(args), length=num_layers,
                      metadata_params={nn.PARTITION_NAME: 'layers'})
    x, _ = scanned(config, **layer_kwargs, name='layers')(x, *args)
    return x
  for i in range(num_layers):
    x, _ = layer_cls(config, **layer_kwargs, name=f'layers_{i}')(x, *args)
  return x


def _padding_bias(mask: Array, dtype) -> Array:
  """[b, k] bool key mask -> [b, 1, 1, k] additive bias."""
  return jnp.where(mask[:, None, None, :], 0, _NEG_INF).astype(dtype)


class Encoder(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, embedded: Array, mask: Array, deterministic: bool = True) -> Array:
    """embedded [b, l, d] (token embeddings, possibly with a prompt), mask [b, l] bool."""
    config = self.config
    length = embedded.shape[1]
    x = nn.Dropout(config.dropout_rate)(embedded, deterministic=deterministic)
    x = nn.with_logical_constraint(x.astype(config.compute_dtype), ('batch', 'length', 'embed'))
    bias = RelativePositionBias(config, bidirectional=True, name='relpos_bias')(length, length)
    bias = bias + _padding_bias(mask, bias.dtype)
    x = _run_layers(EncoderLayer, config, config.num_encoder_layers, x, bias,
                    deterministic=deterministic)
    x = RMSNorm(config, name='encoder_norm')(x)
    return nn.Dropout(config.dropout_rate)(x, deterministic=deterministic)


class Decoder(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, embedded: Array, encoded: Array, encoder_mask: Array, embedding: Array,
               deterministic: bool = True, decode: bool = False,
               max_decode_length: Optional[int] = None) -> Array:
    """Returns float32 logits [b, l, v]. `embedding` [v, d] is the tied LM head's weight."""
    config = self.config
    y = nn.Dropout(config.dropout_rate)(embedded, deterministic=deterministic)
    y = nn.with_logical_constraint(y.astype(config.compute_dtype), ('batch', 'length', 'embed'))
    relpos = RelativePositionBias(config, bidirectional=False, name='relpos_bias')
    if decode:
      if max_decode_length is None:
        raise ValueError('Cached decoding needs max_decode_length (the cache size).')
      # The full [L, L] table; each attention layer slices the row of its cache index.
      self_bias = relpos(max_decode_length, max_decode_length)
    else:
      length = embedded.shape[1]
      causal = np.tril(np.ones((length, length), bool))
      self_bias = relpos(length, length) + jnp.where(causal, 0, _NEG_INF).astype(config.compute_dtype)
    cross_bias = _padding_bias(encoder_mask, config.compute_dtype)
    y = _run_layers(DecoderLayer, config, config.num_decoder_layers, y, encoded, self_bias,
                    cross_bias, deterministic=deterministic, decode=decode)
    y = RMSNorm(config, name='decoder_norm')(y)
    y = nn.Dropout(config.dropout_rate)(y, deterministic=deterministic)
    if config.scale_decoder_outputs:
      y = y * config.d_model ** -0.5
    if config.tie_word_embeddings:
      logits = jnp.einsum('bld,vd->blv', y, embedding.astype(config.compute_dtype))
    else:
      logits = DenseGeneral(features=(config.vocab_size,), kernel_axes=('embed', 'vocab'),
                            contract_dims=1, stddev=1.0, dtype=config.compute_dtype,
                            name='logits_dense')(y)
    return nn.with_logical_constraint(logits.astype(jnp.float32), ('batch', 'length', 'vocab'))


class T5(nn.Module):
  """T5 encoder-decoder. `prompt`, when given, is a module `(embedded, mask) -> (embedded, mask)`
  applied to the embedded encoder input; its params live in the top-level `prompt` subtree.
  """
  config: T5Config
  prompt: Optional[nn.Module] = None

  def setup(self):
    self.token_embedder = nn.Embed(
        self.config.vocab_size, self.config.d_model, dtype=self.config.compute_dtype,
        param_dtype=jnp.float32,
        embedding_init=nn.with_logical_partitioning(_normal(1.0), ('vocab', 'embed')))
    self.encoder = Encoder(self.config)
    self.decoder = Decoder(self.config)

  def encode(self, encoder_input_tokens: Array, enable_dropout: bool = False):
    """int32 [b, l] (0 = padding) -> (encoded [b, l', d], mask [b, l'] bool); l' includes a prompt."""
    mask = encoder_input_tokens > 0
    embedded = self.token_embedder(encoder_input_tokens)
    if self.prompt is not None:
      embedded, mask = self.prompt(embedded, mask)
    return self.encoder(embedded, mask, deterministic=not enable_dropout), mask

  def decode(self, encoded: Array, encoder_mask: Array, decoder_input_tokens: Array,
             enable_dropout: bool = False, decode: bool = False,
             max_decode_length: Optional[int] = None) -> Array:
    """Decoder logits [b, l, v] (float32). With `decode`, one step against the 'cache'."""
    embedded = self.token_embedder(decoder_input_tokens)
    return self.decoder(embedded, encoded, encoder_mask, self.token_embedder.embedding,
                        deterministic=not enable_dropout, decode=decode,
                        max_decode_length=max_decode_length)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               enable_dropout: bool = False) -> Array:
    """Teacher-forced logits [b, target_length, vocab] (float32)."""
    encoded, mask = self.encode(encoder_input_tokens, enable_dropout)
    return self.decode(encoded, mask, decoder_input_tokens, enable_dropout)
