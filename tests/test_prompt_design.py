"""The prompt-design baseline: template tasks keep the base task's labels, the verbalizer is
what rank classification scores, demonstrations fit the input, and a run writes its result."""

import json

import numpy as np
import pytest

from conftest import REPO
from t5prompt.data import pipeline
from t5prompt.data.tasks import get_task_spec
from t5prompt.data.vocab import get_vocabulary
from t5prompt.evaluate import evaluate, evaluate_run
from t5prompt.prompts.design import demonstrations, with_demonstrations
from t5prompt.run_config import load_config
from t5prompt.train import train
from test_evaluate import forced_model

TEMPLATED = ['boolq', 'cb', 'copa', 'multirc', 'rte', 'wic', 'wsc']


@pytest.mark.parametrize('task', TEMPLATED)
def test_template_tasks_keep_the_base_labels(task):
  base = get_task_spec(f'superglue_{task}' + ('_binary' if task == 'wsc' else ''))
  template = get_task_spec(f'superglue_{task}_template')
  base_records = base.records('validation')
  records = template.records('validation')
  assert len(records) == len(base_records)
  assert [r['label'] for r in records] == [r['label'] for r in base_records]
  assert [r['group'] for r in records] == [r['group'] for r in base_records]
  assert all(r['targets'] == template.label_names[r['label']] for r in records)
  assert template.eval_mode == 'rank' and template.metric == base.metric
  assert records[0]['inputs'] != base_records[0]['inputs']  # a question, not T5's format


def test_rank_classification_scores_the_verbalizer_words():
  """A model that can only say 'Maybe' predicts CB's neutral everywhere."""
  model, params = forced_model('Maybe')
  data = pipeline.load_tokenized('superglue_cb_template', 'validation', 128, 8)
  spec = get_task_spec('superglue_cb_template')
  metrics = evaluate(model, params, {'dev': (spec, data)}, get_vocabulary(), 16)['dev']
  neutral_share = 100 * np.mean(data.labels == 2)
  assert metrics['accuracy'] == pytest.approx(neutral_share)
  assert metrics['majority_prediction_share'] == 100.0 and metrics['invalid_rate'] == 0.0


def test_demonstrations_fit_and_keep_the_question():
  data = pipeline.load_tokenized('superglue_rte_template', 'validation', 512, 8)
  demos = demonstrations(pipeline.load_tokenized('superglue_rte_template', 'train', 512, 8),
                         3, seed=0)
  assert len(demos) == 3 and all(d[-1] != 1 for d in demos)  # `question answer`, no EOS
  roomy, fitted = with_demonstrations(data, demos, 1024)
  question = data.inputs[0][data.inputs[0] > 0]
  first = roomy.inputs[0][roomy.inputs[0] > 0]
  np.testing.assert_array_equal(first, np.concatenate(demos + [question]))
  tight_length = len(question) + len(demos[-1]) + 1
  tight, fitted = with_demonstrations(data, demos, tight_length)
  row = tight.inputs[0][tight.inputs[0] > 0]
  np.testing.assert_array_equal(row, np.concatenate([demos[-1], question]))  # earliest dropped
  assert 0 <= fitted <= 3
  assert demonstrations(pipeline.load_tokenized('superglue_rte_template', 'train', 512, 8), 3,
                        seed=0)[0].tolist() == demos[0].tolist()  # reproducible by seed


def test_prompt_design_runs_as_a_method(tmp_path):
  config = load_config(REPO / 'configs' / 'smoke.py', [
      '--config.model.size=tiny-v1_1', '--config.method=prompt_design',
      '--config.prompt.shots=2', '--config.task.input_length=256',
      '--config.train.eval_batch_size=32'])
  result = train(config, tmp_path)
  saved = json.loads((tmp_path / 'result.json').read_text())
  assert saved['method'] == saved['series'] == 'prompt_design'
  assert saved['steps'] == 0 and saved['num_trainable_params'] == 0
  assert saved['init']['template_task'] == 'superglue_cb_template'
  assert 0 < saved['init']['shots_fitted']['validation'] <= 2
  assert 0 <= saved['metrics']['validation']['score'] <= 100
  assert train(config, tmp_path) == result  # finished: recognised, not rerun
  with pytest.raises(ValueError, match='no weights were trained'):
    evaluate_run(tmp_path)


def test_tasks_without_a_template_are_refused():
  with pytest.raises(ValueError, match='No hand-written template'):
    load_config(REPO / 'configs' / 'smoke.py', ['--config.method=prompt_design',
                                                '--config.task.name=superglue_record'])
