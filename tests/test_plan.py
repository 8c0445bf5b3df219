"""`t5prompt plan`: its params / optimizer-state / gradient bytes equal the real sharded arrays'."""

import jax
import pytest

from conftest import random_t5_params
from t5prompt import cli, optim, plan
from t5prompt.backbone import Backbone
from t5prompt.build import build
from t5prompt.models import get_size, t5
from t5prompt.partitioning import make_partitioning
from t5prompt.run_config import default_config


def _device_bytes(tree) -> int:
  """What device 0 really holds of these arrays."""
  device = jax.devices()[0]
  return sum(shard.data.nbytes for leaf in jax.tree.leaves(tree)
             for shard in leaf.addressable_shards if shard.device == device)


@pytest.mark.parametrize('method, mesh, shard_embed, dtype', [
    ('prompt_tuning', (8, 1), False, 'bfloat16'), ('prompt_tuning', (8, 1), False, 'float32'),
    ('prompt_tuning', (4, 2), False, 'bfloat16'),
    ('model_tuning', (2, 4), False, 'bfloat16'), ('model_tuning', (4, 2), True, 'bfloat16'),
    pytest.param('prefix_tuning', (4, 2), False, 'bfloat16', marks=pytest.mark.slow),
    pytest.param('deep_prompt_tuning', (2, 4), True, 'bfloat16', marks=pytest.mark.slow),
    pytest.param('p_tuning', (8, 1), False, 'bfloat16', marks=pytest.mark.slow)])
def test_plan_bytes_equal_the_real_sharded_arrays(method, mesh, shard_embed, dtype, monkeypatch):
  """In bf16 (the plan's default) a frozen backbone's matrices are stored in bf16. The plan is
  for accelerators: the real arrays are placed as there (a CPU without bf16 dot units keeps
  frozen kernels in float32 instead: tests/test_precision.py)."""
  monkeypatch.setattr(t5, 'native_low_precision_dots', lambda: True)
  config = get_size('tiny-v1_1').replace(dtype=dtype)
  optimizer_config = default_config().optimizer
  optimizer_config.factored = method == 'model_tuning'
  expected = plan.plan('tiny-v1_1', method, mesh, batch=8, prompt_length=16,
                       shard_embed=shard_embed, optimizer_config=optimizer_config, dtype=dtype)
  partitioning = make_partitioning(mesh, shard_embed)
  weights = random_t5_params(config)
  run_config = plan.run_config_for(method, 16, optimizer_config, init='random_uniform')
  with partitioning.activate():  # real arrays, placed exactly as training places them
    state = build(run_config, Backbone(config, weights, 'test', ''), partitioning).state
  assert expected.params == _device_bytes(state.trainable) + _device_bytes(state.frozen)
  assert expected.trainable == expected.gradients == _device_bytes(state.trainable)
  assert expected.optimizer_state == _device_bytes(state.opt_state)
  assert expected.num_params == (optim.num_elements(state.trainable)
                                 + optim.num_elements(state.frozen))
  if method == 'prompt_tuning':
    assert expected.num_trainable == 16 * config.d_model


def test_paper_sizes_and_prompt_counts():
  """Prompt parameters at length 100 are 100 x d_model (paper: 51,200 ... 409,600)."""
  xxl = plan.plan('xxl', 'prompt', (16, 1))
  assert xxl.num_trainable == 409_600 and 11.0e9 < xxl.num_params < 11.2e9
  assert plan.plan('small', 'prompt', (1, 1)).num_trainable == 51_200
  assert xxl.optimizer_state < 3 * 409_600 * 4  # Adafactor state for the prompt only


def test_remat_and_model_axis_shrink_the_plan():
  full = plan.plan('large', 'model', (4, 1))
  assert plan.plan('large', 'model', (4, 1), remat='full').activations < full.activations
  sharded = plan.plan('large', 'model', (1, 4))
  assert sharded.params < full.params / 3


def test_plan_command_suggests_a_mesh_that_fits(capsys):
  assert cli.main(['plan', '--size', 'xl', '--method', 'model', '--mesh', '8x1',
                   '--device-memory', '16GiB']) == 0
  out = capsys.readouterr().out
  assert 'does NOT fit in 16 GiB' in out and 'suggestion: mesh' in out
  assert cli.main(['plan', '--size', 'small', '--mesh', '4x1']) == 0
  assert 'fits in 16 GiB' in capsys.readouterr().out
  assert cli.main(['plan', '--mesh', '16']) == 2
  assert 'DATAxMODEL' in capsys.readouterr().err


def test_parameter_counts_per_method():
  """Trained and stored counts from the formulas: tiny-v1_1 has d=32, 2+2 layers, 4 heads x 8."""
  counts = {row['method']: row for row in plan.parameter_counts('tiny-v1_1', 10,
                                                                reparam_hidden=16)}
  length, d, hidden, layers, inner = 10, 32, 16, 2, 4 * 8
  kinds = 3  # encoder self-, decoder self-, decoder cross-attention
  prefixes = kinds * layers * 2 * length * inner
  assert counts['prompt_tuning']['trainable'] == counts['prompt_tuning']['stored'] == length * d
  assert counts['deep_prompt_tuning']['trainable'] == prefixes
  assert counts['prefix_tuning']['trainable'] == (length * d + d * hidden + hidden
                                                  + kinds * (hidden + 1) * layers * 2 * inner)
  assert counts['prefix_tuning']['stored'] == prefixes  # the MLP folded away
  lstm = 2 * ((d + hidden + 1) * 4 * hidden) + 2 * ((2 * hidden + hidden + 1) * 4 * hidden)
  head = (2 * hidden + 1) * 2 * hidden + (2 * hidden + 1) * d
  assert counts['p_tuning']['trainable'] == length * d + lstm + head
  assert counts['p_tuning']['stored'] == length * d  # the encoder dropped
  assert counts['model_tuning']['trainable'] == counts['model_tuning']['backbone']


def test_cli_plan_prints_the_counts(capsys):
  assert cli.main(['plan', '--size', 'small', '--counts', '--prompt-length', '100']) == 0
  out = capsys.readouterr().out
  assert '| prompt_tuning | 51,200 | 51,200 |' in out
  assert '| deep_prompt_tuning | 1,843,200 | 1,843,200 |' in out  # 3 kinds x 8 x 2 x 100 x 384


def test_host_memory_at_load_streamed_and_whole(capsys):
  """Streamed: this host's devices' params and one tensor (Small: the 32128 x 512 embedding);
  read whole: two float32 copies of the model besides."""
  small = plan.plan('small', 'prompt', (2, 2))
  assert small.largest_tensor == 4 * 32128 * 512
  streamed, whole = small.host_memory_at_load(4)
  assert streamed == 4 * small.params + small.largest_tensor
  assert whole - 4 * small.params == 8 * small.num_params
  assert cli.main(['plan', '--size', 'small', '--mesh', '2x2', '--devices-per-host', '4']) == 0
  assert f'{streamed / plan.GiB:.2f} GiB streamed' in capsys.readouterr().out
