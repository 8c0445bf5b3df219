"""A run's metric log: one JSON line per record in `metrics.jsonl` (the file analysis reads)
and the same scalars as TensorBoard events under `tensorboard/`; and the progress bar a loop
shows on stderr."""

import json
import math
import sys

from t5prompt.data.tf_setup import tensorflow
from t5prompt.run_dir import RunDir


def progress_bar(total: int, initial: int, enabled: bool, desc: str, unit: str):
  """A loop's progress on stderr: live on a terminal, a line every 30 s in a log file."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True, file=sys.stderr,
              mininterval=1.0 if sys.stderr.isatty() else 30.0, desc=desc,
              disable=not enabled)


class RunLog:

  def __init__(self, run_dir: RunDir, resume_step: int = 0, enabled: bool = True):
    self.enabled = enabled  # False on all hosts but one
    self.path = run_dir.metrics
    if enabled and self.path.exists():
      self._drop_after(resume_step)
    self._tensorboard_dir = str(run_dir.tensorboard)
    self._writer = None

  def _drop_after(self, step: int) -> None:
    """A resumed run replays the steps after its checkpoint; their old lines go."""
    kept = [line for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line)['step'] <= step]
    self.path.write_text(''.join(line + '\n' for line in kept))

  def write(self, step: int, kind: str, values: dict) -> None:
    """kind: 'train' or 'eval/<set>'; values: name -> number."""
    if not self.enabled:
      return
    record = {'step': int(step), 'kind': kind, **{k: float(v) for k, v in values.items()}}
    with open(self.path, 'a', encoding='utf-8') as handle:
      handle.write(json.dumps(record) + '\n')
    self._tensorboard(step, kind, values)

  def _tensorboard(self, step: int, kind: str, values: dict) -> None:
    tf = tensorflow()
    if self._writer is None:
      self._writer = tf.summary.create_file_writer(self._tensorboard_dir)
    with self._writer.as_default():
      for name, value in values.items():
        if math.isfinite(float(value)):
          tf.summary.scalar(f'{kind}/{name}', float(value), step=int(step))

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()
