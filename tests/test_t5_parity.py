"""The Flax T5 computes what transformers' PyTorch T5 computes, on the same weights."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from conftest import hf_logits, init_params, make_hf_t5, random_batch, save_as_hub_v4
from t5prompt.models import T5, convert, load_hf, save_hf
from t5prompt.models.t5 import relative_position_buckets

TOLERANCE = 1e-4  # fp32, max |Δ| of logits

# name -> (HF config kwargs, untied head, save as the hub's 4.x format)
CONFIGS = {
    'v1_0_tied_relu': (dict(vocab_size=120, d_model=32, d_kv=8, d_ff=64, num_heads=4,
                            num_layers=2, feed_forward_proj='relu'), False, False),
    'v1_1_untied_gated_hub_format': (dict(vocab_size=120, d_model=32, d_kv=8, d_ff=48, num_heads=4,
                                          num_layers=2, feed_forward_proj='gated-gelu',
                                          tie_word_embeddings=False), True, True),
    'v1_1_transformers5_tied_unscaled': (dict(vocab_size=120, d_model=32, d_kv=8, d_ff=48,
                                              num_heads=4, num_layers=2,
                                              feed_forward_proj='gated-gelu',
                                              tie_word_embeddings=False), False, False),
    'odd_heads_dkv_not_dmodel_over_heads': (dict(vocab_size=97, d_model=30, d_kv=7, d_ff=50,
                                                 num_heads=3, num_layers=3, num_decoder_layers=2,
                                                 feed_forward_proj='gated-gelu',
                                                 tie_word_embeddings=False), True, True),
    'few_buckets_short_distance': (dict(vocab_size=64, d_model=16, d_kv=4, d_ff=24, num_heads=2,
                                        num_layers=1, relative_attention_num_buckets=8,
                                        relative_attention_max_distance=12), False, False),
}


@pytest.fixture(scope='module', params=sorted(CONFIGS))
def checkpoint(request, tmp_path_factory):
  kwargs, untied, hub_format = CONFIGS[request.param]
  model = make_hf_t5(untied_head=untied, **kwargs)
  directory = tmp_path_factory.mktemp(request.param)
  if hub_format:
    save_as_hub_v4(model, directory)
  else:
    model.save_pretrained(directory)
  # The reference is what transformers itself makes of the directory.
  reference = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
  return request.param, reference, directory


def _our_logits(config, params, inputs, decoder_inputs):
  return np.asarray(jax.jit(lambda p, x, y: T5(config).apply({'params': p}, x, y))(
      params, jnp.asarray(inputs), jnp.asarray(decoder_inputs)))


def test_logits_match_transformers_scanned_and_unscanned(checkpoint):
  name, model, directory = checkpoint
  # 150 input positions reach the logarithmic buckets (max_distance 128) in every config.
  inputs, decoder_inputs = random_batch(model.config.vocab_size, 3, 150, 20)
  reference = hf_logits(model, inputs, decoder_inputs)
  config, scanned_params = load_hf(directory)
  assert config.scan_layers and 'layers' in scanned_params['encoder']
  scanned = _our_logits(config, scanned_params, inputs, decoder_inputs)
  unscanned_config, params = load_hf(directory, scan_layers=False)
  assert 'layers_0' in params['encoder']
  unscanned = _our_logits(unscanned_config, params, inputs, decoder_inputs)
  assert scanned.shape == reference.shape == (3, 20, model.config.vocab_size)
  assert np.abs(scanned - reference).max() <= TOLERANCE, name
  assert np.abs(unscanned - scanned).max() <= 1e-5, name
  untied = 'lm_head.weight' in model.state_dict() and not torch.equal(
      model.lm_head.weight, model.shared.weight)
  assert config.tie_word_embeddings == (not untied)
  assert config.scale_decoder_outputs == model.config.scale_decoder_outputs


def test_round_trip_back_to_transformers(checkpoint, tmp_path):
  name, model, directory = checkpoint
  config, params = load_hf(directory)
  save_hf(tmp_path / 'back', config, params)
  reloaded = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / 'back').eval()
  inputs, decoder_inputs = random_batch(model.config.vocab_size, 2, 12, 7, seed=1)
  np.testing.assert_array_equal(hf_logits(reloaded, inputs, decoder_inputs),
                                hf_logits(model, inputs, decoder_inputs), err_msg=name)
  # And our own format: same tensors, same hash.
  digest = convert.save_t5prompt(tmp_path / 'ours', config, params)
  config_2, params_2 = convert.load_backbone(str(tmp_path / 'ours'))
  assert config_2 == config
  assert convert.params_hash(params_2) == digest == convert.params_hash(params)
  assert 'layers' in params_2['encoder']


def test_relative_position_buckets_equal_reference():
  bucket = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
  for bidirectional in (True, False):
    for num_buckets, max_distance in ((32, 128), (8, 20), (16, 64)):
      ours = relative_position_buckets(600, 600, bidirectional=bidirectional,
                                       num_buckets=num_buckets, max_distance=max_distance)
      positions = torch.arange(600)
      relative = positions[None, :] - positions[:, None]
      reference = bucket(relative, bidirectional=bidirectional, num_buckets=num_buckets,
                         max_distance=max_distance).numpy()
      np.testing.assert_array_equal(ours, reference)


def test_sharded_safetensors_and_pytorch_bin_load_the_same(tmp_path):
  model = make_hf_t5(untied_head=True, vocab_size=120, d_model=32, d_kv=8, d_ff=48, num_heads=4,
                     num_layers=2, feed_forward_proj='gated-gelu')
  save_as_hub_v4(model, tmp_path / 'single')
  save_as_hub_v4(model, tmp_path / 'sharded', max_shard_size='20KB')
  assert (tmp_path / 'sharded' / 'model.safetensors.index.json').exists()
  (tmp_path / 'bin').mkdir()
  state = {k: v.contiguous() for k, v in model.state_dict().items()}
  torch.save(state, tmp_path / 'bin' / 'pytorch_model.bin')
  (tmp_path / 'bin' / 'config.json').write_text((tmp_path / 'single' / 'config.json').read_text())
  hashes = {kind: convert.params_hash(load_hf(tmp_path / kind, scan_layers=False)[1])
            for kind in ('single', 'sharded', 'bin')}
  assert len(set(hashes.values())) == 1, hashes


def test_bfloat16_compute_stays_close_and_params_stay_float32(tmp_path):
  model = make_hf_t5(vocab_size=120, d_model=32, d_kv=8, d_ff=64, num_heads=4, num_layers=2)
  model.save_pretrained(tmp_path)
  config, params = load_hf(tmp_path, dtype='bfloat16')
  inputs, decoder_inputs = random_batch(120, 2, 16, 8)
  logits = _our_logits(config, params, inputs, decoder_inputs)
  assert logits.dtype == np.float32
  reference = hf_logits(model, inputs, decoder_inputs)
  assert np.abs(logits - reference).max() <= 0.05 * np.abs(reference).max()
  tokens = jnp.ones((1, 4), jnp.int32)
  initialised = init_params(T5(config), tokens, tokens)
  assert {leaf.dtype for leaf in jax.tree.leaves(initialised)} == {np.dtype('float32')}


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_remat_gives_the_same_logits_and_gradients(tmp_path):
  model = make_hf_t5(vocab_size=120, d_model=32, d_kv=8, d_ff=64, num_heads=4, num_layers=2)
  model.save_pretrained(tmp_path)
  inputs, decoder_inputs = random_batch(120, 2, 16, 8)

  def loss_and_grad(remat_policy):
    config, params = load_hf(tmp_path, remat_policy=remat_policy)
    loss = lambda p: T5(config).apply({'params': p}, inputs, decoder_inputs).mean()
    return jax.value_and_grad(loss)(params)

  plain, remat = loss_and_grad('none'), loss_and_grad('full')
  np.testing.assert_allclose(remat[0], plain[0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(plain[1]), jax.tree.leaves(remat[1])):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_params_carry_logical_axes():
  config = convert.T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=24, num_heads=2,
                            num_encoder_layers=2, num_decoder_layers=2,
                            feed_forward_proj='gated-gelu', tie_word_embeddings=False)
  tokens = jnp.ones((1, 4), jnp.int32)
  boxed = jax.eval_shape(lambda: T5(config).init(jax.random.key(0), tokens, tokens))['params']
  axes = jax.tree_util.tree_map(lambda x: x.names, boxed,
                                is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert axes['token_embedder']['embedding'] == ('vocab', 'embed')
  layer = axes['encoder']['layers']
  assert layer['attention']['query']['kernel'] == ('layers', 'embed', 'heads', 'kv')
  assert layer['attention']['out']['kernel'] == ('layers', 'heads', 'kv', 'embed')
  assert layer['mlp']['wi_0']['kernel'] == ('layers', 'embed', 'mlp')
  assert layer['mlp']['wo']['kernel'] == ('layers', 'mlp', 'embed')
  assert axes['decoder']['relpos_bias']['rel_embedding'] == ('heads', 'relpos_buckets')
  assert axes['decoder']['logits_dense']['kernel'] == ('embed', 'vocab')


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_dropout_only_when_enabled():
  config = convert.T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=24, num_heads=2,
                            num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.5)
  inputs, decoder_inputs = random_batch(64, 2, 8, 4)
  model = T5(config)
  params = nn.unbox(model.init(jax.random.key(0), inputs, decoder_inputs)['params'])
  plain = model.apply({'params': params}, inputs, decoder_inputs)
  np.testing.assert_array_equal(plain, model.apply({'params': params}, inputs, decoder_inputs))

  def dropped(seed):
    return model.apply({'params': params}, inputs, decoder_inputs, enable_dropout=True,
                       rngs={'dropout': jax.random.key(seed)})
  assert np.abs(dropped(1) - plain).max() > 1e-3
  assert np.abs(dropped(1) - dropped(2)).max() > 1e-3
  np.testing.assert_array_equal(dropped(1), dropped(1))
