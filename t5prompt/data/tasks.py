"""The seqio Tasks t5prompt trains and evaluates on, registered in this one place.

Each task is a standard seqio Task (usable by any seqio code: `seqio.get_mixture_or_task`) plus
a `TaskSpec` with what the evaluator needs: the verbalised labels and how to score.
Names: `superglue_<task>` is the paper's format (no task prefix); `superglue_<task>_prefixed`
puts T5's benchmark name in front.
"""

import dataclasses
import functools

from t5prompt.data import superglue
from t5prompt.data.tf_setup import tensorflow
from t5prompt.data.vocab import get_vocabulary


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  name: str
  label_names: tuple[str, ...]  # verbalised labels, for rank classification and class-label init
  eval_mode: str = 'rank'  # 'rank' (score every label) or 'decode' (greedy decode, match text)
  metric: str = 'accuracy'
  splits: tuple[str, ...] = tuple(superglue.SPLIT_FILES)


TASK_SPECS: dict[str, TaskSpec] = {}


def _superglue_dataset_fn(task_name: str, with_prefix: bool):
  def dataset_fn(split, shuffle_files=False, seed=None):
    del shuffle_files, seed  # one file per split; shuffling is the pipeline's job
    tf = tensorflow()
    rows = superglue.load_split(task_name, split, with_prefix)
    return tf.data.Dataset.from_tensor_slices(
        {key: [row[key] for row in rows] for key in ('inputs', 'targets', 'label', 'idx')})
  return dataset_fn


@functools.cache
def register_tasks() -> tuple[str, ...]:
  """Registers every task with seqio (once) and returns their names."""
  tensorflow()
  import seqio  # pylint: disable=import-outside-toplevel
  vocabulary = get_vocabulary()
  features = {'inputs': seqio.Feature(vocabulary, add_eos=True),
              'targets': seqio.Feature(vocabulary, add_eos=True)}
  for task_name, task in superglue.TASKS.items():
    for with_prefix in (False, True):
      name = f'superglue_{task_name}' + ('_prefixed' if with_prefix else '')
      TASK_SPECS[name] = TaskSpec(name, task.label_names)
      if name in seqio.TaskRegistry.names():
        continue
      seqio.TaskRegistry.add(
          name,
          source=seqio.FunctionDataSource(_superglue_dataset_fn(task_name, with_prefix),
                                          splits=tuple(superglue.SPLIT_FILES)),
          preprocessors=[seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
                         seqio.preprocessors.append_eos_after_trim],
          output_features=features)
  return tuple(TASK_SPECS)


def get_task_spec(name: str) -> TaskSpec:
  names = register_tasks()
  if name not in TASK_SPECS:
    raise ValueError(f'Unknown task {name!r}; registered tasks: {", ".join(names)}.')
  return TASK_SPECS[name]
