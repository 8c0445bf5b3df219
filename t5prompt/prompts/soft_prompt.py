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
  def __call__(self, embedded: jax.Array, mask: jax.Array):
    if self.prompt_length <= 0:
      raise ValueError(f'prompt_length must be positive, got {self.prompt_length}.')
    batch, _, d_model = embedded.shape
    prompt = self.param('prompt', nn.with_logical_partitioning(self.init_fn, PROMPT_AXES),
                        (self.prompt_length, d_model))
    prompt = jnp.broadcast_to(prompt.astype(embedded.dtype), (batch,) + prompt.shape)
    prompt_mask = jnp.ones((batch, self.prompt_length), mask.dtype)
    return (jnp.concatenate([prompt, embedded], axis=1),
            jnp.concatenate([prompt_mask, mask], axis=1))
