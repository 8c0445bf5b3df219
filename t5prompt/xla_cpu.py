"""XLA flags for the CPU backend, set before JAX starts its backend (the `t5prompt` command and
the benchmarks do; a library user calls `set_cpu_flags` first). GPU and TPU ignore them.

By default XLA's CPU scheduler orders a program for concurrency: independent ops (a layer's
query, key and value projections; every decoder layer's cross-attention keys) run at once on
the runtime's eight threads, more than the cores (on one pinned core the ops' durations summed
to 1.37x the step). Ordered for memory instead, the t5-v1_1-small prompt-tuning step is 1-10%
faster in fp32 and 8-9% in bf16 on one core, as fast in fp32 and 3-5% faster in bf16 on two,
with the same numbers bitwise (README, Benchmarks).
"""

import importlib.metadata
import os

CPU_FLAGS = ('--xla_cpu_enable_concurrency_optimized_scheduler=false',)
# XLA aborts at startup on a flag it does not know; these are known to the jaxlib releases
# measured. Another jaxlib runs without them.
_MEASURED_JAXLIB = ('0.10.',)


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
