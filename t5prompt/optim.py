"""Optimizers and the freeze.

One label function over param paths decides what trains (each method's rules are in its record,
`prompts.methods`). It drives both halves of the freeze:
  * `make_optimizer` wraps the base optimizer in `optax.multi_transform` with
    `{'train': base, 'freeze': set_to_zero()}`, so a frozen leaf gets no update and no state
    (never a bare `optax.masked`, which passes raw gradients through on unmasked leaves);
  * `split_params` separates the trainable subtree, which the train step differentiates and
    donates, from the frozen one, which it only reads, so XLA computes no weight gradients for
    the frozen backbone (the costly part a mask alone leaves in place).
"""

import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

Params = Mapping[str, Any]
LabelRules = Sequence[tuple[str, str]]  # (regex over 'a/b/c' paths, 'train' | 'freeze')

OPTIMIZERS = ('adafactor', 'adam', 'adamw')


def _label(path: str, rules: LabelRules) -> str:
  for pattern, label in rules:
    if re.search(pattern, path):
      return label
  raise ValueError(f'No trainability rule covers param {path!r}; add one to the rules '
                   f'({[pattern for pattern, _ in rules]}).')


def param_labels(params: Params, rules: LabelRules) -> Params:
  """The tree of 'train' / 'freeze' labels, one per leaf of `params`."""
  flat = traverse_util.flatten_dict(dict(params), sep='/')
  return traverse_util.unflatten_dict({path: _label(path, rules) for path in flat}, sep='/')


def split_params(params: Params, rules: LabelRules) -> tuple[Params, Params]:
  """(trainable, frozen): two nested dicts that together hold every leaf of `params` once."""
  flat = traverse_util.flatten_dict(dict(params), sep='/')
  trainable = {path: leaf for path, leaf in flat.items() if _label(path, rules) == 'train'}
  frozen = {path: leaf for path, leaf in flat.items() if path not in trainable}
  if not trainable:
    raise ValueError('No param is trainable under these rules; check the method and that the '
                     'model has the params it trains (e.g. a prompt for prompt tuning).')
  return (traverse_util.unflatten_dict(trainable, sep='/'),
          traverse_util.unflatten_dict(frozen, sep='/'))


def merge_params(trainable: Params, frozen: Params) -> Params:
  """Inverse of `split_params`."""
  flat = traverse_util.flatten_dict(dict(frozen), sep='/')
  flat.update(traverse_util.flatten_dict(dict(trainable), sep='/'))
  return traverse_util.unflatten_dict(flat, sep='/')


def learning_rate_schedule(learning_rate: float, warmup_steps: int = 0) -> optax.Schedule:
  """Constant, after an optional linear warmup from 0 (the paper used a constant 0.3)."""
  if warmup_steps <= 0:
    return optax.constant_schedule(learning_rate)
  return optax.linear_schedule(0.0, learning_rate, warmup_steps)


def base_optimizer(config) -> optax.GradientTransformation:
  """The optimizer the trainable params see, from `config` (the run config's `optimizer`).

  Adafactor follows the paper (Lester et al. 2021, section 3): no parameter scaling, beta2 decay
  0.8, weight decay 1e-5 (decoupled, not scaled by the LR, as in T5X's Adafactor). Factoring is
  set explicitly: optax would otherwise factor a [P, d] prompt only when P >= 128, so prompt
  lengths would silently change the optimizer.
  """
  schedule = learning_rate_schedule(config.learning_rate, config.warmup_steps)
  if config.name == 'adafactor':
    base = optax.adafactor(
        learning_rate=schedule, decay_rate=config.decay_rate, decay_offset=0,
        multiply_by_parameter_scale=False, clipping_threshold=1.0,
        factored=config.factored, min_dim_size_to_factor=1 if config.factored else 128,
        weight_decay_rate=config.weight_decay or None)
  elif config.name == 'adam':
    base = optax.adam(schedule, b1=config.b1, b2=config.b2)
  elif config.name == 'adamw':
    base = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay)
  else:
    raise ValueError(f'Unknown optimizer {config.name!r}; choose one of {", ".join(OPTIMIZERS)}.')
  if config.grad_clip_norm:
    # Inside the 'train' branch, so the global norm is over trainable params only.
    base = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), base)
  return base


def make_optimizer(config, rules: LabelRules) -> optax.GradientTransformation:
  """The freeze-aware optimizer. Works on the full param tree (frozen leaves: zero update, no
  state) and on the trainable subtree alone (what the train step passes), with equal results."""
  return optax.multi_transform(
      {'train': base_optimizer(config), 'freeze': optax.set_to_zero()},
      lambda tree: param_labels(tree, rules))


def global_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                      for x in jax.tree.leaves(tree)))


def num_elements(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))


def num_non_embedding(params) -> int:
  """A T5's parameters without the token embeddings and the untied LM head (the transformer
  proper: what grows with depth and width, not with the vocabulary)."""
  head = params['decoder'].get('logits_dense', {})
  return num_elements(params) - num_elements(params['token_embedder']) - num_elements(head)
