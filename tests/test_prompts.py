"""The soft prompt module and its initialisers: shapes, the values each must take, the record."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import transformers

from conftest import init_params, make_hf_t5
from t5prompt.data.vocab import get_vocabulary
from t5prompt.models import T5, get_size
from t5prompt.prompts import SoftPrompt, make_initializer

D_MODEL = 16
EMBEDDING = np.random.RandomState(0).normal(size=(32128, D_MODEL)).astype(np.float32)


def test_soft_prompt_prepends_and_widens_the_mask():
  embedded = jnp.arange(2 * 3 * D_MODEL, dtype=jnp.float32).reshape(2, 3, D_MODEL)
  mask = jnp.array([[True, True, False], [True, False, False]])
  module = SoftPrompt(4)
  variables = module.init(jax.random.key(0), embedded, mask)
  prompt = variables['params']['prompt'].value  # boxed with its logical axes
  assert variables['params']['prompt'].names == ('prompt', 'prompt_embed')
  out, out_mask = module.apply(variables, embedded, mask)
  assert out.shape == (2, 7, D_MODEL) and out_mask.shape == (2, 7)
  np.testing.assert_array_equal(out[:, :4], np.broadcast_to(prompt, (2, 4, D_MODEL)))
  np.testing.assert_array_equal(out[:, 4:], embedded)
  np.testing.assert_array_equal(out_mask[:, :4], True)
  np.testing.assert_array_equal(out_mask[:, 4:], mask)
  assert np.abs(prompt).max() <= 0.5 and np.abs(prompt).max() > 0.4  # U[-0.5, 0.5]


def test_prompted_model_equals_backbone_on_prompt_plus_input_embeddings():
  """A prompt is exactly extra input positions: feeding [P; E(x)] by hand gives the same output."""
  config = get_size('tiny-v1_1')
  tokens = jnp.array([[5, 6, 7, 1, 0]], jnp.int32)
  model = T5(config, prompt=SoftPrompt(3))
  params = init_params(model, tokens, tokens)
  encoded, mask = model.apply({'params': params}, tokens, method=T5.encode)
  backbone = T5(config)
  embedded = params['token_embedder']['embedding'][tokens]
  manual = jnp.concatenate([params['prompt']['prompt'][None], embedded], axis=1)
  manual_mask = jnp.concatenate([jnp.ones((1, 3), bool), tokens > 0], axis=1)
  expected = backbone.apply({'params': params}, manual, manual_mask,
                            method=lambda m, e, k: m.encoder(e, k))
  assert encoded.shape == (1, 8, config.d_model)
  np.testing.assert_array_equal(mask, manual_mask)
  np.testing.assert_allclose(encoded, expected, atol=1e-6)


def test_prompt_length_must_be_positive():
  with pytest.raises(ValueError, match='prompt_length must be positive'):
    SoftPrompt(0).init(jax.random.key(0), jnp.zeros((1, 2, D_MODEL)), jnp.ones((1, 2), bool))


def test_random_uniform():
  init, record = make_initializer('random_uniform', embedding=EMBEDDING)
  prompt = np.asarray(init(jax.random.key(1), (100, D_MODEL)))
  assert prompt.shape == (100, D_MODEL) and prompt.dtype == np.float32
  assert -0.5 <= prompt.min() < -0.45 and 0.45 < prompt.max() <= 0.5
  assert record == {'name': 'random_uniform', 'range': [-0.5, 0.5]}


def test_sampled_vocab_rows_are_distinct_frequent_token_embeddings():
  init, record = make_initializer('sampled_vocab', embedding=EMBEDDING)
  prompt = np.asarray(init(jax.random.key(2), (50, D_MODEL)))
  # Every row is an embedding of one of the 5,000 most frequent ordinary tokens (ids 3..5002).
  distances = ((prompt[:, None] - EMBEDDING[None]) ** 2).sum(-1)
  ids = distances.argmin(axis=1)
  np.testing.assert_array_equal(distances[np.arange(50), ids], 0)
  assert ids.min() >= 3 and ids.max() < 5003 and len(set(ids)) == 50
  assert record == {'name': 'sampled_vocab', 'population': 5000}
  different = np.asarray(init(jax.random.key(3), (50, D_MODEL)))
  assert not np.array_equal(prompt, different)


def test_class_label_rows_are_label_embeddings_averaged_over_tokens():
  vocabulary = get_vocabulary()
  labels = ('entailment', 'not_entailment')
  init, record = make_initializer('class_label', embedding=EMBEDDING, vocabulary=vocabulary,
                                  labels=labels)
  prompt = np.asarray(init(jax.random.key(0), (10, D_MODEL)))
  assert record['name'] == 'class_label' and record['labels'] == list(labels)
  for row, label in enumerate(labels):
    ids = vocabulary.encode(label)
    assert len(ids) > 1  # both are multi-token: the row is the mean
    np.testing.assert_allclose(prompt[row], EMBEDDING[ids].mean(axis=0), atol=1e-6)
    assert record['label_token_ids'][row] == ids
  rest = ((prompt[2:, None] - EMBEDDING[None, 3:5003]) ** 2).sum(-1).min(axis=1)
  np.testing.assert_array_equal(rest, 0)  # the remaining rows come from the vocabulary
  with pytest.raises(ValueError, match='2 labels but the prompt has only 1'):
    init(jax.random.key(0), (1, D_MODEL))


def test_text_init_equals_peft_text_init(tmp_path, shared_data):
  """PEFT's TEXT init with the T5 tokenizer: the text's tokens + EOS, repeated to length."""
  shutil.copy(shared_data / 't5_spm' / 'sentencepiece.model', tmp_path / 'spiece.model')
  transformers.T5Tokenizer.from_pretrained(tmp_path, extra_ids=100).save_pretrained(tmp_path)
  text = 'Is the premise entailing the hypothesis?'
  hf = make_hf_t5(vocab_size=32128, d_model=8, d_kv=4, d_ff=8, num_heads=2, num_layers=1)
  reference = peft.get_peft_model(hf, peft.PromptTuningConfig(
      task_type='SEQ_2_SEQ_LM', num_virtual_tokens=20, num_transformer_submodules=1,
      prompt_tuning_init='TEXT', prompt_tuning_init_text=text,
      tokenizer_name_or_path=str(tmp_path)))
  expected = reference.prompt_encoder['default'].embedding.weight.detach().numpy()
  embedding = hf.shared.weight.detach().numpy()
  init, record = make_initializer('text', embedding=embedding, vocabulary=get_vocabulary(),
                                  init_text=text)
  np.testing.assert_array_equal(np.asarray(init(jax.random.key(0), (20, 8))), expected)
  assert record['name'] == 'text' and record['text'] == text and record['token_ids'][-1] == 1


def test_text_longer_than_prompt_is_an_error():
  init, _ = make_initializer('text', embedding=EMBEDDING, vocabulary=get_vocabulary(),
                             init_text='one two three four five six seven eight')
  with pytest.raises(ValueError, match='init text has 9 tokens but the prompt has only 4'):
    init(jax.random.key(0), (4, D_MODEL))


def test_file_init_roundtrip_and_shape_check(tmp_path):
  saved = np.random.RandomState(5).normal(size=(6, D_MODEL)).astype(np.float32)
  np.save(tmp_path / 'prompt.npy', saved)
  init, record = make_initializer('file', embedding=EMBEDDING, path=tmp_path / 'prompt.npy')
  np.testing.assert_array_equal(np.asarray(init(jax.random.key(0), (6, D_MODEL))), saved)
  assert record == {'name': 'file', 'path': str(tmp_path / 'prompt.npy')}
  with pytest.raises(ValueError, match=r'shape \(6, 16\) but this run needs \(8, 16\)'):
    init(jax.random.key(0), (8, D_MODEL))
  with pytest.raises(FileNotFoundError, match='No prompt file'):
    make_initializer('file', embedding=EMBEDDING, path=tmp_path / 'missing.npy')


def test_unknown_init_lists_the_choices():
  with pytest.raises(ValueError, match='random_uniform, sampled_vocab, class_label, text, file'):
    make_initializer('zeros', embedding=EMBEDDING)
