"""What t5prompt knows about a task beyond its seqio Task: where its examples come from, how a
release example becomes text-to-text records, its labels, metric and scoring mode."""

import dataclasses
from typing import Callable, Optional

from t5prompt.data.sources import Source

# A record: {'inputs': str, 'targets': str, 'label': int (-1: none / unlabelled),
#            'answers': [str] (QA: every gold answer), 'group': str (MultiRC question id)}
Record = dict


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  name: str
  source: Source
  # (release example, split) -> records; `with_prefix` puts T5's benchmark name in front.
  # None: a task made at the token level (pre-training), whose examples have no text records.
  to_records: Optional[Callable[[dict, str, bool], list[Record]]]
  metric: str  # a name in t5prompt.metrics.METRICS, or 'lm' (the held-out loss)
  label_names: tuple[str, ...] = ()  # verbalised labels (classification tasks)
  # 'rank' (score every label), 'decode' (greedy, then match) or 'loss' (LM loss and reliance)
  eval_mode: str = 'rank'
  rank_scoring: str = 'sum'  # rank classification by the label's summed or mean log-likelihood
  target_length: int = 8
  with_prefix: bool = False
  description: str = ''
  # seqio preprocessors after tokenization (a pre-training objective over the tokens), and
  # what names their output format in the on-disk cache of tokenized splits.
  token_preprocessors: tuple[Callable, ...] = ()
  cache_key: str = ''

  @property
  def splits(self) -> tuple[str, ...]:
    return self.source.splits

  def records(self, split: str) -> list[Record] | None:
    """The split's text-to-text records (None for a token-level task)."""
    if self.to_records is None:
      return None
    out = []
    for example in self.source.rows(split):
      out.extend(self.to_records(example, split, self.with_prefix))
    return out


def record(inputs: str, targets: str, label: int = -1, answers=(), group: str = '') -> Record:
  return {'inputs': inputs, 'targets': targets, 'label': label, 'answers': list(answers),
          'group': group}


def labelled(label_names, label, name: str, where: str = '') -> int:
  """A release label (a name, an index or a bool) as an index into `label_names`."""
  if isinstance(label, bool):
    label = int(label)
  if isinstance(label, str) and label in label_names:
    return label_names.index(label)
  if isinstance(label, int) and 0 <= label < len(label_names):
    return label
  raise ValueError(f'{name}: label {label!r}{where} is not one of {list(label_names)}; is this '
                   'the right file for the task?')
