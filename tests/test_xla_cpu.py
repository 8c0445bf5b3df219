"""The CPU backend's settings. XLA flags: added to what the user set (never over it), only for
the jaxlib releases measured, and computing the same numbers as XLA's defaults. glibc's
allocator: a jitted step reuses its freed temporaries' pages, unless the user tuned malloc."""

import importlib.metadata
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from t5prompt import xla_cpu
from t5prompt.xla_cpu import (CPU_FLAGS, free_memory_for_loading, keep_freed_memory, set_cpu_flags,
                              use_one_malloc_arena)

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


# A step whose temporary (96 MB: the barrier keeps it whole) is larger than a glibc thread
# arena's heap (64 MB): without the setting every call maps it fresh and faults in every page.
# With it the heap may grow for the first few calls (an aligned block freed by one call can be
# just too small for the next one's request) and then holds: faults in up to 8 of the first 14
# of 40 calls, measured.
_STEP_FAULTS = """
import resource, sys
from t5prompt import xla_cpu
applied = sys.argv[1] == 'keep' and xla_cpu.use_one_malloc_arena()
import jax, jax.numpy as jnp

@jax.jit
def step(x):
  return jnp.cos(jax.lax.optimization_barrier(jnp.sin(x))).sum()

x = jnp.ones(24_000_000, jnp.float32)
applied = applied and xla_cpu.keep_freed_memory()  # as `build` does once it placed the params
step(x).block_until_ready()  # compiled
faults = []
for _ in range(30):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  step(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, *faults)
"""


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason="glibc's allocator")
def test_a_step_reuses_its_freed_temporaries_pages():
  faults = {}
  for mode in ('keep', 'default'):
    env = {name: value for name, value in os.environ.items() if not name.startswith('MALLOC_')}
    done = subprocess.run([sys.executable, '-c', _STEP_FAULTS, mode], env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    applied, *counts = done.stdout.split()
    if mode == 'keep' and applied != 'True':
      pytest.skip('an accelerator plugin is installed: glibc keeps its defaults')
    faults[mode] = sorted(int(count) for count in counts)
  pages = 96_000_000 // 4096
  assert faults['default'][0] > 0.9 * pages  # every call maps the buffer fresh
  assert faults['keep'][len(faults['keep']) // 2] < 0.01 * pages, faults['keep']  # most reuse


def test_the_users_malloc_tuning_stays(monkeypatch):
  monkeypatch.setattr(xla_cpu.ctypes, 'CDLL', lambda name: pytest.fail('mallopt was called'))
  monkeypatch.setattr(xla_cpu, '_one_arena', False)
  monkeypatch.setenv('MALLOC_ARENA_MAX', '4')
  assert not use_one_malloc_arena()
  monkeypatch.delenv('MALLOC_ARENA_MAX')
  monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.malloc.trim_threshold=0')
  assert not use_one_malloc_arena()
  assert not keep_freed_memory()  # only after one arena: threads' arenas would still map
  assert not free_memory_for_loading()


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
