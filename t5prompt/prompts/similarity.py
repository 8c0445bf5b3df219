"""How alike two soft prompts are: the task-similarity measures used to predict transfer.

* `cosine`: cosine of the flattened prompts (SPoT, Vu et al. 2022);
* `per_position`: the mean over positions of each position's cosine (SPoT's other variant);
* `on`: the overlap of the feed-forward neurons each prompt activates in the frozen encoder
  when it is the whole input (Su et al. 2022, "On Transferability"): the cosine of the two
  binary activation masks over (layer, position, neuron), |A and B| / sqrt(|A| |B|).

`cosine` and `per_position` need only the arrays; `on` needs the backbone the prompts were
trained on (`activated_neurons`).
"""

import jax
import jax.numpy as jnp
import numpy as np

from t5prompt.models.t5 import T5
from t5prompt.prompts.soft_prompt import SoftPrompt

METRICS = ('cosine', 'per_position', 'on')


def _unit(x: np.ndarray, axis=None) -> np.ndarray:
  norm = np.linalg.norm(x, axis=axis, keepdims=axis is not None)
  return x / np.maximum(norm, 1e-12)


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
  if a.shape != b.shape:
    raise ValueError(f'Prompts of shapes {a.shape} and {b.shape} cannot be compared; '
                     'similarity needs prompts of one length on one backbone width.')


def cosine(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  _same_shape(a, b)
  return float(np.dot(_unit(a.ravel()), _unit(b.ravel())))


def per_position(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  _same_shape(a, b)
  return float(np.mean(np.sum(_unit(a, -1) * _unit(b, -1), axis=-1)))


def activated_neurons(config, backbone_params: dict, prompt) -> np.ndarray:
  """bool [layers, P, d_ff]: the encoder's feed-forward neurons that fire at each prompt
  position when the prompt (then EOS) is the whole input."""
  prompt = jnp.asarray(prompt, jnp.float32)
  model = T5(config.replace(dropout_rate=0.0), prompt=SoftPrompt(prompt.shape[0]))
  params = {**backbone_params, 'prompt': {'prompt': prompt}}
  _, state = model.apply({'params': params}, jnp.ones((1, 1), jnp.int32), method=T5.encode,
                         mutable=['intermediates'])
  encoder = state['intermediates']['encoder']
  masks = [np.asarray(leaf) for leaf in jax.tree.leaves(encoder)]
  # Scanned: one leaf [layers, 1, P + 1, f]; unscanned: one [1, P + 1, f] per layer.
  stacked = masks[0] if len(masks) == 1 else np.stack(masks)
  return stacked.reshape(-1, *stacked.shape[-2:])[:, :prompt.shape[0]]


def neuron_overlap(a: np.ndarray, b: np.ndarray) -> float:
  """Cosine of two binary activation masks (ON)."""
  _same_shape(a, b)
  both = np.logical_and(a, b).sum()
  return float(both / max(np.sqrt(float(a.sum()) * float(b.sum())), 1e-12))


def similarity(metric: str, a, b, *, config=None, backbone_params=None) -> float:
  if metric == 'cosine':
    return cosine(a, b)
  if metric == 'per_position':
    return per_position(a, b)
  if metric == 'on':
    if backbone_params is None:
      raise ValueError('The "on" similarity runs the frozen backbone; give its config and '
                       'params.')
    return neuron_overlap(activated_neurons(config, backbone_params, a),
                          activated_neurons(config, backbone_params, b))
  raise ValueError(f'Unknown similarity {metric!r}; choose one of {", ".join(METRICS)}.')
