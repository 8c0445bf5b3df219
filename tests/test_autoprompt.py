"""AutoPrompt: the template, the first-order candidate ranking against a brute-force linearised
objective, a search that finds the token a constructed backbone reads, and the run (result,
triggers, resume, bad settings)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import random_t5_params
from t5prompt import search as search_lib
from t5prompt import train as trainer
from t5prompt.build import cross_entropy
from t5prompt.data.pipeline import TokenizedSplit
from t5prompt.evaluate import evaluate_run
from t5prompt.models.decode import rank_scores, shift_right
from t5prompt.models.sizes import T5Config
from t5prompt.models.t5 import T5
from t5prompt.preemption import Preempted
from t5prompt.prompts import autoprompt
from t5prompt.run_config import load_config
from t5prompt.run_dir import RunDir

SMOKE = 'configs/smoke.py'
RUN = ['--config.method=autoprompt', '--config.prompt.length=3', '--config.prompt.candidates=4',
       '--config.task.input_length=48', '--config.train.batch_size=8',
       '--config.train.eval_every=3', '--config.train.log_every=1',
       '--config.train.checkpoint_every=1', '--config.train.max_eval_examples=16',
       '--config.train.eval_at_start=true']


class Words:
  """A vocabulary of space-separated integers (literal template text in tests)."""
  vocab_size = 64

  def encode(self, text):
    return [int(word) for word in text.split()]

  def decode(self, ids):
    return ' '.join(map(str, ids))


def _split(rows, targets, input_length=10):
  inputs = np.zeros((len(rows), input_length), np.int32)
  for index, row in enumerate(rows):
    inputs[index, :len(row) + 1] = list(row) + [1]
  padded = np.zeros((len(rows), 2), np.int32)
  padded[:, 0], padded[:, 1] = targets, 1
  return TokenizedSplit('t', 'train', inputs, padded, np.zeros(len(rows), np.int32), 0, 0,
                        [{}] * len(rows))


def test_template_places_input_triggers_and_text_and_cuts_only_the_input():
  template = autoprompt.Template.parse('[X] 7 [T] 9', Words())
  rendered = autoprompt.render(_split([[20, 21], [20, 21, 22, 23, 24, 25, 26]], [30, 31]),
                               template, [5, 5])
  assert rendered.data.inputs[0].tolist() == [20, 21, 7, 5, 5, 9, 1, 0, 0, 0]
  # 10 columns: 2 triggers, 2 template tokens and EOS leave 5 for the input (cut to fit).
  assert rendered.data.inputs[1].tolist() == [20, 21, 22, 23, 24, 7, 5, 5, 9, 1]
  assert rendered.slots.tolist() == [[3, 4], [6, 7]]
  assert rendered.data.truncated_inputs == 1
  assert rendered.with_triggers([40, 41]).inputs[1].tolist()[6:8] == [40, 41]
  front = autoprompt.render(_split([[20]], [30]), autoprompt.Template.parse('[T] [X]', Words()),
                            [5])
  assert front.data.inputs[0].tolist()[:3] == [5, 20, 1] and front.slots.tolist() == [[0]]


@pytest.mark.parametrize('text', ['[T] only triggers', '[X] [X] [T]', '[X] [T] [T]', '[X]'])
def test_template_without_one_input_and_one_trigger_block_is_refused(text):
  with pytest.raises(ValueError, match=r'must hold the task input \[X\] once'):
    autoprompt.Template.parse(text, Words())


@pytest.mark.parametrize('override, message', [
    ('--config.prompt.length=0', 'prompt.length must be positive'),
    ('--config.prompt.template=[T] Answer:', r'must hold the task input \[X\] once'),
    ('--config.prompt.candidates=0', 'prompt.candidates must be positive'),
    ('--config.prompt.length=100', 'use a handful'),
])
def test_bad_autoprompt_settings_are_named_before_any_compute(override, message):
  with pytest.raises(ValueError, match=message):
    load_config(SMOKE, RUN + [override])


TINY = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_heads=4, num_encoder_layers=2,
                num_decoder_layers=2, feed_forward_proj='relu', tie_word_embeddings=True)


def test_first_order_ranking_equals_brute_force_linearised_objective():
  """The candidates' order is the order of L(e) + (e_w - e) . dL/de at the slot, each term
  computed separately here by a forward-mode derivative of the real loss along e_w - e."""
  model = T5(TINY, prompt=autoprompt.EmbeddingProbe())
  params = random_t5_params(TINY)
  embedding = np.asarray(params['token_embedder']['embedding'])
  rng = np.random.RandomState(0)
  inputs = rng.randint(3, 64, (4, 8)).astype(np.int32)
  inputs[:, -1] = 1
  slot_columns = np.array([2, 5, 0, 6], np.int32)  # one slot, at a different column per row
  current = 17
  inputs[np.arange(4), slot_columns] = current
  targets = np.array([[40, 1], [41, 1], [40, 1], [42, 1]], np.int32)
  _, gradient = autoprompt.slot_gradient(model, params, inputs, targets, slot_columns)
  allowed = np.arange(3, 64)
  ranked = autoprompt.rank_candidates(embedding, gradient, current, allowed, len(allowed))

  def summed_loss(perturbation):
    variables = {'params': params, 'perturbations': {'prompt': {'embedded': perturbation}}}
    logits = model.apply(variables, inputs, shift_right(targets))
    return cross_entropy(logits, targets) * jnp.sum(targets > 0)

  zeros = jnp.zeros((4, 8, TINY.d_model))
  others = allowed[allowed != current]
  directions = np.zeros((len(others), 4, 8, TINY.d_model), np.float32)
  directions[:, np.arange(4), slot_columns] = (embedding[others] - embedding[current])[:, None]
  derivatives = jax.jit(jax.vmap(lambda direction: jax.jvp(summed_loss, (zeros,),
                                                           (direction,))[1]))(directions)
  linearised = dict(zip(others.tolist(), np.asarray(derivatives).tolist()))
  brute_force = sorted(linearised, key=linearised.get)
  assert len(ranked) == len(allowed) - 1 and current not in ranked
  values = np.array([linearised[int(token)] for token in ranked])
  np.testing.assert_allclose(values, np.sort(values), rtol=1e-5, atol=1e-5)
  assert ranked[:10].tolist() == brute_force[:10]


KEY, YES, NO = 50, 60, 61


@pytest.fixture(scope='module')
def key_reader():
  """A tiny T5 trained to answer YES exactly when token KEY is in its input."""
  model = T5(TINY)
  rng = np.random.RandomState(0)

  def batch(size):
    inputs = np.zeros((size, 10), np.int32)
    has_key = rng.rand(size) < 0.5
    for row in range(size):
      tokens = list(rng.randint(3, 40, 6))
      if has_key[row]:
        tokens.insert(rng.randint(0, 7), KEY)
      inputs[row, :len(tokens) + 1] = tokens + [1]
    targets = np.stack([np.where(has_key, YES, NO), np.ones(size)], 1).astype(np.int32)
    return inputs, targets

  params = random_t5_params(TINY, seed=1)
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, inputs, targets):
    loss, grads = jax.value_and_grad(lambda p: cross_entropy(
        model.apply({'params': p}, inputs, shift_right(targets)), targets))(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  for _ in range(400):
    params, opt_state, loss = step(params, opt_state, *batch(32))
  assert float(loss) < 0.05, float(loss)
  return params


def test_search_finds_a_trigger_the_backbone_reads(key_reader):
  """Inputs without KEY, all labelled YES: the model answers NO until a trigger does KEY's
  job. From the initial trigger the search must reach a token that scores higher."""
  rng = np.random.RandomState(1)
  data = _split([list(rng.randint(3, 40, 6)) for _ in range(32)], [YES] * 32, input_length=12)
  rendered = autoprompt.render(data, autoprompt.Template.parse('[X] [T]', Words()), [5])
  plain, probe = T5(TINY), T5(TINY, prompt=autoprompt.EmbeddingProbe())
  embedding = np.asarray(key_reader['token_embedder']['embedding'])

  def yes_rate(trigger):  # rank classification between YES and NO
    scores = rank_scores(plain, key_reader, rendered.with_triggers([trigger]).inputs,
                         jnp.array([[YES, 1], [NO, 1]]))
    return float(jnp.mean(jnp.argmax(scores, 1) == 0))

  trigger, columns = 5, rendered.slots[:, 0]
  for _ in range(3):
    inputs = rendered.with_triggers([trigger]).inputs
    loss, gradient = autoprompt.slot_gradient(probe, key_reader, inputs, data.targets, columns)
    candidates = autoprompt.rank_candidates(embedding, gradient, trigger, np.arange(3, 64), 8)
    losses = autoprompt.candidate_losses(plain, key_reader, inputs, data.targets, columns,
                                         jnp.asarray(candidates))
    if float(jnp.min(losses)) < float(loss):
      trigger = int(candidates[int(jnp.argmin(losses))])
  assert yes_rate(5) < 0.2
  assert yes_rate(trigger) > 0.9, (trigger, yes_rate(trigger))


def _search(workdir, *overrides):
  return trainer.train(load_config(SMOKE, RUN + list(overrides)), workdir)


@pytest.mark.slow  # two short searches (~40 s): `pytest -m slow`, which CI runs
def test_autoprompt_run_writes_triggers_and_a_result_and_resumes_exactly(tmp_path, monkeypatch):
  whole = _search(tmp_path / 'whole', '--config.train.steps=6')
  triggers = RunDir(tmp_path / 'whole').triggers()
  assert whole.method == 'autoprompt' and whole.steps == 6 and whole.prompt_length == 3
  assert whole.num_trainable_params == 0 and whole.num_stored_params == 3
  assert len(triggers['ids']) == 3 and triggers['template'] == '[X] [T]'
  initial = whole.init['initial_ids']
  assert len(initial) == 3 and len(set(initial)) == 1  # prompt.trigger_init in every slot
  assert whole.best_step in (3, 6) and 'validation' in whole.initial_metrics

  # Stopped by a signal after iteration 4, then rerun: the same search as the whole one.
  stopped_at = {'step': 4}
  requested = search_lib.StopSignal.requested
  monkeypatch.setattr(search_lib.StopSignal, 'requested',
                      lambda self, step: step == stopped_at['step'] or requested(self, step))
  with pytest.raises(Preempted, match='after iteration 4'):
    _search(tmp_path / 'resumed', '--config.train.steps=6')
  saved = json.loads((tmp_path / 'resumed' / 'search.json').read_text())
  assert saved['iteration'] == 4 and not (tmp_path / 'resumed' / 'result.json').exists()
  stopped_at['step'] = -1
  resumed = _search(tmp_path / 'resumed', '--config.train.steps=6')
  assert RunDir(tmp_path / 'resumed').triggers()['ids'] == triggers['ids']
  assert resumed.metrics == whole.metrics and resumed.best_step == whole.best_step
  with pytest.raises(ValueError, match='autoprompt run'):
    evaluate_run(tmp_path / 'whole')
