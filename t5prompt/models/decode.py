"""Decoding and scoring with the Flax T5: greedy and beam search with a KV cache, target scoring.

All functions take the model (a `T5`, possibly with a prompt) and its params, and are jitted
with the model and lengths static. Token conventions are T5's: 0 is padding and the decoder's
start token, 1 is EOS. Decoded outputs are [batch, max_decode_length] with 0 after EOS.
"""

import functools

import jax
import jax.numpy as jnp

from t5prompt.models.t5 import T5

EOS_ID = 1
_NEG = -1.0e9  # the "impossible" score, as in the reference beam search


def shift_right(targets: jax.Array) -> jax.Array:
  """Decoder inputs for teacher forcing: the start token (0), then targets without the last."""
  return jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]


@functools.partial(jax.jit, static_argnames=('model',))
def score_targets(model: T5, params, encoder_input_tokens, targets) -> jax.Array:
  """Sum of target-token log-likelihoods per example [b]; padding (0) in targets is ignored."""
  logits = model.apply({'params': params}, encoder_input_tokens, shift_right(targets))
  return target_log_likelihood(logits, targets)


def target_log_likelihood(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Teacher-forced logits [b, t, v] -> the targets' summed log-likelihood [b] (padding 0
  ignored)."""
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  token_log_probs = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(targets > 0, token_log_probs, 0.0), axis=-1)


@functools.partial(jax.jit, static_argnames=('model', 'length_normalized'))
def rank_scores(model: T5, params, encoder_input_tokens, label_targets, prompt_ids=None,
                length_normalized: bool = False) -> jax.Array:
  """Rank classification: the log-likelihood of every verbalised label for every example.

  encoder_input_tokens [b, l], label_targets [k, t] (each label's tokens with EOS, 0-padded)
  -> scores [b, k]: the sum of the label's token log-likelihoods, or with `length_normalized`
  their mean (a sum favours labels of fewer tokens on a model that ignores its input). The
  encoder runs once per example; only the decoder runs per label. `prompt_ids` [b] picks each
  example's prompt from a prompt bank.
  """
  encoded, encoder_mask = model.apply({'params': params}, encoder_input_tokens,
                                      prompt_ids=prompt_ids, method=T5.encode)
  batch, num_labels = encoder_input_tokens.shape[0], label_targets.shape[0]
  encoded, encoder_mask = (jnp.repeat(x, num_labels, axis=0) for x in (encoded, encoder_mask))
  targets = jnp.tile(label_targets, (batch, 1))  # [b * k, t], example-major like the repeat
  logits = model.apply({'params': params}, encoded, encoder_mask, shift_right(targets),
                       method=T5.decode)
  scores = target_log_likelihood(logits, targets)
  if length_normalized:
    scores = scores / jnp.sum(targets > 0, axis=-1)
  return scores.reshape(batch, num_labels)


def _init_cache(model: T5, params, encoded, encoder_mask, max_decode_length: int):
  """The KV cache before the first step: self-attention entries zero for `max_decode_length`
  positions, cross-attention keys/values projected from the encoder output once."""
  batch = encoded.shape[0]
  dummy = jnp.zeros((batch, max_decode_length), jnp.int32)
  _, variables = model.apply({'params': params}, encoded, encoder_mask, dummy, decode=True,
                             max_decode_length=max_decode_length, mutable=['cache'],
                             method=T5.decode)
  return variables['cache']


def _step(model, params, cache, encoded, encoder_mask, tokens, max_decode_length):
  """One cached decoder step: tokens [b] -> (log-probs [b, v] float32, new cache)."""
  logits, variables = model.apply(
      {'params': params, 'cache': cache}, encoded, encoder_mask, tokens[:, None], decode=True,
      max_decode_length=max_decode_length, mutable=['cache'], method=T5.decode)
  return jax.nn.log_softmax(logits[:, 0], axis=-1), variables['cache']


@functools.partial(jax.jit, static_argnames=('model', 'max_decode_length'))
def greedy_decode(model: T5, params, encoder_input_tokens, max_decode_length: int) -> jax.Array:
  """Greedy decoding with the KV cache; stops early once every sequence has emitted EOS."""
  encoded, encoder_mask = model.apply({'params': params}, encoder_input_tokens, method=T5.encode)
  batch = encoder_input_tokens.shape[0]
  cache = _init_cache(model, params, encoded, encoder_mask, max_decode_length)

  def not_done(state):
    step, _, _, _, done = state
    return (step < max_decode_length) & ~jnp.all(done)

  def body(state):
    step, last, cache, output, done = state
    log_probs, cache = _step(model, params, cache, encoded, encoder_mask, last, max_decode_length)
    token = jnp.where(done, 0, jnp.argmax(log_probs, axis=-1).astype(jnp.int32))
    output = output.at[:, step].set(token)
    return step + 1, token, cache, output, done | (token == EOS_ID)

  state = (jnp.array(0), jnp.zeros((batch,), jnp.int32), cache,
           jnp.zeros((batch, max_decode_length), jnp.int32), jnp.zeros((batch,), bool))
  return jax.lax.while_loop(not_done, body, state)[3]


@functools.partial(jax.jit, static_argnames=('model', 'max_decode_length'))
def greedy_decode_uncached(model: T5, params, encoder_input_tokens,
                           max_decode_length: int) -> jax.Array:
  """Greedy decoding that reruns the whole decoder at every step: the cache's reference."""
  encoded, encoder_mask = model.apply({'params': params}, encoder_input_tokens, method=T5.encode)
  batch = encoder_input_tokens.shape[0]

  def body(step, state):
    output, done = state
    logits = model.apply({'params': params}, encoded, encoder_mask, shift_right(output),
                         method=T5.decode)
    token = jnp.argmax(logits[:, step], axis=-1).astype(jnp.int32)
    token = jnp.where(done, 0, token)
    return output.at[:, step].set(token), done | (token == EOS_ID)

  state = (jnp.zeros((batch, max_decode_length), jnp.int32), jnp.zeros((batch,), bool))
  return jax.lax.fori_loop(0, max_decode_length, body, state)[0]


def _gather_beams(tree, indices):
  """Selects beams: leaves [b, k_old, ...], indices [b, k_new] -> [b, k_new, ...]."""
  return jax.tree.map(lambda x: jnp.take_along_axis(
      x, indices.reshape(indices.shape + (1,) * (x.ndim - 2)), axis=1), tree)


@functools.partial(jax.jit, static_argnames=('model', 'max_decode_length', 'num_beams'))
def beam_search(model: T5, params, encoder_input_tokens, max_decode_length: int,
                num_beams: int = 4, length_penalty: float = 1.0):
  """Beam search with the KV cache -> (best sequences [b, l], their scores [b]).

  Follows the reference's (transformers') vectorised beam search with its defaults
  (early_stopping=False): 2*num_beams candidates per step, the top num_beams unfinished continue,
  finished ones are scored `sum log p / length**length_penalty`, and search stops when no running
  beam can beat the worst finished one by that length heuristic.
  """
  batch, vocab = encoder_input_tokens.shape[0], model.config.vocab_size
  encoded, encoder_mask = model.apply({'params': params}, encoder_input_tokens, method=T5.encode)
  # Every beam of an example shares its encoder output: repeat along a flattened beam axis.
  encoded, encoder_mask = (jnp.repeat(x, num_beams, axis=0) for x in (encoded, encoder_mask))
  cache = _init_cache(model, params, encoded, encoder_mask, max_decode_length)
  flat = lambda x: x.reshape((batch * num_beams,) + x.shape[2:])
  unflat = lambda x: x.reshape((batch, num_beams) + x.shape[1:])
  keep = 2 * num_beams  # enough that num_beams survive even if all others hit EOS
  top_num_beams = jnp.arange(keep) < num_beams

  def body(state):
    (step, running, running_scores, cache, finished, finished_scores, is_finished,
     improvable) = state
    last = jnp.where(step == 0, 0, running[:, :, jnp.maximum(step - 1, 0)])
    log_probs, cache = _step(model, params, cache, encoded, encoder_mask, flat(last),
                             max_decode_length)
    candidates = (unflat(log_probs) + running_scores[:, :, None]).reshape(batch, -1)
    top_scores, top_indices = jax.lax.top_k(candidates, keep)
    origin, tokens = top_indices // vocab, (top_indices % vocab).astype(jnp.int32)
    top_sequences = _gather_beams(running, origin).at[:, :, step].set(tokens)
    hits_stop = (tokens == EOS_ID) | (step + 1 >= max_decode_length)

    # The best unfinished continuations run on.
    next_scores, next_indices = jax.lax.top_k(top_scores + hits_stop * _NEG, num_beams)
    running = _gather_beams(top_sequences, next_indices)
    cache_origin = _gather_beams(origin, next_indices)
    cache = _reorder_cache(cache, cache_origin, beam_axis=1 if model.config.scan_layers else 0)

    # Newly finished top beams compete with the finished ones so far.
    just_finished = hits_stop & top_num_beams[None, :]
    penalised = top_scores / ((step + 1).astype(jnp.float32) ** length_penalty)
    penalised = penalised + (~improvable)[:, None] * _NEG + (~just_finished) * _NEG
    merged_scores = jnp.concatenate([finished_scores, penalised], axis=1)
    best_scores, best = jax.lax.top_k(merged_scores, num_beams)
    finished = _gather_beams(jnp.concatenate([finished, top_sequences], axis=1), best)
    is_finished = _gather_beams(jnp.concatenate([is_finished, just_finished], axis=1), best)

    # Can a running beam still beat the worst finished one? (the reference's heuristic)
    best_possible = next_scores[:, :1] / ((step + 1).astype(jnp.float32) ** length_penalty)
    worst_finished = jnp.where(is_finished, jnp.min(best_scores, axis=1, keepdims=True), _NEG)
    improvable = improvable & jnp.any(best_possible > worst_finished, axis=-1)
    all_stopped = jnp.all(hits_stop)
    return (step + 1, running, next_scores, cache, finished, best_scores, is_finished,
            improvable & ~all_stopped)

  def not_done(state):
    return (state[0] < max_decode_length) & jnp.any(state[-1])

  sequences = jnp.zeros((batch, num_beams, max_decode_length), jnp.int32)
  initial_scores = jnp.tile(jnp.where(jnp.arange(num_beams) == 0, 0.0, _NEG), (batch, 1))
  state = (jnp.array(0), sequences, initial_scores, cache, sequences,
           jnp.full((batch, num_beams), _NEG), jnp.zeros((batch, num_beams), bool),
           jnp.ones((batch,), bool))
  state = jax.lax.while_loop(not_done, body, state)
  return state[4][:, 0], state[5][:, 0]


def _reorder_cache(cache, origin, beam_axis: int):
  """Moves each beam's cached keys/values to where its continuation now runs.

  Cache leaves hold the flattened batch*beam axis at `beam_axis` (1 when nn.scan stacks a
  leading layer axis); the per-layer cache index has no such axis and is left alone.
  """
  batch, num_beams = origin.shape

  def reorder(x):
    if x.ndim <= beam_axis:
      return x
    moved = jnp.moveaxis(x, beam_axis, 0)
    moved = moved.reshape((batch, num_beams) + moved.shape[1:])
    moved = _gather_beams(moved, origin).reshape((batch * num_beams,) + moved.shape[2:])
    return jnp.moveaxis(moved, 0, beam_axis)

  return jax.tree.map(reorder, cache)
