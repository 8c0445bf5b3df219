"""Where examples come from: a prepared TFDS dataset when there is one, else the original
release files under the data directory. Nothing here ever downloads.

Readers return plain Python dicts in the release's own schema (SuperGLUE jsonl, MRQA jsonl
with its header line, GLUE tsv); the task modules turn them into text-to-text records.
"""

import csv
import gzip
import json
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence



def data_dir() -> Path:
  """Where local data lives: $T5PROMPT_DATA_DIR, else the `shared/data` beside this checkout."""
  if 'T5PROMPT_DATA_DIR' in os.environ:
    return Path(os.environ['T5PROMPT_DATA_DIR']).expanduser()
  return Path(__file__).resolve().parents[3] / 'shared' / 'data'


def cache_dir() -> Path:
  """Where derived data is kept between runs (trained vocabularies, the miniature's backbones):
  $T5PROMPT_CACHE, else `.cache` in this checkout."""
  if 'T5PROMPT_CACHE' in os.environ:
    return Path(os.environ['T5PROMPT_CACHE']).expanduser()
  return Path(__file__).resolve().parents[2] / '.cache'


CACHE_PREFIX = 'cache:'


def cache_reference(path: str | os.PathLike) -> str:
  """How a config names `path`: `cache:<path within the cache>` when it lies in the cache (the
  miniature's backbones), so the run still names it after the checkout or $T5PROMPT_CACHE
  moves; any other path as it is."""
  try:
    return CACHE_PREFIX + str(Path(path).resolve().relative_to(cache_dir().resolve()))
  except ValueError:
    return str(path)


def local_path(reference: str) -> str:
  """A checkpoint as a config names it (`cache_reference`, a path or a hub id), as a path or
  hub id to open."""
  if reference.startswith(CACHE_PREFIX):
    return str(cache_dir() / reference.removeprefix(CACHE_PREFIX))
  return reference


class DataNotFoundError(FileNotFoundError):
  """A task's data is absent; the message says where it looked and how to get it."""


def _open_text(path: Path):
  if path.suffix == '.gz':
    return gzip.open(path, 'rt', encoding='utf-8')
  return open(path, encoding='utf-8-sig')  # GLUE files start with a BOM


def read_jsonl(path: Path) -> Iterator[dict]:
  with _open_text(path) as lines:
    for number, line in enumerate(lines, 1):
      if not line.strip():
        continue
      try:
        yield json.loads(line)
      except json.JSONDecodeError as error:
        raise ValueError(f'{path}:{number} is not valid JSON ({error.msg} at column '
                         f'{error.colno}); the file should be the original release jsonl, one '
                         'example per line.') from error


def read_mrqa(path: Path) -> Iterator[dict]:
  """MRQA jsonl: a header line, then one context (with its `qas`) per line."""
  rows = read_jsonl(path)
  header = next(rows, None)
  if not header or 'header' not in header:
    raise ValueError(f'{path} does not start with an MRQA header line ({{"header": ...}}); is '
                     'it an MRQA 2019 shared-task file?')
  yield from rows


def read_tsv(path: Path) -> Iterator[dict]:
  """GLUE tsv with a header row; quoting off, as the GLUE files need."""
  with _open_text(path) as handle:
    reader = csv.reader(handle, delimiter='\t', quoting=csv.QUOTE_NONE)
    header = next(reader)
    for number, row in enumerate(reader, 2):
      if len(row) != len(header):
        raise ValueError(f'{path}:{number} has {len(row)} fields, the header has {len(header)}.')
      yield dict(zip(header, row))


def tfds_dir() -> Path:
  return Path(os.environ.get('TFDS_DATA_DIR', Path.home() / 'tensorflow_datasets')).expanduser()


def tfds_prepared(name: str) -> bool:
  """Whether `name` (e.g. `super_glue/rte`) has a prepared version in the TFDS data dir."""
  return any((tfds_dir() / name).glob('*/dataset_info.json'))


def tfds_rows(name: str, split: str) -> list[dict] | None:
  """The split of a TFDS dataset (`super_glue/rte`, `glue/mrpc`, `mrqa/squad`, ...) if it has
  been prepared in the TFDS data dir, else None. Never downloads: TFDS would hang offline."""
  if not tfds_prepared(name):
    return None
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  builder = tfds.builder(name, data_dir=str(tfds_dir()))
  if split not in builder.info.splits:
    return None

  def plain(value):
    if isinstance(value, bytes):
      return value.decode('utf-8')
    if isinstance(value, dict):
      return {key: plain(item) for key, item in value.items()}
    if hasattr(value, 'tolist'):
      return plain(value.tolist())
    if isinstance(value, list):
      return [plain(item) for item in value]
    return value
  return [plain(example) for example in tfds.as_numpy(builder.as_dataset(split=split))]


class Source:
  """One task's examples per split: TFDS first (if prepared), then local release files."""

  def __init__(self, local: dict[str, Sequence[str]], reader: Callable[[Path], Iterator[dict]],
               tfds_name: str = '', tfds_splits: dict[str, str] | None = None,
               from_tfds: Callable[[dict], dict] = lambda example: example,
               how_to_get: str | dict[str, str] = ''):
    self.local = local  # split -> candidate paths relative to the data directory
    self.reader = reader
    self.tfds_name = tfds_name
    self.tfds_splits = tfds_splits or {}
    self.from_tfds = from_tfds
    self.how_to_get = how_to_get  # one text, or per split ('' the rest's)

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(list(self.local) + list(self.tfds_splits)))

  def _local_path(self, split: str) -> Path | None:
    for candidate in self.local.get(split, ()):
      if (data_dir() / candidate).is_file():
        return data_dir() / candidate
    return None

  def locate(self, split: str) -> str:
    """Where this split would be read from; raises DataNotFoundError saying where it looked."""
    if self.tfds_name and split in self.tfds_splits and tfds_prepared(self.tfds_name):
      return f'tfds:{self.tfds_name}[{self.tfds_splits[split]}] in {tfds_dir()}'
    path = self._local_path(split)
    if path is not None:
      return str(path)
    if split not in self.splits:
      raise DataNotFoundError(f'Unknown split {split!r}; this task has splits '
                              f'{", ".join(self.splits)}.')
    looked = [str(data_dir() / c) for c in self.local.get(split, ())]
    if self.tfds_name and split in self.tfds_splits:
      looked.insert(0, f'TFDS {self.tfds_name} (prepared) in {tfds_dir()}')
    how_to_get = (self.how_to_get.get(split, self.how_to_get.get('', ''))
                  if isinstance(self.how_to_get, dict) else self.how_to_get)
    raise DataNotFoundError(f'No data for split {split!r}: looked for {" and ".join(looked)}. '
                            f'{how_to_get}')

  def rows(self, split: str) -> list[dict]:
    if self.tfds_name and split in self.tfds_splits:
      rows = tfds_rows(self.tfds_name, self.tfds_splits[split])
      if rows is not None:
        return [self.from_tfds(row) for row in rows]
    path = self._local_path(split)
    if path is None:
      self.locate(split)  # raises with where it looked
    return list(self.reader(path))
