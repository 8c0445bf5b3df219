"""The fused dropout masks: JAX's own bits, the right keep rate, one mask per layer call,
computed once however many ops (forward and backward) read it."""

import jax
import jax.extend.random as jax_random
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from t5prompt.models.dropout import (Dropout, computed_once, flat_index, keep_mask, random_bits,
                                     threefry2x32)

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


@pytest.mark.parametrize('shape', [(8, 3), (2, 3, 16, 5), (24, 1), (4, 7, 9), (8,)])
def test_computed_once_is_the_same_mask(shape):
  keep = jax.random.bernoulli(jax.random.key(6), 0.7, shape)
  np.testing.assert_array_equal(jax.jit(computed_once)(keep), keep)


def _threefry_count(hlo_text: str) -> int:
  """Threefry evaluations in an optimized HLO module: 20 rotations each, the only left shifts
  besides the packing's one."""
  return hlo_text.count(' shift-left(') // 20


def test_a_mask_read_forward_and_backward_is_computed_once():
  """The dropped activation feeds two ops and the backward reads the mask again: one threefry
  in the compiled gradient, where XLA fused a copy into each reader before."""
  rngs = {'dropout': jax.random.key(7)}

  def loss(x, w):
    y = Dropout(0.1).apply({}, jnp.tanh(x), False, rngs=rngs)
    return jnp.sum((y @ w) ** 2) + jnp.sum(3 * y)

  x, w = jnp.ones((4, 64, 32)), jnp.ones((32, 16))
  assert _threefry_count(jax.jit(jax.grad(loss)).lower(x, w).compile().as_text()) == 1
  alone = jax.jit(lambda k: keep_mask(k, x.shape, 0.1)).lower(rngs['dropout']).compile()
  assert _threefry_count(alone.as_text()) == 1


def test_packed_mask_stays_on_each_device():
  """Sharded over batch and the last axis, the same elements drop as unsharded and the compiled
  program moves no data between devices."""
  mesh = jax.make_mesh((2, 4), ('data', 'model'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  sharding = NamedSharding(mesh, PartitionSpec('data', None, 'model'))
  x = jax.device_put(jax.random.normal(jax.random.key(8), (4, 16, 64)), sharding)
  rngs = {'dropout': jax.random.key(9)}
  dropped = jax.jit(lambda v: Dropout(0.2).apply({}, v, False, rngs=rngs),
                    out_shardings=sharding)
  hlo = dropped.lower(x).compile().as_text()
  assert not any(op in hlo for op in ('all-gather', 'all-reduce', 'all-to-all',
                                      'collective-permute'))
  expected = Dropout(0.2).apply({}, np.asarray(x), False, rngs=rngs)
  np.testing.assert_array_equal(dropped(x) == 0, expected == 0)
  np.testing.assert_allclose(dropped(x), expected, rtol=1e-6)  # x / 0.8 or x * 1.25
