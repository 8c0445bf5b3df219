"""TensorFlow is only the input pipeline here (seqio, TFDS, TensorBoard): import it quietly and
keep it off the accelerators, which belong to JAX (TF would otherwise reserve GPU memory)."""

import contextlib
import functools
import os
import sys


@contextlib.contextmanager
def _quiet_stderr():
  """Points file descriptor 2 at /dev/null for a while: TensorFlow's C++ start-up logging (absl,
  oneDNN, the CUDA probe on machines without one) writes there directly, whatever
  TF_CPP_MIN_LOG_LEVEL says. A failure still raises, and its message prints after."""
  sys.stderr.flush()
  saved = os.dup(2)
  with open(os.devnull, 'w', encoding='utf-8') as devnull:
    os.dup2(devnull.fileno(), 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


@functools.cache
def tensorflow():
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  with _quiet_stderr():
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    for kind in ('GPU', 'TPU'):
      try:
        tf.config.set_visible_devices([], kind)
      except (RuntimeError, ValueError):  # already initialised, or no such device type
        pass
  return tf
