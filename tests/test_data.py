"""Every task end to end on the shipped release files: counts per split equal the MANIFEST's,
first examples render as T5's formats, seqio sees the same examples, missing data is explained."""


import numpy as np
import pytest

from t5prompt import cli
from t5prompt.data import pipeline, sources
from t5prompt.data.tasks import SUPERGLUE_MIXTURE, get_task_spec, register_tasks, task_specs

# task -> split -> number of records. Where a release example yields several records the
# MANIFEST's unit is given too: MultiRC one record per answer option (val: 83 passages, 953
# questions, 4848 answers), ReCoRD train one per answer (32 queries), MRQA one per question.
COUNTS = {
    'superglue_boolq': {'validation': 3270, 'fewglue_train': 32, 'fewglue_dev32': 32},
    'superglue_cb': {'train': 250, 'validation': 56, 'test': 250},
    'superglue_copa': {'train': 400, 'validation': 100, 'fewglue_train': 32, 'fewglue_dev32': 32},
    'superglue_multirc': {'validation': 4848, 'fewglue_train': 154, 'fewglue_dev32': 167},
    'superglue_record': {'fewglue_dev32': 32},
    'superglue_rte': {'train': 2490, 'validation': 277, 'test': 3000},
    'superglue_wic': {'validation': 638, 'fewglue_train': 32, 'fewglue_dev32': 32},
    # T5's wsc_simple trains on the 259 true (noun, pronoun) pairs; the binary form on all.
    'superglue_wsc': {'train': 259, 'validation': 104, 'test': 146},
    'superglue_wsc_binary': {'train': 554, 'validation': 104, 'test': 146},
    'mrqa_squad': {'validation': 10507},
    'mrqa_drop': {'validation': 1503},
    'mrqa_duorc': {'validation': 1501},
    'mrqa_relation_extraction': {'validation': 2948},
    'glue_mrpc': {'train': 3668, 'validation': 408, 'test': 1725},
    'glue_qqp': {f'kshot16_{seed}_{split}': 32 for seed in (13, 21, 42, 87, 100)
                 for split in ('train', 'dev')},
}
MISSING = {  # what the MANIFEST says is absent
    'superglue_boolq': 'train', 'superglue_record': 'validation', 'superglue_axb': 'test',
    'mrqa_squad': 'train', 'mrqa_textbookqa': 'validation', 'mrqa_bioasq': 'validation',
    'mrqa_race': 'validation', 'glue_qqp': 'train',
}
FIRST_INPUTS = {  # T5's formats, no task prefix (the paper's setting)
    ('superglue_rte', 'validation'): 'hypothesis: Christopher Reeve had an accident. premise: '
                                     'Dana Reeve, the widow of',
    ('superglue_cb', 'validation'): 'hypothesis: Valence was helping premise: Valence the',
    ('superglue_boolq', 'validation'): 'passage: Ethanol fuel -- All biomass goes through',
    ('superglue_copa', 'validation'): 'choice1: The toilet filled with water. choice2: Water '
                                      'flowed from the spout. premise: The man turned on the '
                                      'faucet. question: effect',
    ('superglue_wic', 'validation'): 'sentence1: An emerging professional class. sentence2: '
                                     'Apologizing for losing your temper',
    ('superglue_wsc', 'validation'): 'Bernard , who had not told the government official that',
    ('superglue_wsc_binary', 'validation'): 'span1_text: anyone span2_text: him text: Bernard ,',
    ('superglue_multirc', 'validation'): 'question: Would the mass of a baseball affect how much '
                                         'force you have to use to pick it up? answer: No '
                                         'paragraph: What causes a change in motion?',
    ('superglue_record', 'fewglue_dev32'): "query: They will sew our lips, but we will chant, "
                                           "'Long live @placeholder.' entities: Islamabad, "
                                           'Pakistan, CNN',
    ('mrqa_squad', 'validation'): 'question: Which NFL team represented the AFC at Super Bowl '
                                  '50? context: Super Bowl 50 was an American football game',
    ('glue_mrpc', 'validation'): "sentence1: He said the foodservice pie business doesn't fit",
    ('paraphrase_qqp', 'kshot16_13_train'): 'sentence1: Can I develope mobile apps with c++? '
                                            'sentence2: How can I develop mobile apps with C++?',
}
FIRST_TARGETS = {
    ('superglue_rte', 'validation'): 'not_entailment', ('superglue_cb', 'validation'):
    'contradiction', ('superglue_boolq', 'validation'): 'False', ('superglue_copa', 'validation'):
    'choice2', ('superglue_wic', 'validation'): 'False', ('superglue_wsc', 'validation'): 'anyone',
    ('superglue_wsc_binary', 'validation'): 'False',
    ('superglue_multirc', 'validation'): 'False', ('superglue_record', 'fewglue_dev32'):
    'Benazir Bhutto', ('mrqa_squad', 'validation'): 'Denver Broncos', ('glue_mrpc', 'validation'):
    'equivalent', ('paraphrase_qqp', 'kshot16_13_train'): 'duplicate',
}


@pytest.mark.parametrize('task', sorted(COUNTS))
def test_counts_per_split_match_the_manifest(task):
  spec = get_task_spec(task)
  for split, count in COUNTS[task].items():
    records = spec.records(split)
    assert len(records) == count, (task, split)
    if split != 'test':
      labelled = [r for r in records if r['label'] >= 0 or r['answers']]
      assert len(labelled) == count, (task, split)  # every record has a gold label or answers
      if spec.label_names:
        assert {r['targets'] for r in records} <= set(spec.label_names)


def test_multirc_groups_questions_and_record_keeps_every_answer():
  multirc = get_task_spec('superglue_multirc').records('validation')
  assert len({r['group'] for r in multirc}) == 953  # the MANIFEST's question count
  train = get_task_spec('superglue_record').records('fewglue_train')
  assert len({r['group'] for r in train}) == 32  # 32 queries, one record per distinct answer
  dev = get_task_spec('superglue_record').records('fewglue_dev32')
  assert dev[0]['answers'] == ['Benazir Bhutto', 'Bhutto']


@pytest.mark.parametrize('key', sorted(FIRST_INPUTS))
def test_first_example_renders_as_expected(key):
  task, split = key
  first = get_task_spec(task).records(split)[0]
  assert first['inputs'].startswith(FIRST_INPUTS[key])
  assert first['targets'] == FIRST_TARGETS[key]


def test_prefixed_variant_puts_the_benchmark_name_first():
  plain = get_task_spec('superglue_rte').records('validation')[0]['inputs']
  assert get_task_spec('superglue_rte_prefixed').records('validation')[0]['inputs'] == \
      'rte ' + plain


def test_seqio_task_and_mixture_give_the_same_examples():
  import seqio  # pylint: disable=import-outside-toplevel
  register_tasks()
  data = pipeline.load_tokenized('superglue_copa', 'validation', 512, 8)
  assert len(data) == 100 and data.truncated_inputs == 0
  from t5prompt.data.vocab import get_vocabulary  # pylint: disable=import-outside-toplevel
  vocabulary = get_vocabulary()
  assert vocabulary.decode(data.inputs[0].tolist()) == data.records[0]['inputs']
  assert vocabulary.decode(data.targets[0].tolist()) == 'choice2'
  assert data.inputs[0][(data.inputs[0] > 0).sum() - 1] == 1  # EOS ends every input
  mixture = seqio.get_mixture_or_task(SUPERGLUE_MIXTURE)
  assert sorted(task.name for task in mixture.tasks) == sorted(
      f'superglue_{t}' for t in ('boolq', 'cb', 'copa', 'multirc', 'record', 'rte', 'wic', 'wsc'))


def test_truncation_is_counted_and_keeps_eos():
  data = pipeline.load_tokenized('superglue_boolq', 'fewglue_train', 64, 8)
  lengths = [len(r['inputs'].split()) for r in data.records]
  assert data.truncated_inputs == 32 and max(lengths) > 64  # every passage is longer
  assert (data.inputs[:, -1] == 1).all()


def test_batches_are_a_pure_function_of_seed_and_step():
  data = pipeline.load_tokenized('superglue_cb', 'validation', 128, 8)
  first = pipeline.train_batch(data, 8, seed=3, step=20)
  again = pipeline.train_batch(data, 8, seed=3, step=20)
  np.testing.assert_array_equal(first['inputs'], again['inputs'])
  other = pipeline.train_batch(data, 8, seed=4, step=20)
  assert not np.array_equal(first['inputs'], other['inputs'])
  # One epoch of 7 steps x 8 = 56 examples sees each example exactly once.
  seen = np.concatenate([pipeline.example_indices(56, 8, 3, step) for step in range(7)])
  assert sorted(seen) == list(range(56))
  # Two hosts each take their half of the same global batch.
  halves = [pipeline.train_batch(data, 8, 3, 20, host, 2)['inputs'] for host in (0, 1)]
  np.testing.assert_array_equal(np.concatenate(halves), first['inputs'])


def test_missing_data_says_where_it_looked_and_how_to_get_it():
  with pytest.raises(sources.DataNotFoundError,
                     match=r"(?s)looked for TFDS super_glue/boolq.*BoolQ/train.jsonl.*"
                           r'super.gluebenchmark.com'):
    get_task_spec('superglue_boolq').records('train')
  with pytest.raises(sources.DataNotFoundError, match=r'(?s)TextbookQA.jsonl.gz.*MRQA'):
    pipeline.load_tokenized('mrqa_textbookqa', 'validation', 512, 32)
  with pytest.raises(sources.DataNotFoundError, match="Unknown split 'dev'"):
    get_task_spec('superglue_cb').source.locate('dev')


def test_malformed_jsonl_names_file_and_line(tmp_path, monkeypatch):
  (tmp_path / 'superglue' / 'CB').mkdir(parents=True)
  good = '{"premise": "a", "hypothesis": "b", "label": "neutral", "idx": 0}\n'
  (tmp_path / 'superglue' / 'CB' / 'val.jsonl').write_text(good + '{"premise": "a", \n')
  monkeypatch.setenv('T5PROMPT_DATA_DIR', str(tmp_path))
  with pytest.raises(ValueError, match=r'CB/val.jsonl:2 is not valid JSON'):
    get_task_spec('superglue_cb').records('validation')
  (tmp_path / 'superglue' / 'CB' / 'val.jsonl').write_text(good.replace('neutral', 'maybe'))
  with pytest.raises(ValueError, match=r"label 'maybe' \(idx 0, validation\) is not one of "
                                       r"\['entailment', 'contradiction', 'neutral'\]"):
    get_task_spec('superglue_cb').records('validation')


def test_unknown_task_suggests_near_names():
  with pytest.raises(ValueError, match="Unknown task 'mrqa_sqad'. Did you mean mrqa_squad"):
    get_task_spec('mrqa_sqad')


def test_data_list_and_show_commands(capsys):
  assert cli.main(['data', 'list']) == 0
  listing = capsys.readouterr().out
  for name in task_specs():
    assert f'\n{name}  ' in '\n' + listing
  assert 'superglue/RTE/train.jsonl' in listing and 'MISSING: No data for split' in listing
  assert cli.main(['data', 'show', 'superglue_wsc', '--num', '2']) == 0
  shown = capsys.readouterr().out
  assert 'superglue_wsc [validation]: 104 examples' in shown
  assert "targets: 'Mr. Moncrieff'" in shown  # T5's wsc_simple: the referent
  assert cli.main(['data', 'show', 'superglue_rtee']) == 2
  assert 'Did you mean superglue_rte' in capsys.readouterr().err
