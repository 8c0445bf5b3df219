"""Atomic file writes (temp file in the same directory, then rename): a reader or a crash never
sees a half-written result, manifest or prompt. The file gets the mode any new file gets (0666
less the umask), not the temp file's private 0600, so collaborators can read results."""

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

import numpy as np


def new_file_mode() -> int:
  """The mode `open` gives a new file: 0666 less this process's umask."""
  umask = os.umask(0)
  os.umask(umask)
  return 0o666 & ~umask


def _atomic_write(path: str | os.PathLike, write: Callable[[IO], None], mode: str) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f'.{path.name}.',
                                   delete=False) as handle:
    try:
      write(handle)
      handle.flush()
      os.fsync(handle.fileno())
      os.fchmod(handle.fileno(), new_file_mode())
    except BaseException:
      os.unlink(handle.name)
      raise
  os.replace(handle.name, path)
  return path


def write_json(path: str | os.PathLike, record: Any) -> Path:
  text = json.dumps(record, indent=2, sort_keys=True) + '\n'
  return _atomic_write(path, lambda handle: handle.write(text.encode()), 'wb')


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
  return _atomic_write(path, lambda handle: np.save(handle, array), 'wb')


def write_bytes_with(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
  """For libraries that write to a file name (e.g. safetensors): write a temp name, rename."""
  path = Path(path)
  temp = path.with_name(f'.{path.name}.tmp')
  writer(str(temp))
  os.replace(temp, path)
  return path
