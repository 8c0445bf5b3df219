"""The soft prompt of prompt tuning (Lester et al. 2021, section 2): a trainable [P, d_model]
matrix prepended to the embedded encoder input, with the attention mask widened to cover it.

Mirrors google-research/prompt-tuning's split into one param and one combine step; the decoder
is untouched (encoder-only prompting, as in the paper).
"""

from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

Initializer = Callable[[jax.Array, tuple[int, ...]], jax.Array]

# Logical axes of the prompt param; `partitioning` maps both to replicated by default.
PROMPT_AXES = ('prompt', 'prompt_embed')


def uniform_init(scale: float = 0.5) -> Initializer:
  """U[-scale, scale], the paper's "random uniform" initialisation."""
  def init(rng, shape):
    return jax.random.uniform(rng, shape, jnp.float32, -scale, scale)
  return init


class SoftPrompt(nn.Module):
  """(embedded [b, l, d], mask [b, l]) -> ([b, P + l, d], [b, P + l]), prompt first.

  The param is `prompt` [P, d] in float32 (its owner, `T5`, puts it under `params/prompt`);
  it is cast to the compute dtype of the embeddings it joins.
  """
  prompt_length: int
  init_fn: Initializer = uniform_init()

  @nn.compact
  def produce_prompt(self, d_model: int) -> jax.Array:
    """The prompt [P, d_model] (the param itself)."""
    if self.prompt_length <= 0:
      raise ValueError(f'prompt_length must be positive, got {self.prompt_length}.')
    return self.param('prompt', nn.with_logical_partitioning(self.init_fn, PROMPT_AXES),
                      (self.prompt_length, d_model))

  def __call__(self, embedded: jax.Array, mask: jax.Array):
    return prepend(self.produce_prompt(embedded.shape[-1]), embedded, mask)

  def folded(self, params: dict, d_model: int) -> tuple['SoftPrompt', dict]:
    """The inference form: this prompt as it is (nothing to fold), in a module without the
    training-time initialiser, so every run's eval functions share one compilation."""
    del d_model
    return SoftPrompt(self.prompt_length, parent=None), params


def produced_once(module: nn.Module, params: dict, d_model: int) -> tuple[SoftPrompt, dict]:
  """A reparameterised prompt (P-tuning's encoder, a projector) run once: the plain soft prompt
  with the same outputs, for inference and export."""
  prompt = module.clone(parent=None).apply({'params': params}, d_model,
                                           method=type(module).produce_prompt)
  return SoftPrompt(module.length, parent=None), {'prompt': prompt}


def prepend(prompt: jax.Array, embedded: jax.Array, mask: jax.Array):
  """[P, d] prompt (shared by the batch) or [b, P, d] (one per example) in front of the
  embedded input [b, l, d]; the mask [b, l] widened to cover it."""
  batch = embedded.shape[0]
  if prompt.ndim == 2:
    prompt = jnp.broadcast_to(prompt, (batch,) + prompt.shape)
  prompt_mask = jnp.ones(prompt.shape[:2], mask.dtype)
  return (jnp.concatenate([prompt.astype(embedded.dtype), embedded], axis=1),
          jnp.concatenate([prompt_mask, mask], axis=1))


class PromptBank(nn.Module):
  """N soft prompts on one frozen model; each example names its own (mixed-task batches,
  serving many tasks at once, ensembles of N prompts for one task).

  (embedded [b, l, d], mask [b, l], prompt_ids int [b]) -> ([b, P + l, d], [b, P + l]).
  The param is `prompts` [N, P, d] (under the model's `prompt/`); row i of it is a prompt
  tuning prompt, so `bank_from_prompts` / `prompts[i]` convert both ways.
  """
  num_prompts: int
  prompt_length: int
  init_fn: Initializer = uniform_init()

  @nn.compact
  def produce_prompt(self, d_model: int) -> jax.Array:
    """The bank [N, P, d_model] (the param itself), each row from its own init key."""
    return self.param(
        'prompts', nn.with_logical_partitioning(
            lambda rng, shape: jax.vmap(lambda key: self.init_fn(key, shape[1:]))(
                jax.random.split(rng, shape[0])), (None,) + PROMPT_AXES),
        (self.num_prompts, self.prompt_length, d_model))

  def __call__(self, embedded: jax.Array, mask: jax.Array, prompt_ids: jax.Array | None = None):
    prompts = self.produce_prompt(embedded.shape[-1])
    if prompt_ids is None:  # no ids (shape inference): the first prompt for every example
      prompt_ids = jnp.zeros(embedded.shape[0], jnp.int32)
    return prepend(jnp.take(prompts, prompt_ids, axis=0), embedded, mask)

  def row(self, params: dict, index: int) -> tuple[SoftPrompt, dict]:
    """Prompt `index` alone, as plain prompt tuning (one task's evaluation and export)."""
    return SoftPrompt(self.prompt_length, parent=None), {'prompt': params['prompts'][index]}


def bank_from_prompts(prompts) -> dict:
  """A PromptBank's params from a sequence of [P, d] prompts (all one length)."""
  return {'prompts': jnp.stack([jnp.asarray(p, jnp.float32) for p in prompts])}
