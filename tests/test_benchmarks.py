"""The profiler's join of XLA's optimized HLO and a jax.profiler trace (benchmarks/hlo_profile.py):
matmul FLOPs read off a real compiled program, and op times read off a real trace."""

from pathlib import Path
import sys

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
import hlo_profile  # pylint: disable=wrong-import-position


def _layer(x, w, v):
  """A dense layer with an activation (XLA fuses them) and a batched attention-like dot."""
  h = jnp.tanh(x @ w)                                        # [64, 32] @ [32, 48]
  scores = jnp.einsum('bqd,bkd->bqk', h.reshape(4, 16, 48), h.reshape(4, 16, 48))
  return jnp.einsum('bqk,kd->bqd', scores, v).sum()          # [4, 16, 16] @ [16, 24]


_FORWARD_FLOPS = 2 * 64 * 32 * 48 + 2 * 4 * 16 * 16 * 48 + 2 * 4 * 16 * 16 * 24


def _compiled(fn, *args):
  return jax.jit(fn).lower(*args).compile()


def _args():
  keys = jax.random.split(jax.random.key(0), 3)
  return (jax.random.normal(keys[0], (64, 32)), jax.random.normal(keys[1], (32, 48)),
          jax.random.normal(keys[2], (16, 24)))


def test_matmul_flops_of_a_compiled_program_match_the_shapes():
  ops = hlo_profile.hlo_ops(_compiled(_layer, *_args()).as_text())
  running = {name: op for name, op in ops.items() if op['flops']}
  assert sum(op['flops'] for op in running.values()) == _FORWARD_FLOPS
  assert all(hlo_profile.kind(name, op) == 'matmul' for name, op in running.items())


def test_op_times_come_from_a_real_trace(tmp_path):
  args = _args()
  compiled = _compiled(_layer, *args)
  ops = hlo_profile.hlo_ops(compiled.as_text())
  compiled(*args).block_until_ready()
  jax.profiler.start_trace(str(tmp_path), create_perfetto_trace=True)
  for _ in range(3):
    compiled(*args).block_until_ready()
  jax.profiler.stop_trace()
  seconds = hlo_profile.op_seconds(str(tmp_path), ops, steps=3)
  matmuls = [name for name in seconds if ops[name]['flops']]
  assert matmuls and all(seconds[name] > 0 for name in matmuls)
  summary = hlo_profile.summarize(ops, seconds, step_s=sum(seconds.values()), peak=1e9)
  assert summary['by_kind_ms']['matmul'] == pytest.approx(
      1e3 * sum(seconds[name] for name in matmuls))
  assert sum(g['ops'] for g in summary['matmul_groups']) == len(matmuls)


@pytest.mark.parametrize('op_name, group', [
    ('jit(train_step)/transpose(jvp(T5))/T5.encode/encoder/layers_3/mlp/wi_0/aby,yz->abz/'
     'dot_general', 'bwd encoder/mlp/wi_0'),
    ('jit(train_step)/jvp(T5)/T5.decode/decoder/layers_0/encoder_decoder_attention/query/'
     'aby,yz->abz/dot_general', 'fwd decoder/encoder_decoder_attention/query'),
    ('jit(train_step)/jvp(T5)/T5.encode/encoder/layers_1/attention/reduce_max',
     'fwd encoder/attention'),
])
def test_matmul_groups_pool_a_projection_over_layers(op_name, group):
  assert hlo_profile.matmul_group(op_name) == group
