"""TensorFlow is only the input pipeline here (seqio, TFDS, TensorBoard): import it quietly and
keep it off the accelerators, which belong to JAX (TF would otherwise reserve GPU memory)."""

import functools
import os


@functools.cache
def tensorflow():
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # start-up chatter, CUDA probing errors
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  for kind in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # already initialised, or no such device type
      pass
  return tf
