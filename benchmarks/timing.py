"""Side-by-side timing for the benchmarks: alternating rounds, medians (the machines are noisy)."""

import json
import os
import platform
from pathlib import Path
import statistics
import sys
import time


def _seconds(fn, repeats: int) -> list[float]:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def median_seconds(fn, repeats: int) -> float:
  return statistics.median(_seconds(fn, repeats))


def min_seconds(fn, repeats: int) -> float:
  return min(_seconds(fn, repeats))


def side_by_side(*fns, repeats: int, rounds: int = 3) -> tuple[float, ...]:
  """Alternates rounds of the functions so drift in machine load hits all; returns the medians."""
  for fn in fns:
    fn()  # warm-up (and compile)
  times = [[] for _ in fns]
  for _ in range(rounds):
    for fn, seconds in zip(fns, times):
      seconds.append(median_seconds(fn, repeats))
  return tuple(statistics.median(seconds) for seconds in times)


def machine(jax_module) -> str:
  device = jax_module.devices()[0]
  return (f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
          f'{device.platform} ({device.device_kind})')


class Rows(list):
  """A benchmark's result rows; each is also printed to stderr as it is measured (a run takes
  minutes, on a slow machine half an hour)."""

  def append(self, row: dict) -> None:
    super().append(row)
    print(f'[bench] {format_row(row)}', file=sys.stderr, flush=True)


def format_row(row: dict) -> str:
  """A row as a Markdown table line: times in ms, counts, A / B."""
  a = f'{row["a_s"] * 1e3:.0f} ms' if 'a_s' in row else f'{row["a"]:,.4g}'
  b = f'{row["b_s"] * 1e3:.0f} ms' if 'b_s' in row else f'{row["b"]:,.4g}'
  ratio = f'{row["ratio"]:.3g}' if row['ratio'] is not None else ''
  return f'| {row["measure"]} | {a} | {b} | {ratio} |'


def write_rows(result: dict, output: str) -> None:
  """Prints `result['rows']` as a Markdown table and writes the whole result as JSON to
  `output`."""
  print('| measure | A | B | A / B |\n|---|---|---|---|')
  for row in result['rows']:
    print(format_row(row))
  Path(output).parent.mkdir(parents=True, exist_ok=True)
  Path(output).write_text(json.dumps(result, indent=2) + '\n')
