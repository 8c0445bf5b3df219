"""Shared fixtures: random transformers T5 models saved as real checkpoint directories."""

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Eight virtual CPU devices for the whole suite, so sharding is tested on real meshes (set
# before JAX is imported). Code that does not ask for a mesh runs on the first device.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get('T5PROMPT_DATA_DIR', REPO.parent / 'shared' / 'data'))


def make_hf_t5(*, seed: int = 0, untied_head: bool = False, init_std: float | None = None,
               **config_kwargs):
  """A random `T5ForConditionalGeneration` (eval mode) built from HF config kwargs.

  `untied_head` gives it a separate random LM head, as v1.1 checkpoints have; `init_std`
  re-draws every weight from N(0, init_std) so greedy outputs vary (HF's init is near-uniform).
  """
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  config = transformers.T5Config(decoder_start_token_id=0, **config_kwargs)
  model = transformers.T5ForConditionalGeneration(config).eval()
  with torch.no_grad():
    if init_std is not None:
      for parameter in model.parameters():
        parameter.normal_(0.0, init_std)
    if untied_head:
      model.lm_head.weight = torch.nn.Parameter(torch.randn(config.vocab_size, config.d_model))
  return model


def save_as_hub_v4(model, directory: Path, **save_kwargs) -> Path:
  """Saves like the hub's checkpoints (transformers 4.x): v1.1 says tie_word_embeddings: false."""
  model.save_pretrained(directory, **save_kwargs)
  config_file = directory / 'config.json'
  config = json.loads(config_file.read_text())
  untied = not np.array_equal(model.lm_head.weight.detach().numpy(),
                              model.shared.weight.detach().numpy())
  config.pop('scale_decoder_outputs', None)
  config['tie_word_embeddings'] = not untied
  config_file.write_text(json.dumps(config))
  return directory


# A small v1.1-style (gated GELU, untied head) HF T5 for parity tests with PEFT.
PEFT_T5_KWARGS = dict(vocab_size=120, d_model=32, d_kv=8, d_ff=48, num_heads=4, num_layers=2,
                      feed_forward_proj='gated-gelu', tie_word_embeddings=False, dropout_rate=0.0)


def hub_v11_backbone(directory: Path, seed: int):
  """A random v1.1-style HF T5 saved as a hub checkpoint, and our (config, params) of it."""
  from t5prompt.models import load_hf  # pylint: disable=import-outside-toplevel
  save_as_hub_v4(make_hf_t5(seed=seed, untied_head=True, **PEFT_T5_KWARGS), directory)
  config, params = load_hf(str(directory), dropout_rate=0.0)
  return directory, config, params


def init_params(model, *inputs, seed: int = 0):
  """A Flax model's params, unboxed, by a jitted init. Eager, even a tiny T5's init dispatches
  its ops one by one (~20 s on a slow CPU); jitted, XLA compiles it once (~10 s there, most of
  it ~0.1 s per random initializer). Same values either way."""
  import jax  # pylint: disable=import-outside-toplevel
  from flax import linen as nn  # pylint: disable=import-outside-toplevel
  return nn.unbox(jax.jit(model.init)(jax.random.key(seed), *inputs)['params'])


@functools.cache  # the arrays are immutable: one init per config and seed per test process
def random_t5_params(config, seed: int = 0):
  """A random T5's params. They are float32 whatever `config.dtype` (the compute dtype), so
  tests that differ only in it share one init."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from t5prompt.models import T5  # pylint: disable=import-outside-toplevel
  if config.dtype != 'float32':
    return random_t5_params(config.replace(dtype='float32'), seed)
  tokens = jnp.ones((1, 4), jnp.int32)
  return init_params(T5(config), tokens, tokens, seed=seed)


def random_batch(vocab_size: int, batch: int, input_length: int, target_length: int, seed: int = 0):
  """Right-padded int32 token batches: encoder inputs and decoder inputs (start token 0)."""
  rng = np.random.RandomState(seed)
  inputs = rng.randint(2, vocab_size, (batch, input_length)).astype(np.int32)
  decoder_inputs = rng.randint(2, vocab_size, (batch, target_length)).astype(np.int32)
  decoder_inputs[:, 0] = 0
  for row in range(1, batch):  # different amounts of padding per row
    inputs[row, input_length - row * input_length // (batch + 1):] = 0
  return inputs, decoder_inputs


def hf_logits(model, inputs, decoder_inputs):
  import torch  # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    return model(input_ids=torch.tensor(inputs, dtype=torch.long),
                 attention_mask=torch.tensor(inputs > 0, dtype=torch.long),
                 decoder_input_ids=torch.tensor(decoder_inputs, dtype=torch.long)).logits.numpy()


@pytest.fixture(scope='session')
def shared_data() -> Path:
  if not SHARED_DATA.exists():
    pytest.fail(f'shared data not found at {SHARED_DATA}; set T5PROMPT_DATA_DIR')
  return SHARED_DATA
