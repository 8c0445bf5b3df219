"""P-tuning's prompt encoder (Liu et al. 2021, "GPT Understands, Too").

The virtual tokens are not trained directly: trainable input embeddings [P, d_model] pass through
a bidirectional LSTM and an MLP (`kind='lstm'`), or an MLP alone (`kind='mlp'`), and the output
is the prompt prepended to the encoder input, as in prompt tuning. The encoder is a training-time
reparameterisation: `produce_prompt` runs it once (`methods.for_inference`), and the [P, d_model]
result is a plain soft prompt (exported as prompt.npy, served by `SoftPrompt`, exported to PEFT as prompt tuning).

Layout mirrors PEFT's `PromptEncoder`: LSTM(d -> H, 2 layers, bidirectional) then
Linear(2H, 2H) ReLU Linear(2H, d); or Linear(d, H) ReLU Linear(H, H) ReLU Linear(H, d).
The LSTM has torch's gate order (input, forget, cell, output) with the two torch biases summed.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn

from t5prompt.prompts.prefix import torch_linear_init
from t5prompt.prompts.soft_prompt import PROMPT_AXES, SoftPrompt, prepend, produced_once

ENCODER_KINDS = ('lstm', 'mlp')
_REPLICATED = ('prompt_embed', 'prefix_mlp')  # the encoder's weights: small, replicated


def lstm_direction(inputs: jax.Array, w_in: jax.Array, w_hidden: jax.Array, bias: jax.Array,
                   reverse: bool) -> jax.Array:
  """One LSTM direction over [T, in] -> [T, H], zero initial state (torch.nn.LSTM's cell)."""
  hidden_size = w_hidden.shape[0]
  projected = inputs @ w_in + bias  # [T, 4H], the input half of every step at once

  def step(carry, x_gates):
    h, c = carry
    gates = x_gates + h @ w_hidden
    i, f, g, o = jnp.split(gates, 4)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h

  zeros = jnp.zeros(hidden_size, inputs.dtype)
  _, outputs = jax.lax.scan(step, (zeros, zeros), projected, reverse=reverse)
  return outputs


class PromptEncoder(nn.Module):
  """(embedded [b, l, d], mask [b, l]) -> ([b, P + l, d], [b, P + l]); the prompt is encoded
  from the `embedding` param (under the model's top-level `prompt/`)."""
  length: int
  kind: str = 'lstm'
  hidden: int = 128
  lstm_layers: int = 2

  def _dense(self, name: str, x: jax.Array, features: int) -> jax.Array:
    fan_in = x.shape[-1]
    kernel = self.param(name, nn.with_logical_partitioning(torch_linear_init(fan_in), _REPLICATED),
                        (fan_in, features))
    bias = self.param(f'{name}_bias', nn.with_logical_partitioning(
        torch_linear_init(fan_in), ('prefix_mlp',)), (features,))
    return x @ kernel + bias

  def _lstm(self, x: jax.Array) -> jax.Array:
    hidden = self.hidden
    for layer in range(self.lstm_layers):
      outputs = []
      for direction in ('forward', 'backward'):
        name = f'lstm_{layer}_{direction}'
        fan_init = torch_linear_init(hidden)  # torch inits every LSTM weight by 1/sqrt(H)
        w_in = self.param(f'{name}_in', nn.with_logical_partitioning(fan_init, _REPLICATED),
                          (x.shape[-1], 4 * hidden))
        w_hidden = self.param(f'{name}_hidden', nn.with_logical_partitioning(
            fan_init, _REPLICATED), (hidden, 4 * hidden))
        bias = self.param(f'{name}_bias', nn.with_logical_partitioning(
            lambda rng, shape: fan_init(rng, shape) + fan_init(jax.random.fold_in(rng, 1), shape),
            ('prefix_mlp',)), (4 * hidden,))
        outputs.append(lstm_direction(x, w_in, w_hidden, bias, reverse=direction == 'backward'))
      x = jnp.concatenate(outputs, axis=-1)
    return x

  @nn.compact
  def produce_prompt(self, d_model: int) -> jax.Array:
    """The virtual tokens [P, d_model] the encoder produces (what inference uses)."""
    if self.kind not in ENCODER_KINDS:
      raise ValueError(f'prompt.encoder must be one of {ENCODER_KINDS}, got {self.kind!r}.')
    embedding = self.param('embedding', nn.with_logical_partitioning(
        nn.initializers.normal(1.0), PROMPT_AXES), (self.length, d_model))
    if self.kind == 'lstm':
      x = self._lstm(embedding)
      x = nn.relu(self._dense('mlp_0', x, 2 * self.hidden))
      return self._dense('mlp_1', x, d_model)
    x = nn.relu(self._dense('mlp_0', embedding, self.hidden))
    x = nn.relu(self._dense('mlp_1', x, self.hidden))
    return self._dense('mlp_2', x, d_model)

  def __call__(self, embedded: jax.Array, mask: jax.Array):
    return prepend(self.produce_prompt(embedded.shape[-1]), embedded, mask)

  def folded(self, params: dict, d_model: int) -> tuple[SoftPrompt, dict]:
    """The reparameterisation run once: a plain soft prompt with the same outputs."""
    return produced_once(self, params, d_model)
