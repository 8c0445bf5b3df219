"""Prompt reuse: mixed-task batches, ensembles, similarity, retrieval from a library, the
nearest-token reading, cross-model transfer and multi-task source training."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, random_t5_params
from t5prompt import cli, library as library_lib, optim
from t5prompt.data import pipeline
from t5prompt.data.vocab import get_vocabulary
from t5prompt.models import T5, decode, get_size
from t5prompt.prompts import ensemble, interpret, similarity
from t5prompt.prompts.soft_prompt import PromptBank, SoftPrompt, bank_from_prompts
from t5prompt.run_config import load_config
from t5prompt.build import cross_entropy
from t5prompt.train import train
from t5prompt.prompts import methods

LENGTH = 4


@pytest.fixture(scope='module')
def backbone():
  config = get_size('tiny-v1_1').replace(dropout_rate=0.0)
  return config, random_t5_params(config)


def _prompts(count, d_model=32, seed=0):
  rng = np.random.RandomState(seed)
  return [rng.uniform(-0.5, 0.5, (LENGTH, d_model)).astype(np.float32) for _ in range(count)]


def _tokens(seed, shape):
  tokens = np.random.RandomState(seed).randint(2, 500, shape).astype(np.int32)
  tokens[1, -3:] = 0
  return tokens


def test_mixed_task_batch_equals_each_example_alone(backbone):
  config, params = backbone
  prompts = _prompts(3)
  ids = np.array([0, 2, 1, 0, 1, 2])
  inputs, decoder_inputs = _tokens(0, (6, 9)), _tokens(1, (6, 4))
  bank_model = T5(config, prompt=PromptBank(3, LENGTH))
  bank_params = {**params, 'prompt': bank_from_prompts(prompts)}
  mixed = jax.jit(bank_model.apply)({'params': bank_params}, inputs, decoder_inputs,
                                    prompt_ids=ids)
  single = T5(config, prompt=SoftPrompt(LENGTH))
  for row, prompt_id in enumerate(ids):
    alone = jax.jit(single.apply)({'params': {**params, 'prompt': {'prompt': prompts[prompt_id]}}},
                         inputs[row:row + 1], decoder_inputs[row:row + 1])
    np.testing.assert_allclose(mixed[row:row + 1], alone, atol=1e-4, rtol=1e-5)  # fp32, batch 6 vs 1
  # Rank classification (the serving path) agrees as well.
  labels = np.array([[71, 1, 0], [150, 1, 0]], np.int32)
  scores = decode.rank_scores(bank_model, bank_params, inputs, labels, jnp.asarray(ids))
  for row, prompt_id in enumerate(ids):
    alone = decode.rank_scores(single, {**params, 'prompt': {'prompt': prompts[prompt_id]}},
                               inputs[row:row + 1], labels)
    np.testing.assert_allclose(scores[row:row + 1], alone, atol=1e-5, rtol=0)


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_mixed_task_training_gives_each_prompt_its_own_tasks_gradient(backbone):
  """One prompt per task trained in one run: prompt i's gradient on a mixed batch is its own
  examples' gradient (scaled by their share of the batch's target tokens); unused prompts get
  exactly zero."""
  config, params = backbone
  prompts = _prompts(3, seed=1)
  ids = np.array([0, 1, 0, 1])  # prompt 2 unused
  inputs, targets = _tokens(2, (4, 9)), _tokens(3, (4, 4))
  bank_model = T5(config, prompt=PromptBank(3, LENGTH))

  def bank_loss(bank):
    logits = bank_model.apply({'params': {**params, 'prompt': bank}}, inputs,
                              decode.shift_right(targets), prompt_ids=ids)
    return cross_entropy(logits, targets)

  grads = jax.grad(bank_loss)(bank_from_prompts(prompts))['prompts']
  np.testing.assert_array_equal(grads[2], 0.0)
  single = T5(config, prompt=SoftPrompt(LENGTH))
  for prompt_id in (0, 1):
    rows = ids == prompt_id

    def alone_loss(prompt, rows=rows):
      logits = single.apply({'params': {**params, 'prompt': {'prompt': prompt}}}, inputs[rows],
                            decode.shift_right(targets[rows]))
      return cross_entropy(logits, targets[rows])

    share = (targets[rows] > 0).sum() / (targets > 0).sum()
    np.testing.assert_allclose(grads[prompt_id], share * jax.grad(alone_loss)(prompts[prompt_id]),
                               atol=1e-6, rtol=1e-4)


def test_ensemble_of_copies_equals_the_prompt(backbone):
  config, params = backbone
  prompt = _prompts(1, seed=2)[0]
  inputs = _tokens(4, (5, 9))
  labels = np.array([[71, 1, 0], [150, 1, 0], [3, 9, 1]], np.int32)
  bank_model = T5(config, prompt=PromptBank(4, LENGTH))
  scores = np.asarray(ensemble.ensemble_scores(
      bank_model, {**params, 'prompt': bank_from_prompts([prompt] * 4)}, inputs, labels))
  single = np.asarray(decode.rank_scores(T5(config, prompt=SoftPrompt(LENGTH)),
                                         {**params, 'prompt': {'prompt': prompt}}, inputs, labels))
  assert scores.shape == (5, 4, 3)
  for copy in range(4):
    np.testing.assert_allclose(scores[:, copy], single, atol=1e-5, rtol=0)
  predictions = ensemble.ensemble_predictions(scores)
  np.testing.assert_array_equal(predictions['majority_vote'], single.argmax(-1))
  np.testing.assert_array_equal(predictions['mean_log_likelihood'], single.argmax(-1))


def test_majority_vote_on_known_votes():
  votes = np.array([[0, 0, 1], [2, 1, 1], [0, 1, 2], [2, 2, 2]])
  np.testing.assert_array_equal(ensemble.majority_vote(votes), [0, 1, 0, 2])
  # The three-way tie in row 2 goes to the label with the best mean log-likelihood.
  scores = np.zeros((4, 3, 3))
  scores[2, :, 2] = 1.0
  np.testing.assert_array_equal(ensemble.majority_vote(votes, scores), [0, 1, 2, 2])
  # Mean log-likelihood can disagree with the vote: two weak votes vs one strong.
  strong = np.log(np.array([[[0.6, 0.4], [0.6, 0.4], [0.01, 0.99]]]))
  assert ensemble.majority_vote(strong.argmax(-1), strong)[0] == 0
  assert ensemble.mean_log_likelihood(strong)[0] == 1


def test_similarities_on_constructed_prompts():
  e = np.eye(4)
  a = np.stack([e[0], e[1]])
  assert similarity.cosine(a, a) == pytest.approx(1.0)
  assert similarity.cosine(a, -a) == pytest.approx(-1.0)
  assert similarity.cosine(a, np.stack([e[2], e[3]])) == pytest.approx(0.0)
  b = np.stack([2 * e[0], e[2]])
  assert similarity.cosine(a, b) == pytest.approx(2 / np.sqrt(2 * 5))  # flattened
  assert similarity.per_position(a, b) == pytest.approx(0.5)  # mean of (1, 0)
  assert similarity.neuron_overlap(np.array([1, 1, 0, 0], bool),
                                   np.array([1, 0, 1, 0], bool)) == pytest.approx(0.5)
  with pytest.raises(ValueError, match='cannot be compared'):
    similarity.cosine(a, np.ones((3, 4)))


def test_activated_neurons_and_on(backbone):
  config, params = backbone
  first, second = _prompts(2, seed=3)
  mask = similarity.activated_neurons(config, params, first)
  assert mask.shape == (config.num_encoder_layers, LENGTH, config.d_ff) and mask.dtype == bool
  assert 0 < mask.mean() < 1
  unscanned = config.replace(scan_layers=False)
  from t5prompt.models.convert import unstack_layers  # pylint: disable=import-outside-toplevel
  np.testing.assert_array_equal(
      similarity.activated_neurons(unscanned, unstack_layers(params), first), mask)
  assert similarity.similarity('on', first, first, config=config,
                               backbone_params=params) == pytest.approx(1.0)
  assert similarity.similarity('on', first, second, config=config,
                               backbone_params=params) < 1.0


def _fake_run(directory, task, prompt, score, params_hash='abc', size='tiny', seed=0):
  """A finished run's files as `t5prompt train` writes them (the library reads only these)."""
  directory.mkdir(parents=True)
  np.save(directory / 'prompt.npy', prompt)
  (directory / 'prompt.json').write_text(json.dumps({'task': task, 'nearest_tokens': [['▁a']]}))
  (directory / 'result.json').write_text(json.dumps({
      'task': task, 'model_size': size, 'method': 'prompt_tuning', 'seed': seed,
      'backbone': {'source': 'random:tiny-v1_1:seed0', 'params_hash': params_hash},
      'init': {'name': 'sampled_vocab'}, 'metric': 'accuracy',
      'config': {'task': {'eval_splits': ['validation']}},
      'metrics': {'validation': {'score': score}}}))
  return directory


@pytest.fixture
def library(tmp_path):
  e = np.eye(32, dtype=np.float32)
  target = np.stack([e[0], e[1], e[2], e[3]])
  near = np.stack([e[0], e[1], e[2], e[5]])  # 3 of 4 rows shared
  far = np.stack([e[10], e[11], e[12], e[13]])
  runs = {'target': _fake_run(tmp_path / 'r0', 'superglue_cb', target, 50.0),
          'near': _fake_run(tmp_path / 'r1', 'superglue_rte', near, 60.0),
          'far': _fake_run(tmp_path / 'r2', 'superglue_copa', far, 55.0),
          'other_backbone': _fake_run(tmp_path / 'r3', 'superglue_wsc', target, 70.0,
                                      params_hash='zzz')}
  lib = library_lib.PromptLibrary(tmp_path / 'library')
  for run in runs.values():
    lib.add_run(run)
  return lib, target, near, far


def test_library_entries_and_retrieval(library):
  lib, target, near, _ = library
  assert len(lib.names()) == 4
  entry = lib.entry('superglue_rte-tiny-prompt_tuning-s0')
  assert (entry['task'], entry['score'], entry['length'], entry['d_model']) == (
      'superglue_rte', 60.0, 4, 32)
  np.testing.assert_array_equal(lib.prompt(entry['name']), near)
  ranked = library_lib.rank(lib, target, 'cosine', params_hash='abc',
                            exclude_task='superglue_cb')
  assert [name for name, _ in ranked] == ['superglue_rte-tiny-prompt_tuning-s0',
                                          'superglue_copa-tiny-prompt_tuning-s0']
  assert ranked[0][1] == pytest.approx(0.75) and ranked[1][1] == pytest.approx(0.0)
  assert library_lib.rank(lib, target, 'cosine', params_hash='abc',
                          exclude_task='superglue_cb') == ranked  # reproducible
  with pytest.raises(FileExistsError, match='already in'):
    lib.add_run(entry['source_run'])
  average = library_lib.weighted_average([near, target], [0.75, 0.25])
  np.testing.assert_allclose(average, 0.75 * near + 0.25 * target, atol=1e-7)
  np.testing.assert_allclose(library_lib.weighted_average([near, target], [-1, -1]),
                             (near + target) / 2, atol=1e-7)


def test_library_and_retrieve_commands(library, tmp_path, capsys):
  lib, _, near, _ = library
  assert cli.main(['library', 'list', '--library', str(lib.root)]) == 0
  assert '| superglue_rte-tiny-prompt_tuning-s0 | superglue_rte | tiny |' in capsys.readouterr().out
  assert cli.main(['library', 'show', 'superglue_rte-tiny-prompt_tuning-s0', '--library',
                   str(lib.root)]) == 0
  assert '0: ▁a' in capsys.readouterr().out
  output = tmp_path / 'init.npy'
  assert cli.main(['retrieve', '--library', str(lib.root), '--target', 'superglue_cb',
                   '--output', str(output)]) == 0
  out = capsys.readouterr().out
  assert '| 1 | superglue_rte-tiny-prompt_tuning-s0 | superglue_rte | 0.7500 |' in out
  assert 'superglue_wsc' not in out  # another backbone: not comparable
  np.testing.assert_array_equal(np.load(output), near)
  assert json.loads(output.with_suffix('.json').read_text())['task'] == 'superglue_rte'
  assert cli.main(['library', 'show', 'nope', '--library', str(lib.root)]) == 2
  assert "No prompt 'nope'" in capsys.readouterr().err


def test_nearest_tokens_find_the_embedding_rows(backbone):
  config, params = backbone
  embedding = np.asarray(params['token_embedder']['embedding'])
  ids = interpret.nearest_token_ids(embedding[[5, 9, 700]] * 3.0, embedding, k=3)
  np.testing.assert_array_equal(ids[:, 0], [5, 9, 700])  # cosine 1 with itself
  vocabulary = get_vocabulary()
  tokens = interpret.nearest_tokens(embedding[[5]], embedding, vocabulary, k=2)
  assert tokens[0][0] == vocabulary.tokenizer.id_to_piece(5)


SHORT = ['--config.model.size=tiny-v1_1', '--config.task.input_length=64',
         '--config.train.batch_size=8', '--config.train.steps=3', '--config.train.eval_every=3',
         '--config.train.checkpoint_every=3', '--config.train.max_eval_examples=16',
         '--config.train.eval_batch_size=16', '--config.prompt.length=4']


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_cross_model_transfer_trains_a_projector(tmp_path):
  source = np.random.RandomState(5).normal(0, 1, (4, 16)).astype(np.float32)  # a d=16 model's
  np.save(tmp_path / 'source.npy', source)
  config = load_config(REPO / 'configs' / 'smoke.py', SHORT + [
      '--config.method=cross_model_transfer', '--config.prompt.init=file',
      f'--config.prompt.init_file={tmp_path / "source.npy"}', '--config.prompt.reparam_hidden=8'])
  result = train(config, tmp_path / 'run')
  assert result.num_trainable_params == (16 * 8 + 8) + (8 * 32 + 32)  # the projector only
  assert np.load(tmp_path / 'run' / 'prompt.npy').shape == (4, 32)  # folded, target width
  assert result.init['name'] == 'file'
  rules = methods.get('cross_model_transfer').trainable_rules
  assert optim.param_labels({'prompt': {'source': 0, 'projector_in': 0}, 'encoder': {'x': 0}},
                            rules) == {'prompt': {'source': 'freeze', 'projector_in': 'train'},
                                       'encoder': {'x': 'freeze'}}


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_mixture_trains_on_the_union(tmp_path):
  cb = pipeline.load_tokenized('superglue_cb', 'train', 64, 8)
  rte = pipeline.load_tokenized('superglue_rte', 'train', 64, 8)
  both = pipeline.concatenate([cb, rte])
  assert len(both) == len(cb) + len(rte) and both.task == 'superglue_cb+superglue_rte'
  np.testing.assert_array_equal(both.inputs[len(cb):], rte.inputs)
  config = load_config(REPO / 'configs' / 'smoke.py', SHORT + [
      "--config.task.mixture=('superglue_rte',)"])
  result = train(config, tmp_path)
  assert result.config['task']['mixture'] == ['superglue_rte']
  assert list(result.metrics) == ['validation']  # evaluated on CB, the run's task
  record = json.loads((tmp_path / 'prompt.json').read_text())
  assert len(record['nearest_tokens']) == 4 and len(record['nearest_tokens'][0]) == 5


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_ensemble_command_scores_each_prompt_and_the_vote(backbone, tmp_path, capsys):
  """Two runs' prompts on CB dev: each prompt's score equals evaluating it alone."""
  from t5prompt.data.tasks import get_task_spec  # pylint: disable=import-outside-toplevel
  from t5prompt.evaluate import evaluate  # pylint: disable=import-outside-toplevel
  from t5prompt.backbone import backbone_from_source  # pylint: disable=import-outside-toplevel
  source = 'random:tiny-v1_1:seed0'
  frozen = backbone_from_source(source)
  prompts = _prompts(2, seed=7)
  runs = []
  for seed, prompt in enumerate(prompts):
    run = _fake_run(tmp_path / f'run{seed}', 'superglue_cb', prompt, 0.0,
                    params_hash=frozen.params_hash, seed=seed)
    result = json.loads((run / 'result.json').read_text())
    result['backbone']['source'] = source
    result['config']['task'].update(input_length=64, target_length=0)
    (run / 'result.json').write_text(json.dumps(result))
    runs.append(str(run))
  assert cli.main(['ensemble', *runs, '--output', str(tmp_path / 'out')]) == 0
  assert 'majority vote' in capsys.readouterr().out
  record = json.loads((tmp_path / 'out' / 'ensemble.json').read_text())
  spec = get_task_spec('superglue_cb')
  data = pipeline.load_tokenized('superglue_cb', 'validation', 64, 8)
  for prompt, score in zip(prompts, record['individual_scores']):
    alone = evaluate(T5(frozen.config, prompt=SoftPrompt(LENGTH)),
                     {**frozen.params, 'prompt': {'prompt': prompt}}, {'dev': (spec, data)},
                     get_vocabulary(), 32)['dev']['score']
    assert score == pytest.approx(alone)
  assert 0 <= record['majority_vote']['score'] <= 100
  other = _fake_run(tmp_path / 'other', 'superglue_rte', prompts[0], 0.0)
  with pytest.raises(ValueError, match='must share task'):
    from t5prompt.ensembles import evaluate_ensemble  # pylint: disable=import-outside-toplevel
    evaluate_ensemble([runs[0], str(other)])


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_best_of_top_k_picks_the_best_zero_shot_candidate(library, tmp_path, capsys):
  lib, _, near, far = library
  output = tmp_path / 'best.npy'
  assert cli.main(['retrieve', '--library', str(lib.root), '--target', 'superglue_cb',
                   '--init', 'best_of_top_k', '--top-k', '2', '--max-eval-examples', '16',
                   '--output', str(output)]) == 0
  assert 'zero-shot dev scores of the top-k' in capsys.readouterr().out
  from t5prompt.backbone import backbone_from_source  # pylint: disable=import-outside-toplevel
  scores = library_lib.zero_shot_scores(backbone_from_source('random:tiny-v1_1:seed0'),
                                        'superglue_cb', [near, far], max_examples=16)
  np.testing.assert_array_equal(np.load(output), [near, far][int(np.argmax(scores))])
