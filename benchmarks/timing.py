"""Side-by-side timing for the benchmarks: alternating rounds, medians (the machines are noisy)."""

import json
import os
import platform
from pathlib import Path
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


def write_rows(result: dict, output: str) -> None:
  """Prints `result['rows']` as a Markdown table (times in ms, counts, A / B) and writes the
  whole result as JSON to `output`."""
  print('| measure | A | B | A / B |\n|---|---|---|---|')
  for row in result['rows']:
    a = f'{row["a_s"] * 1e3:.0f} ms' if 'a_s' in row else f'{row["a"]:,.4g}'
    b = f'{row["b_s"] * 1e3:.0f} ms' if 'b_s' in row else f'{row["b"]:,.4g}'
    ratio = f'{row["ratio"]:.3g}' if row['ratio'] is not None else ''
    print(f'| {row["measure"]} | {a} | {b} | {ratio} |')
  Path(output).parent.mkdir(parents=True, exist_ok=True)
  Path(output).write_text(json.dumps(result, indent=2) + '\n')
