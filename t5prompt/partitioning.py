"""The device mesh, the logical-axis rules, and shardings for params, optimizer state and batches.

Mesh axes are T5X's `('data', 'model')` over every device of every host. Every param and the
main activations carry logical axis names (set where they are created, in `models/t5.py` and
`prompts/`); the rules below map them to mesh axes, so changing a sharding is changing a rule:
  batch -> data;  heads, mlp, vocab -> model;  kv -> model where heads is not already (T5X);
  embed -> None, or data for 2-D (FSDP-style) weight sharding at the largest sizes;
  prompt, prompt_embed -> None (replicated: one host can save it), as in the reference.
"""

import contextlib
import dataclasses
import math
from typing import Any, Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def initialize_distributed(coordinator_address: str = '', num_processes: int = 0,
                           process_id: int = -1) -> None:
  """Joins the processes of a multi-host run: from explicit values, or (all empty) from the
  launcher's environment (SLURM, Cloud TPU, Open MPI), which jax.distributed detects."""
  # CPU collectives across processes (tests, CPU clusters) need gloo; GPUs/TPUs ignore it.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  else:
    jax.distributed.initialize()


def logical_axis_rules(shard_embed: bool = False) -> tuple[tuple[str, Any], ...]:
  return (
      ('batch', 'data'),
      ('vocab', 'model'),
      ('mlp', 'model'),
      ('heads', 'model'),
      ('kv', 'model'),  # only used when `heads` has not taken `model` (flax skips a used axis)
      ('embed', 'data' if shard_embed else None),
      ('layers', None),
      ('length', None),
      ('relpos_buckets', None),
      ('prompt', None),
      ('prompt_embed', None),
      ('prefix', None),
      ('prefix_mlp', None),
  )


def mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, int]:
  """(data, model) with at most one -1 (the rest of the devices), checked against the count."""
  if len(shape) != 2:
    raise ValueError(f'partitioning.mesh is (data, model), e.g. (-1, 1); got {tuple(shape)}.')
  data, model = shape
  if data == -1 and model > 0:
    data = num_devices // model
  elif model == -1 and data > 0:
    model = num_devices // data
  if data <= 0 or model <= 0 or data * model != num_devices:
    raise ValueError(f'Mesh {tuple(shape)} does not fit {num_devices} devices: data x model must '
                     f'equal the device count (use -1 for one axis, e.g. (-1, {max(model, 1)})).')
  return data, model


def make_mesh(shape: Sequence[int] = (-1, 1), devices=None) -> Mesh:
  """A ('data', 'model') mesh over all devices of all hosts. Axis types are Auto: flax's logical
  constraints need them (jax.make_mesh's default, Explicit, breaks them)."""
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(shape, len(devices))
  return jax.make_mesh(shape, ('data', 'model'), axis_types=(AxisType.Auto, AxisType.Auto),
                       devices=devices)


@dataclasses.dataclass(frozen=True)
class Partitioning:
  mesh: Mesh
  rules: tuple

  @contextlib.contextmanager
  def activate(self):
    """The mesh and rules that the model's logical activation constraints resolve against."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield

  def shardings(self, logical_specs) -> Any:
    """A tree of logical PartitionSpecs -> the tree of NamedShardings."""
    return nn.logical_to_mesh_sharding(logical_specs, self.mesh, self.rules)

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def batch_sharding(self, ndim: int = 2) -> NamedSharding:
    return NamedSharding(self.mesh, P('data', *([None] * (ndim - 1))))

  def local_batch_to_global(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Each host passes its own rows of the global batch (multi-host data loading)."""
    return {key: jax.make_array_from_process_local_data(self.batch_sharding(value.ndim), value)
            for key, value in local_batch.items()}

  def full_batch_to_global(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Every host holds the whole batch (evaluation); each device takes its rows."""
    return {key: jax.make_array_from_callback(value.shape, self.batch_sharding(value.ndim),
                                              lambda index, value=value: value[index])
            for key, value in batch.items()}

  def put(self, tree, shardings, dtypes=None):
    """Host arrays, identical on every host, onto their shardings (works multi-host). A leaf
    with a `block(index)` method (a streamed checkpoint tensor) is read block by block: each
    device's block once, each host only its own devices'. `dtypes` (a tree like `tree`, or
    None: as stored) casts each block as it is read."""
    def place(value, sharding, dtype):
      read = value.block if hasattr(value, 'block') else lambda index: np.asarray(value)[index]
      return jax.make_array_from_callback(
          np.shape(value), sharding, lambda index: read(index).astype(dtype, copy=False))
    if dtypes is None:
      dtypes = jax.tree.map(lambda leaf: leaf.dtype, tree)
    return jax.tree.map(place, tree, shardings, dtypes)


def make_partitioning(mesh: Sequence[int] = (-1, 1), shard_embed: bool = False,
                      devices=None) -> Partitioning:
  return Partitioning(make_mesh(mesh, devices), logical_axis_rules(shard_embed))


def logical_param_specs(model, input_length: int = 8, target_length: int = 8):
  """The logical PartitionSpec of every param of `model`, from its abstract init (no compute)."""
  tokens = jax.ShapeDtypeStruct((1, input_length), np.int32)
  targets = jax.ShapeDtypeStruct((1, target_length), np.int32)
  abstract = jax.eval_shape(model.init, jax.random.key(0), tokens, targets)
  return nn.get_partition_spec(abstract)['params']


def _param_path(path) -> tuple[str, ...]:
  return tuple(str(key.key) for key in path if isinstance(key, jax.tree_util.DictKey))


def state_shardings(state_shapes, params_shardings, params_shapes, partitioning: Partitioning):
  """Shardings for an optimizer state: a leaf that mirrors a param (same trailing dict path and
  shape, e.g. Adam's mu/nu, Adafactor's full v) follows that param; the rest (counts, factored
  row/column statistics of a few KB) are replicated."""
  by_path = {}
  for path, sharding in jax.tree_util.tree_leaves_with_path(params_shardings):
    by_path[_param_path(path)] = sharding
  shapes = {_param_path(path): np.shape(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(params_shapes)}

  def sharding_for(path, leaf):
    keys = _param_path(path)
    for start in range(len(keys)):
      suffix = keys[start:]
      if suffix in by_path and shapes[suffix] == np.shape(leaf):
        return by_path[suffix]
    return partitioning.replicated
  return jax.tree_util.tree_map_with_path(sharding_for, state_shapes)


def bytes_per_device(tree, shardings) -> int:
  """Bytes one device holds of `tree` (arrays or ShapeDtypeStructs) under `shardings`."""
  total = 0
  for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(
      shardings, is_leaf=lambda x: isinstance(x, NamedSharding))):
    shard = sharding.shard_shape(np.shape(leaf))
    total += math.prod(shard) * np.dtype(leaf.dtype).itemsize
  return total


def to_host(array) -> np.ndarray:
  """The whole value of a (possibly multi-host sharded) array, on every host."""
  if not isinstance(array, jax.Array) or array.is_fully_addressable:
    return np.asarray(array)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))
