"""Preemption, corrupt checkpoints, NaN losses, concurrent runs and atomic writes."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from t5prompt import atomic, build, cli
from t5prompt import train as trainer
from t5prompt.data import pipeline
from t5prompt.preemption import PREEMPTED_EXIT_CODE
from t5prompt.run_config import load_config
from t5prompt.run_dir import RunDir

from conftest import REPO

SMOKE = REPO / 'configs' / 'smoke.py'
RUN = ['--config.model.size=tiny-v1_1', '--config.task.input_length=64',
       '--config.train.batch_size=8', '--config.train.steps=30', '--config.train.eval_every=30',
       '--config.train.checkpoint_every=10', '--config.train.log_every=1',
       '--config.train.eval_at_start=False', '--config.train.max_eval_examples=8',
       '--config.model.dropout_rate=0.1']


def _final_state(workdir, step=30):
  return ocp.PyTreeCheckpointer().restore(workdir / 'checkpoints' / str(step) / 'state')


def _train_subprocess(workdir):
  return subprocess.Popen(
      [sys.executable, '-m', 't5prompt.cli', 'train', '--config', str(SMOKE), '--workdir',
       str(workdir), *RUN], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _logged_steps(workdir) -> int:
  path = workdir / 'metrics.jsonl'
  if not path.exists():
    return 0
  lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return max((r['step'] for r in lines if r['kind'] == 'train'), default=0)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('uninterrupted')
  trainer.train(load_config(SMOKE, RUN), workdir)
  return workdir


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_sigterm_at_a_random_step_then_resume_is_bitwise_equal(uninterrupted, tmp_path):
  stop_after = random.Random().randint(3, 25)
  print(f'SIGTERM once step {stop_after} is logged')
  process = _train_subprocess(tmp_path)
  deadline = time.time() + 180
  while _logged_steps(tmp_path) < stop_after and process.poll() is None:
    assert time.time() < deadline, 'the run did not reach the step in time'
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == PREEMPTED_EXIT_CODE, stderr[-2000:]
  assert 'Stopped by SIGTERM after step' in stderr and 'Rerun the same command' in stderr
  saved = max(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
  assert saved >= stop_after and not (tmp_path / 'result.json').exists()

  resumed = _train_subprocess(tmp_path)
  _, stderr = resumed.communicate(timeout=180)
  assert resumed.returncode == 0, stderr[-2000:]
  assert f'resuming {tmp_path} at step {saved}' in stderr
  jax.tree.map(np.testing.assert_array_equal, _final_state(tmp_path), _final_state(uninterrupted))


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_truncated_latest_checkpoint_falls_back_to_the_previous_one(uninterrupted, tmp_path,
                                                                    capsys):
  config = load_config(SMOKE, RUN)
  trainer.train(load_config(SMOKE, RUN[:4] + ['--config.train.steps=20'] + RUN[5:]), tmp_path)
  # A crash mid-write: the newest checkpoint's largest file loses its second half.
  files = [p for p in (tmp_path / 'checkpoints' / '20').rglob('*') if p.is_file()]
  largest = max(files, key=lambda p: p.stat().st_size)
  largest.write_bytes(largest.read_bytes()[:largest.stat().st_size // 2])
  trainer.train(config, tmp_path)
  err = capsys.readouterr().err
  assert 'checkpoint 20 is unreadable' in err and 'falling back to the previous one' in err
  assert f'resuming {tmp_path} at step 10' in err
  jax.tree.map(np.testing.assert_array_equal, _final_state(tmp_path), _final_state(uninterrupted))


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch):
  """A poisoned batch (token 13 in the targets at step 14) makes the loss NaN."""
  poison, poisoned_step = 13, 14
  real_batch, real_loss = pipeline.train_batch, build.cross_entropy

  def train_batch(data, batch_size, seed, step, *args, **kwargs):
    batch = real_batch(data, batch_size, seed, step, *args, **kwargs)
    if step == poisoned_step:
      batch['targets'][0, 0] = poison
    return batch

  def cross_entropy(logits, targets):
    return jnp.where(jnp.any(targets == poison), jnp.nan, real_loss(logits, targets))

  monkeypatch.setattr(pipeline, 'train_batch', train_batch)
  monkeypatch.setattr(build, 'cross_entropy', cross_entropy)
  with pytest.raises(trainer.NonFiniteLossError,
                     match=r'became NaN/Inf between steps 14 and 15; stopped without saving. The '
                           r'last good checkpoint \(step 10\) is intact'):
    trainer.train(load_config(SMOKE, RUN), tmp_path)
  steps = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
  assert steps == [10]
  state = _final_state(tmp_path, 10)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state['trainable']))
  assert not (tmp_path / 'result.json').exists()


def test_a_second_process_on_the_same_workdir_is_refused(tmp_path, capsys):
  with RunDir(tmp_path).lock():
    code = cli.main(['train', '--config', str(SMOKE), '--workdir', str(tmp_path), *RUN])
  assert code == 2
  error = capsys.readouterr().err
  assert f'{tmp_path} is in use by another t5prompt process (pid {os.getpid()}' in error
  assert not (tmp_path / 'manifest.json').exists()


def test_atomic_writes_leave_the_old_file_whole(tmp_path):
  target = tmp_path / 'result.json'
  atomic.write_json(target, {'score': 1})
  with pytest.raises(TypeError):
    atomic.write_json(target, {'score': object()})  # fails mid-write
  assert json.loads(target.read_text()) == {'score': 1}
  assert [p.name for p in tmp_path.iterdir()] == ['result.json']  # no temp file left behind
