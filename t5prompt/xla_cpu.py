"""The CPU backend's settings, made before JAX starts its backend (the `t5prompt` command and
the benchmarks call `prepare_cpu_backend`; a library user calls it first). GPU and TPU ignore
the XLA flags, and an install with an accelerator plugin keeps glibc's allocator as it is.

XLA flags: by default XLA's CPU scheduler orders a program for concurrency: independent ops (a
layer's query, key and value projections; every decoder layer's cross-attention keys) run at
once on the runtime's eight threads, more than the cores (on one pinned core the ops' durations
summed to 1.37x the step). Ordered for memory instead, the t5-v1_1-small prompt-tuning step is
1-10% faster in fp32 and 8-9% in bf16 on one core, as fast in fp32 and 3-5% faster in bf16 on
two, with the same numbers bitwise (README, Benchmarks).

Allocator: XLA's CPU runtime allocates a step's temporaries as one buffer (323 MB for the
t5-v1_1-small prompt-tuning step) with malloc on a worker thread. glibc serves a thread from its
own arena, whose heaps hold at most 64 MB, so it maps that buffer fresh and unmaps it in every
step: 78,790 page faults per step, ~4 us each on a VM. With one arena (set before JAX starts
its threads) and, once the backbone is placed, large blocks kept in the heap when freed, the
step reuses the buffer's pages: 0 faults per step after the first one to three, the step 5-17%
faster, resident memory within 6% of glibc's defaults (README). Not while loading: a streamed
load peaked at 1.24-1.39x the placed bytes with large blocks kept, 1.09-1.16x with one arena
alone, so each backbone load restores glibc's defaults first (a sweep worker's later runs load
in a process whose earlier run kept them).
"""

import ctypes
import importlib.metadata
import importlib.util
import os
import platform

CPU_FLAGS = ('--xla_cpu_enable_concurrency_optimized_scheduler=false',)
# XLA aborts at startup on a flag it does not know; these are known to the jaxlib releases
# measured. Another jaxlib runs without them.
_MEASURED_JAXLIB = ('0.10.',)
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_one_arena = False  # set by `use_one_malloc_arena` in this process


def prepare_cpu_backend() -> None:
  """Before JAX starts: `set_cpu_flags` and `use_one_malloc_arena`."""
  set_cpu_flags()
  use_one_malloc_arena()


def set_cpu_flags() -> None:
  """Adds `CPU_FLAGS` to $XLA_FLAGS; a flag already there stays as the user set it."""
  try:
    jaxlib = importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return
  if not jaxlib.startswith(_MEASURED_JAXLIB):
    return
  flags = os.environ.get('XLA_FLAGS', '')
  for flag in CPU_FLAGS:
    if flag.split('=')[0] not in flags:
      flags = f'{flags} {flag}'.strip()
  os.environ['XLA_FLAGS'] = flags


def use_one_malloc_arena() -> bool:
  """Has every thread allocate from glibc's main heap, which (unlike a thread's arena) can
  hold a step's temporaries; returns whether it did. Threads started before keep their own
  arenas: call it before JAX (or TensorFlow, or PyTorch) starts threads. Not on another C
  library, not where the user tuned malloc ($MALLOC_*, glibc.malloc tunables), and not where
  JAX has a GPU/TPU plugin (the host's work there is not the step; unmeasured)."""
  global _one_arena  # pylint: disable=global-statement
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  if (any(name.startswith('MALLOC_') for name in os.environ)
      or 'glibc.malloc' in os.environ.get('GLIBC_TUNABLES', '')):
    return False
  if any(importlib.util.find_spec(name) for name in ('jax_plugins', 'libtpu')):
    return False
  _one_arena = _mallopt(_M_ARENA_MAX, 1)
  return _one_arena


def keep_freed_memory() -> bool:
  """Once the params are placed (`build` calls it): large blocks from the heap, not
  mapped apart, and up to 2 GiB freed at the heap's top kept, so each step reuses the pages the
  one before freed; returns whether it did. Only after `use_one_malloc_arena`."""
  return _one_arena and _mallopt(_M_MMAP_MAX, 0) and _mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1)


def free_memory_for_loading() -> bool:
  """Undoes `keep_freed_memory` (glibc's defaults: large blocks mapped apart, freed memory
  returned), so the blocks a backbone load reads go back to the system once placed;
  `load_model_backbone` calls it, since a process's earlier run may have kept freed memory.
  Returns whether it did."""
  return _one_arena and _mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX) and _mallopt(
      _M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)


def _mallopt(parameter: int, value: int) -> bool:
  return ctypes.CDLL('libc.so.6').mallopt(parameter, value) == 1
