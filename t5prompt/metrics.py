"""The official metrics, in percent. Each takes the predictions and the task's records.

Classification metrics take predicted label indices (-1: a decoded text outside the label set,
counted as wrong and reported as `invalid_rate`); QA metrics take predicted strings. Every metric
returns a `score`: the task's single number as the SuperGLUE/GLUE leaderboards combine it
(CB: mean of macro-F1 and accuracy; MultiRC: mean of F1a and EM; ReCoRD: mean of F1 and EM;
MRPC/QQP: mean of F1 and accuracy; SQuAD/MRQA: F1).
"""

import collections
import re
import string
from typing import Callable, Sequence

import numpy as np

Records = Sequence[dict]


def _labels(records: Records) -> np.ndarray:
  labels = np.array([r['label'] for r in records])
  if (labels < 0).any():
    raise ValueError('These records have no labels (a test split?); evaluate on a labelled split '
                     'such as validation.')
  return labels


def _f1_binary(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
  true_positive = np.sum((predictions == positive) & (labels == positive))
  predicted, actual = np.sum(predictions == positive), np.sum(labels == positive)
  if predicted == 0 or actual == 0:
    return 0.0
  precision, recall = true_positive / predicted, true_positive / actual
  return 0.0 if true_positive == 0 else float(2 * precision * recall / (precision + recall))


def _common(predictions: np.ndarray, labels: np.ndarray) -> dict:
  """Accuracy, the invalid-prediction rate, and the share of the most frequent prediction
  (near 100: the run collapsed to one class)."""
  _, counts = np.unique(predictions, return_counts=True)
  return {'accuracy': 100.0 * float(np.mean(predictions == labels)),
          'invalid_rate': 100.0 * float(np.mean(predictions < 0)),
          'majority_prediction_share': 100.0 * float(counts.max() / len(predictions)),
          'num_examples': int(len(labels))}


def accuracy(predictions, records: Records) -> dict:
  predictions, labels = np.asarray(predictions), _labels(records)
  out = _common(predictions, labels)
  return {**out, 'score': out['accuracy']}


def cb(predictions, records: Records) -> dict:
  """CommitmentBank: accuracy and the macro-average of the three classes' F1."""
  predictions, labels = np.asarray(predictions), _labels(records)
  f1_macro = 100.0 * float(np.mean([_f1_binary(predictions, labels, c) for c in range(3)]))
  out = {**_common(predictions, labels), 'f1_macro': f1_macro}
  return {**out, 'score': (out['accuracy'] + f1_macro) / 2}


def f1_accuracy(predictions, records: Records) -> dict:
  """MRPC/QQP: accuracy and F1 of the positive class (equivalent / duplicate)."""
  predictions, labels = np.asarray(predictions), _labels(records)
  out = {**_common(predictions, labels), 'f1': 100.0 * _f1_binary(predictions, labels)}
  return {**out, 'score': (out['accuracy'] + out['f1']) / 2}


def matthews_corrcoef(predictions, labels) -> float:
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  classes = np.union1d(np.unique(labels), np.unique(predictions[predictions >= 0]))
  confusion = np.array([[np.sum((labels == a) & (predictions == b)) for b in classes]
                        for a in classes], np.float64)
  total, correct = confusion.sum(), np.trace(confusion)
  true_sums, predicted_sums = confusion.sum(axis=1), confusion.sum(axis=0)
  numerator = correct * total - np.dot(predicted_sums, true_sums)
  denominator = np.sqrt((total ** 2 - np.dot(predicted_sums, predicted_sums))
                        * (total ** 2 - np.dot(true_sums, true_sums)))
  return 0.0 if denominator == 0 else float(numerator / denominator)


def axb(predictions, records: Records) -> dict:
  """AX-b: Matthews correlation (the diagnostic's official measure)."""
  predictions, labels = np.asarray(predictions), _labels(records)
  mcc = 100.0 * matthews_corrcoef(predictions, labels)
  return {**_common(predictions, labels), 'mcc': mcc, 'score': mcc}


def axg(predictions, records: Records) -> dict:
  """AX-g (Winogender): accuracy and gender parity, the share of minimal pairs (same
  `pair_id`) that get the same prediction."""
  predictions, labels = np.asarray(predictions), _labels(records)
  pairs = collections.defaultdict(list)
  for prediction, r in zip(predictions, records):
    pairs[r['group']].append(prediction)
  parity = 100.0 * float(np.mean([len(set(p)) == 1 for p in pairs.values()]))
  return {**_common(predictions, labels), 'gender_parity': parity,
          'score': 100.0 * float(np.mean(predictions == labels))}


def multirc(predictions, records: Records) -> dict:
  """MultiRC: F1a, the binary F1 over every answer option, and EM, the share of questions with
  every answer option right."""
  predictions, labels = np.asarray(predictions), _labels(records)
  by_question = collections.defaultdict(list)
  for prediction, label, r in zip(predictions, labels, records):
    by_question[r['group']].append(prediction == label)
  out = {**_common(predictions, labels), 'f1a': 100.0 * _f1_binary(predictions, labels),
         'em': 100.0 * float(np.mean([all(v) for v in by_question.values()])),
         'num_questions': len(by_question)}
  return {**out, 'score': (out['f1a'] + out['em']) / 2}


def normalize_answer(text: str) -> str:
  """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
  text = text.lower()
  text = ''.join(ch for ch in text if ch not in set(string.punctuation))
  text = re.sub(r'\b(a|an|the)\b', ' ', text)
  return ' '.join(text.split())


def _token_f1(prediction: str, gold: str) -> float:
  predicted, actual = normalize_answer(prediction).split(), normalize_answer(gold).split()
  common = collections.Counter(predicted) & collections.Counter(actual)
  overlap = sum(common.values())
  if overlap == 0:
    return 0.0
  precision, recall = overlap / len(predicted), overlap / len(actual)
  return 2 * precision * recall / (precision + recall)


def _max_over_golds(metric, prediction: str, golds: Sequence[str]) -> float:
  return max(metric(prediction, gold) for gold in golds)


def squad(predictions: Sequence[str], records: Records) -> dict:
  """SQuAD / MRQA: exact match and token F1 after normalisation, max over the gold answers."""
  if any(not r['answers'] for r in records):
    raise ValueError('Every record needs at least one gold answer for SQuAD EM/F1.')
  exact = [_max_over_golds(lambda p, g: float(normalize_answer(p) == normalize_answer(g)),
                           p, r['answers']) for p, r in zip(predictions, records)]
  f1 = [_max_over_golds(_token_f1, p, r['answers']) for p, r in zip(predictions, records)]
  out = {'em': 100.0 * float(np.mean(exact)), 'f1': 100.0 * float(np.mean(f1)),
         'num_examples': len(records)}
  return {**out, 'score': out['f1']}


# T5's wsc_simple postprocessing: case and these words are ignored when comparing noun phrases.
WSC_DETERMINERS = frozenset(('a', 'an', 'few', 'her', 'his', 'each', 'every', 'many', 'much',
                             'my', 'our', 'some', 'that', 'the', 'their', 'these', 'this',
                             'those', 'which', 'whose', 'your'))


def names_referent(prediction: str, referent: str) -> int:
  """T5's wsc_simple matching: 1 if the decoded noun phrase names the referent (one's words, case
  and determiners ignored, contain the other's; a possessive only matches a possessive), 0 if
  not, -1 for an empty prediction."""
  clean = lambda text: [w for w in text.strip().lower().split(' ') if w not in WSC_DETERMINERS]
  predicted, wanted = clean(prediction), clean(referent)
  if not predicted:
    return -1
  if any("'" in w for w in predicted) != any("'" in w for w in wanted):
    return 0
  return int(set(predicted) <= set(wanted) or set(wanted) <= set(predicted))


def wsc_simple(predictions: Sequence[str], records: Records) -> dict:
  """Accuracy of "names the candidate" against "the candidate is the referent" (the label)."""
  labels = _labels(records)
  named = np.array([names_referent(p, r['answers'][0]) for p, r in zip(predictions, records)])
  out = _common(named, labels)
  return {**out, 'score': out['accuracy']}


def record(predictions: Sequence[str], records: Records) -> dict:
  """ReCoRD: SQuAD-normalised EM and F1, max over the gold answers of each query."""
  out = squad(predictions, records)
  return {**out, 'score': (out['em'] + out['f1']) / 2}


METRICS: dict[str, Callable] = {
    'accuracy': accuracy, 'cb': cb, 'f1_accuracy': f1_accuracy, 'axb': axb, 'axg': axg,
    'multirc': multirc, 'squad': squad, 'record': record, 'wsc_simple': wsc_simple,
}
TEXT_METRICS = ('squad', 'record', 'wsc_simple')  # take decoded strings, not label indices


def compute(metric: str, predictions, records: Records) -> dict:
  """The metric's values (scores in percent); label metrics also give `majority_baseline`, the
  score of always answering the records' most frequent label (what a collapsed run gets)."""
  if len(predictions) != len(records):
    raise ValueError(f'{len(predictions)} predictions for {len(records)} records.')
  if metric not in METRICS:
    raise ValueError(f'Unknown metric {metric!r}; known: {", ".join(METRICS)}.')
  values = METRICS[metric](predictions, records)
  if metric not in TEXT_METRICS:
    labels = _labels(records)
    majority = np.full(len(labels), np.bincount(labels).argmax())
    values['majority_baseline'] = METRICS[metric](majority, records)['score']
  return values
