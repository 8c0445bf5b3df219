"""Rank classification and decode-and-match agree on a model whose outputs are forced; decoded
texts outside the label set are counted as invalid."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import traverse_util

from conftest import random_t5_params
from t5prompt.data import pipeline
from t5prompt.data.tasks import get_task_spec
from t5prompt.data.vocab import get_vocabulary
from t5prompt.evaluate import predict
from t5prompt.metrics import compute
from t5prompt.models import T5, get_size


def forced_model(text: str):
  """A tiny T5 whose decoder ignores everything but its current input token and emits the
  tokens of `text` then EOS: every attention output and MLP output in the decoder is zeroed,
  so its final state is the input token's embedding, and the LM head maps each chain token's
  (one-hot) embedding to the next token of the chain with a large logit."""
  config = get_size('tiny-v1_1').replace(dropout_rate=0.0)
  params = jax.tree.map(np.array, random_t5_params(config))  # writable copies
  flat = traverse_util.flatten_dict(params, sep='/')
  for path in flat:
    if path.startswith('decoder/') and path.endswith(('out/kernel', 'wo/kernel')):
      flat[path] = np.zeros_like(flat[path])
  chain = [0] + list(get_vocabulary().encode(text)) + [1]
  embedding, head = flat['token_embedder/embedding'], flat['decoder/logits_dense/kernel']
  head[:] = 0
  for position, (token, following) in enumerate(zip(chain[:-1], chain[1:])):
    embedding[token] = np.eye(config.d_model)[position]
    head[position, following] = 100.0
  return T5(config), traverse_util.unflatten_dict(flat, sep='/')


@pytest.fixture(scope='module')
def cb_dev():
  return get_task_spec('superglue_cb'), pipeline.load_tokenized('superglue_cb', 'validation',
                                                               128, 8)


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
@pytest.mark.parametrize('label', ['entailment', 'contradiction', 'neutral'])
def test_rank_and_decode_agree_on_forced_outputs(label, cb_dev):
  spec, data = cb_dev
  model, params = forced_model(label)
  vocabulary = get_vocabulary()
  by_rank = predict(model, params, data, spec, vocabulary, batch_size=16)
  by_decode = predict(model, params, data, dataclasses.replace(spec, eval_mode='decode'),
                      vocabulary, batch_size=16)
  expected = spec.label_names.index(label)
  np.testing.assert_array_equal(by_rank, expected)
  np.testing.assert_array_equal(by_decode, expected)
  result = compute('cb', by_decode, data.records)
  assert result['accuracy'] == pytest.approx(100 * np.mean(data.labels == expected))
  assert result['invalid_rate'] == 0.0


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_text_outside_the_label_set_is_invalid_when_decoding(cb_dev):
  spec, data = cb_dev
  model, params = forced_model('maybe so')
  by_decode = predict(model, params, data, dataclasses.replace(spec, eval_mode='decode'),
                      get_vocabulary(), batch_size=16)
  assert (by_decode == -1).all()
  result = compute('cb', by_decode, data.records)
  assert result['invalid_rate'] == 100.0 and result['accuracy'] == 0.0
  # Rank classification can never be invalid: it always picks one of the labels.
  by_rank = predict(model, params, data, spec, get_vocabulary(), batch_size=16)
  assert set(by_rank.tolist()) <= {0, 1, 2}


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_qa_decoding_feeds_squad_metrics():
  spec = get_task_spec('mrqa_drop')
  data = pipeline.load_tokenized('mrqa_drop', 'validation', 64, 32)
  model, params = forced_model('The 49ers')  # the first DROP question's answer
  texts = predict(model, params, data, spec, get_vocabulary(), batch_size=8, max_examples=8)
  assert texts == ['The 49ers'] * 8
  result = compute('squad', texts, data.records[:8])
  assert result['em'] >= 12.5  # at least the first question is exactly right
