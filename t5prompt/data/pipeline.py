"""Deterministic, resumable input pipelines over a seqio task split.

A split is tokenized once by its seqio Task into fixed-length int32 arrays (0-padded, EOS kept
when truncating, truncations counted). Training batches are a pure function of
(seed, step): each epoch is a fresh permutation seeded by (seed, epoch), and step s takes the
global examples [s * batch, (s + 1) * batch) of that endless stream. The data position is
therefore just the step, and a resumed run sees exactly the batches it would have seen.
"""

import dataclasses
import functools
import hashlib
import json
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from t5prompt import atomic
from t5prompt.data.sources import cache_dir
from t5prompt.data.vocab import get_vocabulary

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
  task_ids: np.ndarray | None = None  # int32 [n]: each example's task in a mixture

  def __len__(self) -> int:
    return len(self.labels)


def unpadded(row: np.ndarray) -> np.ndarray:
  """A padded row's tokens without the padding and without its final EOS."""
  ids = row[row > 0]
  return ids[:-1] if len(ids) and ids[-1] == EOS_ID else ids


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
  if spec.to_records is None:  # a token-level task over a whole corpus: kept on disk
    return _cached_on_disk(spec, split, input_length, target_length, spm_file)
  inputs, targets = _tokenize(task_name, split, spm_file)
  records = spec.records(split)
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


def _tokenize(task_name: str, split: str, spm_file: str) -> tuple[list, list]:
  """Every example's (inputs, targets) token ids from the seqio Task, with progress shown."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  # No sequence_length: append_eos_after_trim then only appends EOS, and _pad trims (counted).
  dataset = seqio_task(task_name, spm_file).get_dataset(
      sequence_length=None, split=split, shuffle=False, use_cached=False)
  inputs, targets = [], []
  for example in tqdm(dataset.as_numpy_iterator(), desc=f'tokenize {task_name} {split}',
                      unit=' examples', file=sys.stderr, mininterval=10,
                      disable=not sys.stderr.isatty()):
    inputs.append(example['inputs'])
    targets.append(example['targets'])
  return inputs, targets


def _cached_on_disk(spec, split: str, input_length: int, target_length: int,
                    spm_file: str) -> TokenizedSplit:
  """A token-level split (pre-training), tokenized once per vocabulary, corpus and format and
  kept in the cache directory: tokenizing the whole corpus takes minutes."""
  vocabulary = Path(spm_file or get_vocabulary().sentencepiece_model_file).read_bytes()
  key = hashlib.sha256(json.dumps([
      spec.name, spec.cache_key, split, input_length, target_length,
      hashlib.sha256(vocabulary).hexdigest(), spec.source.fingerprint()]).encode()).hexdigest()
  path = cache_dir() / 'tokenized' / f'{spec.name}-{split}-{key[:16]}.npz'
  if path.is_file():
    with np.load(path) as saved:
      inputs, targets, truncated = saved['inputs'], saved['targets'], saved['truncated']
  else:
    print(f'tokenizing {spec.name} {split} (once: kept in {path.parent})', file=sys.stderr)
    inputs, targets = _tokenize(spec.name, split, spm_file)
    (inputs, truncated_inputs), (targets, truncated_targets) = (
        _pad(inputs, input_length), _pad(targets, target_length))
    truncated = np.array([truncated_inputs, truncated_targets])

    def write(name):
      with open(name, 'wb') as stream:
        np.savez(stream, inputs=inputs, targets=targets, truncated=truncated)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes_with(path, write)
  return TokenizedSplit(spec.name, split, inputs, targets, np.full(len(inputs), -1, np.int32),
                        int(truncated[0]), int(truncated[1]),
                        [record('', '') for _ in range(len(inputs))])


def concatenate(splits: list[TokenizedSplit]) -> TokenizedSplit:
  """Several tasks' splits as one (examples-proportional mixing: batches draw uniformly from
  the union). `task_ids` of the result: each example's position in `splits`."""
  if len(splits) == 1:
    return splits[0]
  return TokenizedSplit(
      '+'.join(s.task for s in splits), splits[0].split,
      np.concatenate([s.inputs for s in splits]), np.concatenate([s.targets for s in splits]),
      np.concatenate([s.labels for s in splits]), sum(s.truncated_inputs for s in splits),
      sum(s.truncated_targets for s in splits), [r for s in splits for r in s.records],
      np.concatenate([np.full(len(s), i, np.int32) for i, s in enumerate(splits)]))


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


def host_indices(num_examples: int, batch_size: int, seed: int, step: int,
                 host_index: int = 0, host_count: int = 1) -> np.ndarray:
  """The indices of this host's rows of the global batch at `step`."""
  if batch_size % host_count:
    raise ValueError(f'batch_size {batch_size} is not divisible by the {host_count} hosts.')
  indices = example_indices(num_examples, batch_size, seed, step)
  per_host = batch_size // host_count
  return indices[host_index * per_host:(host_index + 1) * per_host]


def train_batch(data: TokenizedSplit, batch_size: int, seed: int, step: int,
                host_index: int = 0, host_count: int = 1,
                with_task_ids: bool = False) -> dict[str, np.ndarray]:
  """This host's rows of the global batch at `step` (with each row's task as `prompt_ids`)."""
  indices = host_indices(len(data), batch_size, seed, step, host_index, host_count)
  batch = {'inputs': data.inputs[indices], 'targets': data.targets[indices]}
  if with_task_ids:
    batch['prompt_ids'] = (np.zeros(len(indices), np.int32) if data.task_ids is None
                           else data.task_ids[indices])
  return batch


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
