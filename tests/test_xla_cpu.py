"""The CPU backend's XLA flags: added to what the user set (never over it), only for the jaxlib
releases measured, and computing the same numbers as XLA's defaults."""

import importlib.metadata
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from t5prompt.xla_cpu import CPU_FLAGS, set_cpu_flags

SCHEDULER = '--xla_cpu_enable_concurrency_optimized_scheduler'


def test_flags_join_the_users_and_leave_the_users_own_setting(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  set_cpu_flags()
  assert os.environ['XLA_FLAGS'].split() == ['--xla_force_host_platform_device_count=2',
                                             *CPU_FLAGS]
  set_cpu_flags()  # twice: still once
  assert os.environ['XLA_FLAGS'].count(SCHEDULER) == 1
  monkeypatch.setenv('XLA_FLAGS', f'{SCHEDULER}=true')
  set_cpu_flags()
  assert os.environ['XLA_FLAGS'] == f'{SCHEDULER}=true'
  monkeypatch.delenv('XLA_FLAGS')
  set_cpu_flags()
  assert os.environ['XLA_FLAGS'] == ' '.join(CPU_FLAGS)


def test_an_unmeasured_jaxlib_gets_no_flags(monkeypatch):
  """XLA aborts at startup on a flag it does not know: a jaxlib that may not know them runs
  with its own defaults."""
  monkeypatch.setattr(importlib.metadata, 'version', lambda name: '0.11.0')
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  set_cpu_flags()
  assert os.environ['XLA_FLAGS'] == '--xla_force_host_platform_device_count=2'


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): two training processes
def test_the_flags_change_no_number_of_a_training_run(tmp_path):
  """`t5prompt train` with the flags (the default) and with XLA's own scheduling (the user's
  setting wins) writes the same prompt, bit for bit, after steps with dropout."""
  prompts = []
  for name, flags in (('ours', ''), ('xla_default', f'{SCHEDULER}=true')):
    workdir = tmp_path / name
    done = subprocess.run(
        [sys.executable, '-m', 't5prompt.cli', 'train', '--config',
         str(REPO / 'configs' / 'smoke.py'), '--workdir', str(workdir),
         '--config.model.size=tiny-v1_1', '--config.model.dropout_rate=0.1',
         '--config.task.input_length=64', '--config.train.steps=3',
         '--config.train.eval_every=3', '--config.train.checkpoint_every=3',
         '--config.train.eval_at_start=False', '--config.train.max_eval_examples=8'],
        env={**os.environ, 'XLA_FLAGS': flags}, capture_output=True, text=True, timeout=600,
        check=False)
    assert done.returncode == 0, done.stderr
    prompts.append(np.load(workdir / 'prompt.npy'))
  assert prompts[0].tobytes() == prompts[1].tobytes()
