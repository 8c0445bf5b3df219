"""One place builds a run: `(config, backbone, partitioning) -> Run`, the model, the sharded train
state, its shardings and the jitted train step. The train loop, evaluation, pre-training, the
memory planner and the benchmarks all start here.

Read top to bottom: the method's model and its initial params; the freeze (the method's rules
split trainable from frozen); the optimizer; shardings of the params by the logical axis rules,
the optimizer state following its params; the state placed on the mesh (or, for a backbone of
abstract shapes, only its shapes and shardings: the planner); the step, one `jax.jit` with
explicit shardings that donates the trainable state. A backbone loaded with `stream` (the
train loop's) is read from its checkpoint only here, block by block onto the shardings.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from t5prompt import optim, xla_cpu
from t5prompt.models import T5, T5Config, t5
from t5prompt.models.decode import shift_right
from t5prompt.models.streaming import is_lazy
from t5prompt.partitioning import Partitioning, logical_param_specs, state_shardings
from t5prompt.prompts import methods
from t5prompt.backbone import Backbone
from t5prompt.run_setup import task_spec


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
                         enable_dropout=True, prompt_ids=batch.get('prompt_ids'),
                         rngs={'dropout': dropout_rng})
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
class TrainState:
  """What a train step reads and writes: arrays placed on the mesh (or their shapes)."""
  trainable: dict
  opt_state: Any
  frozen: dict
  rng: jax.Array  # the dropout key (a typed key)


@dataclasses.dataclass(frozen=True)
class StateShardings:
  trainable: Any
  opt_state: Any
  frozen: Any


@dataclasses.dataclass
class Run:
  method: methods.Method
  model: T5
  optimizer: optax.GradientTransformation
  state: TrainState
  shardings: StateShardings
  # (trainable, opt_state, frozen, batch, rng, step) -> (trainable, opt_state, metrics)
  train_step: Callable
  init_record: dict | None  # the record of how the method's params started
  partitioning: Partitioning

  def params(self, trainable: dict | None = None) -> dict:
    """The whole param tree: `trainable` (default: the state's) with the frozen backbone."""
    return optim.merge_params(self.state.trainable if trainable is None else trainable,
                              self.state.frozen)

  def for_inference(self, trainable: dict | None = None,
                    task_index: int = 0) -> tuple[T5, dict]:
    """(model, params) with the method's reparameterisation folded away, for evaluation (a
    per-task method: with task `task_index`'s prompt)."""
    return methods.for_inference(self.model, self.params(trainable), task_index)


def _is_abstract(tree) -> bool:
  return any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(tree))


def _model_and_params(config, backbone: Backbone, init_rng) -> tuple[T5, dict, dict | None]:
  """The method's model and every initial param: the backbone's plus the method's own."""
  method = methods.get(config.method)
  options = methods.PromptOptions.from_config(config)
  if _is_abstract(backbone.params):  # shapes only: the modules' default initialisers
    model, record = method.make_model(backbone.config, options, None)
    own = jax.eval_shape(lambda rng: methods.module_params(model, rng), init_rng)
  else:
    embedding = backbone.params['token_embedder']['embedding']
    context = methods.InitContext(np.asarray(embedding) if is_lazy(embedding) else embedding,
                                  backbone.vocabulary, task_spec(config).label_names,
                                  config.task.name, backbone.params_hash)
    model, record = method.make_model(backbone.config, options, context)
    own = methods.module_params(model, init_rng)
  return model, {**backbone.params, **own}, record


# Params every use of which casts them to the compute dtype first.
_CAST_ON_USE = ('kernel', 'embedding', 'rel_embedding')


def stored_dtypes(frozen, compute_dtype):
  """The frozen params' dtypes on the devices. In a lower-precision compute mode the matrices
  every use casts to it (kernels, embeddings, position tables) are kept in it: the model's
  outputs are the same while each step skips the casts and the backbone takes half the memory.
  Norm scales (applied in float32) stay float32."""
  low_precision = jnp.dtype(compute_dtype) != jnp.float32

  def dtype(path, leaf):
    if low_precision and _param_name(path) in _CAST_ON_USE:
      return jnp.dtype(compute_dtype)
    return leaf.dtype
  return jax.tree_util.tree_map_with_path(dtype, frozen)


def _param_name(path) -> str:
  return str(getattr(path[-1], 'key', path[-1]))


def prerounded_kernels(config: T5Config, backbone_frozen: bool) -> bool:
  """Whether a frozen backbone's kernels, rounded to the compute dtype once, are kept in
  float32 (`T5Config.prerounded_kernels`): on a CPU without low-precision dot units, where every
  bf16 matmul multiplies float32 operands, so no step widens them again (measured on an AVX2
  CPU, Small prompt tuning, one core: the bf16 step from 1.07x the fp32 step to 0.97x)."""
  return (backbone_frozen and config.compute_dtype != jnp.float32
          and not t5.native_low_precision_dots())


def _kernels_in_float32(dtypes):
  return jax.tree_util.tree_map_with_path(
      lambda path, dtype: jnp.dtype(jnp.float32) if _param_name(path) == 'kernel' else dtype,
      dtypes)


def build(config, backbone: Backbone, partitioning: Partitioning) -> Run:
  """The run `config` describes on `backbone`, placed on `partitioning`'s mesh."""
  method = methods.get(config.method)
  rules = method.trainable_rules
  backbone_frozen = all(label == 'freeze'
                        for label in jax.tree.leaves(optim.param_labels(backbone.params, rules)))
  # Not for the planner's shapes: it plans for accelerators, where kernels stay in bf16.
  prerounded = (prerounded_kernels(backbone.config, backbone_frozen)
                and not _is_abstract(backbone.params))
  if prerounded:
    backbone = dataclasses.replace(backbone,
                                   config=backbone.config.replace(prerounded_kernels=True))
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.train.seed))
  model, params, init_record = _model_and_params(config, backbone, init_rng)

  # --- The freeze and the optimizer -------------------------------------------------------
  optimizer = optim.make_optimizer(config.optimizer, rules)

  # --- Shardings: params by the logical rules, optimizer state following its params --------
  param_shardings = partitioning.shardings(logical_param_specs(model))
  trainable_shardings, frozen_shardings = optim.split_params(param_shardings, rules)
  trainable, frozen = optim.split_params(params, rules)
  frozen_dtypes = stored_dtypes(frozen, backbone.config.compute_dtype)
  # On the devices; prerounded kernels are rounded to the compute dtype first (by `put`).
  device_dtypes = _kernels_in_float32(frozen_dtypes) if prerounded else frozen_dtypes
  opt_shapes = jax.eval_shape(optimizer.init, jax.tree.map(  # shapes: a leaf may be unread
      lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), trainable))
  shardings = StateShardings(
      trainable_shardings,
      state_shardings(opt_shapes, trainable_shardings, trainable, partitioning),
      frozen_shardings)

  # --- The state: placed on the mesh, or (abstract backbone) its shapes --------------------
  if _is_abstract(params):
    place = lambda tree, tree_shardings, dtypes=None: jax.tree.map(
        lambda leaf, sharding, dtype: jax.ShapeDtypeStruct(leaf.shape, dtype, sharding=sharding),
        tree, tree_shardings, jax.tree.map(lambda leaf: leaf.dtype, tree) if dtypes is None
        else dtypes)
    state = TrainState(place(trainable, shardings.trainable),
                       place(opt_shapes, shardings.opt_state),
                       place(frozen, shardings.frozen, device_dtypes), dropout_rng)
  else:
    trainable = partitioning.put(trainable, shardings.trainable)
    opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(trainable)
    frozen = partitioning.put(frozen, shardings.frozen, frozen_dtypes)
    if prerounded:
      frozen = jax.jit(lambda tree: jax.tree.map(lambda x, dtype: x.astype(dtype), tree,
                                                 device_dtypes),
                       out_shardings=shardings.frozen)(frozen)
    state = TrainState(trainable, opt_state, frozen,
                       jax.device_put(dropout_rng, partitioning.replicated))
    xla_cpu.keep_freed_memory()  # loaded and placed: from here each step reuses freed pages

  # --- The update step: one jit, explicit shardings, the trainable state donated -----------
  batch_sharding = partitioning.batch_sharding()
  batch_shardings = {'inputs': batch_sharding, 'targets': batch_sharding}
  if method.per_task:  # each row's task: which prompt of the bank it trains
    batch_shardings['prompt_ids'] = partitioning.batch_sharding(ndim=1)
  train_step = jax.jit(
      make_train_step(model, optimizer),
      in_shardings=(shardings.trainable, shardings.opt_state, shardings.frozen, batch_shardings,
                    partitioning.replicated, partitioning.replicated),
      out_shardings=(shardings.trainable, shardings.opt_state, partitioning.replicated),
      donate_argnums=(0, 1))
  return Run(method, model, optimizer, state, shardings, train_step, init_record, partitioning)
