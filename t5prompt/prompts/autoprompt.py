"""AutoPrompt (Shin et al. 2020): k discrete trigger tokens around the task input, found by a
gradient-guided search on the frozen model.

A template such as `[X] [T]` places the task input (`[X]`, its tokens) and the block of k
trigger slots (`[T]`); any other text in it is literal. Examples are rendered in token space,
so a trigger is an ordinary vocabulary token and the found prompt is plain text.

One search iteration (HotFlip's first-order step, as AutoPrompt takes it): on a batch, the
gradient of the label loss w.r.t. the embedding at one slot, g (summed over the batch); every
allowed token w is ranked by the linearised change of the loss, (e_w - e_current) . g, and the
`candidates` best are scored exactly (one forward pass each); the best replaces the slot's
token if it lowers the loss. `search.py` runs the iterations, checkpoints and evaluates.
"""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from t5prompt.data.pipeline import EOS_ID, TokenizedSplit, unpadded
from t5prompt.models.decode import score_targets, shift_right, target_log_likelihood
from t5prompt.models.t5 import T5

INPUT, TRIGGERS = '[X]', '[T]'
FIRST_ORDINARY_ID = 3  # 0 padding, 1 EOS, 2 unknown


@dataclasses.dataclass(frozen=True)
class Template:
  """A parsed template: its parts in order, each INPUT, TRIGGERS or literal token ids."""
  parts: tuple

  @classmethod
  def parse(cls, text: str, vocabulary) -> 'Template':
    pieces = [piece for piece in re.split(r'(\[X\]|\[T\])', text) if piece.strip()]
    if pieces.count(INPUT) != 1 or pieces.count(TRIGGERS) != 1:
      raise ValueError(
          f'prompt.template={text!r} must hold the task input {INPUT} once and the trigger '
          f'block {TRIGGERS} once, e.g. "{INPUT} {TRIGGERS}" or "{TRIGGERS} {INPUT} Answer:".')
    return cls(tuple(piece if piece in (INPUT, TRIGGERS)
                     else tuple(vocabulary.encode(piece.strip())) for piece in pieces))

  @property
  def literal_length(self) -> int:
    return sum(len(part) for part in self.parts if part not in (INPUT, TRIGGERS))


@dataclasses.dataclass(frozen=True)
class Rendered:
  """A split in the template: `data.inputs` hold the triggers at `slots` [n, k] (columns)."""
  data: TokenizedSplit
  slots: np.ndarray

  def with_triggers(self, trigger_ids) -> TokenizedSplit:
    inputs = self.data.inputs.copy()
    inputs[np.arange(len(inputs))[:, None], self.slots] = np.asarray(trigger_ids, np.int32)
    return dataclasses.replace(self.data, inputs=inputs)


def render(data: TokenizedSplit, template: Template, trigger_ids) -> Rendered:
  """Every example of `data` in the template with `trigger_ids`; the input is cut (never the
  triggers or the template's text) so that each row still fits `data`'s input length."""
  length = data.inputs.shape[1]
  k = len(trigger_ids)
  room = length - 1 - k - template.literal_length  # what the input may keep, EOS aside
  if room < 1:
    raise ValueError(f'{k} triggers and the template\'s {template.literal_length} tokens '
                     f'leave no room for the input in task.input_length={length}; raise it '
                     'or lower prompt.length.')
  inputs = np.zeros_like(data.inputs)
  slots = np.zeros((len(data), k), np.int32)
  cut = 0
  for row, padded in enumerate(data.inputs):
    text = unpadded(padded)
    cut += len(text) > room
    ids = []
    for part in template.parts:
      if part == INPUT:
        ids.extend(text[:room])
      elif part == TRIGGERS:
        slots[row] = np.arange(len(ids), len(ids) + k)
        ids.extend(trigger_ids)
      else:
        ids.extend(part)
    inputs[row, :len(ids) + 1] = ids + [EOS_ID]
  return Rendered(dataclasses.replace(data, inputs=inputs,
                                      truncated_inputs=data.truncated_inputs + cut), slots)


def allowed_ids(vocabulary, num_embeddings: int) -> np.ndarray:
  """The tokens a trigger may be: ordinary pieces (no padding, EOS, unknown, sentinels, or the
  embedding table's unused rows)."""
  ordinary = vocabulary.vocab_size - getattr(vocabulary, 'extra_ids', 0)
  return np.arange(FIRST_ORDINARY_ID, min(ordinary, num_embeddings))


def rank_candidates(embedding, gradient, current_id: int, allowed, count: int) -> np.ndarray:
  """The `count` allowed tokens whose swap in lowers the linearised loss most: ascending
  (e_w - e_current) . gradient (the current token itself excluded)."""
  allowed = np.asarray(allowed)
  change = np.asarray(embedding)[allowed] @ np.asarray(gradient, np.float64)
  change = change - float(np.asarray(embedding)[current_id] @ np.asarray(gradient, np.float64))
  order = allowed[np.argsort(change, kind='stable')]
  return order[order != current_id][:count]


class EmbeddingProbe(nn.Module):
  """A prompt hook that changes nothing: the gradient w.r.t. its `perturbations` entry is the
  gradient w.r.t. the embedded encoder input (the first-order step reads it at the slots)."""

  @nn.compact
  def __call__(self, embedded, mask):
    return self.perturb('embedded', embedded), mask


def label_loss(model: T5, params, inputs, targets):
  """The negative label log-likelihood (summed over the label's tokens), mean over the batch."""
  return -jnp.mean(score_targets(model, params, inputs, targets))


@functools.partial(jax.jit, static_argnames=('model',))
def slot_gradient(model: T5, params, inputs, targets, slot_columns):
  """(loss, the gradient of the batch's summed label loss w.r.t. the embedding at each row's
  slot column [d]); `model` carries an `EmbeddingProbe` as its prompt hook."""
  def loss_of(perturbation):
    variables = {'params': params, 'perturbations': {'prompt': {'embedded': perturbation}}}
    logits = model.apply(variables, inputs, shift_right(targets))
    return -jnp.sum(target_log_likelihood(logits, targets))
  zeros = jnp.zeros(inputs.shape + (model.config.d_model,), jnp.float32)
  loss, gradient = jax.value_and_grad(loss_of)(zeros)
  at_slots = gradient[jnp.arange(inputs.shape[0]), slot_columns]  # [b, d]
  return loss / inputs.shape[0], jnp.sum(at_slots, axis=0)


@functools.partial(jax.jit, static_argnames=('model',))
def candidate_losses(model: T5, params, inputs, targets, slot_columns, candidates):
  """The exact label loss on the batch with each candidate [c] in the slot: [c]."""
  rows = jnp.arange(inputs.shape[0])
  return jax.lax.map(
      lambda token: label_loss(model, params, inputs.at[rows, slot_columns].set(token), targets),
      candidates)
