"""Named sizes equal the published configs: parameter counts from transformers' own models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from t5prompt.models import SIZES, T5
from t5prompt.models.sizes import HUB_IDS, num_params


def _hf_config(config):
  return transformers.T5Config(
      vocab_size=config.vocab_size, d_model=config.d_model, d_kv=config.d_kv, d_ff=config.d_ff,
      num_heads=config.num_heads, num_layers=config.num_encoder_layers,
      feed_forward_proj=config.feed_forward_proj,
      tie_word_embeddings=config.tie_word_embeddings)


@pytest.mark.parametrize('name', sorted(SIZES))
def test_parameter_count_equals_transformers_and_our_tree(name):
  config = SIZES[name]
  with torch.device('meta'):
    hf = transformers.T5ForConditionalGeneration(_hf_config(config))
  if not config.tie_word_embeddings:  # transformers 5 ties at construction; v1.1 checkpoints don't
    hf_count = sum(p.numel() for p in hf.parameters()) + config.vocab_size * config.d_model
  else:
    hf_count = sum(p.numel() for p in hf.parameters())
  tokens = jnp.ones((1, 1), jnp.int32)
  shapes = jax.eval_shape(lambda: T5(config).init(jax.random.key(0), tokens, tokens))
  ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes['params'])))
  assert ours == hf_count == num_params(config)


def test_published_counts():
  assert num_params(SIZES['t5-small']) == 60_506_624
  assert num_params(SIZES['t5-v1_1-small']) == 76_961_152
  assert 11.0e9 < num_params(SIZES['t5-v1_1-xxl']) < 11.4e9
  assert set(HUB_IDS) == {name for name in SIZES if not name.startswith(('tiny', 'ladder'))}
