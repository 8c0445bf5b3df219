"""Deterministic, resumable input pipelines over a seqio task split.

A split is tokenized once by its seqio Task into fixed-length int32 arrays (0-padded, EOS kept
when truncating, truncations counted). Training batches are a pure function of
(seed, step): each epoch is a fresh permutation seeded by (seed, epoch), and step s takes the
global examples [s * batch, (s + 1) * batch) of that endless stream. The data position is
therefore just the step, and a resumed run sees exactly the batches it would have seen.
"""

import dataclasses
import functools
from typing import Iterator

import numpy as np

from t5prompt.data.spec import record
from t5prompt.data.tasks import get_task_spec, seqio_task

EOS_ID = 1


@dataclasses.dataclass(frozen=True)
class TokenizedSplit:
  task: str
  split: str
  inputs: np.ndarray  # int32 [n, input_length]
  targets: np.ndarray  # int32 [n, target_length]
  labels: np.ndarray  # int32 [n], -1 when unlabelled
  truncated_inputs: int
  truncated_targets: int
  records: list  # the text-to-text records (answers, groups) the metrics need, in order

  def __len__(self) -> int:
    return len(self.labels)


def _pad(sequences, length: int) -> tuple[np.ndarray, int]:
  """Right-pads to `length`; longer sequences keep their first length-1 tokens and EOS."""
  out = np.zeros((len(sequences), length), np.int32)
  truncated = 0
  for row, ids in enumerate(sequences):
    if len(ids) > length:
      ids = np.concatenate([ids[:length - 1], [EOS_ID]])
      truncated += 1
    out[row, :len(ids)] = ids
  return out, truncated


def load_tokenized(task_name: str, split: str, input_length: int, target_length: int,
                   vocabulary=None) -> TokenizedSplit:
  """A split tokenized by its seqio Task (with `vocabulary`, default T5's), padded to fixed
  lengths, with its records. Cached per process: callers must not modify it."""
  spm_file = vocabulary.sentencepiece_model_file if vocabulary is not None else ''
  return _load_tokenized(task_name, split, input_length, target_length, spm_file)


@functools.cache
def _load_tokenized(task_name: str, split: str, input_length: int, target_length: int,
                    spm_file: str) -> TokenizedSplit:
  spec = get_task_spec(task_name)
  spec.source.locate(split)  # a clear error naming where it looked, before TF gets involved
  task = seqio_task(task_name, spm_file)
  # No sequence_length: append_eos_after_trim then only appends EOS, and _pad trims (counted).
  dataset = task.get_dataset(sequence_length=None, split=split, shuffle=False, use_cached=False)
  inputs, targets = [], []
  for example in dataset.as_numpy_iterator():
    inputs.append(example['inputs'])
    targets.append(example['targets'])
  records = spec.records(split)
  if records is None:  # token-level examples have no text records
    records = [record('', '') for _ in inputs]
  if not records:
    raise ValueError(f'{task_name} {split!r} has no examples.')
  if len(records) != len(inputs):
    raise RuntimeError(f'{task_name} {split!r}: seqio gave {len(inputs)} examples for '
                       f'{len(records)} records.')
  inputs, truncated_inputs = _pad(inputs, input_length)
  targets, truncated_targets = _pad(targets, target_length)
  labels = np.asarray([r['label'] for r in records], np.int32)
  return TokenizedSplit(task_name, split, inputs, targets, labels, truncated_inputs,
                        truncated_targets, records)


def concatenate(splits: list[TokenizedSplit]) -> TokenizedSplit:
  """Several tasks' splits as one (examples-proportional mixing: batches draw uniformly from
  the union). `task_ids` of the result: each example's position in `splits`."""
  if len(splits) == 1:
    return splits[0]
  return TokenizedSplit(
      '+'.join(s.task for s in splits), splits[0].split,
      np.concatenate([s.inputs for s in splits]), np.concatenate([s.targets for s in splits]),
      np.concatenate([s.labels for s in splits]), sum(s.truncated_inputs for s in splits),
      sum(s.truncated_targets for s in splits), [r for s in splits for r in s.records])


def example_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Indices of the global batch at `step` in the seeded stream of epoch permutations."""
  positions = np.arange(step * batch_size, (step + 1) * batch_size)
  epochs, offsets = np.divmod(positions, num_examples)
  out = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    permutation = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
    chosen = epochs == epoch
    out[chosen] = permutation[offsets[chosen]]
  return out


def train_batch(data: TokenizedSplit, batch_size: int, seed: int, step: int,
                host_index: int = 0, host_count: int = 1) -> dict[str, np.ndarray]:
  """This host's rows of the global batch at `step`."""
  if batch_size % host_count:
    raise ValueError(f'batch_size {batch_size} is not divisible by the {host_count} hosts.')
  indices = example_indices(len(data), batch_size, seed, step)
  per_host = batch_size // host_count
  indices = indices[host_index * per_host:(host_index + 1) * per_host]
  return {'inputs': data.inputs[indices], 'targets': data.targets[indices]}


def eval_batches(data: TokenizedSplit, batch_size: int,
                 max_examples: int = 0) -> Iterator[tuple[dict[str, np.ndarray], int]]:
  """Fixed-shape batches in order, the last padded with empty rows: (batch, real rows)."""
  count = min(len(data), max_examples) if max_examples else len(data)
  for start in range(0, count, batch_size):
    stop = min(start + batch_size, count)
    batch = {}
    for key in ('inputs', 'targets', 'labels'):
      values = getattr(data, key)[start:stop]
      pad = [(0, batch_size - (stop - start))] + [(0, 0)] * (values.ndim - 1)
      batch[key] = np.pad(values, pad)
    yield batch, stop - start
