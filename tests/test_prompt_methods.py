"""Prefix tuning, deep prompts and P-tuning: parity with PEFT on the same PyTorch T5, folding,
cached decoding, per-layer lengths, and the frozen backbone.

PEFT's layouts, and how ours map onto them:
  * PrefixTuningConfig on T5 feeds its prefixes as `past_key_values`, which T5 passes to the
    decoder only, and PEFT empties the cross-attention cache: only decoder self-attention gets
    prefixes. The parity tests therefore use `attention=('decoder_self',)` (our default also
    prefixes encoder self- and decoder cross-attention).
  * PEFT's prefix output is [P, L slots, 2 (key, value), heads, d_kv]. With PEFT's seq2seq
    default (num_transformer_submodules=2) it is duplicated and cut in chunks of four, so decoder
    layer i reads slot (2i mod L): with L layers, layers i and i + L/2 share a slot and the odd
    slots are computed but never used. Our prefix has one slot per layer; the test maps ours
    onto PEFT's and sums our per-layer gradients per PEFT slot.
  * num_transformer_submodules=1 is no reference: transformers 5's T5 then appends the encoder's
    keys to the same cache in cross-attention. So the export writes submodules=2 with
    num_layers=2L: chunk i is then exactly slots (2i, 2i+1), and slot 2i holds our layer i.
  * PromptEncoderConfig with 2 submodules runs its encoder over 2P tokens and keeps the first P
    for the encoder; with 1 (used here; no cache involved) it encodes the P tokens it prepends.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers
from flax import linen as nn

from conftest import REPO, hf_logits, hub_v11_backbone, random_batch
from t5prompt import cli, optim, plan
from t5prompt.models import get_size
from t5prompt.models import decode
from t5prompt.prompts import peft_format
from t5prompt.prompts.methods import build_model, exported_prompt, for_inference
from t5prompt.prompts.prefix import ATTENTION_KINDS
from t5prompt.run_config import load_config
from t5prompt.build import make_loss_fn
from t5prompt.prompts import methods
from t5prompt.evaluate import evaluate_run
from t5prompt.train import train

TOLERANCE = 1e-4  # fp32, max |Δ| of loss, gradients and logits
LENGTH = 3
HIDDEN = 16
@pytest.fixture(scope='module')
def backbone(tmp_path_factory):
  return hub_v11_backbone(tmp_path_factory.mktemp('hf_t5'), seed=5)


def _batch(vocab_size):
  inputs, _ = random_batch(vocab_size, batch=3, input_length=9, target_length=4, seed=1)
  targets = np.random.RandomState(2).randint(2, vocab_size, (3, 4)).astype(np.int32)
  targets[1, 2:] = 0
  return inputs, targets


def _peft_loss_and_grads(model, inputs, targets):
  torch.manual_seed(0)
  labels = torch.tensor(np.where(targets > 0, targets, -100), dtype=torch.long)
  output = model(input_ids=torch.tensor(inputs, dtype=torch.long),
                 attention_mask=torch.tensor(inputs > 0, dtype=torch.long), labels=labels)
  output.loss.backward()
  grads = {name.split('default.')[1]: param.grad.numpy()
           for name, param in model.named_parameters() if param.requires_grad}
  return output.loss.item(), grads


def _our_loss_and_grads(model, backbone_params, subtree, method_params, inputs, targets):
  params = {**backbone_params, subtree: jax.tree.map(jnp.asarray, method_params)}
  trainable, frozen = optim.split_params(params, methods.get(
      'prefix_tuning' if subtree == 'prefix' else 'p_tuning').trainable_rules)
  loss, grads = jax.value_and_grad(make_loss_fn(model))(
      trainable, frozen, {'inputs': inputs, 'targets': targets}, jax.random.key(0))
  return float(loss), jax.tree.map(np.asarray, grads[subtree])


def _peft_slots(layers):
  return [(2 * i) % layers for i in range(layers)]  # decoder layer i reads PEFT slot 2i mod L


def _prefix_from_peft(weights, layers, heads, d_kv, projection):
  """PEFT PrefixEncoder weights (num_transformer_submodules=2) -> our `prefix/` params."""
  slots = _peft_slots(layers)
  if not projection:
    kv = weights['embedding.weight'].reshape(LENGTH, layers, 2, heads, d_kv)[:, slots]
    return {'decoder_self_key': kv[:, :, 0].transpose(1, 0, 2, 3),
            'decoder_self_value': kv[:, :, 1].transpose(1, 0, 2, 3)}
  hidden = weights['transform.0.weight'].shape[0]
  return {'embedding': weights['embedding.weight'],
          'mlp_in': weights['transform.0.weight'].T, 'mlp_in_bias': weights['transform.0.bias'],
          'decoder_self_out': weights['transform.2.weight'].T.reshape(
              hidden, layers, 2, heads, d_kv)[:, slots],
          'decoder_self_out_bias': weights['transform.2.bias'].reshape(
              layers, 2, heads, d_kv)[slots]}


def _prefix_grads_as_peft(grads, layers, heads, d_kv, projection):
  """Our prefix gradients, summed into PEFT's slots and flattened as PEFT's tensors."""
  slots = _peft_slots(layers)

  def per_slot(per_layer, axis):  # [..., L (at axis), ...] -> summed per slot
    out = np.zeros_like(per_layer)
    for layer, slot in enumerate(slots):
      index = (slice(None),) * axis
      out[index + (slot,)] += per_layer[index + (layer,)]
    return out

  if not projection:
    kv = np.stack([grads['decoder_self_key'], grads['decoder_self_value']], axis=2)  # L P 2 h k
    return {'embedding.weight': per_slot(kv, 0).transpose(1, 0, 2, 3, 4).reshape(LENGTH, -1)}
  return {'embedding.weight': grads['embedding'],
          'transform.0.weight': grads['mlp_in'].T, 'transform.0.bias': grads['mlp_in_bias'],
          'transform.2.weight': per_slot(grads['decoder_self_out'], 1).reshape(
              grads['mlp_in'].shape[1], -1).T,
          'transform.2.bias': per_slot(grads['decoder_self_out_bias'], 0).reshape(-1)}


@pytest.mark.parametrize('projection', [True, False], ids=['prefix_tuning', 'deep_prompts'])
def test_prefix_loss_and_gradients_equal_peft(backbone, projection):
  directory, config, params = backbone
  base = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
  torch.manual_seed(1)
  reference = peft.get_peft_model(base, peft.PrefixTuningConfig(
      task_type='SEQ_2_SEQ_LM', num_virtual_tokens=LENGTH, prefix_projection=projection,
      encoder_hidden_size=HIDDEN))
  assert reference.peft_config['default'].num_transformer_submodules == 2
  weights = {name: param.detach().numpy().copy() for name, param in
             reference.prompt_encoder['default'].named_parameters()}
  inputs, targets = _batch(config.vocab_size)
  peft_loss, peft_grads = _peft_loss_and_grads(reference, inputs, targets)
  peft_grads = {name.replace('prompt_encoder.', ''): grad for name, grad in peft_grads.items()}

  method = 'prefix_tuning' if projection else 'deep_prompt_tuning'
  model = build_model(config, method, LENGTH, attention=('decoder_self',), reparam_hidden=HIDDEN)
  ours = _prefix_from_peft(weights, config.num_decoder_layers, config.num_heads, config.d_kv,
                           projection)
  loss, grads = _our_loss_and_grads(model, params, 'prefix', ours, inputs, targets)
  ours_as_peft = _prefix_grads_as_peft(grads, config.num_decoder_layers, config.num_heads,
                                       config.d_kv, projection)
  print(f'|Δloss|={abs(loss - peft_loss):.2e} max|Δgrad|=' + '{:.2e}'.format(max(
      np.abs(ours_as_peft[name] - grad).max() for name, grad in peft_grads.items())))
  assert abs(loss - peft_loss) <= TOLERANCE
  assert set(ours_as_peft) == set(peft_grads)
  for name, expected in peft_grads.items():
    np.testing.assert_allclose(ours_as_peft[name], expected, atol=TOLERANCE, rtol=0,
                               err_msg=name)
    assert np.abs(expected).max() > 1e-4, name  # real gradients, not two zeros


@pytest.mark.parametrize('kind', [pytest.param('lstm', marks=pytest.mark.slow), 'mlp'])
def test_p_tuning_loss_and_gradients_equal_peft(backbone, kind):
  directory, config, params = backbone
  base = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
  torch.manual_seed(2)
  reference = peft.get_peft_model(base, peft.PromptEncoderConfig(
      task_type='SEQ_2_SEQ_LM', num_virtual_tokens=LENGTH, num_transformer_submodules=1,
      encoder_reparameterization_type=kind.upper(), encoder_hidden_size=HIDDEN))
  weights = {name: param.detach().numpy().copy() for name, param in
             reference.prompt_encoder['default'].named_parameters()}
  inputs, targets = _batch(config.vocab_size)
  peft_loss, peft_grads = _peft_loss_and_grads(reference, inputs, targets)

  model = build_model(config, 'p_tuning', LENGTH, encoder=kind, reparam_hidden=HIDDEN)
  loss, grads = _our_loss_and_grads(model, params, 'prompt', _encoder_from_peft(weights, kind),
                                    inputs, targets)
  expected = _encoder_from_peft({name.replace('prompt_encoder.', ''): grad
                                 for name, grad in peft_grads.items()}, kind, gradients=True)
  print(f'|Δloss|={abs(loss - peft_loss):.2e} max|Δgrad|=' + '{:.2e}'.format(max(
      np.abs(grads[name] - grad).max() for name, grad in expected.items())))
  assert abs(loss - peft_loss) <= TOLERANCE
  assert set(grads) == set(expected)
  for name in expected:
    np.testing.assert_allclose(grads[name], expected[name], atol=TOLERANCE, rtol=0,
                               err_msg=name)
  assert np.abs(expected['embedding']).max() > 1e-4


def _encoder_from_peft(weights, kind, gradients=False):
  """PEFT PromptEncoder weights (or their gradients) -> our `prompt/` params. Our LSTM has one
  bias where torch has two (b_ih + b_hh): its gradient is either torch bias's gradient."""
  ours = {'embedding': weights['embedding.weight']}
  linear = [i for i in (0, 2, 4) if f'mlp_head.{i}.weight' in weights]
  for ours_index, torch_index in enumerate(linear):
    ours[f'mlp_{ours_index}'] = weights[f'mlp_head.{torch_index}.weight'].T
    ours[f'mlp_{ours_index}_bias'] = weights[f'mlp_head.{torch_index}.bias']
  if kind == 'lstm':
    for layer in range(2):
      for direction, suffix in (('forward', ''), ('backward', '_reverse')):
        name = f'lstm_{layer}_{direction}'
        ours[f'{name}_in'] = weights[f'lstm_head.weight_ih_l{layer}{suffix}'].T
        ours[f'{name}_hidden'] = weights[f'lstm_head.weight_hh_l{layer}{suffix}'].T
        ours[f'{name}_bias'] = weights[f'lstm_head.bias_ih_l{layer}{suffix}'] + (
            0 if gradients else weights[f'lstm_head.bias_hh_l{layer}{suffix}'])
  return ours


def _init(model, seed=0):
  tokens = jnp.ones((1, 4), jnp.int32)
  return nn.unbox(jax.jit(model.init)(jax.random.key(seed), tokens, tokens)['params'])


def _tokens(seed, shape, vocab=120):
  tokens = np.random.RandomState(seed).randint(2, vocab, shape).astype(np.int32)
  tokens[0, -2:] = 0  # padding, which both paths must ignore
  return tokens


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
@pytest.mark.parametrize('method', ['prefix_tuning', 'p_tuning'])
def test_folding_the_reparameterisation_keeps_outputs(method):
  config = get_size('tiny-v1_1')
  model = build_model(config, method, LENGTH, reparam_hidden=HIDDEN)
  params = _init(model)
  folded_model, folded = for_inference(model, params)
  assert folded_model.prefix is None or folded_model.prefix.reparam_hidden == 0
  subtree = 'prefix' if method == 'prefix_tuning' else 'prompt'
  assert 'embedding' in params[subtree] and 'embedding' not in folded[subtree]
  inputs, decoder_inputs = _tokens(0, (2, 7)), _tokens(1, (2, 4))
  np.testing.assert_allclose(
      jax.jit(folded_model.apply)({'params': folded}, inputs, decoder_inputs),
      jax.jit(model.apply)({'params': params}, inputs, decoder_inputs), atol=1e-5, rtol=0)
  artefact = exported_prompt(model, {subtree: params[subtree]})
  if method == 'p_tuning':
    assert list(artefact) == ['prompt'] and artefact['prompt'].shape == (LENGTH, config.d_model)
  else:
    assert artefact['encoder_key'].shape == (config.num_encoder_layers, LENGTH, config.num_heads,
                                             config.d_kv)
    assert len(artefact) == 6  # key and value for encoder, decoder self, decoder cross


@pytest.mark.parametrize('layer_lengths', [  # one prefix length for all layers in `-m slow`
    pytest.param((), marks=pytest.mark.slow), (1, 4)], ids=['uniform', 'per_layer'])
def test_cached_decoding_with_prefixes_equals_uncached(layer_lengths):
  config = get_size('tiny-v1_1')
  method = 'deep_prompt_tuning' if layer_lengths else 'prefix_tuning'
  model, params = for_inference(*_with_params(build_model(
      config, method, LENGTH, layer_lengths=layer_lengths, reparam_hidden=HIDDEN)))
  inputs = _tokens(3, (3, 9), vocab=config.vocab_size)
  cached = decode.greedy_decode(model, params, inputs, 6)
  uncached = decode.greedy_decode_uncached(model, params, inputs, 6)
  np.testing.assert_array_equal(np.asarray(cached), np.asarray(uncached))
  # The prefixes matter: without them the decode differs.
  plain = decode.greedy_decode_uncached(build_model(config, 'model_tuning', 0),
                                        {k: v for k, v in params.items() if k != 'prefix'},
                                        inputs, 6)
  assert not np.array_equal(np.asarray(plain), np.asarray(uncached))


def _with_params(model):
  params = _init(model)
  # Large prefixes, so they steer the random model's greedy choices.
  params['prefix'] = jax.tree.map(lambda x: x * 4.0, params['prefix'])
  return model, params


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_per_layer_lengths_mask_the_padding():
  """A layer with a shorter prompt ignores its padded positions, whatever they hold."""
  config = get_size('tiny-v1_1')
  model = build_model(config, 'deep_prompt_tuning', LENGTH, layer_lengths=(1, 3),
                      attention=('encoder',))
  params = _init(model)
  inputs, decoder_inputs = _tokens(0, (2, 7)), _tokens(1, (2, 4))
  logits = model.apply({'params': params}, inputs, decoder_inputs)
  changed = jax.tree.map(lambda x: x, params)
  # Layer 0 uses only the last position; overwrite its two padded ones.
  changed['prefix']['encoder_key'] = params['prefix']['encoder_key'].at[0, :2].set(99.0)
  np.testing.assert_array_equal(model.apply({'params': changed}, inputs, decoder_inputs), logits)
  # ... but not the used one.
  changed['prefix']['encoder_key'] = params['prefix']['encoder_key'].at[0, 2].set(99.0)
  assert not np.allclose(model.apply({'params': changed}, inputs, decoder_inputs), logits)


def _peft_adapter_logits(directory, adapter, vocab_size):
  """An exported adapter loaded by PEFT on the PyTorch T5: (inputs, decoder inputs, logits)."""
  base = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
  loaded = peft.PeftModel.from_pretrained(base, adapter).eval()
  inputs, targets = _batch(vocab_size)
  decoder_inputs = np.asarray(decode.shift_right(targets))
  return inputs, decoder_inputs, hf_logits(loaded, inputs, decoder_inputs)


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_prefix_export_loads_in_peft_with_equal_logits(backbone, tmp_path):
  directory, config, params = backbone
  model = build_model(config, 'prefix_tuning', LENGTH, attention=('decoder_self',),
                      reparam_hidden=HIDDEN)
  prefix = _init(model, seed=4)['prefix']
  artefact = exported_prompt(model, {'prefix': prefix})
  peft_format.export_peft_prefix(tmp_path / 'adapter', artefact, config, str(directory))
  inputs, decoder_inputs, reference = _peft_adapter_logits(directory, tmp_path / 'adapter',
                                                           config.vocab_size)
  ours = model.apply({'params': {**params, 'prefix': prefix}}, inputs, decoder_inputs)
  np.testing.assert_allclose(np.asarray(ours), reference, atol=TOLERANCE, rtol=0)

  encoder_too = build_model(config, 'prefix_tuning', LENGTH, reparam_hidden=HIDDEN)
  with pytest.raises(ValueError, match='decoder self-attention only'):
    peft_format.export_peft_prefix(tmp_path / 'bad', exported_prompt(
        encoder_too, {'prefix': _init(encoder_too)['prefix']}), config, 'x')
  assert not (tmp_path / 'bad').exists()


def test_p_tuning_export_is_a_prompt_peft_loads(backbone, tmp_path):
  directory, config, params = backbone
  model = build_model(config, 'p_tuning', LENGTH, reparam_hidden=HIDDEN)
  prompt_params = _init(model, seed=6)['prompt']
  artefact = exported_prompt(model, {'prompt': prompt_params})
  peft_format.export_peft(tmp_path / 'adapter', artefact['prompt'], config, str(directory))
  inputs, decoder_inputs, reference = _peft_adapter_logits(directory, tmp_path / 'adapter',
                                                           config.vocab_size)
  ours = model.apply({'params': {**params, 'prompt': prompt_params}}, inputs, decoder_inputs)
  np.testing.assert_allclose(np.asarray(ours), reference, atol=TOLERANCE, rtol=0)


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
@pytest.mark.parametrize('method', ['prefix_tuning', 'deep_prompt_tuning', 'p_tuning'])
def test_methods_train_through_the_loop_and_export(method, tmp_path):
  overrides = ['--config.model.size=tiny-v1_1', '--config.task.input_length=64',
               '--config.train.batch_size=8', '--config.train.steps=4',
               '--config.train.eval_every=2', '--config.train.checkpoint_every=2',
               '--config.train.eval_batch_size=32',
               f'--config.method={method}', '--config.prompt.length=4',
               '--config.prompt.reparam_hidden=16']
  if method == 'deep_prompt_tuning':
    overrides.append('--config.prompt.layer_lengths=(2, 4)')
  config = load_config(REPO / 'configs' / 'smoke.py', overrides)
  result = train(config, tmp_path)
  counts = {row['method']: row for row in plan.parameter_counts('tiny-v1_1', 4,
                                                                reparam_hidden=16)}
  assert result.method == result.series == method and result.prompt_length == 4
  assert result.num_trainable_params == counts[method]['trainable']
  record = json.loads((tmp_path / 'prompt.json').read_text())
  assert record['method'] == method
  if method == 'p_tuning':  # the encoder is gone: a plain [P, d] prompt
    assert record['file'] == 'prompt.npy' and np.load(tmp_path / 'prompt.npy').shape == (4, 32)
  else:
    arrays = np.load(tmp_path / 'prefix.npz')
    assert sorted(arrays) == sorted(f'{kind}_{part}' for kind in ATTENTION_KINDS
                                    for part in ('key', 'value'))
    assert sum(array.size for array in arrays.values()) == counts[method]['stored']
  # The best checkpoint re-evaluated (folded for inference) gives the run's best metrics.
  again = evaluate_run(tmp_path)['metrics']['validation']
  assert again['score'] == pytest.approx(result.metrics['validation']['score'])
  # P-tuning exports its produced prompt as a PEFT prompt-tuning adapter; a prefix on every
  # attention kind cannot be a PEFT T5 prefix (decoder self-attention only) and is refused.
  code = cli.main(['export-peft', '--workdir', str(tmp_path), '--output', str(tmp_path / 'peft')])
  assert code == (0 if method == 'p_tuning' else 2)
  assert (tmp_path / 'peft' / 'adapter_model.safetensors').is_file() == (method == 'p_tuning')
