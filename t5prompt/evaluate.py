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
from t5prompt.run_dir import RunDir
from t5prompt.run_setup import check_or_write_manifest, in_saved_layout, load_eval_sets


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
      scores = decode.rank_scores(model, params, batch['inputs'], targets,
                                  length_normalized=spec.rank_scoring == 'mean')
      predictions.append(to_host(scores).argmax(axis=-1)[:count])
    return np.concatenate(predictions).astype(np.int32)
  if spec.eval_mode == 'decode':
    index = {label: row for row, label in enumerate(spec.label_names)}
    texts = decode_texts(model, params, data, vocabulary, batch_size, max_examples)
    return np.array([index.get(text.strip(), -1) for text in texts], np.int32)
  raise ValueError(f'Unknown eval_mode {spec.eval_mode!r}; use "rank" or "decode".')


def _derangement(count: int, seed: int = 0) -> np.ndarray:
  """A fixed random permutation of range(count) that moves every index (each example to the
  next one along a random cycle through all of them)."""
  order = np.random.RandomState(seed).permutation(count)
  others = np.empty(count, np.int64)
  others[order] = np.roll(order, -1)
  return others


def language_model_metrics(model, params, data: TokenizedSplit, batch_size: int,
                           max_examples: int = 0) -> dict[str, float]:
  """Held-out loss (mean token NLL, nats) of the targets given their own inputs, and given
  another example's input (a fixed random pairing: neighbours in a split are often the same
  document's next chunk, which would hide what the input tells): `reliance` is the difference,
  how much the decoder reads its encoder (0: not at all). `score` is -loss."""
  count = min(len(data), max_examples) if max_examples else len(data)
  others = _derangement(count)
  shuffled = TokenizedSplit(data.task, data.split, data.inputs[others], data.targets[:count],
                            data.labels[:count], 0, 0, data.records[:count])
  totals = []
  for split in (data, shuffled):
    log_likelihood = 0.0
    for batch, rows in eval_batches(split, batch_size, count):
      scores = decode.score_targets(model, params, batch['inputs'], batch['targets'])
      log_likelihood += float(to_host(scores)[:rows].sum())
    totals.append(-log_likelihood / int((data.targets[:count] > 0).sum()))
  loss, shuffled_loss = totals
  return {'loss': loss, 'shuffled_loss': shuffled_loss, 'reliance': shuffled_loss - loss,
          'num_examples': count, 'score': -loss}


def evaluate(model, params, eval_sets: dict[str, tuple[TaskSpec, TokenizedSplit]], vocabulary,
             batch_size: int, max_examples: int = 0) -> dict[str, dict[str, float]]:
  results = {}
  for name, (spec, data) in eval_sets.items():
    if spec.eval_mode == 'loss':
      results[name] = language_model_metrics(model, params, data, batch_size, max_examples)
      continue
    predictions = predict(model, params, data, spec, vocabulary, batch_size, max_examples)
    results[name] = metrics.compute(spec.metric, predictions, data.records[:len(predictions)])
  return results


def evaluate_method(run: Run, config, eval_sets: dict, vocabulary, max_examples: int,
                    trainable: dict | None = None) -> dict[str, dict[str, float]]:
  """Every eval set scored by the run's inference model (trainable params: the state's, or
  `trainable`). A per-task method scores each set with the prompt of its task (a set of a task
  outside the mixture: with the run's own task's)."""
  batch_size = config.train.eval_batch_size
  if not run.method.per_task:
    return evaluate(*run.for_inference(trainable), eval_sets, vocabulary, batch_size,
                    max_examples)
  tasks = (config.task.name, *config.task.mixture)
  results = {}
  for name, eval_set in eval_sets.items():
    task = name.partition(':')[0] if ':' in name else config.task.name
    index = tasks.index(task) if task in tasks else 0
    results.update(evaluate(*run.for_inference(trainable, index), {name: eval_set}, vocabulary,
                            batch_size, max_examples))
  return results


def evaluate_run(workdir: str | os.PathLike, which: str = 'best', splits: tuple[str, ...] = (),
                 max_examples: int | None = None) -> dict[str, Any]:
  """Re-evaluates a run's best or latest trainable params on its eval splits (or `splits`), on
  as many examples as the run evaluated (`train.max_eval_examples`, 0 = all) unless
  `max_examples` says otherwise: then its scores are the run's."""
  if which not in ('best', 'latest'):
    raise ValueError(f'which must be "best" or "latest", got {which!r}.')
  config = load_run_config(workdir)
  method = methods.get(config.method)
  if not method.trains:
    raise ValueError(f'{workdir} is a {config.method} run: no weights were trained or '
                     'checkpointed; its result.json holds the evaluation (of the best triggers, '
                     'for autoprompt: triggers.json); rerun `t5prompt train` to redo it.')
  run_dir = RunDir(workdir)
  config = in_saved_layout(run_dir, config, method)
  backbone = load_model_backbone(config.model)
  check_or_write_manifest(run_dir, config, backbone, method)  # or refuse
  partitioning = make_partitioning(config.partitioning.mesh, config.partitioning.shard_embed)
  with partitioning.activate():
    run = build(config, backbone, partitioning)
    checkpoints = RunCheckpoints(workdir, keep=config.train.keep_checkpoints)
    try:
      step, trainable = _restore(checkpoints, run, which, workdir)
    finally:
      checkpoints.close()
    cap = config.train.max_eval_examples if max_examples is None else max_examples
    metrics = evaluate_method(run, config, load_eval_sets(config, backbone.vocabulary, splits),
                              backbone.vocabulary, cap, trainable)
  return {'workdir': str(workdir), 'checkpoint': which, 'step': step,
          'max_eval_examples': cap, 'metrics': metrics}


def _restore(checkpoints: RunCheckpoints, run: Run, which: str, workdir) -> tuple[int, dict]:
  if which == 'best':
    return checkpoints.restore_best(run.state.trainable)
  step = checkpoints.latest_step()
  if step is None:
    raise FileNotFoundError(f'{workdir} has no checkpoint yet.')
  template = {'trainable': run.state.trainable, 'opt_state': run.state.opt_state,
              'rng': jax.random.key_data(run.state.rng)}
  return step, checkpoints.restore(step, template)[0]['trainable']
