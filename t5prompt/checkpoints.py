"""Run checkpoints with orbax: only what training changes is saved.

A checkpoint holds the trainable params, their optimizer state and the RNG key (orbax
`StandardSave`), and a JSON record of the step, the data position and the early-stopping
state. The frozen backbone is never copied: the run's manifest (`run_dir`) names its source and
content hash, and a resume against a different backbone or an incompatible config is refused.
"""

import os
import sys
from pathlib import Path

from t5prompt.run_dir import RunDir


class RunCheckpoints:
  """The latest-N checkpoints of a run (for resuming) and the best one (for results)."""

  def __init__(self, workdir: str | os.PathLike, keep: int = 2):
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    self._ocp = ocp
    run_dir = RunDir(Path(workdir).resolve())
    self.latest = ocp.CheckpointManager(
        run_dir.checkpoints, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    # Synchronous: the best save often shares its step with a latest save, and two async saves
    # of one step would meet at the same multi-host barrier name.
    self.best = ocp.CheckpointManager(
        run_dir.best, options=ocp.CheckpointManagerOptions(
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
