"""The freeze: one label function drives the optimizer mask and what is differentiated."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import init_params
from t5prompt import optim
from t5prompt.run_config import default_config
from t5prompt.prompts.methods import build_model
from t5prompt.build import make_loss_fn, make_train_step
from t5prompt.models import get_size
from t5prompt.prompts import methods

PROMPT_LENGTH = 4


@pytest.fixture(scope='module')
def setup():
  config = get_size('tiny-v1_1').replace(dropout_rate=0.0)
  model = build_model(config, 'prompt_tuning', PROMPT_LENGTH)
  tokens = jnp.array([[5, 6, 7, 1], [8, 9, 1, 0]], jnp.int32)
  params = init_params(model, tokens, tokens)
  batch = {'inputs': np.asarray(tokens), 'targets': np.array([[3, 4, 1, 0], [5, 1, 0, 0]],
                                                             np.int32)}
  return config, model, params, batch


def test_labels_cover_every_leaf_and_split_is_exact(setup):
  _, _, params, _ = setup
  rules = methods.get('prompt_tuning').trainable_rules
  labels = jax.tree.leaves(optim.param_labels(params, rules))
  assert labels.count('train') == 1 and len(labels) == len(jax.tree.leaves(params))
  trainable, frozen = optim.split_params(params, rules)
  assert list(trainable) == ['prompt'] and 'prompt' not in frozen
  merged = optim.merge_params(trainable, frozen)
  assert jax.tree.structure(merged) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, merged, params)


def test_uncovered_leaf_is_an_error(setup):
  _, _, params, _ = setup
  with pytest.raises(ValueError, match="No trainability rule covers param 'decoder/"):
    optim.param_labels(params, ((r'^prompt/', 'train'), (r'^encoder/', 'freeze'),
                                (r'^token_embedder/', 'freeze')))
  with pytest.raises(ValueError, match="Unknown method 'lora'"):
    methods.get('lora')


def test_frozen_leaves_get_no_update_and_no_state_on_the_full_tree(setup):
  _, _, params, _ = setup
  optimizer = optim.make_optimizer(default_config().optimizer,
                                   methods.get('prompt_tuning').trainable_rules)
  state = optimizer.init(params)
  prompt_size = PROMPT_LENGTH * params['prompt']['prompt'].shape[1]
  # Adafactor unfactored: one second-moment entry per prompt value (+ scalar counts), nothing
  # for the ~1M frozen values.
  state_values = optim.num_elements(state)
  assert prompt_size <= state_values <= prompt_size + 8
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = optimizer.update(grads, state, params)
  for path, update in jax.tree_util.tree_leaves_with_path(updates):
    is_prompt = jax.tree_util.keystr(path).startswith("['prompt']")
    assert bool(jnp.any(update != 0)) == is_prompt, path


def test_trainable_subtree_gets_the_same_update_as_the_full_tree(setup):
  _, _, params, _ = setup
  rules = methods.get('prompt_tuning').trainable_rules
  optimizer = optim.make_optimizer(default_config().optimizer, rules)
  grads = jax.tree.map(lambda x: jnp.sin(jnp.arange(x.size, dtype=jnp.float32)).reshape(x.shape),
                       params)
  full_updates, _ = optimizer.update(grads, optimizer.init(params), params)
  trainable, _ = optim.split_params(params, rules)
  trainable_grads, _ = optim.split_params(grads, rules)
  sub_updates, _ = optimizer.update(trainable_grads, optimizer.init(trainable), trainable)
  np.testing.assert_array_equal(sub_updates['prompt']['prompt'],
                                full_updates['prompt']['prompt'])


def test_train_step_differentiates_only_the_prompt(setup):
  """The compiled step has no gradient for any frozen weight: the jaxpr of the step's gradient
  computation outputs exactly the prompt's cotangent."""
  _, model, params, batch = setup
  trainable, frozen = optim.split_params(params, methods.get('prompt_tuning').trainable_rules)
  grad_fn = jax.grad(make_loss_fn(model))
  grads = grad_fn(trainable, frozen, batch, jax.random.key(0))
  assert jax.tree.structure(grads) == jax.tree.structure(trainable)
  outputs = jax.make_jaxpr(grad_fn)(trainable, frozen, batch, jax.random.key(0)).out_avals
  assert [tuple(aval.shape) for aval in outputs] == [(PROMPT_LENGTH, params['prompt']['prompt']
                                                      .shape[1])]


def test_model_tuning_trains_everything(setup):
  _, _, params, _ = setup
  trainable, frozen = optim.split_params(params, methods.get('model_tuning').trainable_rules)
  assert frozen == {} and optim.num_elements(trainable) == optim.num_elements(params)


def test_adafactor_paper_settings_and_explicit_factoring():
  config = default_config().optimizer
  assert (config.learning_rate, config.decay_rate, config.weight_decay) == (0.3, 0.8, 1e-5)
  prompt = {'prompt': jnp.ones((100, 512))}
  unfactored = optim.base_optimizer(config).init(prompt)
  assert optim.num_elements(unfactored) >= 100 * 512  # full second moment
  config.factored = True
  factored = optim.base_optimizer(config).init(prompt)
  assert optim.num_elements(factored) < 2 * (100 + 512) + 100  # row + column statistics only


def _two_adam_steps(config, rules, params, grads_per_step):
  optimizer = optim.make_optimizer(config, rules)
  state, updates = optimizer.init(params), None
  for grads in grads_per_step:
    updates, state = optimizer.update(grads, state, params)
  return updates


def test_grad_clipping_uses_the_trainable_norm_only(setup):
  """Huge frozen gradients do not shrink the prompt's clipped gradient; the clip is active."""
  _, _, params, _ = setup
  config = default_config().optimizer
  config.name, config.grad_clip_norm = 'adam', 1.0
  rules = methods.get('prompt_tuning').trainable_rules
  prompt_shape = params['prompt']['prompt'].shape
  steps = [jnp.full(prompt_shape, 10.0), jnp.full(prompt_shape, 0.01)]  # clipped, then not
  full = [jax.tree.map(lambda x: jnp.full(x.shape, 1e6), params) for _ in steps]
  for grads, prompt_grad in zip(full, steps):
    grads['prompt']['prompt'] = prompt_grad
  full_tree = _two_adam_steps(config, rules, params, full)['prompt']['prompt']
  trainable_only = _two_adam_steps(config, rules, {'prompt': params['prompt']},
                                   [{'prompt': {'prompt': g}} for g in steps])['prompt']['prompt']
  np.testing.assert_allclose(full_tree, trainable_only, rtol=1e-6)
  config.grad_clip_norm = 0.0
  unclipped = _two_adam_steps(config, rules, {'prompt': params['prompt']},
                              [{'prompt': {'prompt': g}} for g in steps])['prompt']['prompt']
  assert not np.allclose(unclipped, trainable_only, rtol=1e-3)


def test_train_step_reports_the_trainable_gradient_norm(setup):
  _, model, params, batch = setup
  rules = methods.get('prompt_tuning').trainable_rules
  trainable, frozen = optim.split_params(params, rules)
  optimizer = optim.make_optimizer(default_config().optimizer, rules)
  step = jax.jit(make_train_step(model, optimizer))
  new, _, metrics = step(trainable, optimizer.init(trainable), frozen, batch, jax.random.key(0), 0)
  expected = optim.global_norm(jax.grad(make_loss_fn(model))(trainable, frozen, batch,
                                                             jax.random.fold_in(
                                                                 jax.random.key(0), 0)))
  np.testing.assert_allclose(metrics['grad_norm'], expected, rtol=1e-6)
  assert float(jnp.abs(new['prompt']['prompt'] - trainable['prompt']['prompt']).max()) > 0
