"""Prompt ensembles (Lester et al. 2021, section 6): N prompts for one task on one frozen model,
run as one batch (each example repeated once per prompt, each copy with its prompt id), then
combined by majority vote or by the mean of the label log-likelihoods."""

import jax
import jax.numpy as jnp
import numpy as np

from t5prompt.models import decode


def ensemble_scores(model, params, inputs, label_targets) -> jax.Array:
  """float [b, N, k]: every label's log-likelihood under each of the bank's N prompts.

  `model` has a PromptBank as its prompt; one rank-classification pass over b * N rows."""
  num_prompts = params['prompt']['prompts'].shape[0]
  batch = inputs.shape[0]
  repeated = jnp.repeat(jnp.asarray(inputs), num_prompts, axis=0)  # example-major
  prompt_ids = jnp.tile(jnp.arange(num_prompts), batch)
  scores = decode.rank_scores(model, params, repeated, jnp.asarray(label_targets), prompt_ids)
  return scores.reshape(batch, num_prompts, -1)


def majority_vote(votes: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
  """int [b]: the most voted label per example (votes int [b, N]). Ties go to the tied label
  with the highest mean log-likelihood when `scores` [b, N, k] is given, else the lowest index."""
  votes = np.asarray(votes)
  num_labels = int(votes.max()) + 1 if scores is None else scores.shape[-1]
  counts = np.zeros((votes.shape[0], num_labels), np.int64)
  np.add.at(counts, (np.arange(votes.shape[0])[:, None], votes), 1)
  tied = counts == counts.max(axis=-1, keepdims=True)
  if scores is None:
    return tied.argmax(axis=-1)
  mean = np.asarray(scores).mean(axis=1)
  return np.where(tied, mean, -np.inf).argmax(axis=-1)


def mean_log_likelihood(scores: np.ndarray) -> np.ndarray:
  """int [b]: the label with the highest log-likelihood averaged over the prompts."""
  return np.asarray(scores).mean(axis=1).argmax(axis=-1)


def ensemble_predictions(scores: np.ndarray) -> dict[str, np.ndarray]:
  """Each prompt's own predictions [N, b] and the two ensembles' [b], from `ensemble_scores`."""
  scores = np.asarray(scores)
  individual = scores.argmax(axis=-1)  # [b, N]
  return {'individual': individual.T, 'majority_vote': majority_vote(individual, scores),
          'mean_log_likelihood': mean_log_likelihood(scores)}
