"""AutoPrompt's search loop: a run whose "training" is a discrete search over trigger tokens on
the frozen backbone (the steps are in `prompts/autoprompt.py`).

Read top to bottom: the backbone, the task's splits rendered in the template, the state (new, or
the run directory's `search.json`), then the iterations: each takes the batch and the slot of
its index (both fixed by `train.seed`, so a resumed search repeats exactly what an
uninterrupted one does), ranks candidates by the gradient, scores them exactly and keeps the
best; every `train.eval_every` iterations the triggers are evaluated on the eval sets and the
best kept; every `train.checkpoint_every` (and on a stop signal) the state is saved. The result
is an ordinary `result.json`; the best triggers are `triggers.json`.
"""

import dataclasses
import sys
import time

import jax
import numpy as np

from t5prompt import outcome, xla_cpu
from t5prompt.backbone import load_model_backbone
from t5prompt.data import pipeline
from t5prompt.evaluate import evaluate
from t5prompt.models.t5 import T5
from t5prompt.partitioning import Partitioning, logical_param_specs, to_host
from t5prompt.preemption import Preempted, StopSignal
from t5prompt.prompts import autoprompt, methods
from t5prompt.run_dir import Result, RunDir, known_fields
from t5prompt.run_log import RunLog, progress_bar
from t5prompt.run_setup import check_or_write_manifest, load_eval_sets, load_train_data


@dataclasses.dataclass
class SearchState:
  """Where the search is: saved as JSON (`search.json`) at every checkpoint."""
  triggers: list[int]
  iteration: int = 0
  best_triggers: list[int] | None = None
  best_score: float | None = None
  best_step: int | None = None
  best_metrics: dict | None = None
  initial_metrics: dict | None = None
  wall_time_s: float = 0.0

  @classmethod
  def from_record(cls, record: dict) -> 'SearchState':
    return cls(**known_fields(cls, record))


def initial_triggers(config, vocabulary) -> list[int]:
  """k copies of `prompt.trigger_init`, which must be one token of the vocabulary."""
  ids = list(vocabulary.encode(config.prompt.trigger_init))
  if len(ids) != 1:
    raise ValueError(f'prompt.trigger_init={config.prompt.trigger_init!r} is {len(ids)} tokens '
                     'in this vocabulary; give one word that is a single token (e.g. "the").')
  return ids * config.prompt.length


def search(config, run_dir: RunDir, partitioning: Partitioning, is_writer: bool) -> Result | None:
  """Runs (or resumes) the AutoPrompt search `config` describes; its result on the writer."""
  start_time = time.time()
  backbone = load_model_backbone(config.model, stream=True)  # read when placed, per device
  vocabulary = backbone.vocabulary
  template = autoprompt.Template.parse(config.prompt.template, vocabulary)
  initial = initial_triggers(config, vocabulary)
  train_set = autoprompt.render(load_train_data(config, vocabulary), template, initial)
  eval_sets = {name: (spec, autoprompt.render(data, template, initial))
               for name, (spec, data) in load_eval_sets(config, vocabulary).items()}
  plain = T5(backbone.config)
  probe = T5(backbone.config, prompt=autoprompt.EmbeddingProbe())
  params = partitioning.put(backbone.params, partitioning.shardings(logical_param_specs(plain)))
  xla_cpu.keep_freed_memory()  # placed, as `build` does: each iteration reuses freed pages
  embedding = np.asarray(backbone.params['token_embedder']['embedding'], np.float32)
  allowed = autoprompt.allowed_ids(vocabulary, embedding.shape[0])

  run_dir.path.mkdir(parents=True, exist_ok=True)
  resuming = check_or_write_manifest(run_dir, config, backbone, methods.get(config.method),
                                     write=is_writer)
  if is_writer:
    run_dir.write_config(config)
  saved = run_dir.search_state() if resuming else None
  state = SearchState.from_record(saved) if saved else SearchState(triggers=list(initial))
  if saved:
    print(f'resuming {run_dir.path} at iteration {state.iteration}', file=sys.stderr)
  origin = start_time - state.wall_time_s
  run_log = RunLog(run_dir, resume_step=state.iteration, enabled=is_writer)

  def run_evals(step: int, triggers: list[int]) -> dict:
    sets = {name: (spec, rendered.with_triggers(triggers))
            for name, (spec, rendered) in eval_sets.items()}
    results = evaluate(plain, params, sets, vocabulary, config.train.eval_batch_size,
                       config.train.max_eval_examples)
    for name, metrics in results.items():
      run_log.write(step, f'eval/{name}', metrics)
    return results

  try:
    if state.iteration == 0 and config.train.eval_at_start:
      state.initial_metrics = run_evals(0, initial)
    _iterate(config, state, train_set, probe, plain, params, embedding, allowed, partitioning,
             run_log, run_evals, run_dir, origin, is_writer)
  finally:
    run_log.close()
  return _finish(config, state, initial, backbone, run_dir, train_set, eval_sets,
                 time.time() - origin, is_writer)


def _iterate(config, state: SearchState, train_set: autoprompt.Rendered, probe: T5, plain: T5,
             params, embedding, allowed, partitioning: Partitioning, run_log: RunLog, run_evals,
             run_dir: RunDir, origin: float, is_writer: bool) -> None:
  """The search iterations up to `train.steps`; a stop signal saves the state and raises
  `Preempted`."""
  train, steps = config.train, config.train.steps
  stop = StopSignal()
  progress = progress_bar(steps, state.iteration, is_writer, 'autoprompt', 'it')
  try:
    while state.iteration < steps:
      batch, slot = _batch(train_set, state, train.batch_size, train.seed, partitioning)
      loss, gradient = autoprompt.slot_gradient(probe, params, batch['inputs'],
                                                batch['targets'], batch['slot_columns'])
      candidates = autoprompt.rank_candidates(embedding, to_host(gradient),
                                              state.triggers[slot], allowed,
                                              config.prompt.candidates)
      losses = to_host(autoprompt.candidate_losses(
          plain, params, batch['inputs'], batch['targets'], batch['slot_columns'],
          np.asarray(candidates, np.int32)))
      loss, best = float(to_host(loss)), int(np.argmin(losses))
      swapped = bool(losses[best] < loss)
      if swapped:
        state.triggers[slot] = int(candidates[best])
      state.iteration += 1
      step = state.iteration
      progress.update(1)
      progress.set_postfix(loss=f'{min(loss, float(losses[best])):.4f}', refresh=False)
      if step % train.log_every == 0 or step == steps:
        run_log.write(step, 'train', {'loss': loss, 'best_candidate_loss': float(losses[best]),
                                      'slot': slot, 'swapped': swapped})
      if step % train.eval_every == 0 or step == steps:
        results = run_evals(step, state.triggers)
        score = results[config.task.eval_splits[0]]['score']
        if state.best_score is None or score > state.best_score:
          state.best_score, state.best_step, state.best_metrics = score, step, results
          state.best_triggers = list(state.triggers)
      stopping = stop.requested(step)
      if step % train.checkpoint_every == 0 or step == steps or stopping:
        state.wall_time_s = time.time() - origin
        if is_writer:
          run_dir.write_search_state(dataclasses.asdict(state))
      if stopping:
        raise Preempted(f'Stopped by {stop.signal_name} after iteration {step}; the search '
                        'state was saved. Rerun the same command to resume.')
  finally:
    progress.close()
    stop.restore()


def _batch(train_set: autoprompt.Rendered, state: SearchState, batch_size: int, seed: int,
           partitioning: Partitioning) -> tuple[dict, int]:
  """This iteration's batch with the current triggers and each row's column of its slot, on
  the mesh (each host its rows); and the slot, drawn from (seed, iteration)."""
  slot = int(np.random.default_rng([seed, state.iteration]).integers(len(state.triggers)))
  indices = pipeline.host_indices(len(train_set.data), batch_size, seed, state.iteration,
                                  jax.process_index(), jax.process_count())
  inputs = train_set.data.inputs[indices].copy()
  slots = train_set.slots[indices]
  inputs[np.arange(len(indices))[:, None], slots] = np.asarray(state.triggers, np.int32)
  local = {'inputs': inputs, 'targets': train_set.data.targets[indices],
           'slot_columns': slots[:, slot].astype(np.int32)}
  return partitioning.local_batch_to_global(local), slot


def _finish(config, state: SearchState, initial, backbone, run_dir: RunDir,
            train_set, eval_sets, wall_time_s: float, is_writer: bool) -> Result | None:
  if not is_writer:
    return None
  vocabulary = backbone.vocabulary
  best = state.best_triggers or state.triggers
  run_dir.write_triggers({
      'ids': best, 'pieces': [vocabulary.decode([token]) for token in best],
      'text': vocabulary.decode(best), 'template': config.prompt.template,
      'task': config.task.name, 'best_step': state.best_step, 'best_score': state.best_score,
      'backbone': {'source': backbone.source, 'params_hash': backbone.params_hash}})
  init = {'name': 'autoprompt', 'trigger_init': config.prompt.trigger_init,
          'initial_ids': initial, 'template': config.prompt.template}
  result = outcome.result(
      config, backbone, metrics=state.best_metrics, init=init, steps=state.iteration,
      best_step=state.best_step, initial_metrics=state.initial_metrics, num_trainable=0,
      num_stored=len(best),  # the k trigger tokens are all the task keeps
      truncated={'train': [train_set.data.truncated_inputs, train_set.data.truncated_targets],
                 **outcome.truncated({name: (spec, rendered.data)
                                      for name, (spec, rendered) in eval_sets.items()})},
      wall_time_s=wall_time_s)
  run_dir.write_result(result)
  return result
