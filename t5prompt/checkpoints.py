"""Run checkpoints with orbax: only what training changes is saved.

A checkpoint holds the trainable params, their optimizer state and the RNG key (orbax
`StandardSave`), and a JSON record of the step, the data position and the early-stopping
state. The frozen backbone is never copied: the run's `manifest.json` names its source and
content hash, and a resume against a different backbone or an incompatible config is refused.
"""

import contextlib
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from t5prompt import atomic

MANIFEST = 'manifest.json'


def _diff(saved: Any, current: Any, prefix: str = '') -> list[str]:
  if isinstance(saved, dict) and isinstance(current, dict):
    lines = []
    for key in sorted(set(saved) | set(current)):
      lines += _diff(saved.get(key), current.get(key), f'{prefix}{key}.')
    return lines
  return [] if saved == current else [f'  {prefix[:-1]}: saved {saved!r}, now {current!r}']


def check_or_write_manifest(workdir: str | os.PathLike, manifest: dict,
                            write: bool = True) -> bool:
  """Writes the manifest of a new run (if `write`: one host writes), or checks a resumed run's
  against it. Returns True when the run directory already had a manifest (a resume)."""
  path = Path(workdir) / MANIFEST
  if not path.exists():
    if write:
      atomic.write_json(path, manifest)
    return False
  saved = json.loads(path.read_text())
  differences = _diff(saved, json.loads(json.dumps(manifest)))
  if differences:
    raise ValueError(
        f'{workdir} holds a run of a different backbone or config; refusing to resume it:\n'
        + '\n'.join(differences)
        + '\nUse a new --workdir, or rerun with the saved values.')
  return True


class WorkdirBusyError(RuntimeError):
  """Another process holds the run directory."""
  user_facing = True  # the CLI prints the message alone


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike, enabled: bool = True):
  """Holds `<workdir>/.lock` for a run, so a second process on the same workdir is refused
  rather than interleaving its writes (multi-host: only host 0 takes it)."""
  if not enabled:
    yield
    return
  path = Path(workdir) / '.lock'
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'a+', encoding='utf-8') as handle:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as error:
      handle.seek(0)
      holder = handle.read().strip()
      raise WorkdirBusyError(f'{workdir} is in use by another t5prompt process ({holder}); wait '
                             'for it to finish or stop it, or use another --workdir.') from error
    handle.seek(0)
    handle.truncate()
    handle.write(f'pid {os.getpid()} on {os.uname().nodename}')
    handle.flush()
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


class RunCheckpoints:
  """The latest-N checkpoints of a run (for resuming) and the best one (for results)."""

  def __init__(self, workdir: str | os.PathLike, keep: int = 2):
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    self._ocp = ocp
    workdir = Path(workdir).resolve()
    self.latest = ocp.CheckpointManager(
        workdir / 'checkpoints', options=ocp.CheckpointManagerOptions(max_to_keep=keep,
                                                                      create=True))
    # Synchronous: the best save often shares its step with a latest save, and two async saves
    # of one step would meet at the same multi-host barrier name.
    self.best = ocp.CheckpointManager(
        workdir / 'best', options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=False))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state: dict, record: dict) -> None:
    """state: {'trainable', 'opt_state', 'rng'} arrays; record: JSON-able loop state."""
    args = self._ocp.args
    self.latest.save(step, args=args.Composite(state=args.StandardSave(state),
                                               record=args.JsonSave(record)), force=True)

  def restore_latest_good(self, template: dict) -> tuple[int, dict, dict] | None:
    """The newest checkpoint that restores, after dropping newer ones that do not (a corrupt or
    half-written save, e.g. from a crash mid-write), saying so. None if there is none."""
    for step in sorted(self.latest.all_steps(), reverse=True):
      try:
        state, record = self.restore(step, template)
      except Exception as error:  # pylint: disable=broad-except  (any unreadable checkpoint)
        print(f'checkpoint {step} is unreadable ({type(error).__name__}: {str(error)[:200]}); '
              'deleting it and falling back to the previous one', file=sys.stderr)
        self.latest.delete(step)
        continue
      return step, state, record
    return None

  def restore(self, step: int, template: dict) -> tuple[dict, dict]:
    """The state saved at `step`, in the structure (and shardings) of `template`."""
    args = self._ocp.args
    restored = self.latest.restore(step, args=args.Composite(
        state=args.StandardRestore(template), record=args.JsonRestore()))
    return restored['state'], restored['record']

  def keep_best_up_to(self, step: int, best_step: int | None) -> bool:
    """After a fallback to `step`, drops best checkpoints from the abandoned later steps;
    returns whether the recorded `best_step` is still on disk."""
    for saved in self.best.all_steps():
      if saved > step:
        self.best.delete(saved)
    return best_step is None or best_step in self.best.all_steps()

  def save_best(self, step: int, trainable: dict) -> None:
    self.best.save(step, args=self._ocp.args.StandardSave(trainable), force=True)

  def restore_best(self, template: dict) -> tuple[int, dict]:
    step = self.best.latest_step()
    if step is None:
      raise FileNotFoundError('This run has no best checkpoint yet (no eval has run).')
    return step, self.best.restore(step, args=self._ocp.args.StandardRestore(template))

  def close(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()
    self.latest.close()
    self.best.close()


def export_prompt(directory: str | os.PathLike, arrays: dict[str, np.ndarray],
                  metadata: dict) -> Path:
  """The portable prompt, with `prompt.json` (metadata and shapes) beside it:
  `prompt.npy` (float32 [P, d]) for input prompts ({'prompt': array}), else `prefix.npz`
  (prefixes, {'<kind>_key': [layers, P, heads, d_kv], ...})."""
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  arrays = {name: np.asarray(array, np.float32) for name, array in arrays.items()}
  if list(arrays) == ['prompt']:
    path = directory / 'prompt.npy'
    atomic.write_npy(path, arrays['prompt'])
  else:
    path = directory / 'prefix.npz'
    def write(name):
      with open(name, 'wb') as stream:  # a stream: np.savez would add '.npz' to the temp name
        np.savez(stream, **arrays)
    atomic.write_bytes_with(path, write)
  atomic.write_json(directory / 'prompt.json', {
      **metadata, 'file': path.name, 'dtype': 'float32',
      'shape': list(arrays['prompt'].shape) if 'prompt' in arrays else None,
      'shapes': {name: list(array.shape) for name, array in arrays.items()}})
  return path
