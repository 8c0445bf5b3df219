"""Dropout whose masks cost one fused pass.

`flax.linen.Dropout` draws its mask with `jax.random.bernoulli`, whose threefry bits JAX lowers
on CPU as a rolled loop that reads and writes whole uint32 arrays at each of its five steps:
~25 ns an element on one core, about a quarter of a t5-v1_1-small prompt-tuning step at
dropout 0.1. `random_bits` computes the very bits `jax.random.bits` draws (threefry2x32 of each
element's 64-bit row-major index, the two output words xor-ed: JAX's partitionable layout) as
straight-line elementwise code that XLA fuses into the mask's consumer and that the SPMD
partitioner splits like any iota, so a mask is the same on every mesh. An element is kept when
its bits are at least round(rate * 2^32): the keep probability is exact to 2^-32.

XLA fuses a cheap elementwise producer into each of its consumers, so left alone a mask's bits
were computed again by every op that reads it, the backward's included: 2.3 threefry evaluations
per masked element in the t5-v1_1-small prompt-tuning step. `Dropout` passes its mask through a
bit-packed copy (`computed_once`), a reduction XLA computes once into a buffer of one bit per
element: one evaluation per element, the dropout step 2–4% faster (README, Benchmarks).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

_U32 = jnp.uint32
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(key, counter):
  """Threefry-2x32 with 20 rounds (Salmon et al. 2011; JAX's generator): the two output words
  for a key (two uint32) and a counter (two uint32 arrays), unrolled."""
  k0, k1 = key
  schedule = (k0, k1, k0 ^ k1 ^ _U32(0x1BD11BDA))
  x0, x1 = counter[0] + schedule[0], counter[1] + schedule[1]
  for block in range(5):
    for rotation in _ROTATIONS[block % 2]:
      x0 = x0 + x1
      x1 = ((x1 << _U32(rotation)) | (x1 >> _U32(32 - rotation))) ^ x0
    x0 = x0 + schedule[(block + 1) % 3]
    x1 = x1 + schedule[(block + 2) % 3] + _U32(block + 1)
  return x0, x1


def _wide_product(a: jax.Array, a_max: int, b: int):
  """(high, low) uint32 words of a * b for uint32 `a` (at most a_max) and a constant b < 2^64;
  high is None when the product always fits in 32 bits."""
  if a_max * b < 2 ** 32:
    return None, a * _U32(b)
  b_high, b_low = divmod(b, 2 ** 32)
  a_low, a_high = a & _U32(0xFFFF), a >> _U32(16)
  low_low, low_high = a_low * _U32(b_low & 0xFFFF), a_low * _U32(b_low >> 16)
  high_low, high_high = a_high * _U32(b_low & 0xFFFF), a_high * _U32(b_low >> 16)
  middle = (low_low >> 16) + (low_high & 0xFFFF) + (high_low & 0xFFFF)
  high = high_high + (low_high >> 16) + (high_low >> 16) + (middle >> 16) + a * _U32(b_high)
  return high, a * _U32(b_low)


def flat_index(shape):
  """Each element's row-major index in an array of `shape` (< 2^64 elements), as (high, low)
  uint32 words."""
  high, low = jnp.zeros(shape, _U32), jnp.zeros(shape, _U32)
  may_carry = math.prod(shape) > 2 ** 32  # else every partial sum fits in the low word
  for axis, length in enumerate(shape):
    term_high, term_low = _wide_product(jax.lax.broadcasted_iota(_U32, shape, axis),
                                        length - 1, math.prod(shape[axis + 1:]))
    summed = low + term_low
    if may_carry:
      high = high + (summed < low).astype(_U32) + (0 if term_high is None else term_high)
    low = summed
  return high, low


def random_bits(key: jax.Array, shape) -> jax.Array:
  """uint32 bits equal to `jax.random.bits(key, shape)`, fused (the threefry keys JAX makes by
  default, partitionable counters); any other key goes through `jax.random.bits` itself."""
  shape = tuple(shape)
  if (jax.random.key_impl(key) != 'threefry2x32' or not jax.config.jax_threefry_partitionable
      or math.prod(shape) >= 2 ** 64):
    return jax.random.bits(key, shape, _U32)
  words = jax.random.key_data(key)
  high, low = threefry2x32((words[0], words[1]), flat_index(shape))
  return high ^ low


def keep_mask(key: jax.Array, shape, rate: float) -> jax.Array:
  """True where an element survives dropout at `rate` (independently, probability 1 - rate)."""
  threshold = min(round(rate * 2 ** 32), 2 ** 32 - 1)
  return random_bits(key, shape) >= _U32(threshold)


def computed_once(keep: jax.Array) -> jax.Array:
  """`keep` unchanged, through a copy packed 8 rows to a byte (a reduction over groups of 8
  along its second-to-last axis), so XLA computes it once into a buffer instead of fusing its
  computation into each consumer. That axis is the length (or query) axis of the model's
  activations, which the partitioning rules never split, so the reduction stays on each
  device. Fewer than 2 axes or rows not a multiple of 8: `keep` as it is."""
  if keep.ndim < 2 or keep.shape[-2] % 8:
    return keep
  *leading, rows, columns = keep.shape
  shifts = jnp.arange(8, dtype=jnp.uint8)[:, None]
  bits = keep.reshape(*leading, rows // 8, 8, columns).astype(jnp.uint8) << shifts
  packed = jax.lax.reduce(bits, jnp.uint8(0), jax.lax.bitwise_or, (len(leading) + 1,))
  return ((packed[..., None, :] >> shifts) & 1).astype(bool).reshape(keep.shape)


class Dropout(nn.Module):
  """Inverted dropout (kept elements scaled by 1 / (1 - rate)), the layer's key from the
  'dropout' rng collection as in `flax.linen.Dropout`."""
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = computed_once(keep_mask(self.make_rng('dropout'), x.shape, self.rate))
    return jnp.where(keep, x / (1.0 - self.rate), 0).astype(x.dtype)
