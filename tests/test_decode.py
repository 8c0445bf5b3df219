"""Greedy/beam decoding with the KV cache equals transformers' generate and uncached decoding."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from conftest import make_hf_t5
from t5prompt.models import T5, load_hf
from t5prompt.models import decode

MAX_LENGTH = 12


@pytest.fixture(scope='module', params=['v1_0', 'v1_1'])
def model_and_checkpoint(request, tmp_path_factory):
  gated = request.param == 'v1_1'
  # Large random weights (std 0.5) and a small vocabulary make outputs vary; the seeds are
  # ones where one of the six sequences ends with EOS before the length limit.
  hf = make_hf_t5(seed=0 if gated else 5, init_std=0.5, untied_head=gated, vocab_size=40, d_model=24, d_kv=6,
                  d_ff=40, num_heads=3, num_layers=2,
                  feed_forward_proj='gated-gelu' if gated else 'relu',
                  tie_word_embeddings=not gated, relative_attention_num_buckets=8,
                  relative_attention_max_distance=16)
  directory = tmp_path_factory.mktemp(request.param)
  hf.save_pretrained(directory)
  hf = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
  return hf, directory


def _inputs():
  rng = np.random.RandomState(7)
  inputs = rng.randint(2, 40, (6, 10)).astype(np.int32)
  inputs[2, 6:] = 0
  inputs[4, 3:] = 0
  return inputs


def _hf_generate(hf, inputs, **kwargs):
  with torch.no_grad():
    out = hf.generate(input_ids=torch.tensor(inputs, dtype=torch.long),
                      attention_mask=torch.tensor(inputs > 0, dtype=torch.long),
                      max_new_tokens=MAX_LENGTH, do_sample=False, return_dict_in_generate=True,
                      output_scores=True, **kwargs)
  sequences = out.sequences.numpy()[:, 1:]  # drop the start token
  return np.pad(sequences, ((0, 0), (0, MAX_LENGTH - sequences.shape[1]))), out


@pytest.mark.parametrize('scan_layers', [True, False])
def test_greedy_cached_equals_generate_and_uncached(model_and_checkpoint, scan_layers):
  hf, directory = model_and_checkpoint
  config, params = load_hf(directory, scan_layers=scan_layers)
  model, inputs = T5(config), _inputs()
  cached = np.asarray(decode.greedy_decode(model, params, jnp.asarray(inputs), MAX_LENGTH))
  uncached = np.asarray(decode.greedy_decode_uncached(model, params, jnp.asarray(inputs),
                                                      MAX_LENGTH))
  reference, _ = _hf_generate(hf, inputs, num_beams=1)
  np.testing.assert_array_equal(cached, reference)
  np.testing.assert_array_equal(cached, uncached)
  assert len(np.unique(cached)) > 3  # outputs are not degenerate


def test_greedy_stops_at_eos_and_pads_after_it(model_and_checkpoint):
  _, directory = model_and_checkpoint
  config, params = load_hf(directory)
  out = np.asarray(decode.greedy_decode(T5(config), params, jnp.asarray(_inputs()), MAX_LENGTH))
  finished = [row for row in out if (row == decode.EOS_ID).any()]
  assert finished, 'no sequence emitted EOS; pick another seed'
  for row in finished:
    eos = int(np.argmax(row == decode.EOS_ID))
    assert (row[eos + 1:] == 0).all()


@pytest.mark.parametrize('scan_layers', [True, False])
def test_beam_search_equals_generate(model_and_checkpoint, scan_layers):
  hf, directory = model_and_checkpoint
  config, params = load_hf(directory, scan_layers=scan_layers)
  inputs = _inputs()
  sequences, scores = decode.beam_search(T5(config), params, jnp.asarray(inputs), MAX_LENGTH,
                                         num_beams=4)
  reference, out = _hf_generate(hf, inputs, num_beams=4)
  np.testing.assert_array_equal(np.asarray(sequences), reference)
  np.testing.assert_allclose(np.asarray(scores), out.sequences_scores.numpy(), atol=1e-4)


def test_score_targets_equals_transformers_loss(model_and_checkpoint):
  hf, directory = model_and_checkpoint
  config, params = load_hf(directory)
  inputs = _inputs()
  targets = np.random.RandomState(1).randint(2, 40, (6, 5)).astype(np.int32)
  targets[1, 3:] = 0
  scores = np.asarray(decode.score_targets(T5(config), params, jnp.asarray(inputs),
                                           jnp.asarray(targets)))
  for row in range(len(inputs)):
    length = int((targets[row] > 0).sum())
    with torch.no_grad():
      loss = hf(input_ids=torch.tensor(inputs[row:row + 1], dtype=torch.long),
                attention_mask=torch.tensor(inputs[row:row + 1] > 0, dtype=torch.long),
                labels=torch.tensor(targets[row:row + 1, :length], dtype=torch.long)).loss
    np.testing.assert_allclose(scores[row], -loss.item() * length, rtol=1e-5, atol=1e-4)
