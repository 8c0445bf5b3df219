"""Prompt design, the hand-written baseline: a template on the frozen model, zero- or few-shot.

Nothing trains. Each eval example is its task's template question (`data.templates`), scored by
rank classification over the verbalizer words. With `prompt.shots` = k > 0, k demonstrations
(filled templates followed by their answers, drawn by `train.seed` from the task's few-shot
split: FewGLUE's 32 examples where shipped, else train) are prepended to every example; when
the input would exceed `task.input_length` the earliest demonstrations are dropped, never the
question, and the run records how many fitted on average. The train loop evaluates it like any
untrained run (steps 0), so sweeps and the report treat it as one more line.
"""

import numpy as np

from t5prompt.data import pipeline
from t5prompt.data.pipeline import TokenizedSplit, unpadded
from t5prompt.data.sources import DataNotFoundError
from t5prompt.data.tasks import get_task_spec
from t5prompt.data.templates import template_task

DEMONSTRATION_SPLITS = ('fewglue_train', 'train')  # first one the task has


def demonstrations(data: TokenizedSplit, shots: int, seed: int) -> list[np.ndarray]:
  """`shots` labelled examples as token sequences `question answer`, drawn by `seed`."""
  labelled = np.flatnonzero(data.labels >= 0)
  if shots > len(labelled):
    raise ValueError(f'prompt.shots={shots} but {data.task} {data.split!r} has only '
                     f'{len(labelled)} labelled examples.')
  chosen = np.random.RandomState(seed).choice(labelled, shots, replace=False)
  return [np.concatenate([unpadded(data.inputs[i]), unpadded(data.targets[i])]) for i in chosen]


def with_demonstrations(data: TokenizedSplit, demos: list[np.ndarray],
                        input_length: int) -> tuple[TokenizedSplit, float]:
  """Every input with as many demonstrations in front as fit (the latest kept); the split with
  those inputs, and the mean number that fitted."""
  inputs = np.zeros_like(data.inputs, shape=(len(data), input_length))
  fitted = []
  for row, padded in enumerate(data.inputs):
    question = padded[padded > 0]  # with its EOS
    kept = list(demos)
    while kept and sum(map(len, kept)) + len(question) > input_length:
      kept.pop(0)
    ids = np.concatenate(kept + [question])[:input_length]
    inputs[row, :len(ids)] = ids
    fitted.append(len(kept))
  return TokenizedSplit(data.task, data.split, inputs, data.targets, data.labels,
                        data.truncated_inputs, data.truncated_targets,
                        data.records), float(np.mean(fitted))


def _has_split(spec, split: str) -> bool:
  if split not in spec.splits:
    return False
  try:
    spec.source.locate(split)
  except DataNotFoundError:
    return False
  return True


def with_shots(config, eval_sets: dict, vocabulary) -> tuple[dict, dict]:
  """The eval sets with `prompt.shots` demonstrations in front of every example, and the record
  of the template and how many demonstrations fitted per set."""
  spec = get_task_spec(template_task(config.task.name))
  shots_fitted = {}
  if config.prompt.shots:
    available = [s for s in DEMONSTRATION_SPLITS if _has_split(spec, s)]
    if not available:
      raise ValueError(f'{spec.name} has no few-shot split ({", ".join(DEMONSTRATION_SPLITS)}) '
                       'to draw demonstrations from; use prompt.shots=0.')
    demo_data = pipeline.load_tokenized(spec.name, available[0], config.task.input_length,
                                        config.task.target_length or spec.target_length,
                                        vocabulary)
    demos = demonstrations(demo_data, config.prompt.shots, config.train.seed)
    for name, (set_spec, data) in list(eval_sets.items()):
      data, shots_fitted[name] = with_demonstrations(data, demos, config.task.input_length)
      eval_sets[name] = (set_spec, data)
  return eval_sets, {'name': 'template', 'template_task': spec.name,
                     'shots': config.prompt.shots, 'shots_fitted': shots_fitted}
