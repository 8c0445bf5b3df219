"""The Flax T5 backbone: model, named sizes, checkpoint conversion, decoding."""

from t5prompt.models.convert import load_hf, save_hf
from t5prompt.models.sizes import SIZES, T5Config, get_size
from t5prompt.models.t5 import T5

__all__ = ['SIZES', 'T5', 'T5Config', 'get_size', 'load_hf', 'save_hf']
