"""t5prompt: parameter-efficient prompt methods on a frozen Flax T5, at every size."""

__version__ = '0.1.0'
