"""The train loop: one run = one backbone, one method, one task, one seed.

Read top to bottom: backbone, data, model & optimizer, state (fresh or resumed), the update
step, then the loop with logging, evals, early stopping and checkpoints. What a run writes to
its workdir:
  config.json      the config it ran            manifest.json  backbone source + hash, identity
  metrics.jsonl    train and eval records       tensorboard/   the same as TensorBoard events
  checkpoints/     latest-N (trainable + optimizer state + step + data position + RNG)
  best/            the trainable params at the best dev score
  prompt.npy/json  the best prompt, portable    result.json    the outcome (last, atomically)
"""

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

from t5prompt import atomic, optim, prompt_design
from t5prompt.checkpoints import (RunCheckpoints, check_or_write_manifest, export_prompt,
                                  workdir_lock)
from t5prompt.data import pipeline
from t5prompt.data.vocab import get_vocabulary
from t5prompt.evaluate import evaluate
from t5prompt.models import T5
from t5prompt.models.decode import shift_right
from t5prompt.partitioning import (Partitioning, logical_param_specs, make_partitioning,
                                   state_shardings)
from t5prompt.prompts import make_initializer
from t5prompt.prompts.initializers import load_prompt_file
from t5prompt.prompts.interpret import nearest_tokens
from t5prompt.prompts.methods import (PROMPT_METHODS, build_model, exported_prompt,
                                      for_inference, method_options, module_params)
from t5prompt.run_log import RunLog
from t5prompt.run_setup import (Backbone, load_eval_sets, load_model_backbone, model_label,
                                target_length, task_spec)


PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: stopped cleanly by a signal, rerun to resume


class Preempted(Exception):
  """SIGTERM/SIGINT: the step finished, a checkpoint was saved, the run can resume."""


class NonFiniteLossError(RuntimeError):
  """The loss or gradient went NaN/Inf; nothing was saved after the last good checkpoint."""
  user_facing = True  # the CLI prints the message alone


class StopSignal:
  """Turns SIGTERM/SIGINT into a request to stop after the current step (preemption).

  With several hosts the decision is JAX's preemption sync point, so all hosts stop at the same
  step (the distributed runtime catches SIGTERM itself)."""

  def __init__(self):
    self.signal_name = ''
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name

  def requested(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = self.signal_name or 'SIGTERM'
        return True
    return bool(self.signal_name)

  def restore(self) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean token cross-entropy over non-padding targets (as transformers/PEFT compute it)."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  token_nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  weights = (targets > 0).astype(jnp.float32)
  return jnp.sum(token_nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def make_loss_fn(model: T5):
  def loss_fn(trainable, frozen, batch, dropout_rng):
    params = optim.merge_params(trainable, frozen)
    logits = model.apply({'params': params}, batch['inputs'], shift_right(batch['targets']),
                         enable_dropout=True, rngs={'dropout': dropout_rng})
    return cross_entropy(logits, batch['targets'])
  return loss_fn


def make_train_step(model: T5, optimizer: optax.GradientTransformation):
  """(trainable, opt_state, frozen, batch, rng, step) -> (trainable, opt_state, metrics).

  Gradients are taken w.r.t. `trainable` only: the frozen backbone is a plain input, so no
  weight gradients are computed for it. Jit with `trainable` and `opt_state` donated.
  """
  loss_fn = make_loss_fn(model)

  def train_step(trainable, opt_state, frozen, batch, rng, step):
    dropout_rng = jax.random.fold_in(rng, step)
    loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, batch, dropout_rng)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    return trainable, opt_state, {'loss': loss, 'grad_norm': optim.global_norm(grads)}
  return train_step


@dataclasses.dataclass
class ShardedTrainState:
  """The arrays a train step reads and writes, placed on the mesh, with their shardings."""
  trainable: dict
  frozen: dict
  opt_state: Any
  trainable_shardings: dict
  frozen_shardings: dict
  opt_shardings: Any


def shard_train_state(model: T5, params: dict, rules, optimizer: optax.GradientTransformation,
                      partitioning: Partitioning) -> ShardedTrainState:
  """Splits host params into trainable and frozen, places both by the logical axis rules, and
  initialises the optimizer state on the shardings of the params it mirrors."""
  param_shardings = partitioning.shardings(logical_param_specs(model))
  trainable_shardings, frozen_shardings = optim.split_params(param_shardings, rules)
  trainable, frozen = optim.split_params(params, rules)
  trainable = partitioning.put(trainable, trainable_shardings)
  frozen = partitioning.put(frozen, frozen_shardings)
  opt_shardings = state_shardings(jax.eval_shape(optimizer.init, trainable), trainable_shardings,
                                  trainable, partitioning)
  opt_state = jax.jit(optimizer.init, out_shardings=opt_shardings)(trainable)
  return ShardedTrainState(trainable, frozen, opt_state, trainable_shardings, frozen_shardings,
                           opt_shardings)


def initial_params(config, backbone: Backbone, model: T5, spec, vocabulary,
                   init_rng) -> tuple[dict, dict | None]:
  """Backbone params plus the initialised prompt-method params, and the record of the init."""
  if config.method not in PROMPT_METHODS:
    return backbone.params, None
  if config.method != 'prompt_tuning':
    # P-tuning's encoder, the projector and the prefixes start from their modules' own
    # initialisers (as PEFT's); a projector's fixed input is the transferred prompt.
    subtree, params = module_params(model, init_rng)
    record = {'name': 'module_default'}
    if config.method == 'cross_model_transfer':
      _, record = make_initializer('file', embedding=None, path=config.prompt.init_file)
      source = load_prompt_file(config.prompt.init_file)
      if source.shape != params['source'].shape:
        raise ValueError(f'The source prompt {config.prompt.init_file} has shape '
                         f'{source.shape}; set prompt.length={source.shape[0]}.')
      params = {**params, 'source': jnp.asarray(source)}
    return {**backbone.params, subtree: params}, record
  prompt_config = config.prompt
  embedding = backbone.params['token_embedder']['embedding']
  init_fn, record = make_initializer(
      prompt_config.init, embedding=embedding, vocabulary=vocabulary, labels=spec.label_names,
      init_text=prompt_config.init_text, path=prompt_config.init_file,
      population=prompt_config.vocab_population)
  prompt = init_fn(init_rng, (prompt_config.length, backbone.config.d_model))
  return {**backbone.params, 'prompt': {'prompt': jnp.asarray(prompt, jnp.float32)}}, record


def manifest_for(config, backbone: Backbone) -> dict[str, Any]:
  """What a resumed run must share with the run that wrote the checkpoints."""
  return {
      'backbone': {'source': backbone.source, 'params_hash': backbone.params_hash,
                   'd_model': backbone.config.d_model},
      'method': config.method,
      'prompt': config.prompt.to_dict() if config.method in PROMPT_METHODS else None,
      'task': {key: config.task[key] for key in ('name', 'train_split', 'input_length',
                                                 'target_length')},
      'mixture': list(config.task.mixture),
      'optimizer': config.optimizer.to_dict(),
      'model': {'dtype': config.model.dtype, 'dropout_rate': config.model.dropout_rate},
      'train': {'batch_size': config.train.batch_size, 'seed': config.train.seed},
  }


def _progress(total: int, initial: int, enabled: bool = True):
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, initial=initial, unit='step', dynamic_ncols=True, file=sys.stderr,
              mininterval=1.0 if sys.stderr.isatty() else 30.0, desc='train',
              disable=not enabled)


def train(config, workdir: str | os.PathLike,
          partitioning: Partitioning | None = None) -> dict[str, Any]:
  """Runs (or resumes, or recognises as finished) the run `config` describes in `workdir`,
  on the mesh of `config.partitioning` (or the given `partitioning`)."""
  workdir = Path(workdir)
  result_path = workdir / 'result.json'
  if result_path.exists():
    result = json.loads(result_path.read_text())
    if result.get('config') == json.loads(config.to_json()):
      print(f'{workdir} already finished; result.json kept.', file=sys.stderr)
      return result
  if config.method == 'prompt_design':  # nothing to train: evaluate the template
    with workdir_lock(workdir, enabled=jax.process_index() == 0):
      return prompt_design.run(config, workdir)
  partitioning = partitioning or make_partitioning(config.partitioning.mesh,
                                                   config.partitioning.shard_embed)
  with workdir_lock(workdir, enabled=jax.process_index() == 0), partitioning.activate():
    return _train(config, workdir, partitioning)


def _train(config, workdir: Path, partitioning: Partitioning) -> dict[str, Any]:
  start_time = time.time()
  is_writer = jax.process_index() == 0  # one host writes logs, results and exports

  # --- Backbone, task data ---------------------------------------------------------------
  backbone = load_model_backbone(config.model)
  spec = task_spec(config)
  vocabulary = get_vocabulary()
  train_data = pipeline.concatenate([
      pipeline.load_tokenized(name, config.task.train_split, config.task.input_length,
                              target_length(config, spec))
      for name in (config.task.name, *config.task.mixture)])
  eval_sets = load_eval_sets(config)

  # --- Model & optimizer ------------------------------------------------------------------
  model = build_model(backbone.config, config.method, config.prompt.length,
                      **method_options(config))
  rules = optim.label_rules(config.method)
  optimizer = optim.make_optimizer(config.optimizer, rules)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.train.seed))
  params, init_record = initial_params(config, backbone, model, spec, vocabulary, init_rng)

  # --- Sharding: params by the logical rules, optimizer state following its params --------
  state = shard_train_state(model, params, rules, optimizer, partitioning)
  trainable, frozen, opt_state = state.trainable, state.frozen, state.opt_state
  trainable_shardings, frozen_shardings, opt_shardings = (
      state.trainable_shardings, state.frozen_shardings, state.opt_shardings)
  dropout_rng = jax.device_put(dropout_rng, partitioning.replicated)

  # --- State: fresh or resumed ------------------------------------------------------------
  workdir.mkdir(parents=True, exist_ok=True)
  resuming = check_or_write_manifest(workdir, manifest_for(config, backbone), write=is_writer)
  if is_writer:
    atomic.write_json(workdir / 'config.json', json.loads(config.to_json()))
  checkpoints = RunCheckpoints(workdir, keep=config.train.keep_checkpoints)
  loop = {'step': 0, 'data_position': 0, 'best_score': None, 'best_step': None,
          'best_metrics': None, 'evals_since_best': 0, 'init': init_record}
  template = {'trainable': trainable, 'opt_state': opt_state,
              'rng': jax.random.key_data(dropout_rng)}
  restored = checkpoints.restore_latest_good(template) if resuming else None
  if restored is not None:
    _, state, loop = restored
    trainable, opt_state = state['trainable'], state['opt_state']
    dropout_rng = jax.random.wrap_key_data(state['rng'])
    if not checkpoints.keep_best_up_to(loop['step'], loop['best_step']):
      print(f'the best checkpoint (step {loop["best_step"]}) was lost with the fallback; best '
            'selection restarts from here', file=sys.stderr)
      loop.update(best_score=None, best_step=None, best_metrics=None, evals_since_best=0)
    print(f'resuming {workdir} at step {loop["step"]}', file=sys.stderr)
  run_log = RunLog(workdir, resume_step=loop['step'], enabled=is_writer)

  # --- The update step: one jit, explicit shardings, train state donated ------------------
  batch_shardings = {'inputs': partitioning.batch_sharding(), 'targets':
                     partitioning.batch_sharding()}
  train_step = jax.jit(
      make_train_step(model, optimizer),
      in_shardings=(trainable_shardings, opt_shardings, frozen_shardings, batch_shardings,
                    partitioning.replicated, partitioning.replicated),
      out_shardings=(trainable_shardings, opt_shardings, partitioning.replicated),
      donate_argnums=(0, 1))

  def run_evals(step: int) -> dict:
    results = evaluate(*for_inference(model, optim.merge_params(trainable, frozen)), eval_sets,
                       vocabulary, config.train.eval_batch_size, config.train.max_eval_examples)
    for name, metrics in results.items():
      run_log.write(step, f'eval/{name}', metrics)
    return results

  def save(step: int) -> None:
    loop.update(step=step, data_position=step * config.train.batch_size)
    checkpoints.save(step, {'trainable': trainable, 'opt_state': opt_state,
                            'rng': jax.random.key_data(dropout_rng)}, loop)

  # --- The loop ---------------------------------------------------------------------------
  stop = StopSignal()
  finite = jnp.array(True)  # on device: no per-step host sync just to watch for NaN
  last_good = loop['step']

  def check_finite(step: int) -> None:
    nonlocal last_good
    if bool(finite):
      last_good = step
    else:
      raise NonFiniteLossError(
          f'The loss or gradient became NaN/Inf between steps {last_good} and {step}; stopped '
          f'without saving. The last good checkpoint (step {checkpoints.latest_step()}) is '
          'intact. Lower optimizer.learning_rate, set optimizer.grad_clip_norm, or check the '
          'data, then rerun to resume from it.')

  steps = config.train.steps
  first_eval_set = config.task.eval_splits[0]
  if loop['step'] == 0 and config.train.eval_at_start:
    loop['initial_metrics'] = run_evals(0)
  progress = _progress(steps, loop['step'], enabled=is_writer)
  stopped_early = False
  step = loop['step']
  last_log = (time.perf_counter(), step)
  try:
    while step < steps and not stopped_early:
      # Each host loads only its rows of the global batch.
      local_batch = pipeline.train_batch(train_data, config.train.batch_size, config.train.seed,
                                         step, jax.process_index(), jax.process_count())
      batch = partitioning.local_batch_to_global(local_batch)
      trainable, opt_state, metrics = train_step(trainable, opt_state, frozen, batch, dropout_rng,
                                                 jnp.asarray(step, jnp.int32))
      finite = finite & jnp.isfinite(metrics['loss']) & jnp.isfinite(metrics['grad_norm'])
      step += 1
      progress.update(1)
      stopping = stop.requested(step)
      if step % config.train.log_every == 0 or step == steps:
        check_finite(step)
        metrics = jax.device_get(metrics)
        now = time.perf_counter()
        metrics['steps_per_second'] = (step - last_log[1]) / max(now - last_log[0], 1e-9)
        last_log = (now, step)
        run_log.write(step, 'train', metrics)
        progress.set_postfix(loss=f'{metrics["loss"]:.4f}')
      if step % config.train.eval_every == 0 or step == steps:
        check_finite(step)
        results = run_evals(step)
        score = results[first_eval_set]['score']
        if loop['best_score'] is None or score > loop['best_score']:
          loop.update(best_score=score, best_step=step, best_metrics=results, evals_since_best=0)
          checkpoints.save_best(step, trainable)
        else:
          loop['evals_since_best'] += 1
          patience = config.train.early_stopping_patience
          stopped_early = bool(patience) and loop['evals_since_best'] >= patience
      if step % config.train.checkpoint_every == 0 or step == steps or stopped_early or stopping:
        check_finite(step)
        save(step)
      if stopping:
        progress.close()
        checkpoints.close()
        run_log.close()
        raise Preempted(f'Stopped by {stop.signal_name} after step {step}; checkpoint saved. '
                        'Rerun the same command to resume.')
  finally:
    stop.restore()  # the process's own handlers again, even after an error
  progress.close()

  # --- Outputs ----------------------------------------------------------------------------
  _, best_trainable = checkpoints.restore_best(trainable)
  checkpoints.close()
  run_log.close()
  # Every host takes part (a prefix may be sharded over hosts); one writes it.
  artefact = (exported_prompt(model, optim.merge_params(best_trainable, frozen))
              if config.method in PROMPT_METHODS else None)
  if not is_writer:
    return {}
  metadata = {
      'backbone': {'source': backbone.source, 'params_hash': backbone.params_hash},
      'task': config.task.name, 'method': config.method, 'init': loop['init'],
      'model_size': model_label(config), 'seed': config.train.seed,
      'best_step': loop['best_step'], 'best_score': loop['best_score'],
  }
  if config.method in PROMPT_METHODS:
    metadata['prompt_length'] = config.prompt.length
    if 'prompt' in artefact:  # what the prompt "says": its nearest vocabulary tokens
      metadata['nearest_tokens'] = nearest_tokens(
          artefact['prompt'], backbone.params['token_embedder']['embedding'], vocabulary)
    export_prompt(workdir, artefact, metadata)
  result = {
      'config': json.loads(config.to_json()),
      'model_size': model_label(config), 'num_params': optim.num_elements(backbone.params),
      'd_model': backbone.config.d_model, 'series': config.series or config.method,
      'method': config.method, 'task': config.task.name, 'seed': config.train.seed,
      'prompt_length': config.prompt.length if config.method in PROMPT_METHODS else 0,
      'init': loop['init'], 'steps': step, 'stopped_early': stopped_early,
      'metrics': loop['best_metrics'], 'metric': spec.metric, 'best_step': loop['best_step'],
      'initial_metrics': loop.get('initial_metrics'),
      'num_trainable_params': optim.num_elements(trainable),
      # What the task keeps after training: the folded prompt / prefix, or the whole model.
      'num_stored_params': (sum(a.size for a in artefact.values()) if artefact
                            else optim.num_elements(trainable)),
      'truncated': {'train': [train_data.truncated_inputs, train_data.truncated_targets],
                    **{name: [data.truncated_inputs, data.truncated_targets]
                       for name, (_, data) in eval_sets.items()}},  # [inputs, targets] cut
      'backbone': metadata['backbone'],
      'wall_time_s': time.time() - start_time,
      'device_kind': jax.devices()[0].device_kind, 'num_devices': jax.device_count(),
  }
  atomic.write_json(workdir / 'result.json', result)
  return result


def load_run_config(workdir: str | os.PathLike):
  """The config a run directory ran with (its config.json), validated."""
  from t5prompt.run_config import default_config, validate  # pylint: disable=import-outside-toplevel
  path = Path(workdir) / 'config.json'
  if not path.is_file():
    raise FileNotFoundError(f'{workdir} is not a run directory (no config.json); give the '
                            '--workdir a `t5prompt train` wrote.')
  record = json.loads(path.read_text())
  config = default_config()  # fields added since the run keep their defaults
  for section, values in record.items():
    if isinstance(values, dict):
      for key, value in values.items():
        default = config[section][key]
        config[section][key] = tuple(value) if isinstance(default, tuple) else value
    else:
      config[section] = values
  return validate(config)


def evaluate_run(workdir: str | os.PathLike, which: str = 'best',
                 splits: tuple[str, ...] = ()) -> dict[str, Any]:
  """Re-evaluates a run's best or latest trainable params on its eval splits (or `splits`)."""
  config = load_run_config(workdir)
  if config.method == 'prompt_design':
    raise ValueError(f'{workdir} is a prompt_design run: nothing was trained or checkpointed; '
                     'its result.json holds the evaluation (rerun `t5prompt train` to redo it).')
  backbone = load_model_backbone(config.model)
  check_or_write_manifest(workdir, manifest_for(config, backbone))  # same backbone, or refuse
  spec = task_spec(config)
  model = build_model(backbone.config, config.method, config.prompt.length,
                      **method_options(config))
  rules = optim.label_rules(config.method)
  params, _ = initial_params(config, backbone, model, spec, get_vocabulary(),
                             jax.random.key(0))
  trainable, frozen = optim.split_params(params, rules)
  checkpoints = RunCheckpoints(workdir, keep=config.train.keep_checkpoints)
  if which == 'best':
    step, trainable = checkpoints.restore_best(trainable)
  elif which == 'latest':
    step = checkpoints.latest_step()
    if step is None:
      raise FileNotFoundError(f'{workdir} has no checkpoint yet.')
    template = {'trainable': trainable, 'opt_state': optim.make_optimizer(
        config.optimizer, rules).init(trainable), 'rng': jax.random.key_data(jax.random.key(0))}
    trainable = checkpoints.restore(step, template)[0]['trainable']
  else:
    raise ValueError(f'which must be "best" or "latest", got {which!r}.')
  checkpoints.close()
  eval_sets = load_eval_sets(config, splits)
  metrics = evaluate(*for_inference(model, optim.merge_params(trainable, frozen)), eval_sets,
                     get_vocabulary(), config.train.eval_batch_size)
  return {'workdir': str(workdir), 'checkpoint': which, 'step': step, 'metrics': metrics}
