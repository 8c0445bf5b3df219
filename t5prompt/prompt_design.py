"""The prompt-design baseline: a hand-written template on the frozen model, zero- or few-shot.

Nothing trains. Each eval example is its task's template question (`data.templates`), scored by
rank classification over the verbalizer words. With `prompt.shots` = k > 0, k demonstrations
(filled templates followed by their answers, drawn by `train.seed` from the task's few-shot
split: FewGLUE's 32 examples where shipped, else train) are prepended to every example; when
the input would exceed `task.input_length` the earliest demonstrations are dropped, never the
question, and the run records how many fitted on average. The result has the train loop's
result.json schema (steps 0, series 'prompt_design'), so sweeps and the report treat it as one
more line.
"""

import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from t5prompt import atomic
from t5prompt.data import pipeline
from t5prompt.data.pipeline import EOS_ID, TokenizedSplit
from t5prompt.data.sources import DataNotFoundError
from t5prompt.data.vocab import get_vocabulary
from t5prompt.evaluate import evaluate
from t5prompt.models import T5
from t5prompt.run_setup import (load_eval_sets, load_model_backbone, model_label, target_length,
                                task_spec)

DEMONSTRATION_SPLITS = ('fewglue_train', 'train')  # first one the task has


def _tokens(row: np.ndarray) -> np.ndarray:
  """A padded row without padding and without its final EOS."""
  ids = row[row > 0]
  return ids[:-1] if len(ids) and ids[-1] == EOS_ID else ids


def demonstrations(data: TokenizedSplit, shots: int, seed: int) -> list[np.ndarray]:
  """`shots` labelled examples as token sequences `question answer`, drawn by `seed`."""
  labelled = np.flatnonzero(data.labels >= 0)
  if shots > len(labelled):
    raise ValueError(f'prompt.shots={shots} but {data.task} {data.split!r} has only '
                     f'{len(labelled)} labelled examples.')
  chosen = np.random.RandomState(seed).choice(labelled, shots, replace=False)
  return [np.concatenate([_tokens(data.inputs[i]), _tokens(data.targets[i])]) for i in chosen]


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


def run(config, workdir: str | Path) -> dict:
  """Evaluates the template on the config's eval sets; writes result.json like a trained run."""
  workdir = Path(workdir)
  start = time.time()
  backbone = load_model_backbone(config.model)
  model = T5(backbone.config)
  spec = task_spec(config)
  eval_sets = load_eval_sets(config)
  shots_fitted = {}
  if config.prompt.shots:
    available = [s for s in DEMONSTRATION_SPLITS if _has_split(spec, s)]
    if not available:
      raise ValueError(f'{spec.name} has no few-shot split ({", ".join(DEMONSTRATION_SPLITS)}) '
                       'to draw demonstrations from; use prompt.shots=0.')
    demo_data = pipeline.load_tokenized(spec.name, available[0], config.task.input_length,
                                        target_length(config, spec))
    demos = demonstrations(demo_data, config.prompt.shots, config.train.seed)
    for name, (set_spec, data) in list(eval_sets.items()):
      data, shots_fitted[name] = with_demonstrations(data, demos, config.task.input_length)
      eval_sets[name] = (set_spec, data)
  print(f'prompt design: {spec.name}, {config.prompt.shots}-shot', file=sys.stderr)
  metrics = evaluate(model, backbone.params, eval_sets, get_vocabulary(),
                     config.train.eval_batch_size, config.train.max_eval_examples)
  result = {
      'config': json.loads(config.to_json()),
      'model_size': model_label(config), 'num_params': int(sum(
          x.size for x in jax.tree.leaves(backbone.params))),
      'd_model': backbone.config.d_model, 'series': config.series or config.method,
      'method': config.method, 'task': config.task.name, 'seed': config.train.seed,
      'prompt_length': 0, 'init': {'name': 'template', 'template_task': spec.name,
                                   'shots': config.prompt.shots,
                                   'shots_fitted': shots_fitted},
      'steps': 0, 'stopped_early': False, 'metrics': metrics, 'metric': spec.metric,
      'best_step': 0, 'initial_metrics': None, 'num_trainable_params': 0,
      'num_stored_params': 0,
      'truncated': {name: [data.truncated_inputs, data.truncated_targets]
                    for name, (_, data) in eval_sets.items()},
      'backbone': {'source': backbone.source, 'params_hash': backbone.params_hash},
      'wall_time_s': time.time() - start,
      'device_kind': jax.devices()[0].device_kind, 'num_devices': jax.device_count(),
  }
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(workdir / 'config.json', result['config'])
    atomic.write_json(workdir / 'result.json', result)
  return result
