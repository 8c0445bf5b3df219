"""Preemption: SIGTERM/SIGINT become a request to stop after the current step; the loop
saves its state and raises `Preempted`, and the command exits 75 so a scheduler reruns it to
resume. Every loop (training, AutoPrompt's search) stops the same way."""

import signal
import threading

import jax

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: stopped cleanly by a signal, rerun to resume


class Preempted(Exception):
  """SIGTERM/SIGINT: the step finished, a checkpoint was saved, the run can resume."""


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
