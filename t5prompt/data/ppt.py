"""PPT's self-supervised tasks (Gu et al. 2022): prompts pre-trained on unlabelled text, one per
format that downstream classification tasks share, then used to start few-shot prompt tuning.

Built from the shipped pre-training text (`data.text`: WikiText-2, Gutenberg, the MRQA
out-of-domain contexts), split into train/validation by document like the pre-training itself;
never from a downstream task's examples. Each example is written in the input layout of the
downstream tasks of its format (T5's `field: value` pairs), and its labels in their words, so a
prompt pre-trained here meets the same inputs and answers downstream (PPT unifies the
verbalisers the same way):

  ppt_sentence_pair    `hypothesis: B premise: A`, 3 classes (PPT's next-sentence variant):
                       B follows A (entailment), B is elsewhere in A's document (neutral),
                       B is from another document (contradiction). For CB, RTE, BoolQ, WiC,
                       MRPC, QQP.
  ppt_multiple_choice  `choice1: X choice2: Y premise: A question: next`: which choice is the
                       sentence after A (the other is from the same document). For COPA.
  ppt_single_sentence  `sentence: A`, what text it is from (wikipedia / book / film). For
                       single-sentence tasks.

Every task keeps at most EXAMPLES[split] examples, drawn without replacement by a fixed seed,
classes balanced.
"""

import functools
import re
import zlib

import numpy as np

from t5prompt.data import text
from t5prompt.data.spec import TaskSpec, record

FORMATS = ('sentence_pair', 'multiple_choice', 'single_sentence')
PAIR_LABELS = ('entailment', 'neutral', 'contradiction')  # next / same document / elsewhere
CHOICE_LABELS = ('choice1', 'choice2')
EXAMPLES = {'train': 6000, 'validation': 600}
MIN_WORDS, MAX_WORDS = 4, 60
# Downstream tasks (the name without its benchmark prefix) -> the format of their prompt.
DOWNSTREAM_FORMATS = {
    **{task: 'sentence_pair' for task in ('cb', 'rte', 'boolq', 'wic', 'wsc', 'multirc', 'axb',
                                          'axg', 'mrpc', 'qqp')},
    'copa': 'multiple_choice'}
UNIFIED = 'unified'  # one prompt pre-trained on the mixture of every format


def task_name(format_name: str) -> str:
  return f'ppt_{format_name}'


def format_of(downstream_task: str) -> str:
  """The PPT format a downstream task's prompt starts from (`superglue_cb` -> sentence_pair)."""
  base = re.sub(r'^(superglue_|glue_|paraphrase_)', '', downstream_task)
  base = re.sub(r'(_prefixed|_template|_binary)$', '', base)
  return DOWNSTREAM_FORMATS.get(base, 'single_sentence')


def _sentences(document: str) -> list[str | None]:
  """The document's sentences in order, whitespace collapsed; None for one too short or too
  long to use (kept as a gap, so that "the next sentence" is always the next one)."""
  pieces = re.split(r'(?<=[.!?])\s+(?=["\'(A-Z])', ' '.join(document.split()))
  return [piece if MIN_WORDS <= len(piece.split()) <= MAX_WORDS else None for piece in pieces]


@functools.cache
def _documents(split: str) -> tuple[tuple[str, tuple[str | None, ...]], ...]:
  """(genre, sentences) of each document with at least three usable sentences. Validation
  leaves out sentences that train also has (the corpora share some text: DROP's passages are
  Wikipedia's)."""
  seen = set()
  if split != 'train':
    seen = {sentence for _, sentences in _documents('train') for sentence in sentences}
  out = []
  for genre, document in text.documents(split, with_genre=True):
    sentences = [None if sentence in seen else sentence for sentence in _sentences(document)]
    if sum(sentence is not None for sentence in sentences) >= 3:
      out.append((genre, tuple(sentences)))
  return tuple(out)


def _usable(sentences, *excluded: int) -> list[int]:
  return [i for i, sentence in enumerate(sentences) if sentence is not None and i not in excluded]


def _rng(format_name: str, split: str) -> np.random.RandomState:
  return np.random.RandomState(zlib.crc32(f'{format_name}/{split}'.encode()))


def _positions(documents, rng) -> list[tuple[int, int]]:
  """Every (document, sentence) with a sentence after it, in a random order: examples are
  drawn from it without replacement."""
  positions = [(d, i) for d, (_, sentences) in enumerate(documents)
               for i in range(len(sentences) - 1)
               if sentences[i] is not None and sentences[i + 1] is not None]
  return [positions[k] for k in rng.permutation(len(positions))]


def _sentence_pair(documents, rng, count: int) -> list[dict]:
  rows = []
  for doc, first in _positions(documents, rng):
    if len(rows) == count:
      break
    label = len(rows) % 3  # balanced
    sentences = documents[doc][1]
    if label == 0:
      second = sentences[first + 1]
    elif label == 1:
      others = [i for i in _usable(sentences) if abs(i - first) > 1]
      if not others:
        continue
      second = sentences[others[rng.randint(len(others))]]
    else:
      other = documents[(doc + 1 + rng.randint(len(documents) - 1)) % len(documents)][1]
      usable = _usable(other)
      second = other[usable[rng.randint(len(usable))]]
    rows.append({'inputs': f'hypothesis: {second} premise: {sentences[first]}', 'label': label})
  return rows


def _multiple_choice(documents, rng, count: int) -> list[dict]:
  rows = []
  for doc, first in _positions(documents, rng):
    if len(rows) == count:
      break
    sentences = documents[doc][1]
    others = _usable(sentences, first, first + 1)
    if not others:
      continue
    right, wrong = sentences[first + 1], sentences[others[rng.randint(len(others))]]
    label = len(rows) % 2  # balanced: where the right one stands
    choices = (right, wrong) if label == 0 else (wrong, right)
    rows.append({'inputs': f'choice1: {choices[0]} choice2: {choices[1]} '
                           f'premise: {sentences[first]} question: next', 'label': label})
  return rows


def _single_sentence(documents, rng, count: int) -> list[dict]:
  """As many sentences of each genre present (distinct ones), in turn."""
  pools = {}
  for genre in text.GENRES:
    sentences = sorted({s for g, doc in documents if g == genre for s in doc if s is not None})
    if sentences:
      pools[genre] = [sentences[k] for k in rng.permutation(len(sentences))]
  each = min(count // len(pools), *map(len, pools.values()))
  return [{'inputs': f'sentence: {pools[genre][k]}', 'label': text.GENRES.index(genre)}
          for k in range(each) for genre in pools]


MAKERS = {'sentence_pair': (_sentence_pair, PAIR_LABELS),
          'multiple_choice': (_multiple_choice, CHOICE_LABELS),
          'single_sentence': (_single_sentence, text.GENRES)}


class PPTSource:
  """One format's examples, made from the pre-training text (`data list` shows where)."""
  splits = text.SPLITS

  def __init__(self, format_name: str):
    self.format_name = format_name

  def locate(self, split: str) -> str:
    return text.TextSource().locate(split)

  @functools.cache  # pylint: disable=method-cache-max-size-none  (a few sources, kept)
  def rows(self, split: str) -> list[dict]:
    self.locate(split)  # a missing text file: the clear error, not an empty task
    make, _ = MAKERS[self.format_name]
    return make(_documents(split), _rng(self.format_name, split), EXAMPLES[split])

  def fingerprint(self) -> list:
    return text.TextSource().fingerprint() + [self.format_name, EXAMPLES]


def _to_records(label_names):
  def to_records(example, split, with_prefix):
    del split, with_prefix
    return [record(example['inputs'], label_names[example['label']], example['label'])]
  return to_records


TASKS = {task_name(name): TaskSpec(
    name=task_name(name), source=PPTSource(name), to_records=_to_records(labels),
    metric='accuracy', label_names=labels, target_length=8,
    description=f'PPT self-supervised {name.replace("_", "-")} task over the shipped text')
         for name, (_, labels) in MAKERS.items()}
