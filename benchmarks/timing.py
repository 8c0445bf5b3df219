"""Side-by-side timing for the benchmarks: alternating rounds, medians (the machines are noisy)."""

import os
import platform
import statistics
import time


def median_seconds(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def side_by_side(fn_a, fn_b, repeats: int, rounds: int = 3) -> tuple[float, float]:
  """Alternates rounds of A and B so drift in machine load hits both; returns the medians."""
  fn_a(), fn_b()  # warm-up (and compile)
  a, b = [], []
  for _ in range(rounds):
    a.append(median_seconds(fn_a, repeats))
    b.append(median_seconds(fn_b, repeats))
  return statistics.median(a), statistics.median(b)


def machine(jax_module) -> str:
  device = jax_module.devices()[0]
  return (f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
          f'{device.platform} ({device.device_kind})')
