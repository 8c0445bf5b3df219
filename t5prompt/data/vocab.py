"""The T5 vocabulary: SentencePiece's 32,000 pieces plus the 100 `<extra_id_*>` sentinels.

The sentinels are added as seqio adds them (user-defined pieces `▁<extra_id_i>`, with
`<extra_id_0>` the highest id, 32099), so ids match the published checkpoints: 32,100 ids in
all, embedded in tables of 32,128 rows. T5's specials: 0 = pad (and decoder start), 1 = EOS,
2 = UNK. Known differences from transformers' T5Tokenizer (which matches on plain text and on
space-separated sentinels): it inserts a `▁` (id 3) between a sentinel and punctuation right
after it, and it also splits a sentinel glued to a word (`a<extra_id_1>b`), which seqio does not.
"""

import functools
import os
from pathlib import Path

from t5prompt.data.tf_setup import tensorflow

NUM_EXTRA_IDS = 100
SPM_RELATIVE_PATH = 't5_spm/sentencepiece.model'


def data_dir() -> Path:
  """Where local data lives: $T5PROMPT_DATA_DIR, else the `shared/data` beside this checkout."""
  if 'T5PROMPT_DATA_DIR' in os.environ:
    return Path(os.environ['T5PROMPT_DATA_DIR']).expanduser()
  return Path(__file__).resolve().parents[3] / 'shared' / 'data'


def default_spm_path() -> Path:
  path = data_dir() / SPM_RELATIVE_PATH
  if not path.exists():
    raise FileNotFoundError(
        f'T5 SentencePiece model not found at {path}. Set T5PROMPT_DATA_DIR to a directory '
        f'holding {SPM_RELATIVE_PATH} (the public copy is '
        'gs://t5-data/vocabs/cc_all.32000/sentencepiece.model), or pass its path.')
  return path


@functools.cache
def get_vocabulary(spm_path: str | None = None):
  """A seqio SentencePieceVocabulary with T5's 100 extra ids (cached per path)."""
  tensorflow()  # quiet, and off the accelerators, before seqio imports it
  import seqio  # pylint: disable=import-outside-toplevel  (brings TensorFlow: import lazily)
  path = str(spm_path or default_spm_path())
  return seqio.SentencePieceVocabulary(path, extra_ids=NUM_EXTRA_IDS)
