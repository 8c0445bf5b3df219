"""Our vocabulary gives the ids of transformers' T5 tokenizer on real SuperGLUE text."""

import json
import shutil

import pytest
import transformers

from t5prompt.data.vocab import get_vocabulary


@pytest.fixture(scope='module')
def vocabulary(shared_data):
  return get_vocabulary(str(shared_data / 't5_spm' / 'sentencepiece.model'))


@pytest.fixture(scope='module')
def hf_tokenizer(shared_data, tmp_path_factory):
  # transformers 5 mis-reads `T5Tokenizer(vocab_file=...)`: load from a directory.
  directory = tmp_path_factory.mktemp('tokenizer')
  shutil.copy(shared_data / 't5_spm' / 'sentencepiece.model', directory / 'spiece.model')
  return transformers.T5Tokenizer.from_pretrained(directory, extra_ids=100)


def _passages(shared_data, limit=60):
  texts = []
  for task, fields in (('BoolQ/val.jsonl', ('passage', 'question')),
                       ('RTE/val.jsonl', ('premise', 'hypothesis')),
                       ('CB/val.jsonl', ('premise', 'hypothesis'))):
    with open(shared_data / 'superglue' / task, encoding='utf-8') as f:
      for line, _ in zip(f, range(limit)):
        example = json.loads(line)
        texts.extend(example[field] for field in fields)
  return texts


def test_sizes_and_sentinel_ids(vocabulary, hf_tokenizer):
  assert vocabulary.vocab_size == len(hf_tokenizer) == 32100
  assert vocabulary.encode('<extra_id_0>')[-1] == 32099
  assert vocabulary.encode('<extra_id_99>')[-1] == 32000
  for i in (0, 1, 50, 99):
    assert hf_tokenizer.convert_tokens_to_ids(f'<extra_id_{i}>') == 32099 - i
  assert (vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id) == (0, 1, 2)


def test_ids_equal_transformers_on_superglue_text(vocabulary, hf_tokenizer, shared_data):
  texts = _passages(shared_data)
  assert len(texts) == 2 * (60 + 60 + 56)  # CB val has 56 examples
  for text in texts:
    assert vocabulary.encode(text) == hf_tokenizer(text, add_special_tokens=False).input_ids, text


def test_span_corruption_style_sentinels_equal_transformers(vocabulary, hf_tokenizer,
                                                            shared_data):
  # Sentinels as T5's span corruption writes them: between words, separated by spaces.
  for text in _passages(shared_data, limit=20):
    words = text.split()
    if len(words) < 8:
      continue
    corrupted = ' '.join(words[:3] + ['<extra_id_0>'] + words[5:7] + ['<extra_id_1>'] + words[8:])
    ours = vocabulary.encode(corrupted)
    assert ours == hf_tokenizer(corrupted, add_special_tokens=False).input_ids, corrupted
    assert 32099 in ours and 32098 in ours
    decoded = vocabulary.decode(ours)  # lossy on characters T5 lacks (e.g. ``), not sentinels
    assert decoded.index('<extra_id_0>') < decoded.index('<extra_id_1>')


def test_t5s_vocabulary_ships_with_the_package(tmp_path, monkeypatch):
  """No data directory at all: T5's vocabulary still loads (it is package data)."""
  monkeypatch.setenv('T5PROMPT_DATA_DIR', str(tmp_path / 'nothing'))
  from t5prompt.data import vocab  # pylint: disable=import-outside-toplevel
  assert vocab.default_spm_path().is_file()
  assert vocab.get_vocabulary().encode('I have a cat.') == [27, 43, 3, 9, 1712, 5]
