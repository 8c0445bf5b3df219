"""The train loop: one run = one backbone, one method, one task, one seed.

Read top to bottom: `train` recognises a finished run, hands methods that do not train to
their own runner (prompt design: one evaluation; AutoPrompt: `search.py`), and otherwise loads
the backbone and data, builds the run (`build`), starts or resumes its state, then `_loop`
steps, logs, evaluates, keeps the best and checkpoints, and `_finish` exports the prompt and
writes the result. The run directory's files: `run_dir`.
"""

import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from t5prompt import export, optim, outcome, search
from t5prompt.backbone import Backbone, load_model_backbone
from t5prompt.build import Run, build
from t5prompt.checkpoints import RunCheckpoints
from t5prompt.data import pipeline
from t5prompt.evaluate import evaluate, evaluate_method
from t5prompt.partitioning import Partitioning, make_partitioning
from t5prompt.preemption import Preempted, StopSignal
from t5prompt.prompts import methods
from t5prompt.run_config import default_config
from t5prompt.run_dir import Result, RunDir, known_fields
from t5prompt.run_log import RunLog, progress_bar
from t5prompt.data.sources import DataNotFoundError
from t5prompt.run_setup import (check_checkpoint, check_or_write_manifest, describe_missing,
                                in_saved_layout, load_eval_sets, load_train_data, missing_data,
                                model_label, task_spec)


class NonFiniteLossError(RuntimeError):
  """The loss or gradient went NaN/Inf; nothing was saved after the last good checkpoint."""
  user_facing = True  # the CLI prints the message alone


@dataclasses.dataclass
class LoopState:
  """Where the loop is: saved as JSON with every checkpoint (the data position is the step)."""
  step: int = 0
  best_score: float | None = None
  best_step: int | None = None
  best_metrics: dict | None = None
  evals_since_best: int = 0
  init: dict | None = None  # how the method's params started
  initial_metrics: dict | None = None  # the untrained prompt's (train.eval_at_start)
  stopped_early: bool = False
  wall_time_s: float = 0.0  # the run's wall time up to this point, over every process

  def record(self, batch_size: int) -> dict:
    return {**dataclasses.asdict(self), 'data_position': self.step * batch_size}

  @classmethod
  def from_record(cls, record: dict) -> 'LoopState':
    return cls(**known_fields(cls, record))

  def forget_best(self) -> None:
    self.best_score, self.best_step, self.best_metrics, self.evals_since_best = None, None, None, 0


def train(config, workdir: str | os.PathLike,
          partitioning: Partitioning | None = None) -> Result | None:
  """Runs (or resumes, or recognises as finished) the run `config` describes in `workdir`,
  on the mesh of `config.partitioning` (or the given `partitioning`). Returns the result on
  the host that writes it (None on the others)."""
  run_dir = RunDir(workdir)
  if run_dir.finished(config, default_config()):
    print(f'{workdir} already finished; result.json kept.', file=sys.stderr)
    return run_dir.result()
  missing = missing_data(config)
  if missing:  # before any compute, every missing piece at once
    raise DataNotFoundError('The data this run needs is missing:' + describe_missing(missing))
  check_checkpoint(config.model)
  method = methods.get(config.method)
  is_writer = jax.process_index() == 0  # one host writes logs, results and exports
  if not (method.trains or method.searches):  # prompt design: nothing to train, evaluate
    with run_dir.lock(enabled=is_writer):
      return _evaluate_untrained(config, run_dir, method, is_writer)
  partitioning = partitioning or make_partitioning(config.partitioning.mesh,
                                                   config.partitioning.shard_embed)
  with run_dir.lock(enabled=is_writer), partitioning.activate():
    if method.searches:  # AutoPrompt: a discrete search over trigger tokens
      return search.search(config, run_dir, partitioning, is_writer)
    return _train(config, run_dir, partitioning, is_writer)


def _train(config, run_dir: RunDir, partitioning: Partitioning, is_writer: bool) -> Result | None:
  start_time = time.time()
  config = in_saved_layout(run_dir, config, methods.get(config.method))
  backbone = load_model_backbone(config.model, stream=True)  # read when placed, per device
  train_data = load_train_data(config, backbone.vocabulary)
  eval_sets = load_eval_sets(config, backbone.vocabulary)
  run = build(config, backbone, partitioning)

  run_dir.path.mkdir(parents=True, exist_ok=True)
  resuming = check_or_write_manifest(run_dir, config, backbone, run.method, write=is_writer)
  if is_writer:
    run_dir.write_config(config)
  checkpoints = RunCheckpoints(run_dir.path, keep=config.train.keep_checkpoints)
  loop = _resume(run, checkpoints, run_dir) if resuming else None
  loop = loop or LoopState(init=run.init_record)
  run_log = RunLog(run_dir, resume_step=loop.step, enabled=is_writer)
  origin = start_time - loop.wall_time_s  # a resumed run's clock counts its earlier processes

  def run_evals(step: int) -> dict:
    results = evaluate_method(run, config, eval_sets, backbone.vocabulary,
                              config.train.max_eval_examples)
    for name, metrics in results.items():
      run_log.write(step, f'eval/{name}', metrics)
    return results

  if loop.step == 0 and config.train.eval_at_start:
    loop.initial_metrics = run_evals(0)
  try:
    _loop(config, run, loop, train_data, checkpoints, run_log, run_evals, is_writer, origin)
    _, best_trainable = checkpoints.restore_best(run.state.trainable)
  finally:
    checkpoints.close()
    run_log.close()
  return _finish(config, run, loop, best_trainable, backbone, run_dir, train_data, eval_sets,
                 time.time() - origin, is_writer)


def _resume(run: Run, checkpoints: RunCheckpoints, run_dir: RunDir) -> LoopState | None:
  """The newest good checkpoint into `run.state`; its loop state (None if none restores)."""
  state = run.state
  template = {'trainable': state.trainable, 'opt_state': state.opt_state,
              'rng': jax.random.key_data(state.rng)}
  restored = checkpoints.restore_latest_good(template)
  if restored is None:
    return None
  _, arrays, record = restored
  state.trainable, state.opt_state = arrays['trainable'], arrays['opt_state']
  state.rng = jax.random.wrap_key_data(arrays['rng'])
  loop = LoopState.from_record(record)
  if not checkpoints.keep_best_up_to(loop.step, loop.best_step):
    print(f'the best checkpoint (step {loop.best_step}) was lost with the fallback; best '
          'selection restarts from here', file=sys.stderr)
    loop.forget_best()
  print(f'resuming {run_dir.path} at step {loop.step}', file=sys.stderr)
  return loop


def _loop(config, run: Run, loop: LoopState, train_data, checkpoints: RunCheckpoints,
          run_log: RunLog, run_evals, is_writer: bool, origin: float) -> None:
  """Steps until `train.steps` (or early stopping): logs, evals, the best params, checkpoints;
  a stop signal finishes the step, saves and raises `Preempted`."""
  state, train_config, steps = run.state, config.train, config.train.steps
  stop = StopSignal()
  finite = jnp.array(True)  # on device: no per-step host sync just to watch for NaN
  last_good, last_log = loop.step, (time.perf_counter(), loop.step)
  progress, compiling = progress_bar(steps, loop.step, is_writer, 'train', 'step'), True
  try:
    while loop.step < steps and not loop.stopped_early:
      # Each host loads only its rows of the global batch.
      local_batch = pipeline.train_batch(train_data, train_config.batch_size, train_config.seed,
                                         loop.step, jax.process_index(), jax.process_count(),
                                         with_task_ids=run.method.per_task)
      batch = run.partitioning.local_batch_to_global(local_batch)
      state.trainable, state.opt_state, metrics = run.train_step(
          state.trainable, state.opt_state, state.frozen, batch, state.rng,
          jnp.asarray(loop.step, jnp.int32))
      finite = finite & jnp.isfinite(metrics['loss']) & jnp.isfinite(metrics['grad_norm'])
      loop.step += 1
      step = loop.step
      if compiling and is_writer:  # the first step compiles: keep it out of the ETA
        jax.block_until_ready(metrics)
        progress.write(f'train: the first step (compiling the train step) took '
                       f'{time.perf_counter() - last_log[0]:.1f}s', file=sys.stderr)
        progress.close()  # a fresh bar from here: a resumed run's rate counts only its steps
        progress = progress_bar(steps, step, is_writer, 'train', 'step')
      compiling = False
      progress.update(step - progress.n)
      stopping = stop.requested(step)
      boundary = step == steps
      if step % train_config.log_every == 0 or boundary:
        last_good = _check_finite(finite, last_good, step, checkpoints)
        last_log = _log_train(run_log, progress, metrics, last_log, step)
      if step % train_config.eval_every == 0 or boundary:
        last_good = _check_finite(finite, last_good, step, checkpoints)
        _keep_best(loop, run_evals(step), config, checkpoints, state.trainable)
      if (step % train_config.checkpoint_every == 0 or boundary or loop.stopped_early
          or stopping):
        last_good = _check_finite(finite, last_good, step, checkpoints)
        loop.wall_time_s = time.time() - origin
        checkpoints.save(step, {'trainable': state.trainable, 'opt_state': state.opt_state,
                                'rng': jax.random.key_data(state.rng)},
                         loop.record(train_config.batch_size))
      if stopping:
        raise Preempted(f'Stopped by {stop.signal_name} after step {step}; checkpoint saved. '
                        'Rerun the same command to resume.')
  finally:
    progress.close()
    stop.restore()  # the process's own handlers again, even after an error


def _check_finite(finite, last_good: int, step: int, checkpoints: RunCheckpoints) -> int:
  """The step up to which loss and gradients were finite; raises once they are not."""
  if bool(finite):
    return step
  raise NonFiniteLossError(
      f'The loss or gradient became NaN/Inf between steps {last_good} and {step}; stopped '
      f'without saving. The last good checkpoint (step {checkpoints.latest_step()}) is '
      'intact. Lower optimizer.learning_rate, set optimizer.grad_clip_norm, or check the '
      'data, then rerun to resume from it.')


def _log_train(run_log: RunLog, progress, metrics, last_log, step: int):
  metrics = jax.device_get(metrics)
  now = time.perf_counter()
  metrics['steps_per_second'] = (step - last_log[1]) / max(now - last_log[0], 1e-9)
  run_log.write(step, 'train', metrics)
  progress.set_postfix(loss=f'{metrics["loss"]:.4f}', refresh=False)  # the bar's own pace
  return now, step


def _keep_best(loop: LoopState, results: dict, config, checkpoints: RunCheckpoints,
               trainable) -> None:
  """Best-step selection on the first eval split (a run on a mixture: the mean over the
  mixture's tasks it evaluates there); early stopping after `patience` evals."""
  split = config.task.eval_splits[0]
  score = float(np.mean([results[name]['score'] for name in [split] + [
      f'{task}:{split}' for task in config.task.mixture if f'{task}:{split}' in results]]))
  if loop.best_score is None or score > loop.best_score:
    loop.best_score, loop.best_step, loop.best_metrics = score, loop.step, results
    loop.evals_since_best = 0
    checkpoints.save_best(loop.step, trainable)
  else:
    loop.evals_since_best += 1
    patience = config.train.early_stopping_patience
    loop.stopped_early = bool(patience) and loop.evals_since_best >= patience


def _finish(config, run: Run, loop: LoopState, best_trainable, backbone: Backbone,
            run_dir: RunDir, train_data, eval_sets, wall_time_s: float,
            is_writer: bool) -> Result | None:
  """Exports the best prompt and writes result.json (last, atomically)."""
  # Every host takes part (a prefix may be sharded over hosts); one writes it. A per-task
  # method keeps one prompt per task, in prompts/<task>/.
  tasks = (config.task.name, *config.task.mixture) if run.method.per_task else (None,)
  artefacts = {task: methods.exported_prompt(run.model, run.params(best_trainable), index)
               for index, task in enumerate(tasks)} if run.method.artefact else {}
  if not is_writer:
    return None
  for task, artefact in artefacts.items():
    export.export_prompt(run_dir.task_prompt(task) if task else run_dir, artefact, backbone, {
        'backbone': {'source': backbone.source, 'params_hash': backbone.params_hash},
        'task': task or config.task.name, 'method': config.method, 'init': loop.init,
        'model_size': model_label(config), 'seed': config.train.seed,
        'best_step': loop.best_step, 'best_score': loop.best_score,
        'prompt_length': config.prompt.length})
  if config.train.export_backbone:
    export.export_backbone(config, run.model, run.params(best_trainable), run_dir, backbone, {
        'steps': loop.step, 'best_step': loop.best_step, 'eval': loop.best_metrics,
        'wall_time_s': wall_time_s})
  result = outcome.result(
      config, backbone, metrics=loop.best_metrics, init=loop.init, steps=loop.step,
      best_step=loop.best_step, stopped_early=loop.stopped_early,
      initial_metrics=loop.initial_metrics,
      num_trainable=optim.num_elements(run.state.trainable),
      # What the task keeps after training: the folded prompt / prefix, or the whole model.
      num_stored=(sum(a.size for artefact in artefacts.values() for a in artefact.values())
                  if artefacts else optim.num_elements(run.state.trainable)),
      truncated={'train': [train_data.truncated_inputs, train_data.truncated_targets],
                 **outcome.truncated(eval_sets)},
      wall_time_s=wall_time_s)
  run_dir.write_result(result)
  return result


def _evaluate_untrained(config, run_dir: RunDir, method: methods.Method,
                        is_writer: bool) -> Result | None:
  """A method that trains nothing (prompt design): its model evaluated once, as a result."""
  start_time = time.time()
  backbone = load_model_backbone(config.model)
  model, init = method.make_model(
      backbone.config, methods.PromptOptions.from_config(config), None)
  eval_sets = load_eval_sets(config, backbone.vocabulary)
  if method.prepare_eval:
    eval_sets, init = method.prepare_eval(config, eval_sets, backbone.vocabulary)
  print(f'{config.method}: {task_spec(config).name}, evaluating (nothing trains)',
        file=sys.stderr)
  metrics = evaluate(model, backbone.params, eval_sets, backbone.vocabulary,
                     config.train.eval_batch_size, config.train.max_eval_examples)
  result = outcome.result(config, backbone, metrics=metrics, init=init, steps=0, best_step=0,
                          num_trainable=0, num_stored=0, truncated=outcome.truncated(eval_sets),
                          wall_time_s=time.time() - start_time)
  if is_writer:
    run_dir.path.mkdir(parents=True, exist_ok=True)
    run_dir.write_config(config)
    run_dir.write_result(result)
  return result
