"""Evaluation on named eval sets: rank classification or decode-and-match, per task.

Evals are a dict of named sets (in-domain dev and domain-shift sets are just entries), each a
`TokenizedSplit`; the result is {set name: {metric: value}} with scores in percent.
"""

import numpy as np

from t5prompt.data.pipeline import TokenizedSplit, eval_batches
from t5prompt.data.tasks import TaskSpec
from t5prompt.models import decode


def label_targets(spec: TaskSpec, vocabulary, target_length: int) -> np.ndarray:
  """Every verbalised label as a target sequence (tokens + EOS, 0-padded): int32 [k, t]."""
  out = np.zeros((len(spec.label_names), target_length), np.int32)
  for row, label in enumerate(spec.label_names):
    ids = list(vocabulary.encode(label)) + [decode.EOS_ID]
    if len(ids) > target_length:
      raise ValueError(f'Label {label!r} of {spec.name} has {len(ids)} tokens with EOS, more '
                       f'than target_length={target_length}; raise task.target_length.')
    out[row, :len(ids)] = ids
  return out


def predict(model, params, data: TokenizedSplit, spec: TaskSpec, vocabulary, batch_size: int,
            max_examples: int = 0) -> np.ndarray:
  """Predicted label index per example; -1 where a decoded text is not a label."""
  predictions = []
  if spec.eval_mode == 'rank':
    targets = label_targets(spec, vocabulary, data.targets.shape[1])
    for batch, count in eval_batches(data, batch_size, max_examples):
      scores = decode.rank_scores(model, params, batch['inputs'], targets)
      predictions.append(np.asarray(scores).argmax(axis=-1)[:count])
  elif spec.eval_mode == 'decode':
    index = {label: row for row, label in enumerate(spec.label_names)}
    for batch, count in eval_batches(data, batch_size, max_examples):
      tokens = np.asarray(decode.greedy_decode(model, params, batch['inputs'],
                                               data.targets.shape[1]))
      texts = [vocabulary.decode(row.tolist()) for row in tokens[:count]]
      predictions.append(np.array([index.get(text.strip(), -1) for text in texts]))
  else:
    raise ValueError(f'Unknown eval_mode {spec.eval_mode!r}; use "rank" or "decode".')
  return np.concatenate(predictions).astype(np.int32)


def classification_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  if (labels < 0).any():
    raise ValueError('This split has unlabelled examples (a test split?); evaluate on a '
                     'labelled split such as validation.')
  return {'accuracy': 100.0 * float(np.mean(predictions == labels)),
          'invalid_rate': 100.0 * float(np.mean(predictions < 0)),
          'num_examples': int(len(labels))}


def evaluate(model, params, eval_sets: dict[str, TokenizedSplit], spec: TaskSpec, vocabulary,
             batch_size: int, max_examples: int = 0) -> dict[str, dict[str, float]]:
  results = {}
  for name, data in eval_sets.items():
    predictions = predict(model, params, data, spec, vocabulary, batch_size, max_examples)
    results[name] = classification_metrics(predictions, data.labels[:len(predictions)])
  return results
