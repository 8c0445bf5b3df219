"""Vocabularies: T5's, and SentencePiece models trained on the miniature's text. Each is
SentencePiece's pieces plus 100 `<extra_id_*>` sentinels, added as seqio adds them
(user-defined pieces `▁<extra_id_i>`, `<extra_id_0>` the highest id), with T5's specials:
0 = pad (and decoder start), 1 = EOS, 2 = UNK.

A vocabulary is named by `model.vocabulary`: '' or 't5' (T5's 32,000 pieces + sentinels =
32,100 ids, embedded in tables of 32,128 rows; ids equal the published checkpoints'),
`miniature-<N>` (N pieces trained on the miniature's pre-training text, `data.text`, once, and
kept in the cache), or the path of a SentencePiece model. A backbone directory carries its own
(`spiece.model`), so a pre-trained backbone's tasks are tokenized as it was trained.

Known differences from transformers' T5Tokenizer (which matches on plain text and on
space-separated sentinels): it inserts a `▁` (id 3) between a sentinel and punctuation right
after it, and it also splits a sentinel glued to a word (`a<extra_id_1>b`), which seqio does not.
"""

import functools
import os
import re
import shutil
import sys
from pathlib import Path

from t5prompt.data.sources import cache_dir
from t5prompt.data.tf_setup import tensorflow

NUM_EXTRA_IDS = 100
T5 = 't5'
_MINIATURE = re.compile(r'^miniature-(\d+)$')
# T5's SentencePiece model (Apache-2.0, gs://t5-data/vocabs/cc_all.32000/sentencepiece.model,
# sha256 9e925505...2a93) ships with the package: every checkpoint of the paper needs it.
T5_SPM = Path(__file__).with_name('t5_sentencepiece.model')


def default_spm_path() -> Path:
  if not T5_SPM.is_file():
    raise FileNotFoundError(f'T5\'s SentencePiece model is missing from the package ({T5_SPM}); '
                            'reinstall t5prompt.')
  return T5_SPM


def check_name(name: str) -> None:
  """Raises ValueError for a vocabulary that is neither a known name nor a file."""
  if name in ('', T5) or _MINIATURE.match(name) or Path(name).expanduser().is_file():
    return
  raise ValueError(f'Unknown vocabulary {name!r}: give "t5", "miniature-<pieces>" (trained on '
                   'the shipped text, e.g. miniature-4000), or the path of a SentencePiece '
                   'model.')


def spm_path(name: str = '') -> Path:
  """The SentencePiece model file a vocabulary name stands for (training it if needed)."""
  check_name(name)
  if name in ('', T5):
    return default_spm_path()
  match = _MINIATURE.match(name)
  if match:
    return trained_spm(int(match.group(1)))
  return Path(name).expanduser()


def trained_spm(pieces: int) -> Path:
  """A unigram SentencePiece model of `pieces` pieces trained on the pre-training text's train
  documents, with T5's special ids; trained once (deterministically) and cached."""
  path = cache_dir() / 'vocabularies' / f'miniature-{pieces}.model'
  if path.is_file():
    return path
  print(f'training vocabulary miniature-{pieces} on the pre-training text (once: kept in '
        f'{path.parent})', file=sys.stderr)
  import sentencepiece  # pylint: disable=import-outside-toplevel
  from t5prompt.data import text  # pylint: disable=import-outside-toplevel  (reads the corpus)
  path.parent.mkdir(parents=True, exist_ok=True)
  staging = path.parent / f'.training-{pieces}-{os.getpid()}'  # processes may race: each its own
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(line for document in text.documents('train')
                             for line in document.split('\n') if line.strip()),
      model_prefix=str(staging), vocab_size=pieces, model_type='unigram', pad_id=0, eos_id=1,
      unk_id=2, bos_id=-1, character_coverage=1.0, normalization_rule_name='nmt_nfkc',
      input_sentence_size=2_000_000, shuffle_input_sentence=False, num_threads=1,
      minloglevel=2)
  shutil.move(f'{staging}.model', path)  # appears whole, or not at all
  Path(f'{staging}.vocab').unlink(missing_ok=True)
  return path


@functools.cache
def _vocabulary(path: str):
  tensorflow()  # quiet, and off the accelerators, before seqio imports it
  import seqio  # pylint: disable=import-outside-toplevel  (brings TensorFlow: import lazily)
  return seqio.SentencePieceVocabulary(path, extra_ids=NUM_EXTRA_IDS)


def get_vocabulary(name: str = ''):
  """A seqio SentencePieceVocabulary with 100 extra ids, for a vocabulary name or path."""
  return _vocabulary(str(spm_path(name)))
