"""Cross-model prompt transfer through a trained projector (Su et al. 2022, "On Transferability
of Prompt Tuning"): a prompt trained on one backbone (e.g. a smaller T5) is mapped into another
backbone's embedding space by a two-layer perceptron, `tanh(S W1 + b1) W2 + b2`, trained on a
task with the target backbone frozen and the source prompt S fixed. Folded, the projected
prompt is a plain [P, d_target] prompt (prompt.npy), e.g. to continue prompt tuning from it.
"""

import jax
from flax import linen as nn

from t5prompt.prompts.prefix import torch_linear_init
from t5prompt.prompts.soft_prompt import (PROMPT_AXES, Initializer, SoftPrompt, prepend,
                                          produced_once)


class ProjectedPrompt(nn.Module):
  """Params (under the model's `prompt/`): `source` [P, d_source] (frozen: the transferred
  prompt, set by `source_init`), `projector_in` [d_source, H] + bias, `projector_out`
  [H, d_model] + bias."""
  length: int
  source_dim: int
  hidden: int = 512
  source_init: Initializer = nn.initializers.zeros

  @nn.compact
  def produce_prompt(self, d_model: int) -> jax.Array:
    replicated = ('prompt_embed', 'prefix_mlp')
    source = self.param('source', nn.with_logical_partitioning(
        self.source_init, PROMPT_AXES), (self.length, self.source_dim))
    w_in = self.param('projector_in', nn.with_logical_partitioning(
        torch_linear_init(self.source_dim), replicated), (self.source_dim, self.hidden))
    b_in = self.param('projector_in_bias', nn.with_logical_partitioning(
        torch_linear_init(self.source_dim), ('prefix_mlp',)), (self.hidden,))
    w_out = self.param('projector_out', nn.with_logical_partitioning(
        torch_linear_init(self.hidden), replicated[::-1]), (self.hidden, d_model))
    b_out = self.param('projector_out_bias', nn.with_logical_partitioning(
        torch_linear_init(self.hidden), ('prompt_embed',)), (d_model,))
    return jax.numpy.tanh(source @ w_in + b_in) @ w_out + b_out

  def __call__(self, embedded: jax.Array, mask: jax.Array):
    return prepend(self.produce_prompt(embedded.shape[-1]), embedded, mask)

  def folded(self, params: dict, d_model: int) -> tuple[SoftPrompt, dict]:
    """The reparameterisation run once: a plain soft prompt with the same outputs."""
    return produced_once(self, params, d_model)
