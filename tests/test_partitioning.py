"""Partitioned training on 8 virtual CPU devices: params sharded as the rules say, the same
steps on every mesh, restore onto another mesh, and two jax.distributed processes."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import PartitionSpec as P

from t5prompt import optim
from t5prompt.checkpoints import RunCheckpoints
from t5prompt.models import get_size
from t5prompt.partitioning import (logical_param_specs, make_partitioning, mesh_shape,
                                   state_shardings)
from t5prompt.run_config import load_config
from t5prompt.prompts.methods import build_model
from t5prompt.train import train
from t5prompt.prompts import methods

from conftest import REPO, init_params

TOLERANCE = 1e-5
SHORT = ['--config.model.size=tiny-v1_1', '--config.task.input_length=64',
         '--config.train.batch_size=8', '--config.train.steps=4', '--config.train.eval_every=4',
         '--config.train.checkpoint_every=2', '--config.train.log_every=1',
         '--config.train.eval_at_start=False', '--config.train.max_eval_examples=16',
         '--config.model.dropout_rate=0.1',  # dropout on: the RNG must agree across meshes
         # Adafactor normalises each update to ~LR, so a rounding difference between meshes'
         # reduction orders (~1e-7 relative in the gradient) reaches the prompt scaled by LR.
         '--config.optimizer.learning_rate=0.03']


def _config(*overrides):
  return load_config(REPO / 'configs' / 'smoke.py', SHORT + list(overrides))


def _partitioning(shape, shard_embed=False):
  count = shape[0] * shape[1]
  return make_partitioning(shape, shard_embed, devices=jax.devices()[:count])


def _state(workdir, step):
  return ocp.PyTreeCheckpointer().restore(workdir / 'checkpoints' / str(step) / 'state')


def _losses(workdir):
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  return np.array([json.loads(l)['loss'] for l in lines if '"train"' in l])


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_params_and_prompt_are_sharded_as_the_rules_say():
  assert jax.device_count() == 8
  model = build_model(get_size('tiny-v1_1'), 'prompt_tuning', 4)
  for shard_embed, embed in ((False, None), (True, 'data')):
    partitioning = _partitioning((4, 2), shard_embed)
    with partitioning.activate():
      specs = logical_param_specs(model)
      shardings = partitioning.shardings(specs)
      tokens = jnp.ones((8, 8), jnp.int32)
      params = partitioning.put(init_params(model, tokens, tokens), shardings)
    layer = params['encoder']['layers']
    expected = {
        ('encoder', 'layers', 'attention', 'query', 'kernel'): P(None, embed, 'model', None),
        ('encoder', 'layers', 'attention', 'out', 'kernel'): P(None, 'model', None, embed),
        ('encoder', 'layers', 'mlp', 'wi_0', 'kernel'): P(None, embed, 'model'),
        ('encoder', 'layers', 'mlp', 'wo', 'kernel'): P(None, 'model', embed),
        ('token_embedder', 'embedding'): P('model', embed),
        ('decoder', 'logits_dense', 'kernel'): P(embed, 'model'),
        ('encoder', 'relpos_bias', 'rel_embedding'): P('model', None),
        ('prompt', 'prompt'): P(None, None),  # replicated: one host can save it
    }
    for path, spec in expected.items():
      array = params
      for key in path:
        array = array[key]
      assert array.sharding.spec == spec, (path, array.sharding.spec)
    # Each device really holds only its shard: heads 4 / model 2.
    query = layer['attention']['query']['kernel']
    assert query.addressable_shards[0].data.shape == (
        2, 32 // (4 if shard_embed else 1), 2, 8)
    assert len(query.addressable_shards) == 8


def test_optimizer_state_follows_its_params():
  model = build_model(get_size('tiny-v1_1'), 'model_tuning', 0)
  partitioning = _partitioning((2, 4))
  config = _config('--config.optimizer.name=adam').optimizer
  rules = methods.get('model_tuning').trainable_rules
  optimizer = optim.make_optimizer(config, rules)
  with partitioning.activate():
    shardings = partitioning.shardings(logical_param_specs(model))
    tokens = jnp.ones((8, 8), jnp.int32)
    params = partitioning.put(init_params(model, tokens, tokens), shardings)
    state_specs = state_shardings(jax.eval_shape(optimizer.init, params), shardings, params,
                                  partitioning)
    state = jax.jit(optimizer.init, out_shardings=state_specs)(params)
  adam = state.inner_states['train'].inner_state[0]
  assert adam.mu['token_embedder']['embedding'].sharding.spec == P('model', None)
  assert adam.nu['encoder']['layers']['mlp']['wo']['kernel'].sharding.spec == P(None, 'model',
                                                                                  None)
  assert adam.count.sharding.spec == P()


def test_mesh_shapes_are_checked():
  assert mesh_shape((-1, 2), 8) == (4, 2) and mesh_shape((2, -1), 8) == (2, 4)
  with pytest.raises(ValueError, match=r'Mesh \(3, 2\) does not fit 8 devices'):
    mesh_shape((3, 2), 8)


@pytest.fixture(scope='module')
def runs_on_meshes(tmp_path_factory):
  """The same prompt-tuning steps on meshes 1x1, 8x1, 4x2 and 2x4."""
  out = {}
  for shape in ((1, 1), (8, 1), (4, 2), (2, 4)):
    workdir = tmp_path_factory.mktemp(f'mesh_{shape[0]}x{shape[1]}')
    train(_config(), workdir, _partitioning(shape))
    out[shape] = workdir
  return out


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_same_steps_give_the_same_loss_and_prompt_on_every_mesh(runs_on_meshes):
  reference = runs_on_meshes[(1, 1)]
  prompt = _state(reference, 4)['trainable']['prompt']['prompt']
  for shape, workdir in runs_on_meshes.items():
    np.testing.assert_allclose(_losses(workdir), _losses(reference), atol=TOLERANCE, rtol=0,
                               err_msg=str(shape))
    np.testing.assert_allclose(_state(workdir, 4)['trainable']['prompt']['prompt'], prompt,
                               atol=TOLERANCE, rtol=0, err_msg=str(shape))
  assert len(_losses(reference)) == 4


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_model_tuning_gives_the_same_weights_on_a_model_parallel_mesh(tmp_path):
  overrides = ('--config.method=model_tuning', '--config.optimizer.name=adam',
               '--config.optimizer.learning_rate=0.001', '--config.train.steps=2',
               '--config.train.eval_every=2')
  train(_config(*overrides), tmp_path / 'single', _partitioning((1, 1)))
  train(_config(*overrides), tmp_path / 'sharded', _partitioning((2, 4)))
  single, sharded = _state(tmp_path / 'single', 2), _state(tmp_path / 'sharded', 2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=TOLERANCE, rtol=0),
               single['trainable'], sharded['trainable'])


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_restore_onto_another_mesh(runs_on_meshes):
  workdir = runs_on_meshes[(8, 1)]
  saved = _state(workdir, 4)
  partitioning = _partitioning((2, 4))
  model = build_model(get_size('tiny-v1_1'), 'prompt_tuning', 8)
  with partitioning.activate():
    shardings = partitioning.shardings(logical_param_specs(model))
    trainable_shardings, _ = optim.split_params(
        shardings, methods.get('prompt_tuning').trainable_rules)
    template = jax.tree.map(lambda x, s: jax.device_put(jnp.zeros_like(x), s),
                            saved['trainable'], trainable_shardings)
    restored = RunCheckpoints(workdir).best.restore(4, args=ocp.args.StandardRestore(template))
  np.testing.assert_array_equal(restored['prompt']['prompt'], saved['trainable']['prompt']['prompt'])
  assert restored['prompt']['prompt'].sharding.mesh.shape == {'data': 2, 'model': 4}


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(('localhost', 0))
    return probe.getsockname()[1]


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_two_processes_train_together_into_one_checkpoint(runs_on_meshes, tmp_path):
  """Two jax.distributed processes (4 CPU devices each) train on one 4x2 mesh over both, each
  loading its half of every batch; the checkpoint they write together equals a single
  process's run, and restores onto another mesh."""
  port = _free_port()
  workdir = tmp_path / 'run'
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  command = [sys.executable, '-m', 't5prompt.cli', 'train', '--config',
             str(REPO / 'configs' / 'smoke.py'), '--workdir', str(workdir), *SHORT,
             '--config.partitioning.mesh=(4, 2)', '--coordinator-address', f'localhost:{port}',
             '--num-processes', '2', '--process-id']
  processes = [subprocess.Popen(command + [str(i)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in (0, 1)]
  outputs = [process.communicate(timeout=240) for process in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
  # One host reports (stdout also carries gloo's connection lines).
  report = outputs[0][0]
  assert json.loads(report[report.index('{\n'):])['steps'] == 4
  assert '"steps"' not in outputs[1][0]
  single = runs_on_meshes[(4, 2)]
  np.testing.assert_allclose(_losses(workdir), _losses(single), atol=TOLERANCE, rtol=0)
  # This one process restores the two processes' checkpoint onto a 2x4 mesh of its own.
  partitioning = _partitioning((2, 4))
  reference = _state(single, 4)
  template = jax.tree.map(lambda x: jax.device_put(np.zeros_like(x), partitioning.replicated),
                          reference)
  restored, record = RunCheckpoints(workdir).restore(4, template)
  assert record['step'] == 4 and record['data_position'] == 32
  together = restored['trainable']['prompt']['prompt']
  assert together.sharding.mesh.shape == {'data': 2, 'model': 4}
  np.testing.assert_allclose(together, reference['trainable']['prompt']['prompt'],
                             atol=TOLERANCE, rtol=0)
  np.testing.assert_array_equal(np.load(workdir / 'prompt.npy'), together)  # best = last here


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_prefixes_shard_with_the_heads_and_train_alike_on_every_mesh(tmp_path):
  """Per-layer prefixes carry ('layers', 'prefix', 'heads', 'kv'): heads over `model`, like
  the keys and values they join. Prefix tuning on 1x1 and 2x4 gives the same losses and MLP."""
  model = build_model(get_size('tiny-v1_1'), 'deep_prompt_tuning', 3)
  partitioning = _partitioning((2, 4))
  with partitioning.activate():
    specs = partitioning.shardings(logical_param_specs(model))
  assert specs['prefix']['encoder_key'].spec == P(None, None, 'model', None)
  overrides = ('--config.method=prefix_tuning', '--config.prompt.length=3',
               '--config.prompt.reparam_hidden=16', '--config.optimizer.name=adam',
               '--config.optimizer.learning_rate=0.001')
  train(_config(*overrides), tmp_path / 'single', _partitioning((1, 1)))
  train(_config(*overrides), tmp_path / 'sharded', _partitioning((2, 4)))
  np.testing.assert_allclose(_losses(tmp_path / 'sharded'), _losses(tmp_path / 'single'),
                             atol=TOLERANCE, rtol=0)
  single, sharded = _state(tmp_path / 'single', 4), _state(tmp_path / 'sharded', 4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=TOLERANCE, rtol=0),
               single['trainable'], sharded['trainable'])
  assert set(single['trainable']) == {'prefix'}
