"""The train loop end to end on shipped data: the freeze, what checkpoints hold, exact resume,
learning, model tuning through the same loop, and the run directory's refusals."""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from t5prompt import cli
from t5prompt.backbone import load_model_backbone
from t5prompt.build import build
from t5prompt.data import pipeline
from t5prompt.data.sources import cache_reference
from t5prompt.evaluate import evaluate_run
from t5prompt.models.convert import save_t5prompt
from t5prompt.partitioning import make_partitioning
from t5prompt.prompts import methods
from t5prompt.run_config import default_config, load_config
from t5prompt.run_dir import RunDir
from t5prompt.run_setup import check_or_write_manifest
from t5prompt.train import train

from conftest import REPO

SMOKE = REPO / 'configs' / 'smoke.py'
# A few steps on CB with short inputs: the loop in seconds.
SHORT = ['--config.model.size=tiny-v1_1', '--config.task.input_length=64',
         '--config.train.batch_size=8', '--config.train.eval_every=4',
         '--config.train.checkpoint_every=4', '--config.train.log_every=2',
         '--config.train.eval_at_start=False', '--config.train.eval_batch_size=16',
         '--config.train.max_eval_examples=16']


def _config(*overrides):
  return load_config(SMOKE, SHORT + list(overrides))


def _saved_state(workdir, step):
  return ocp.PyTreeCheckpointer().restore(workdir / 'checkpoints' / str(step) / 'state')


@pytest.mark.parametrize('method', [  # the prefix methods in `pytest -m slow` (CI runs both)
    'prompt_tuning', 'p_tuning', pytest.param('prefix_tuning', marks=pytest.mark.slow),
    pytest.param('deep_prompt_tuning', marks=pytest.mark.slow)])
def test_backbone_is_bit_identical_after_prompt_training(method):
  config = _config('--config.train.steps=3', f'--config.method={method}',
                   '--config.prompt.reparam_hidden=16')
  backbone = load_model_backbone(config.model)
  original = jax.tree.map(np.array, backbone.params)  # a host copy, before any step
  partitioning = make_partitioning((1, 1), devices=jax.devices()[:1])
  with partitioning.activate():  # the train loop's own step
    run = build(config, backbone, partitioning)
    state = run.state
    data = pipeline.load_tokenized(config.task.name, 'train', 64, 8)
    start = jax.tree.map(np.array, state.trainable)
    for step in range(3):
      batch = pipeline.train_batch(data, 8, 0, step)
      state.trainable, state.opt_state, _ = run.train_step(
          state.trainable, state.opt_state, state.frozen, batch, state.rng, step)
  trainable, after = state.trainable, run.params()
  leaves = jax.tree_util.tree_leaves_with_path(original)
  for path, before in leaves:
    now = after
    for key in path:
      now = now[key.key]
    np.testing.assert_array_equal(np.asarray(now), before, err_msg=jax.tree_util.keystr(path))
  assert len(leaves) > 10
  assert list(trainable) == ['prompt' if method in ('prompt_tuning', 'p_tuning') else 'prefix']
  changed = jax.tree.map(lambda a, b: not np.array_equal(np.asarray(a), b), trainable, start)
  assert all(jax.tree.leaves(changed)), changed  # every trainable leaf moved


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  return workdir, train(_config('--config.train.steps=8'), workdir)


def test_checkpoint_holds_only_the_prompt_and_its_state(finished_run):
  workdir, result = finished_run
  state = _saved_state(workdir, 8)
  assert list(state['trainable']) == ['prompt'] and list(state['trainable']['prompt']) == ['prompt']
  prompt_values = 8 * 32
  state_values = sum(np.size(x) for x in jax.tree.leaves(state['opt_state']))
  assert prompt_values <= state_values <= prompt_values + 8  # Adafactor v for the prompt only
  record = json.loads((workdir / 'checkpoints' / '8' / 'record' / 'metadata').read_text())
  assert (record['step'], record['data_position']) == (8, 8 * 8)  # data position saved
  manifest = json.loads((workdir / 'manifest.json').read_text())
  assert manifest['backbone']['source'] == 'random:tiny-v1_1:seed0'
  assert len(manifest['backbone']['params_hash']) == 64
  assert result.num_trainable_params == prompt_values


def test_run_outputs(finished_run):
  workdir, result = finished_run
  for name in ('config.json', 'manifest.json', 'metrics.jsonl', 'prompt.npy', 'prompt.json',
               'result.json'):
    assert (workdir / name).is_file(), name
  assert list((workdir / 'tensorboard').iterdir())
  assert result.steps == 8 and result.best_step in (4, 8)
  assert result.init['name'] == 'class_label'
  assert result.init['labels'] == ['entailment', 'contradiction', 'neutral']
  assert result.metrics['validation']['num_examples'] == 16
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records if r['kind'] == 'train'] == [2, 4, 6, 8]
  assert [r['step'] for r in records if r['kind'] == 'eval/validation'] == [4, 8]
  prompt = np.load(workdir / 'prompt.npy')
  assert prompt.shape == (8, 32) and prompt.dtype == np.float32
  assert json.loads((workdir / 'prompt.json').read_text())['best_step'] == result.best_step


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one(finished_run, tmp_path):
  workdir, _ = finished_run
  train(_config('--config.train.steps=4'), tmp_path)  # stops at 4 ...
  resumed = train(_config('--config.train.steps=8'), tmp_path)  # ... and resumes to 8
  assert resumed.steps == 8
  straight, interrupted = _saved_state(workdir, 8), _saved_state(tmp_path, 8)
  jax.tree.map(np.testing.assert_array_equal, straight, interrupted)
  np.testing.assert_array_equal(np.load(workdir / 'prompt.npy'), np.load(tmp_path / 'prompt.npy'))
  losses = lambda d: [json.loads(l)['loss'] for l in (d / 'metrics.jsonl').read_text().splitlines()
                      if '"train"' in l]
  assert losses(workdir) == losses(tmp_path)


def test_finished_run_is_recognised(finished_run, capsys):
  workdir, result = finished_run
  assert train(_config('--config.train.steps=8'), workdir) == result
  assert 'already finished' in capsys.readouterr().err


def test_resume_with_another_backbone_is_refused_showing_both(finished_run):
  workdir, _ = finished_run
  before = (workdir / 'config.json').read_text()
  with pytest.raises(ValueError, match=r'(?s)refusing to resume.*backbone.params_hash: saved '
                                       r"'[0-9a-f]{64}', now '[0-9a-f]{64}'"):
    train(_config('--config.train.steps=12', '--config.model.init_seed=1'), workdir)
  with pytest.raises(ValueError, match=r"prompt.length: saved 8, now 4"):
    train(_config('--config.train.steps=12', '--config.prompt.length=4'), workdir)
  assert (workdir / 'config.json').read_text() == before


def test_cli_eval_and_export_peft(finished_run, tmp_path, capsys):
  workdir, result = finished_run
  assert cli.main(['eval', '--workdir', str(workdir)]) == 0
  captured = capsys.readouterr()
  evaluated = json.loads(captured.out)
  assert evaluated['step'] == result.best_step
  # The run's own cap (train.max_eval_examples=16), so the run's scores, said so.
  assert 'the first 16 example(s) of each eval set (as the run did)' in captured.err
  assert evaluated['metrics']['validation'] == result.metrics['validation']
  assert cli.main(['eval', '--workdir', str(workdir), '--max-examples', '0']) == 0
  everything = json.loads(capsys.readouterr().out)
  assert everything['metrics']['validation']['num_examples'] == 56  # the whole split
  assert cli.main(['export-peft', '--workdir', str(workdir), '--output',
                   str(tmp_path / 'adapter')]) == 0
  adapter = json.loads((tmp_path / 'adapter' / 'adapter_config.json').read_text())
  assert adapter['num_virtual_tokens'] == 8 and adapter['token_dim'] == 32
  assert adapter['num_transformer_submodules'] == 1
  assert adapter['base_model_name_or_path'] == 'random:tiny-v1_1:seed0'
  assert cli.main(['import-peft', str(tmp_path / 'adapter'), '--output',
                   str(tmp_path / 'back.npy')]) == 0
  np.testing.assert_array_equal(np.load(tmp_path / 'back.npy'), np.load(workdir / 'prompt.npy'))


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_a_model_tuning_run_is_read_back_in_the_layout_it_was_saved_in(tmp_path):
  """`model.scan_layers` None is stacked on GPU/TPU, unrolled on CPU: a model-tuning run
  trained stacked with the default (as on a GPU) is evaluated and resumed on this CPU in that
  layout; an explicit other layout is still refused."""
  overrides = ('--config.method=model_tuning', '--config.train.eval_every=2',
               '--config.optimizer.learning_rate=0.001')
  result = train(_config(*overrides, '--config.train.steps=2', '--config.model.scan_layers=True'),
                 tmp_path)
  record = json.loads((tmp_path / 'config.json').read_text())
  record['model']['scan_layers'] = None  # what a run with the default writes, on any backend
  (tmp_path / 'config.json').write_text(json.dumps(record))
  evaluated = evaluate_run(tmp_path)
  assert evaluated['step'] == 2
  assert evaluated['metrics']['validation'] == result.metrics['validation']
  with pytest.raises(ValueError, match='model.scan_layers: saved True, now False'):
    train(_config(*overrides, '--config.train.steps=4', '--config.model.scan_layers=False'),
          tmp_path)
  resumed = train(_config(*overrides, '--config.train.steps=4'), tmp_path)
  assert resumed.steps == 4 and (tmp_path / 'checkpoints' / '4').is_dir()


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_model_tuning_runs_through_the_same_loop(tmp_path):
  result = train(_config('--config.method=model_tuning', '--config.train.steps=2',
                         '--config.train.eval_every=2', '--config.optimizer.learning_rate=0.001'),
                 tmp_path)
  state = _saved_state(tmp_path, 2)
  assert {'encoder', 'decoder', 'token_embedder'} <= set(state['trainable'])
  assert 'prompt' not in state['trainable']
  assert result.num_trainable_params == sum(np.size(x) for x in jax.tree.leaves(
      state['trainable']))
  assert result.prompt_length == 0 and not (tmp_path / 'prompt.npy').exists()


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_prompt_tuning_learns_on_shipped_data(tmp_path):
  """configs/smoke.py: a tiny random T5, CB. Loss falls and dev accuracy beats the untrained
  prompt's (here the untrained prompt ranks 'neutral' first, the rare class)."""
  result = train(load_config(SMOKE), tmp_path)
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  losses = [r['loss'] for r in records if r['kind'] == 'train']
  assert np.mean(losses[-3:]) < np.mean(losses[:3])
  assert (result.metrics['validation']['accuracy']
          > result.initial_metrics['validation']['accuracy'])


def test_early_stopping_keeps_the_best_step(tmp_path):
  """A learning rate too small to change any prediction: the dev score never improves after
  the first eval, so patience 1 stops the run at the second eval and the first stays best."""
  result = train(_config('--config.train.steps=20', '--config.train.eval_every=2',
                         '--config.train.early_stopping_patience=1',
                         '--config.optimizer.learning_rate=1e-12'), tmp_path)
  assert result.stopped_early and result.steps == 4 and result.best_step == 2
  assert sorted(int(p.name) for p in (tmp_path / 'best').iterdir() if p.name.isdigit()) == [2]


def test_bfloat16_compute_keeps_prompt_and_optimizer_state_float32(tmp_path):
  train(_config('--config.train.steps=2', '--config.train.eval_every=2',
                '--config.model.dtype=bfloat16'), tmp_path)
  state = _saved_state(tmp_path, 2)
  assert {str(np.asarray(x).dtype) for x in jax.tree.leaves(state['trainable'])} == {'float32'}
  assert {str(np.asarray(x).dtype) for x in jax.tree.leaves(state['opt_state'])} == {'float32',
                                                                                      'int32'}


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_multitask_model_tuning_is_scored_on_every_task_of_its_mixture(tmp_path):
  """The paper's multi-task baseline: one model on the prefixed CB + RTE mixture, evaluated on
  both at each eval; the best step maximises their mean; the report gives each task a cell of
  the series and averages them per seed."""
  from t5prompt import studies  # pylint: disable=import-outside-toplevel
  from t5prompt.report import tables  # pylint: disable=import-outside-toplevel
  from t5prompt.sweep import configure  # pylint: disable=import-outside-toplevel
  config = configure(lambda: _config('--config.train.steps=4', '--config.train.eval_every=2'),
                     studies.multitask(('superglue_cb', 'superglue_rte')))
  result = train(config, tmp_path)
  assert result.series == 'model_tuning_multitask' and result.task == 'superglue_cb_prefixed'
  assert set(result.task_metrics) == {'superglue_cb_prefixed', 'superglue_rte_prefixed'}
  evals = {}
  for line in (tmp_path / 'metrics.jsonl').read_text().splitlines():
    record = json.loads(line)
    if record['kind'].startswith('eval/'):
      evals.setdefault(record['step'], []).append(record['score'])
  assert all(len(scores) == 2 for scores in evals.values())
  assert result.best_step == max(evals, key=lambda step: (np.mean(evals[step]), -step))
  cells = tables.scale_cells(tables.collect(tmp_path)[0])
  size = result.model_size
  cb, rte = (result.task_metrics[f'superglue_{t}_prefixed']['score'] for t in ('cb', 'rte'))
  assert cells[('model_tuning_multitask', size, 'superglue_cb')][0] == pytest.approx(cb)
  assert cells[('model_tuning_multitask', size, 'superglue_rte')][0] == pytest.approx(rte)
  assert cells[('model_tuning_multitask', size, tables.AVERAGE)][0] == pytest.approx(
      (cb + rte) / 2)


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_multitask_prompt_tuning_trains_a_prompt_per_task(tmp_path):
  """One run on the CB + RTE mixture with a prompt bank: every batch row trains its own task's
  prompt, each task is scored with its prompt, and each prompt is exported on its own; the
  exported CB prompt, as plain prompt tuning, gives the CB score the run reported."""
  from t5prompt.evaluate import evaluate  # pylint: disable=import-outside-toplevel
  from t5prompt.prompts.soft_prompt import SoftPrompt  # pylint: disable=import-outside-toplevel
  from t5prompt.models import T5  # pylint: disable=import-outside-toplevel
  from t5prompt.run_setup import load_eval_sets  # pylint: disable=import-outside-toplevel
  config = _config('--config.method=multitask_prompt_tuning', '--config.train.steps=4',
                   '--config.train.eval_every=4', '--config.prompt.init=random_uniform',
                   "--config.task.mixture=('superglue_rte',)",
                   "--config.task.extra_evals=('superglue_rte:validation',)",
                   '--config.train.max_eval_examples=24')
  result = train(config, tmp_path)
  state = _saved_state(tmp_path, 4)
  bank = state['trainable']['prompt']['prompts']
  assert bank.shape == (2, config.prompt.length, 32)  # tiny-v1_1: d_model 32
  backbone = load_model_backbone(config.model)
  partitioning = make_partitioning((1, 1), devices=jax.devices()[:1])
  with partitioning.activate():  # the same config's initial bank (same seeds)
    initial = np.asarray(build(config, backbone, partitioning).state.trainable['prompt'][
        'prompts'])
  assert not np.allclose(initial[0], bank[0]) and not np.allclose(initial[1], bank[1])
  assert set(result.metrics) == {'validation', 'superglue_rte:validation'}
  cb_prompt = np.load(tmp_path / 'prompts' / 'superglue_cb' / 'prompt.npy')
  rte_prompt = np.load(tmp_path / 'prompts' / 'superglue_rte' / 'prompt.npy')
  assert not np.array_equal(cb_prompt, rte_prompt)
  assert result.num_stored_params == cb_prompt.size + rte_prompt.size
  # The CB prompt alone, as prompt tuning on the same backbone, scores what the run reported.
  params = {**backbone.params, 'prompt': {'prompt': cb_prompt}}
  model = T5(backbone.config, prompt=SoftPrompt(config.prompt.length))
  eval_sets = load_eval_sets(config, backbone.vocabulary)
  alone = evaluate(model, params, {'validation': eval_sets['validation']}, backbone.vocabulary,
                   config.train.eval_batch_size, 24)
  assert alone['validation']['score'] == pytest.approx(result.metrics['validation']['score'])
  # A mixture is required, and a per-task init.
  with pytest.raises(ValueError, match='set task.mixture'):
    _config('--config.method=multitask_prompt_tuning', '--config.prompt.init=random_uniform')


def test_a_run_on_a_cached_backbone_survives_the_cache_moving(tmp_path, monkeypatch):
  """The miniature names its backbones by `cache:` reference: after the cache moves (a renamed
  checkout, another $T5PROMPT_CACHE) the run is still found finished and resumes on the same
  weights; a run recorded with the absolute path (before references) matches the reference."""
  cache = tmp_path / 'cache'
  monkeypatch.setenv('T5PROMPT_CACHE', str(cache))
  random_backbone = load_model_backbone(_config().model)
  save_t5prompt(cache / 'backbones' / 'tiny', random_backbone.config, random_backbone.params)
  reference = cache_reference(cache / 'backbones' / 'tiny')
  assert reference == 'cache:backbones/tiny'
  assert cache_reference(tmp_path / 'elsewhere') == str(tmp_path / 'elsewhere')
  config = lambda steps: _config(f'--config.train.steps={steps}',
                                 f'--config.model.checkpoint={reference}')
  workdir = RunDir(tmp_path / 'run')
  first = train(config(4), workdir.path)
  assert first.backbone['source'] == reference
  assert first.backbone['params_hash'] == random_backbone.params_hash

  # Recorded with the absolute path, as before references: the same checkpoint.
  portable = {name: (workdir / name).read_text() for name in ('result.json', 'manifest.json')}
  absolute = str(cache / 'backbones' / 'tiny')
  result, manifest = (json.loads(text) for text in portable.values())
  result['config']['model']['checkpoint'] = manifest['backbone']['source'] = absolute
  (workdir / 'result.json').write_text(json.dumps(result))
  (workdir / 'manifest.json').write_text(json.dumps(manifest))
  assert workdir.finished(config(4), default_config())
  assert check_or_write_manifest(workdir, config(4), load_model_backbone(config(4).model),
                                 methods.get('prompt_tuning'), write=False)
  elsewhere = _config('--config.train.steps=4', f'--config.model.checkpoint={tmp_path}/other')
  assert not workdir.finished(elsewhere, default_config())

  for name, text in portable.items():  # an absolute path cannot follow a move; a reference can
    (workdir / name).write_text(text)
  moved = tmp_path / 'moved_cache'
  cache.rename(moved)
  monkeypatch.setenv('T5PROMPT_CACHE', str(moved))
  assert train(config(4), workdir.path) == first  # found finished, nothing retrained
  resumed = train(config(8), workdir.path)  # resumes from step 4 on the moved backbone
  assert resumed.steps == 8 and resumed.backbone == first.backbone
