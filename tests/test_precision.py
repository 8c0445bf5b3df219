"""The bf16 compute mode: bf16 matmul operands with float32 accumulation in the forward and the
backward, frozen matrices stored in bf16 without changing the outputs, kernels read as stored
(no per-step copies), float32 dots of the rounded operands where a CPU has no bf16 units (a
frozen backbone's kernels rounded once and kept in float32 there), a weight's gradient on CPU as
a row-major matmul, and the CPU's unrolled layer loop computing what the rolled one does."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5prompt import build as build_module
from t5prompt.backbone import Backbone
from t5prompt.build import stored_dtypes
from t5prompt.models import T5, get_size
from t5prompt.partitioning import make_partitioning
from t5prompt.plan import run_config_for
from t5prompt.models import t5
from t5prompt.models.t5 import DenseGeneral, einsum

BF16 = jnp.bfloat16

# Every einsum form the model runs: projections in (1 and 2 contracted dims), both attention
# products, the tied LM head. Contracted dims of 64+ make bf16 accumulation visible.
SPECS = [('abc,cde->abde', (2, 5, 96), (96, 3, 4)),
         ('abcd,cde->abe', (2, 5, 8, 16), (8, 16, 24)),
         ('bqhk,bthk->bhqt', (2, 5, 3, 64), (2, 6, 3, 64)),
         ('bhqt,bthk->bqhk', (2, 3, 5, 80), (2, 80, 3, 4)),
         ('bld,vd->blv', (2, 5, 96), (11, 96))]


@pytest.fixture
def native_dots(monkeypatch):
  """The program as built where bf16 dots run natively (GPU/TPU, AMX/AVX512-BF16 CPUs), on any
  CPU: XLA compiles (and emulates) them everywhere."""
  monkeypatch.setattr(t5, 'native_low_precision_dots', lambda: True)


def _rounded(x):
  """x rounded to bf16, back in float32: the values the bf16 matmuls see."""
  return jnp.asarray(x, BF16).astype(jnp.float32)


@pytest.mark.parametrize('spec,a_shape,b_shape', SPECS)
@pytest.mark.parametrize('native', [True, False])
def test_bf16_einsum_accumulates_in_float32_forward_and_backward(spec, a_shape, b_shape, native,
                                                                 monkeypatch):
  monkeypatch.setattr(t5, 'native_low_precision_dots', lambda: native)
  rng = np.random.RandomState(0)
  a, b = rng.randn(*a_shape).astype(np.float32), rng.randn(*b_shape).astype(np.float32)
  out, vjp = jax.vjp(lambda a, b: einsum(spec, a, b, BF16), a, b)
  cotangent = rng.randn(*out.shape).astype(np.float32)
  grad_a, grad_b = vjp(cotangent)

  # Products of bf16 values are exact in float32: with float32 accumulation the result is the
  # float32 einsum of the rounded operands up to summation order (bf16 sums would be ~1e-2 off).
  expected = jnp.einsum(spec, _rounded(a), _rounded(b))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  (a_spec, b_spec), out_spec = spec.split('->')[0].split(','), spec.split('->')[1]
  weight = out_spec[0] not in b_spec  # b lacks the batch index: a kernel or the embedding
  g = _rounded(cotangent)  # the backward's bf16 matmuls take the cotangent in bf16 too
  for grad, expected, shape in (
      (grad_a, jnp.einsum(f'{out_spec},{b_spec}->{a_spec}', g, _rounded(b)), a_shape),
      # On CPU a weight's gradient is a float32 matmul (no bf16 kernel for its layout).
      (grad_b, jnp.einsum(f'{out_spec},{a_spec}->{b_spec}', cotangent if weight else g,
                          _rounded(a)), b_shape)):
    assert grad.shape == shape
    # One bf16 rounding of the float32 result: within 2^-8 of each entry.
    np.testing.assert_allclose(grad, _rounded(expected), rtol=2 ** -8, atol=1e-6)

  # The forward's and the activation gradients' matmuls take bf16 operands (float32 ones, the
  # same rounded values, where the CPU has no bf16 units).
  grad_fn = jax.jit(jax.value_and_grad(
      lambda a, b: jnp.sum(einsum(spec, a, b, BF16) * cotangent), argnums=(0, 1)))
  dots = [line for line in grad_fn.lower(a, b).as_text().splitlines() if 'dot_general' in line]
  operands = [re.search(r': \((.*)\) ->', line).group(1) for line in dots]
  kinds = ['bf16' if x.count('bf16') == 2 else 'f32' if x.count('f32') == 2 else x
           for x in operands]
  if native:
    assert sorted(kinds) == (['bf16', 'bf16', 'f32'] if weight else ['bf16'] * 3), operands
  else:
    assert kinds == ['f32'] * 3, operands


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('features,kernel_axes,x_shape', [
    ((4, 16), ('embed', 'heads', 'kv'), (2, 8, 32)),  # query/key/value: 2 output dims
    ((32,), ('heads', 'kv', 'embed'), (2, 8, 4, 16))])  # attention out: 2 contracted dims
def test_the_backward_reads_each_kernel_as_stored(dtype, features, kernel_axes, x_shape,
                                                  native_dots):
  """Only matmuls read a kernel (stored in the compute dtype, as `build` stores a frozen one):
  XLA makes no transposed copy of it for the backward, which cost every step 6% in fp32."""
  layer = DenseGeneral(features=features, kernel_axes=kernel_axes,
                       contract_dims=len(kernel_axes) - len(features), dtype=dtype)
  x = jnp.ones(x_shape, dtype)
  kernel = nn.unbox(layer.init(jax.random.key(0), x))['params']['kernel'].astype(dtype)
  grad = jax.jit(jax.grad(
      lambda x, kernel: jnp.sum(layer.apply({'params': {'kernel': kernel}}, x) ** 2)))
  hlo = grad.lower(x, kernel).compile().as_text()
  entry = hlo[hlo.index('\nENTRY'):].splitlines()
  names = [next(re.search(r'(%\S+) = ', line).group(1) for line in entry
                if 'parameter(1)' in line)]
  readers = []
  while names:  # a bitcast (a free reshape) passes the kernel on as stored: follow it
    name = names.pop()
    for line in entry:
      if re.search(re.escape(name) + r'[,)]', line) and not line.lstrip().startswith(name + ' '):
        if ' bitcast(' in line:
          names.append(re.search(r'(%\S+) = ', line).group(1))
        else:
          readers.append(line)
  assert readers and all('__ynn_fusion' in line or ' dot(' in line for line in readers), readers


@pytest.mark.parametrize('spec,a_shape,b_shape', SPECS)
def test_float32_einsum_is_jnp_einsum_and_so_are_its_gradients(spec, a_shape, b_shape):
  """A kernel's gradient on CPU is computed apart (`_float32_einsum_with_kernel`): the same
  numbers up to summation order."""
  rng = np.random.RandomState(1)
  a, b = rng.randn(*a_shape).astype(np.float32), rng.randn(*b_shape).astype(np.float32)
  out, vjp = jax.vjp(lambda a, b: einsum(spec, a, b, jnp.float32), a, b)
  expected, expected_vjp = jax.vjp(lambda a, b: jnp.einsum(spec, a, b), a, b)
  np.testing.assert_array_equal(out, expected)
  cotangent = rng.randn(*out.shape).astype(np.float32)
  for grad, expected_grad in zip(vjp(cotangent), expected_vjp(cotangent)):
    assert grad.shape == expected_grad.shape
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('spec,a_shape,b_shape,dtype', [
    ('abc,cd->abd', (4, 32, 64), (64, 48), 'float32'),  # a kernel [in, out]
    ('abc,cd->abd', (4, 32, 64), (64, 48), 'bfloat16'),
    ('bld,vd->blv', (4, 32, 64), (80, 64), 'bfloat16')])  # the tied embedding [vocab, d]
def test_a_weights_gradient_is_a_matmul_over_a_transposed_copy_on_cpu(spec, a_shape, b_shape,
                                                                      dtype):
  """XLA left alone contracts the left operand's leading (row) dim for a weight's gradient, a
  dot the CPU runtime runs at about half the rate of a row-major one (model tuning at Small:
  2.9-3.3 s a step that way, 2.4 s with the copy, README). Every dot of the compiled gradient
  contracts its left operand's last dim. (The tied embedding in float32 is left to XLA.)"""
  rng = np.random.RandomState(2)
  a, b = rng.randn(*a_shape).astype(np.float32), rng.randn(*b_shape).astype(np.float32)
  grad = jax.jit(jax.grad(lambda a, b: jnp.sum(einsum(spec, a, b, dtype) ** 2), argnums=1))
  hlo = grad.lower(a, b).compile().as_text()
  shapes = dict(re.findall(r'(%[\w.\-]+) = \w+\[([\d,]*)\]', hlo))
  dots = re.findall(r' dot\((%[\w.\-]+), .*lhs_contracting_dims=\{(\d+)\}', hlo)
  assert len(dots) >= 2, hlo  # the forward's and the gradient's
  for lhs, contracted in dots:
    assert int(contracted) == shapes[lhs].count(','), (lhs, shapes[lhs], contracted)


@functools.cache  # an init compiles for seconds; the arrays are immutable
def _tiny(size, **changes):
  config = get_size(size).replace(dropout_rate=0.0, vocab_size=128, **changes)
  tokens = jnp.ones((1, 4), jnp.int32)
  return config, nn.unbox(jax.jit(T5(config).init)(jax.random.key(0), tokens, tokens)['params'])


def _by_name(tree) -> dict:
  """{'['encoder']['layers']...': leaf} of a param tree."""
  return {jax.tree_util.keystr(path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _batch(vocab_size):
  rng = np.random.RandomState(2)
  return (jnp.asarray(rng.randint(1, vocab_size, (2, 12)), jnp.int32),
          jnp.asarray(rng.randint(1, vocab_size, (2, 5)), jnp.int32))


def _loss(config, params, inputs, targets):
  logits = T5(config).apply({'params': params}, inputs, targets)
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1))


@pytest.mark.parametrize('size', [  # the separate v1.1 head; the tied v1.0 head in `-m slow`
    pytest.param('tiny-v1_0', marks=pytest.mark.slow), 'tiny-v1_1'])
def test_bf16_mode_loss_and_gradients_stay_close_to_float32(size):
  """The numerics check of the bf16 mode on a whole model: loss within 1%, every param's
  gradient (the backward's bf16 matmuls included) pointing the same way."""
  config, params = _tiny(size)
  inputs, targets = _batch(config.vocab_size)
  loss_and_grads = jax.jit(jax.value_and_grad(_loss, argnums=1), static_argnums=0)
  loss32, grads32 = loss_and_grads(config, params, inputs, targets)
  loss16, grads16 = loss_and_grads(config.replace(dtype='bfloat16'), params, inputs, targets)
  assert abs(float(loss16) - float(loss32)) <= 0.01 * abs(float(loss32))
  for path, g32 in jax.tree_util.tree_leaves_with_path(grads32):
    g16 = np.asarray(dict(jax.tree_util.tree_leaves_with_path(grads16))[path], np.float64)
    g32 = np.asarray(g32, np.float64)
    assert g16.dtype == g32.dtype and g16.shape == g32.shape
    if np.linalg.norm(g32) > 1e-6:
      cosine = np.sum(g16 * g32) / (np.linalg.norm(g16) * np.linalg.norm(g32))
      assert cosine > 0.99, (jax.tree_util.keystr(path), cosine)


def test_frozen_matrices_stored_in_bf16_leave_the_outputs_unchanged():
  config, params = _tiny('tiny-v1_1', dtype='bfloat16')
  dtypes = stored_dtypes(params, config.compute_dtype)
  flat = _by_name(dtypes)
  assert flat["['token_embedder']['embedding']"] == BF16
  assert flat["['encoder']['layers']['attention']['query']['kernel']"] == BF16
  assert flat["['encoder']['relpos_bias']['rel_embedding']"] == BF16
  assert flat["['encoder']['encoder_norm']['scale']"] == jnp.float32
  assert flat["['decoder']['layers']['pre_mlp_layer_norm']['scale']"] == jnp.float32  # stacked
  stored = jax.tree.map(lambda x, dtype: x.astype(dtype), params, dtypes)
  inputs, targets = _batch(config.vocab_size)
  apply = jax.jit(lambda p: T5(config).apply({'params': p}, inputs, targets))
  np.testing.assert_array_equal(apply(stored), apply(params))
  assert stored_dtypes(params, jnp.float32) == jax.tree.map(lambda x: x.dtype, params)


def _trained(method, monkeypatch, native, prerounded=None, steps=2):
  """A bf16 run of `method` on tiny-v1_1 built as on a CPU with (`native`) or without bf16 dot
  units (`prerounded`: force the kernel placement), after `steps` train steps."""
  monkeypatch.setattr(t5, 'native_low_precision_dots', lambda: native)
  if prerounded is not None:
    monkeypatch.setattr(build_module, 'prerounded_kernels', lambda *_: prerounded)
  config, params = _tiny('tiny-v1_1', dtype='bfloat16')
  run_config = run_config_for(method, 4, init='random_uniform')
  partitioning = make_partitioning((1, 1), devices=jax.devices()[:1])
  inputs, targets = _batch(config.vocab_size)
  with partitioning.activate():
    run = build_module.build(run_config, Backbone(config, params, 'test', ''), partitioning)
    state = run.state
    for step in range(steps):
      state.trainable, state.opt_state, _ = run.train_step(
          state.trainable, state.opt_state, state.frozen,
          {'inputs': inputs, 'targets': targets}, state.rng, step)
  return run, params


def test_a_frozen_backbone_without_bf16_dot_units_keeps_its_kernels_rounded_in_float32(
    monkeypatch):
  """Where bf16 matmuls multiply float32 operands (no bf16 units), a frozen backbone's kernels
  are rounded once and kept in float32, so no step widens them; the prompt trains bitwise as
  with bf16 kernels widened in every step."""
  run, params = _trained('prompt_tuning', monkeypatch, native=False)
  assert run.model.config.prerounded_kernels
  original = _by_name(params)
  frozen = _by_name(run.state.frozen)
  kernels = [name for name in frozen if name.endswith("['kernel']")]
  assert len(kernels) == (4 + 3) + (4 + 4 + 3) + 1  # stacked layers' encoder, decoder; LM head
  for name in kernels:
    assert frozen[name].dtype == jnp.float32, name
    np.testing.assert_array_equal(frozen[name], _rounded(original[name]), err_msg=name)
  assert not np.array_equal(frozen[kernels[0]], original[kernels[0]])  # rounded, not as loaded
  assert frozen["['token_embedder']['embedding']"].dtype == BF16  # only gathered: stays bf16
  widened_each_step, _ = _trained('prompt_tuning', monkeypatch, native=False, prerounded=False)
  assert not widened_each_step.model.config.prerounded_kernels
  assert all(_by_name(widened_each_step.state.frozen)[name].dtype == BF16 for name in kernels)
  np.testing.assert_array_equal(run.state.trainable['prompt']['prompt'],
                                widened_each_step.state.trainable['prompt']['prompt'])
  native, _ = _trained('prompt_tuning', monkeypatch, native=True, steps=0)
  assert not native.model.config.prerounded_kernels  # bf16 kernels feed the bf16 units


def test_model_tuning_rounds_its_float32_kernels_in_every_step(monkeypatch):
  run, _ = _trained('model_tuning', monkeypatch, native=False, steps=0)
  assert not run.model.config.prerounded_kernels  # its kernels train: float32 masters


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_unrolled_layer_loop_computes_what_the_rolled_loop_does():
  """On CPU the scanned layers run unrolled by default (`scan_unroll=0`); the same params give
  the same loss and gradients as the rolled loop (one layer per iteration)."""
  config, params = _tiny('tiny-v1_1')
  inputs, targets = _batch(config.vocab_size)
  loss_and_grads = jax.jit(jax.value_and_grad(_loss, argnums=1), static_argnums=0)
  rolled_loss, rolled_grads = loss_and_grads(config.replace(scan_unroll=1), params, inputs,
                                             targets)
  loss, grads = loss_and_grads(config, params, inputs, targets)
  np.testing.assert_allclose(loss, rolled_loss, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(rolled_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match='scan_unroll must be >= 0'):
    config.replace(scan_unroll=-1)
