"""The fused dropout masks: JAX's own bits, the right keep rate, one mask per layer call."""

import jax
import jax.extend.random as jax_random
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from t5prompt.models.dropout import Dropout, flat_index, keep_mask, random_bits, threefry2x32

# Random123's known-answer vectors for Threefry-2x32-20: (key, counter) -> output.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize('key, counter, expected', KNOWN_ANSWERS)
def test_threefry_known_answers(key, counter, expected):
  words = threefry2x32(tuple(map(jnp.uint32, key)), tuple(jnp.uint32([c]) for c in counter))
  assert [int(w[0]) for w in words] == list(expected)


def test_threefry_equals_jax():
  rng = np.random.RandomState(0)
  key = jnp.asarray(rng.randint(0, 2 ** 32, 2, dtype=np.uint64).astype(np.uint32))
  counter = jnp.asarray(rng.randint(0, 2 ** 32, (2, 1000), dtype=np.uint64).astype(np.uint32))
  ours = threefry2x32((key[0], key[1]), (counter[0], counter[1]))
  np.testing.assert_array_equal(np.stack(ours), np.asarray(jax_random.threefry_2x32(key, counter)))


@pytest.mark.parametrize('shape', [(), (1,), (7,), (3, 5), (2, 3, 4, 5), (8, 6, 16, 13)])
def test_bits_equal_jax_random_bits(shape):
  for seed in (0, 1234):
    key = jax.random.fold_in(jax.random.key(seed), 3)
    ours = jax.jit(random_bits, static_argnums=1)(key, shape)
    assert ours.shape == shape and ours.dtype == jnp.uint32
    np.testing.assert_array_equal(ours, jax.random.bits(key, shape, jnp.uint32))


def test_other_key_kinds_use_jax_random_bits():
  key = jax.random.key(5, impl='rbg')
  np.testing.assert_array_equal(random_bits(key, (4, 6)), jax.random.bits(key, (4, 6), jnp.uint32))


def test_flat_index_past_32_bits():
  """Arrays of more than 2^32 elements carry into the high word (checked on a slice: the
  whole array is never built)."""
  for shape, pick, indices in [
      ((3, 70000, 30000), lambda x: x[2, -1, -3:], [(2, 69999, c) for c in (29997, 29998, 29999)]),
      ((70000, 100000), lambda x: x[-2:, 5], [(69998, 5), (69999, 5)]),
      ((2 ** 20, 2 ** 13), lambda x: x[-1, -2:], [(2 ** 20 - 1, 2 ** 13 - 2),
                                                  (2 ** 20 - 1, 2 ** 13 - 1)])]:
    high, low = jax.jit(lambda shape=shape, pick=pick: tuple(map(pick, flat_index(shape))))()
    expected = [int(np.ravel_multi_index(index, shape)) for index in indices]
    assert [int(h) * 2 ** 32 + int(l) for h, l in zip(high, low)] == expected


def test_keep_rate_and_scaling():
  x = jnp.ones((1000, 1000), jnp.float32)
  out = Dropout(0.1).apply({}, x, False, rngs={'dropout': jax.random.key(0)})
  kept = np.asarray(out != 0)
  # 1e6 Bernoulli(0.9) draws: standard deviation of the fraction 3e-4.
  assert abs(kept.mean() - 0.9) < 1.5e-3
  np.testing.assert_allclose(np.asarray(out)[kept], 1 / 0.9, rtol=1e-6)
  # Neighbouring elements are independent: kept-and-kept pairs at 0.81.
  assert abs((kept[:, 1:] & kept[:, :-1]).mean() - 0.81) < 3e-3
  assert bool(keep_mask(jax.random.key(0), (100,), 0.0).all())


def test_identity_when_deterministic_and_dtype_kept():
  x = jnp.arange(12, dtype=jnp.bfloat16).reshape(3, 4)
  assert Dropout(0.5).apply({}, x, True) is x
  out = Dropout(0.5).apply({}, x, False, rngs={'dropout': jax.random.key(1)})
  assert out.dtype == jnp.bfloat16


def test_gradient_uses_the_forward_mask():
  x = jax.random.normal(jax.random.key(2), (64, 32))
  rngs = {'dropout': jax.random.key(3)}
  out, pullback = jax.vjp(lambda v: Dropout(0.3).apply({}, v, False, rngs=rngs), x)
  (grad,) = pullback(jnp.ones_like(out))
  scale = np.where(np.asarray(out) != 0, 1 / 0.7, 0.0)
  np.testing.assert_allclose(grad, scale, rtol=1e-6)


def test_mask_is_the_same_on_a_mesh():
  mesh = jax.make_mesh((2, 4), ('data', 'model'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  sharding = NamedSharding(mesh, PartitionSpec('data', 'model'))
  key = jax.random.key(4)
  sharded = jax.jit(lambda k: keep_mask(k, (16, 40), 0.5), out_shardings=sharding)(key)
  assert len(sharded.addressable_shards) == 8
  np.testing.assert_array_equal(sharded, keep_mask(key, (16, 40), 0.5))
