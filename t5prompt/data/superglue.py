"""SuperGLUE from local files in the original release format (`<Task>/{train,val,test}.jsonl`,
plus FewGLUE's 32-example `fewglue_32/{train,dev32}.jsonl`), as T5 text-to-text examples.

The text formats are T5's (`t5.data.preprocessors.glue`): the feature names in sorted order,
each followed by its text, optionally after the benchmark name as a task prefix. The paper
trained without the prefix.
"""

import dataclasses
import json
from pathlib import Path
from typing import Callable, Iterator

from t5prompt.data.vocab import data_dir

# split name -> file inside the task's directory
SPLIT_FILES = {
    'train': 'train.jsonl',
    'validation': 'val.jsonl',
    'test': 'test.jsonl',
    'fewglue_train': 'fewglue_32/train.jsonl',
    'fewglue_dev32': 'fewglue_32/dev32.jsonl',
}


@dataclasses.dataclass(frozen=True)
class SuperGlueTask:
  name: str  # T5's benchmark name, the task prefix
  directory: str  # the release's directory name
  label_names: tuple[str, ...]
  feature_names: tuple[str, ...]  # in T5's (sorted) order
  label_of: Callable[[object], int]


def _index_of(names):
  return lambda label: names.index(label)


TASKS = {
    'boolq': SuperGlueTask('boolq', 'BoolQ', ('False', 'True'), ('passage', 'question'),
                           lambda label: int(bool(label))),
    'cb': SuperGlueTask('cb', 'CB', ('entailment', 'contradiction', 'neutral'),
                        ('hypothesis', 'premise'),
                        _index_of(['entailment', 'contradiction', 'neutral'])),
    'rte': SuperGlueTask('rte', 'RTE', ('entailment', 'not_entailment'), ('hypothesis', 'premise'),
                         _index_of(['entailment', 'not_entailment'])),
}


def split_path(task: SuperGlueTask, split: str, root: Path | None = None) -> Path:
  if split not in SPLIT_FILES:
    raise ValueError(f'Unknown split {split!r}; SuperGLUE splits are {", ".join(SPLIT_FILES)}.')
  return (root or data_dir()) / 'superglue' / task.directory / SPLIT_FILES[split]


def read_jsonl(path: Path) -> Iterator[dict]:
  with open(path, encoding='utf-8') as lines:
    for number, line in enumerate(lines, 1):
      if line.strip():
        try:
          yield json.loads(line)
        except json.JSONDecodeError as error:
          raise ValueError(f'{path}:{number} is not valid JSON ({error.msg}); is this the '
                           'original SuperGLUE jsonl?') from error


def text_to_text(task: SuperGlueTask, example: dict, with_prefix: bool) -> dict:
  """One release example -> {'inputs', 'targets', 'label', 'idx'}; label -1 when unlabelled."""
  parts = [task.name] if with_prefix else []
  for feature in task.feature_names:
    parts += [f'{feature}:', str(example[feature])]
  label = task.label_of(example['label']) if 'label' in example else -1
  return {'inputs': ' '.join(parts),
          'targets': task.label_names[label] if label >= 0 else '',
          'label': label, 'idx': int(example['idx'])}


def load_split(task_name: str, split: str, with_prefix: bool = False,
               root: Path | None = None) -> list[dict]:
  task = TASKS[task_name]
  path = split_path(task, split, root)
  if not path.is_file():
    raise FileNotFoundError(
        f'SuperGLUE {task.directory} {split!r} not found: looked for {path}. Put the SuperGLUE '
        f'release (https://super.gluebenchmark.com/tasks) under $T5PROMPT_DATA_DIR/superglue/, '
        'one directory per task, or pick a split that exists.')
  return [text_to_text(task, example, with_prefix) for example in read_jsonl(path)]
