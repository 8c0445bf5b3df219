"""What every run (trained or not) reads from its config besides the backbone: the task spec
(through the method's view of the task), the label names, the train data and the eval sets."""

import dataclasses
from pathlib import Path

from t5prompt.data import pipeline
from t5prompt.data.tasks import get_task_spec
from t5prompt.prompts import methods


def model_label(config) -> str:
  """The backbone's name in reports: model.label, else the size, else the checkpoint's name."""
  if config.model.label:
    return config.model.label
  if config.model.checkpoint:
    return Path(config.model.checkpoint.rstrip('/')).name
  return config.model.size


def task_spec(config, task_name: str = ''):
  """The TaskSpec of the config's task (or `task_name`) as the method evaluates it (prompt
  design: through its hand-written template), with the config's eval_mode (if set) and
  rank scoring."""
  name = task_name or config.task.name
  spec = get_task_spec(methods.get(config.method).eval_task(name))
  if config.task.eval_mode and spec.label_names:
    spec = dataclasses.replace(spec, eval_mode=config.task.eval_mode)
  return dataclasses.replace(spec, rank_scoring=config.task.rank_scoring)


def target_length(config, spec) -> int:
  return config.task.target_length or spec.target_length


def load_train_data(config, vocabulary) -> pipeline.TokenizedSplit:
  """The training split of the task and of every task mixed in (examples-proportional),
  tokenized with the backbone's vocabulary."""
  spec = task_spec(config)
  return pipeline.concatenate([
      pipeline.load_tokenized(name, config.task.train_split, config.task.input_length,
                              target_length(config, spec), vocabulary)
      for name in (config.task.name, *config.task.mixture)])


def load_eval_sets(config, vocabulary, splits: tuple[str, ...] = ()) -> dict:
  """{name: (spec, tokenized split)}: the task's eval splits (named by split), then the
  domain-shift sets of `task.extra_evals` (named `task:split`), tokenized with the backbone's
  vocabulary."""
  eval_sets = {}
  for split in splits or config.task.eval_splits:
    spec = task_spec(config)
    eval_sets[split] = (spec, pipeline.load_tokenized(
        spec.name, split, config.task.input_length, target_length(config, spec), vocabulary))
  for entry in () if splits else config.task.extra_evals:
    task_name, _, split = entry.partition(':')
    spec = task_spec(config, task_name)
    eval_sets[entry] = (spec, pipeline.load_tokenized(
        spec.name, split or 'validation', config.task.input_length, target_length(config, spec),
        vocabulary))
  return eval_sets
