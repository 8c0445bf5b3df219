"""PPT: the self-supervised tasks rendered from the real shipped text, the format a downstream
task starts from, and `prompt.init=ppt` finding the pre-trained prompt of that format on the
same backbone (a real run's, whose loss fell) and refusing clearly when there is none."""

import collections

import numpy as np
import pytest

from t5prompt import train as trainer
from t5prompt.data import ppt, text
from t5prompt.data.tasks import get_task_spec
from t5prompt.run_config import load_config
from t5prompt.run_dir import RunDir

SMOKE = 'configs/smoke.py'


@pytest.mark.parametrize('format_name, labels', [
    ('sentence_pair', ('entailment', 'neutral', 'contradiction')),
    ('multiple_choice', ('choice1', 'choice2')),
    ('single_sentence', ('wikipedia', 'book', 'film'))])
def test_self_supervised_tasks_render_from_the_text_balanced_and_reproducible(format_name,
                                                                              labels):
  spec = get_task_spec(ppt.task_name(format_name))
  train, validation = spec.records('train'), spec.records('validation')
  assert len(train) > 0.95 * ppt.EXAMPLES['train']
  assert len(validation) >= 150  # the film genre's few validation documents bound the third
  assert spec.label_names == labels
  counts = collections.Counter(r['targets'] for r in train)
  assert set(counts) == set(labels) and min(counts.values()) > 0.9 * max(counts.values())
  assert all(r['targets'] == labels[r['label']] for r in train)
  assert spec.records('train') == train  # a fixed draw
  # No training example reappears in validation (documents are split, not examples).
  assert not {r['inputs'] for r in train} & {r['inputs'] for r in validation}


def test_each_example_is_real_text_in_its_downstream_layout():
  documents = text.documents('train', with_genre=True)
  whole = ' '.join(' '.join(document.split()) for _, document in documents)
  pair = get_task_spec('ppt_sentence_pair').records('train')
  for example in pair[:30]:
    hypothesis, premise = example['inputs'].removeprefix('hypothesis: ').split(' premise: ')
    assert premise in whole and hypothesis in whole
    if example['targets'] == 'entailment':  # the very next sentence
      assert f'{premise} {hypothesis}' in whole
  choice = get_task_spec('ppt_multiple_choice').records('train')[0]
  assert choice['inputs'].startswith('choice1: ') and choice['inputs'].endswith(' question: next')
  single = get_task_spec('ppt_single_sentence').records('train')
  by_label = {r['targets']: r['inputs'].removeprefix('sentence: ') for r in single[:3]}
  for genre, sentence in by_label.items():
    assert any(sentence in ' '.join(document.split())
               for which, document in documents if which == genre)


@pytest.mark.parametrize('task, format_name', [
    ('superglue_cb', 'sentence_pair'), ('superglue_boolq', 'sentence_pair'),
    ('superglue_rte_prefixed', 'sentence_pair'), ('glue_mrpc', 'sentence_pair'),
    ('superglue_copa', 'multiple_choice'), ('mrqa_squad', 'single_sentence')])
def test_downstream_tasks_start_from_the_prompt_of_their_format(task, format_name):
  assert ppt.format_of(task) == format_name


def test_ppt_init_needs_its_runs_directory_and_a_known_choice():
  with pytest.raises(ValueError, match='prompt.init="ppt" needs prompt.ppt_runs'):
    load_config(SMOKE, ['--config.prompt.init=ppt'])
  with pytest.raises(ValueError, match="prompt.ppt_choice must be one of"):
    load_config(SMOKE, ['--config.prompt.ppt_choice=all'])


RUN = ['--config.task.input_length=96', '--config.prompt.length=4', '--config.train.steps=40',
       '--config.train.eval_every=40', '--config.train.log_every=5',
       '--config.train.checkpoint_every=40', '--config.train.max_eval_examples=32',
       '--config.optimizer.name=adam', '--config.optimizer.learning_rate=0.1']


@pytest.mark.slow  # two short training runs (~1 min): `pytest -m slow`, which CI runs
def test_pretrained_prompt_trains_and_starts_the_downstream_prompt(tmp_path):
  pretrained = trainer.train(load_config(SMOKE, RUN + ['--config.task.name=ppt_sentence_pair']),
                             tmp_path / 'ppt' / 'pair')
  losses = [loss for _, loss in RunDir(tmp_path / 'ppt' / 'pair').train_losses()]
  assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses  # the prompt learns the task
  assert pretrained.metrics['validation']['num_examples'] == 32

  # One step at a vanishing rate: the downstream prompt is the pre-trained one it started from.
  downstream = RUN + ['--config.prompt.init=ppt', f'--config.prompt.ppt_runs={tmp_path / "ppt"}',
                      '--config.train.steps=1', '--config.train.eval_every=1',
                      '--config.optimizer.learning_rate=1e-12']
  result = trainer.train(load_config(SMOKE, downstream), tmp_path / 'cb')  # CB: a pair task
  saved = RunDir(tmp_path / 'ppt' / 'pair').prompt()
  assert result.init['name'] == 'ppt' and result.init['format'] == 'sentence_pair'
  assert result.init['path'] == str(tmp_path / 'ppt' / 'pair' / 'prompt.npy')
  assert result.init['source']['task'] == 'ppt_sentence_pair'
  np.testing.assert_allclose(RunDir(tmp_path / 'cb').prompt(), saved, atol=1e-6)

  # No unified prompt was pre-trained, and none exists for another backbone: both are named.
  with pytest.raises(FileNotFoundError, match="no pre-trained prompt of the 'unified' format"):
    trainer.train(load_config(SMOKE, downstream + ['--config.prompt.ppt_choice=unified']),
                  tmp_path / 'unified')
  with pytest.raises(FileNotFoundError, match='for this backbone'):
    trainer.train(load_config(SMOKE, downstream + ['--config.model.size=tiny-v1_1']),
                  tmp_path / 'other')
