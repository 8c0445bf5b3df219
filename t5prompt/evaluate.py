"""Evaluation on named eval sets: rank classification or decode-and-match, per task; and
`evaluate_run`, a finished run's best or latest checkpoint evaluated again.

Evals are a dict of named sets (in-domain dev and domain-shift sets are just entries), each a
(TaskSpec, TokenizedSplit); the result is {set name: metrics} with scores in percent.
"""

import os
from typing import Any

import jax
import numpy as np

from t5prompt import metrics
from t5prompt.backbone import load_model_backbone
from t5prompt.build import Run, build
from t5prompt.checkpoints import RunCheckpoints
from t5prompt.data.pipeline import TokenizedSplit, eval_batches
from t5prompt.data.spec import TaskSpec
from t5prompt.models import decode
from t5prompt.partitioning import make_partitioning, to_host
from t5prompt.prompts import methods
from t5prompt.run_config import load_run_config
from t5prompt.run_dir import RunDir, manifest
from t5prompt.run_setup import load_eval_sets


def label_targets(spec: TaskSpec, vocabulary, target_length: int) -> np.ndarray:
  """Every verbalised label as a target sequence (tokens + EOS, 0-padded): int32 [k, t]."""
  out = np.zeros((len(spec.label_names), target_length), np.int32)
  for row, label in enumerate(spec.label_names):
    ids = list(vocabulary.encode(label)) + [decode.EOS_ID]
    if len(ids) > target_length:
      raise ValueError(f'Label {label!r} of {spec.name} has {len(ids)} tokens with EOS, more '
                       f'than target_length={target_length}; raise task.target_length.')
    out[row, :len(ids)] = ids
  return out


def decode_texts(model, params, data: TokenizedSplit, vocabulary, batch_size: int,
                 max_examples: int = 0) -> list[str]:
  texts = []
  for batch, count in eval_batches(data, batch_size, max_examples):
    tokens = to_host(decode.greedy_decode(model, params, batch['inputs'],
                                          data.targets.shape[1]))
    texts += [vocabulary.decode(row.tolist()) for row in tokens[:count]]
  return texts


def predict(model, params, data: TokenizedSplit, spec: TaskSpec, vocabulary, batch_size: int,
            max_examples: int = 0):
  """Label indices (-1 where a decoded text is not a label), or texts for QA metrics."""
  if spec.metric in metrics.TEXT_METRICS:
    return decode_texts(model, params, data, vocabulary, batch_size, max_examples)
  if spec.eval_mode == 'rank':
    targets = label_targets(spec, vocabulary, data.targets.shape[1])
    predictions = []
    for batch, count in eval_batches(data, batch_size, max_examples):
      scores = decode.rank_scores(model, params, batch['inputs'], targets)
      predictions.append(to_host(scores).argmax(axis=-1)[:count])
    return np.concatenate(predictions).astype(np.int32)
  if spec.eval_mode == 'decode':
    index = {label: row for row, label in enumerate(spec.label_names)}
    texts = decode_texts(model, params, data, vocabulary, batch_size, max_examples)
    return np.array([index.get(text.strip(), -1) for text in texts], np.int32)
  raise ValueError(f'Unknown eval_mode {spec.eval_mode!r}; use "rank" or "decode".')


def evaluate(model, params, eval_sets: dict[str, tuple[TaskSpec, TokenizedSplit]], vocabulary,
             batch_size: int, max_examples: int = 0) -> dict[str, dict[str, float]]:
  results = {}
  for name, (spec, data) in eval_sets.items():
    predictions = predict(model, params, data, spec, vocabulary, batch_size, max_examples)
    results[name] = metrics.compute(spec.metric, predictions, data.records[:len(predictions)])
  return results


def evaluate_run(workdir: str | os.PathLike, which: str = 'best',
                 splits: tuple[str, ...] = ()) -> dict[str, Any]:
  """Re-evaluates a run's best or latest trainable params on its eval splits (or `splits`)."""
  if which not in ('best', 'latest'):
    raise ValueError(f'which must be "best" or "latest", got {which!r}.')
  config = load_run_config(workdir)
  method = methods.get(config.method)
  if not method.trains:
    raise ValueError(f'{workdir} is a {config.method} run: nothing was trained or checkpointed; '
                     'its result.json holds the evaluation (rerun `t5prompt train` to redo it).')
  backbone = load_model_backbone(config.model)
  run_dir = RunDir(workdir)
  run_dir.check_or_write_manifest(manifest(config, backbone, method.uses_prompt))  # or refuse
  partitioning = make_partitioning(config.partitioning.mesh, config.partitioning.shard_embed)
  with partitioning.activate():
    run = build(config, backbone, partitioning)
    checkpoints = RunCheckpoints(workdir, keep=config.train.keep_checkpoints)
    try:
      step, trainable = _restore(checkpoints, run, which, workdir)
    finally:
      checkpoints.close()
    metrics = evaluate(*run.for_inference(trainable), load_eval_sets(config, splits),
                       backbone.vocabulary, config.train.eval_batch_size)
  return {'workdir': str(workdir), 'checkpoint': which, 'step': step, 'metrics': metrics}


def _restore(checkpoints: RunCheckpoints, run: Run, which: str, workdir) -> tuple[int, dict]:
  if which == 'best':
    return checkpoints.restore_best(run.state.trainable)
  step = checkpoints.latest_step()
  if step is None:
    raise FileNotFoundError(f'{workdir} has no checkpoint yet.')
  template = {'trainable': run.state.trainable, 'opt_state': run.state.opt_state,
              'rng': jax.random.key_data(run.state.rng)}
  return step, checkpoints.restore(step, template)[0]['trainable']
