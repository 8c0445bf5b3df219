"""Metrics against independent reference computations on real dev files."""

import collections
import re
import string

import numpy as np
import pytest
from sklearn import metrics as sk

from t5prompt import metrics
from t5prompt.data.tasks import get_task_spec


# --- SQuAD v1.1's official evaluation logic, written out independently --------------------
def _official_normalize(s):
  def remove_articles(text):
    return re.sub(r'\b(a|an|the)\b', ' ', text)

  def white_space_fix(text):
    return ' '.join(text.split())

  def remove_punc(text):
    exclude = set(string.punctuation)
    return ''.join(ch for ch in text if ch not in exclude)
  return white_space_fix(remove_articles(remove_punc(s.lower())))


def _official_f1(prediction, ground_truth):
  prediction_tokens = _official_normalize(prediction).split()
  ground_truth_tokens = _official_normalize(ground_truth).split()
  common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
  num_same = sum(common.values())
  if num_same == 0:
    return 0
  precision = 1.0 * num_same / len(prediction_tokens)
  recall = 1.0 * num_same / len(ground_truth_tokens)
  return (2 * precision * recall) / (precision + recall)


def _official(predictions, records):
  exact = f1 = 0.0
  for prediction, r in zip(predictions, records):
    exact += max(float(_official_normalize(prediction) == _official_normalize(g))
                 for g in r['answers'])
    f1 += max(_official_f1(prediction, g) for g in r['answers'])
  return 100.0 * exact / len(records), 100.0 * f1 / len(records)


def _perturbed_answers(records, seed=0):
  """Predictions of every kind: exact, case/article/punctuation variants, partial, wrong."""
  rng = np.random.RandomState(seed)
  out = []
  for r in records:
    answer = r['answers'][rng.randint(len(r['answers']))]
    words = answer.split()
    kind = rng.randint(6)
    out.append([answer, 'The ' + answer.upper() + '!', ' '.join(words[:-1]) or 'x',
                answer + ' and more words', 'completely unrelated', f'a, {answer}.'][kind])
  return out


@pytest.mark.parametrize('task', ['mrqa_squad', 'mrqa_drop', 'mrqa_duorc',
                                  'mrqa_relation_extraction'])
@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_squad_em_f1_equal_the_official_logic_on_real_dev_sets(task):
  records = get_task_spec(task).records('validation')
  predictions = _perturbed_answers(records)
  ours = metrics.compute('squad', predictions, records)
  em, f1 = _official(predictions, records)
  assert ours['em'] == pytest.approx(em, abs=1e-9) and ours['f1'] == pytest.approx(f1, abs=1e-9)
  assert 20 < ours['em'] < 80  # the perturbations really mix right and wrong
  gold = metrics.compute('squad', [r['answers'][0] for r in records], records)
  assert gold['em'] == gold['f1'] == 100.0


def test_record_max_over_answers_on_real_dev32():
  records = get_task_spec('superglue_record').records('fewglue_dev32')
  predictions = _perturbed_answers(records, seed=1)
  ours = metrics.compute('record', predictions, records)
  em, f1 = _official(predictions, records)
  assert ours['em'] == pytest.approx(em) and ours['f1'] == pytest.approx(f1)
  assert ours['score'] == pytest.approx((em + f1) / 2)
  # Any gold answer counts (max over answers): the last answer scores 100 too.
  assert metrics.compute('record', [r['answers'][-1] for r in records], records)['em'] == 100.0


def test_multirc_f1a_and_em_on_the_real_dev_set():
  records = get_task_spec('superglue_multirc').records('validation')
  labels = np.array([r['label'] for r in records])
  rng = np.random.RandomState(0)
  predictions = np.where(rng.rand(len(labels)) < 0.8, labels, 1 - labels)
  ours = metrics.compute('multirc', predictions, records)
  assert ours['f1a'] == pytest.approx(100 * sk.f1_score(labels, predictions))
  questions = collections.defaultdict(list)
  for r, p in zip(records, predictions):
    questions[r['group']].append(p == r['label'])
  assert ours['em'] == pytest.approx(100 * np.mean([all(v) for v in questions.values()]))
  assert ours['num_questions'] == 953
  gold = metrics.compute('multirc', labels, records)
  assert gold['f1a'] == gold['em'] == gold['accuracy'] == 100.0


def _labelled(task, split='validation'):
  records = get_task_spec(task).records(split)
  return records, np.array([r['label'] for r in records])


def test_cb_macro_f1_and_accuracy_against_sklearn():
  records, labels = _labelled('superglue_cb')
  predictions = np.random.RandomState(2).randint(0, 3, len(labels))
  ours = metrics.compute('cb', predictions, records)
  assert ours['f1_macro'] == pytest.approx(100 * sk.f1_score(labels, predictions,
                                                             average='macro'))
  assert ours['accuracy'] == pytest.approx(100 * sk.accuracy_score(labels, predictions))


def test_mrpc_f1_and_matthews_against_sklearn():
  records, labels = _labelled('glue_mrpc')
  predictions = np.where(np.random.RandomState(3).rand(len(labels)) < 0.7, labels, 1 - labels)
  ours = metrics.compute('f1_accuracy', predictions, records)
  assert ours['f1'] == pytest.approx(100 * sk.f1_score(labels, predictions))
  assert ours['accuracy'] == pytest.approx(100 * sk.accuracy_score(labels, predictions))
  assert metrics.matthews_corrcoef(predictions, labels) == pytest.approx(
      sk.matthews_corrcoef(labels, predictions))
  # AX-b reports MCC; on MRPC-shaped data it must equal sklearn's.
  assert metrics.compute('axb', predictions, records)['mcc'] == pytest.approx(
      100 * sk.matthews_corrcoef(labels, predictions))


@pytest.mark.parametrize('task, metric', [('superglue_rte', 'accuracy'), ('superglue_cb', 'cb'),
                                          ('superglue_wic', 'accuracy'),
                                          ('glue_mrpc', 'f1_accuracy')])
def test_gold_labels_score_100(task, metric):
  records, labels = _labelled(task)
  assert metrics.compute(metric, labels, records)['score'] == 100.0


def test_invalid_predictions_are_counted_and_wrong():
  records, labels = _labelled('superglue_rte')
  predictions = labels.copy()
  predictions[:10] = -1  # decoded texts outside the label set
  result = metrics.compute('accuracy', predictions, records)
  assert result['invalid_rate'] == pytest.approx(100 * 10 / len(labels))
  assert result['accuracy'] == pytest.approx(100 * (len(labels) - 10) / len(labels))


def test_axg_gender_parity_counts_pairs_with_one_prediction():
  records = [{'label': 0, 'group': 'a'}, {'label': 0, 'group': 'a'},
             {'label': 1, 'group': 'b'}, {'label': 1, 'group': 'b'}]
  result = metrics.compute('axg', [0, 0, 1, 0], records)
  assert result['gender_parity'] == 50.0 and result['accuracy'] == 75.0


def test_test_splits_are_refused_for_scoring():
  records = get_task_spec('superglue_cb').records('test')
  with pytest.raises(ValueError, match='no labels'):
    metrics.compute('cb', np.zeros(len(records), int), records)


@pytest.mark.parametrize('prediction, referent, named', [
    ('the sales clerk', 'sales clerk', 1),  # determiners and case ignored
    ('The Mayor', 'the mayor', 1),
    ('bunny', 'fuzzy bunny', 1),  # one's words within the other's
    ('Bob', "Bob's hat", 0),  # a possessive matches only a possessive
    ('the dog', 'the cat', 0),  # another noun phrase
    ('the', 'cat', -1),  # nothing but a determiner: invalid
])
def test_wsc_simple_names_the_referent_as_t5_matches_it(prediction, referent, named):
  assert metrics.names_referent(prediction, referent) == named


def test_wsc_simple_scores_on_the_shipped_dev_set():
  """Decoding each candidate itself names it: right for the 38 true pairs, wrong for the 66
  false ones; answering a wrong noun phrase everywhere gets the false pairs right."""
  records = get_task_spec('superglue_wsc').records('validation')
  assert len(records) == 104 and sum(r['label'] for r in records) == 38
  echo = metrics.compute('wsc_simple', [r['targets'] for r in records], records)
  assert echo['score'] == pytest.approx(100 * 38 / 104)
  other = metrics.compute('wsc_simple', ['zebra'] * len(records), records)
  assert other['score'] == pytest.approx(100 * 66 / 104)
  assert records[0]['inputs'].split(' ')[47] == '*him*'
