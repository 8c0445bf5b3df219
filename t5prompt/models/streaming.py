"""A checkpoint read tensor by tensor, block by block: param leaves that are not yet read.

At XXL a whole float32 copy of the checkpoint on every host, then the placed params, is twice
the model in host RAM. A `LazyTensor` is one param leaf as a recipe: a safetensors tensor,
transposed and/or reshaped into our layout; a `StackedTensor` is one per layer (scanned
layers). `block(index)` reads only the rows of the file's tensor that a device's part spans (plain
reads, no memory map: the rows of a slice over the file tensor's first axis, whichever of our
axes that is after a transpose or a reshape), so placing the params
(`Partitioning.put`, through `jax.make_array_from_callback`) reads each device's block once and
each host only its own devices'. Reading the whole leaf (`np.asarray`) reads one tensor.
"""

import dataclasses
import functools
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np


class _Unread:
  """What a param leaf not yet read answers without reading: shape, size, float32; reading
  it whole (`np.asarray`) is its block of everything."""
  dtype = np.dtype(np.float32)
  shape: tuple[int, ...]

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  def block(self, index: tuple) -> np.ndarray:
    raise NotImplementedError

  def _full_index(self, index: tuple) -> tuple:
    """`index` with a whole slice for every axis it leaves out."""
    return tuple(index) + (slice(None),) * (len(self.shape) - len(index))

  def __array__(self, dtype=None, copy=None):
    del copy
    out = self.block(tuple(slice(None) for _ in self.shape))
    return out if dtype is None else out.astype(dtype)


@dataclasses.dataclass(frozen=True)
class LazyTensor(_Unread):
  """A safetensors tensor `name` of `file` (shape `source_shape`), optionally transposed (2-D),
  then reshaped to `shape` (splitting axes only), as float32."""
  file: str
  name: str
  source_shape: tuple[int, ...]
  shape: tuple[int, ...]
  transposed: bool = False

  @property
  def T(self) -> 'LazyTensor':  # pylint: disable=invalid-name  (numpy's name)
    if len(self.shape) != 2 or self.shape != self._middle_shape:
      raise ValueError(f'{self.name}: only a 2-D tensor, before any reshape, is transposed.')
    return dataclasses.replace(self, transposed=not self.transposed, shape=self.shape[::-1])

  def reshape(self, *shape) -> 'LazyTensor':
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple) else shape
    if math.prod(shape) != self.size:
      raise ValueError(f'{self.name}: cannot reshape {self.shape} to {shape}.')
    return dataclasses.replace(self, shape=shape)

  @property
  def _middle_shape(self) -> tuple[int, ...]:
    """The shape after the transpose, before the reshape."""
    return self.source_shape[::-1] if self.transposed else self.source_shape

  def block(self, index: tuple) -> np.ndarray:
    """The block `index` (one slice per axis, as `make_array_from_callback` gives) of the leaf,
    reading no more of the file than the layout requires."""
    index = self._full_index(index)
    wanted = [range(*i.indices(n)) for i, n in zip(index, self.shape)]
    middle, leftover = self._middle_region(wanted)
    source = middle[::-1] if self.transposed else middle
    data = read_rows(self.file, self.name, source[0])[(slice(None),) + tuple(source[1:])]
    data = np.asarray(data, np.float32)
    if self.transposed:
      data = data.T
    return np.ascontiguousarray(data.reshape(leftover[0])[leftover[1]])

  def _middle_region(self, wanted: list[range]):
    """(slices of the pre-reshape tensor to read, (the read block's shape in our axes, the
    slices that are left to take from it))."""
    groups, axis = [], 0  # our axes that each pre-reshape axis splits into
    for size in self._middle_shape:
      group, product = [], 1
      while product < size or not group:
        group.append(axis)
        product *= self.shape[axis]
        axis += 1
      groups.append(group)
    slices, block_shape, rest = [], [], []
    for size, group in zip(self._middle_shape, groups):
      first, inner = group[0], group[1:]
      inner_full = all(len(wanted[a]) == self.shape[a] for a in inner)
      step_one = wanted[first].step == 1 or len(wanted[first]) <= 1
      if inner_full and step_one and len(wanted[first]):  # a contiguous run: read only it
        stride = math.prod(self.shape[a] for a in inner)
        start = wanted[first].start * stride
        slices.append(slice(start, start + len(wanted[first]) * stride))
        block_shape += [len(wanted[first])] + [self.shape[a] for a in inner]
        rest += [slice(None)] * len(group)
      else:  # read the whole axis, cut after the reshape
        slices.append(slice(0, size))
        block_shape += [self.shape[a] for a in group]
        rest += [slice(r.start, r.stop, r.step) if len(r) else slice(0, 0)
                 for r in (wanted[a] for a in group)]
    return slices, (tuple(block_shape), tuple(rest))


@dataclasses.dataclass(frozen=True)
class StackedTensor(_Unread):
  """The same leaf of every layer, stacked on a new leading axis (scanned layers)."""
  layers: tuple[LazyTensor, ...]

  @property
  def shape(self) -> tuple[int, ...]:
    return (len(self.layers),) + self.layers[0].shape

  def block(self, index: tuple) -> np.ndarray:
    index = self._full_index(index)
    chosen = range(*index[0].indices(len(self.layers)))
    return np.stack([self.layers[i].block(index[1:]) for i in chosen]) if len(chosen) else (
        np.zeros((0,) + self.layers[0].block(index[1:]).shape, np.float32))


def is_lazy(value) -> bool:
  return isinstance(value, _Unread)


def stack(values):
  """np.stack, or a StackedTensor of lazy leaves."""
  return StackedTensor(tuple(values)) if is_lazy(values[0]) else np.stack(values)


# safetensors dtypes as numpy reads them (bfloat16 through ml_dtypes, which JAX brings).
_DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16, 'I64': np.int64,
           'I32': np.int32, 'I16': np.int16, 'I8': np.int8, 'U8': np.uint8, 'BOOL': np.bool_}


def _dtype(name: str) -> np.dtype:
  if name == 'BF16':
    import ml_dtypes  # pylint: disable=import-outside-toplevel
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(_DTYPES[name])


@functools.cache
def header(file: str) -> tuple[dict, int]:
  """A safetensors file's header ({name: {'dtype', 'shape', 'data_offsets'}}) and where its
  data starts. Read with plain reads: no memory map, whose pages would count as the
  process's memory."""
  with open(file, 'rb') as stream:
    length = int.from_bytes(stream.read(8), 'little')
    entries = json.loads(stream.read(length))
  entries.pop('__metadata__', None)
  return entries, 8 + length


def read_rows(file: str, name: str, rows: slice) -> np.ndarray:
  """Rows `rows` (a step-1 slice of the first axis) of tensor `name`, read from disk alone."""
  entries, data_start = header(file)
  entry = entries[name]
  shape, dtype = tuple(entry['shape']), _dtype(entry['dtype'])
  start, stop, _ = rows.indices(shape[0]) if shape else (0, 1, 1)
  row_bytes = math.prod(shape[1:]) * dtype.itemsize
  count = max(stop - start, 0)
  with open(file, 'rb') as stream:
    stream.seek(data_start + entry['data_offsets'][0] + start * row_bytes)
    data = np.fromfile(stream, dtype, count * row_bytes // dtype.itemsize)
  return data.reshape((count,) + shape[1:])


@functools.cache
def _return_freed_blocks() -> None:
  """Makes glibc give every freed block over 1 MiB back to the system at once. By default it
  raises its threshold for that after each large free, so the read buffers of a streamed load
  stay in the heap beside the placed params (measured: peak 1.32x the placed bytes, 1.08x with
  this). A fixed threshold costs a page fault per large host allocation; batches are small."""
  try:
    import ctypes  # pylint: disable=import-outside-toplevel
    ctypes.CDLL('libc.so.6').mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
  except (OSError, AttributeError):  # not glibc: nothing to tune
    pass


def lazy_tensors(directory: Path, single: str, index: str) -> dict[str, LazyTensor] | None:
  """Every tensor of the safetensors checkpoint in `directory` (one `single` file or shards
  listed by an `index` file) as a LazyTensor; None when it has neither."""
  _return_freed_blocks()
  if (directory / single).is_file():
    files = [directory / single]
  elif (directory / index).is_file():
    files = [directory / shard for shard in
             sorted(set(json.loads((directory / index).read_text())['weight_map'].values()))]
  else:
    return None
  out = {}
  for file in files:
    for name, entry in header(str(file))[0].items():
      shape = tuple(entry['shape'])
      out[name] = LazyTensor(str(file), name, shape, shape)
  return out


def fingerprint(leaves: dict[str, _Unread]) -> str:
  """sha256 of what unread leaves (by name) will read: each leaf's recipe (files, tensors,
  shapes, transposes) and each file's path, size and modification time. Equal fingerprints read
  equal values, unless a file was rewritten in place with its size and time kept."""
  digest = hashlib.sha256()
  files = set()
  for name, leaf in sorted(leaves.items()):
    digest.update(f'{name}={leaf!r}\n'.encode())
    files.update(part.file for part in getattr(leaf, 'layers', (leaf,)))
  for file in sorted(files):
    stat = os.stat(file)
    digest.update(f'{os.path.realpath(file)}:{stat.st_size}:{stat.st_mtime_ns}\n'.encode())
  return digest.hexdigest()
