"""Prompt tuning equals PEFT's on the same PyTorch T5, and prompts cross over in PEFT's format."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers

from conftest import hub_v11_backbone, random_batch
from t5prompt import cli, optim
from t5prompt.prompts import peft_format
from t5prompt.prompts.methods import build_model
from t5prompt.build import make_loss_fn
from t5prompt.prompts import methods

TOLERANCE = 1e-4  # fp32, max |Δ| of loss, gradients and logits
PROMPT_LENGTH = 5
@pytest.fixture(scope='module')
def backbone(tmp_path_factory):
  return hub_v11_backbone(tmp_path_factory.mktemp('hf_t5'), seed=3)


def _peft_model(directory, prompt=None):
  base = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
  model = peft.get_peft_model(base, peft.PromptTuningConfig(
      task_type='SEQ_2_SEQ_LM', num_virtual_tokens=PROMPT_LENGTH, num_transformer_submodules=1))
  if prompt is not None:
    with torch.no_grad():
      model.prompt_encoder['default'].embedding.weight.copy_(torch.tensor(prompt))
  return model.eval()


def _batch(vocab_size):
  inputs, _ = random_batch(vocab_size, batch=3, input_length=9, target_length=4, seed=1)
  targets = np.random.RandomState(2).randint(2, vocab_size, (3, 4)).astype(np.int32)
  targets[1, 2:] = 0  # padded targets are ignored by both losses
  return inputs, targets


def test_loss_and_prompt_gradient_equal_peft(backbone):
  directory, config, params = backbone
  prompt = np.random.RandomState(0).uniform(-0.5, 0.5, (PROMPT_LENGTH, config.d_model))
  inputs, targets = _batch(config.vocab_size)

  reference = _peft_model(directory, prompt.astype(np.float32))
  labels = torch.tensor(np.where(targets > 0, targets, -100), dtype=torch.long)
  output = reference(input_ids=torch.tensor(inputs, dtype=torch.long),
                     attention_mask=torch.tensor(inputs > 0, dtype=torch.long), labels=labels)
  output.loss.backward()
  reference_grad = reference.prompt_encoder['default'].embedding.weight.grad.numpy()

  model = build_model(config, 'prompt_tuning', PROMPT_LENGTH)
  all_params = {**params, 'prompt': {'prompt': jnp.asarray(prompt, jnp.float32)}}
  trainable, frozen = optim.split_params(all_params, methods.get('prompt_tuning').trainable_rules)
  loss, grads = jax.value_and_grad(make_loss_fn(model))(
      trainable, frozen, {'inputs': inputs, 'targets': targets}, jax.random.key(0))

  print(f'|Δloss|={abs(float(loss) - output.loss.item()):.2e} max|Δgrad|='
        f'{np.abs(np.asarray(grads["prompt"]["prompt"]) - reference_grad).max():.2e}')
  assert abs(float(loss) - output.loss.item()) <= TOLERANCE
  assert list(grads) == ['prompt']  # only the prompt is differentiated
  np.testing.assert_allclose(np.asarray(grads['prompt']['prompt']), reference_grad,
                             atol=TOLERANCE, rtol=0)
  assert np.abs(reference_grad).max() > 1e-3  # a real gradient, not two zeros


INIT_RECORDS = [  # what a run's prompt.json says of each init
    {'name': 'random_uniform', 'range': [-0.5, 0.5]}, {'name': 'sampled_vocab', 'population': 50},
    {'name': 'class_label', 'labels': ['entailment', 'not_entailment']},
    {'name': 'text', 'text': 'Is it true?', 'token_ids': [27, 19, 1]},
    {'name': 'file', 'path': 'prompts/rte.npy'}]


@pytest.mark.parametrize('init', INIT_RECORDS, ids=lambda init: init['name'])
def test_exported_adapter_loads_in_peft_with_equal_logits(backbone, tmp_path, init):
  """Every init exports an adapter PEFT loads (PEFT would re-tokenize a TEXT init's text, so
  the adapter config says RANDOM: the weights are what count) with the same outputs, and the
  real init is kept in t5prompt's own record."""
  directory, config, params = backbone
  prompt = np.random.RandomState(1).normal(0, 1, (PROMPT_LENGTH, config.d_model))
  peft_format.export_peft(tmp_path / 'adapter', prompt, config, str(directory),
                          {'init': init, 'task': 'superglue_rte'})
  base = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
  loaded = peft.PeftModel.from_pretrained(base, tmp_path / 'adapter').eval()
  assert loaded.peft_config['default'].num_transformer_submodules == 1
  inputs, targets = _batch(config.vocab_size)
  decoder_inputs = np.pad(targets, ((0, 0), (1, 0)))[:, :-1]
  with torch.no_grad():
    reference = loaded(input_ids=torch.tensor(inputs, dtype=torch.long),
                       attention_mask=torch.tensor(inputs > 0, dtype=torch.long),
                       decoder_input_ids=torch.tensor(decoder_inputs, dtype=torch.long)).logits
  model = build_model(config, 'prompt_tuning', PROMPT_LENGTH)
  ours = model.apply({'params': {**params, 'prompt': {'prompt': jnp.asarray(prompt, jnp.float32)}}},
                     inputs, decoder_inputs)
  np.testing.assert_allclose(np.asarray(ours), reference.numpy(), atol=TOLERANCE, rtol=0)
  # t5prompt's own record sits beside PEFT's config, which would drop unknown keys.
  record = json.loads((tmp_path / 'adapter' / peft_format.T5PROMPT_RECORD).read_text())
  assert record['init'] == init


def test_import_peft_reads_a_peft_saved_adapter(backbone, tmp_path):
  directory, config, _ = backbone
  reference = _peft_model(directory)
  reference.save_pretrained(tmp_path / 'from_peft')
  expected = reference.prompt_encoder['default'].embedding.weight.detach().numpy()

  assert cli.main(['import-peft', str(tmp_path / 'from_peft'), '--output',
                   str(tmp_path / 'prompt.npy'), '--d-model', str(config.d_model)]) == 0
  np.testing.assert_array_equal(np.load(tmp_path / 'prompt.npy'), expected)
  # And back out: our export of the imported prompt holds the same bytes.
  peft_format.export_peft(tmp_path / 'again', np.load(tmp_path / 'prompt.npy'), config, 'x')
  again, _ = peft_format.import_peft(tmp_path / 'again', config.d_model)
  np.testing.assert_array_equal(again, expected)


def test_import_refuses_other_width_and_decoder_prompts(backbone, tmp_path, capsys):
  directory, config, _ = backbone
  _peft_model(directory).save_pretrained(tmp_path / 'adapter')
  code = cli.main(['import-peft', str(tmp_path / 'adapter'), '--output',
                   str(tmp_path / 'p.npy'), '--d-model', '64'])
  assert code == 2
  error = capsys.readouterr().err
  assert 'd_model=32' in error and 'd_model=64' in error
  assert not (tmp_path / 'p.npy').exists()

  base = transformers.T5ForConditionalGeneration.from_pretrained(directory)
  both = peft.get_peft_model(base, peft.PromptTuningConfig(
      task_type='SEQ_2_SEQ_LM', num_virtual_tokens=PROMPT_LENGTH))  # PEFT's default: 2 submodules
  both.save_pretrained(tmp_path / 'both')
  with pytest.raises(ValueError, match='num_transformer_submodules: 2'):
    peft_format.import_peft(tmp_path / 'both', config.d_model)
  prompt, _ = peft_format.import_peft(tmp_path / 'both', config.d_model, encoder_rows_only=True)
  np.testing.assert_array_equal(
      prompt, both.prompt_encoder['default'].embedding.weight.detach().numpy()[:PROMPT_LENGTH])
