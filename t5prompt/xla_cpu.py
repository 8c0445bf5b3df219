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
step: 78,790 page faults per step, ~4 us each on a VM. Served from the main heap, and kept there
when freed, the buffer's pages are reused: 0 faults per step after the first one to three, the
step 5-17% faster, resident memory within 6% of glibc's defaults (README).
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
# glibc's mallopt parameters (malloc.h) and the values set: one arena (the main heap, which
# grows without a size cap), no mmap for large blocks, and freed memory up to 2 GiB at the top
# of the heap kept rather than returned to the system.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
MALLOC_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2 ** 31 - 1))


def prepare_cpu_backend() -> None:
  """`set_cpu_flags` and `keep_freed_memory`, before JAX starts."""
  set_cpu_flags()
  keep_freed_memory()


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


def keep_freed_memory() -> bool:
  """Sets glibc's malloc to `MALLOC_SETTINGS`, so a jitted step reuses the pages its previous
  step freed; returns whether it did. Not on another C library, not where the user tuned malloc
  ($MALLOC_*, glibc.malloc tunables), and not where JAX has a GPU/TPU plugin (the host's work
  there is not the step; unmeasured). Threads started before keep their arenas: call it before
  JAX (or TensorFlow, or PyTorch) starts threads."""
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  if (any(name.startswith('MALLOC_') for name in os.environ)
      or 'glibc.malloc' in os.environ.get('GLIBC_TUNABLES', '')):
    return False
  if any(importlib.util.find_spec(name) for name in ('jax_plugins', 'libtpu')):
    return False
  libc = ctypes.CDLL('libc.so.6')
  return all(libc.mallopt(parameter, value) == 1 for parameter, value in MALLOC_SETTINGS)
