"""Where the train loop's step spends its time: a profile of the jitted step, op by op.

  python benchmarks/profile_step.py [--size t5-v1_1-small] [--dtype float32] [--threads 1]
      [--method prompt_tuning] [--steps 3]

Traces `--steps` steps of the step `bench_training.py` times (`jax.profiler`, a Perfetto trace)
and joins each op's time with the compiled program (XLA's optimized HLO): the FLOPs of every
matmul it runs, so each matmul group (the same projection in every layer, forward or backward)
gets its GFLOP/s and % of an fp32 matmul peak measured in the same process. The rest is split
into dtype conversions, copies (transposes, slices) and other elementwise work. Pinned to one
thread (`--threads 1`) the ops run one at a time and their times sum to the step; on more, ops
overlap and each time is the op's own, not its share of the step. README's figures on how close
the step runs to the matmul peak were taken with it. JSON goes to benchmarks/results/profile.json
(ignored by git). Built and checked on CPU, where the trace names each op as the HLO does; on a
GPU/TPU the trace's kernel names may not all match (unchecked: no accelerator was lent).
"""

import os
import sys

# First: pins the process (--threads) and sets the train loop's XLA flags before JAX starts.
from bench_training import THREADS

import argparse  # pylint: disable=wrong-import-position
import json  # pylint: disable=wrong-import-position
from pathlib import Path  # pylint: disable=wrong-import-position
import tempfile  # pylint: disable=wrong-import-position
import time  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position

from t5prompt.backbone import scan_layers  # pylint: disable=wrong-import-position
from bench_training import (Trainer, add_step_arguments,  # pylint: disable=wrong-import-position
                            load_average, matmul_peak_flops, random_backbone)
from hlo_profile import hlo_ops, op_seconds, summarize  # pylint: disable=wrong-import-position
from t5prompt.models.convert import unstack_layers  # pylint: disable=wrong-import-position
from timing import machine  # pylint: disable=wrong-import-position


def profile(trainer: Trainer, steps: int) -> tuple[dict, dict, float]:
  """(ops, seconds per op per step, step seconds) of `steps` traced steps, after a warm-up."""
  ops = hlo_ops(trainer.compiled().as_text())
  trainer()
  trainer()
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    start = time.perf_counter()
    for _ in range(steps):
      trainer()
    step_s = (time.perf_counter() - start) / steps
    jax.profiler.stop_trace()
    return ops, op_seconds(trace_dir, ops, steps), step_s


def print_summary(summary: dict) -> None:
  print(f'step {summary["step_ms"]:.0f} ms, ops {summary["ops_ms"]:.0f} ms; fp32 matmul peak '
        f'{summary["peak_gflops_per_s"]:.1f} GFLOP/s; the step\'s matmul FLOPs per step second: '
        f'{summary["step_percent_of_peak"]:.0f}% of it')
  for name, ms in summary['by_kind_ms'].items():
    print(f'  {name:8s} {ms:8.1f} ms  {100 * ms / summary["ops_ms"]:5.1f}% of op time')
  print(f'  matmuls: {summary["matmul_gflops_per_s"]:.1f} GFLOP/s, '
        f'{summary["matmul_percent_of_peak"]:.0f}% of the peak')
  print('| matmul group | ms per step | ops | GFLOP/s | % of peak |\n|---|---|---|---|---|')
  for group in summary['matmul_groups']:
    print(f'| {group["group"]} | {group["ms"]:.1f} | {group["ops"]} | '
          f'{group["gflops_per_s"]:.1f} | {group["percent_of_peak"]:.0f} |')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', default='t5-v1_1-small')
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--method', default='prompt_tuning',
                      choices=('prompt_tuning', 'model_tuning'))
  add_step_arguments(parser)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--output', default='benchmarks/results/profile.json')
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as directory:
    config, params = random_backbone(args.size, directory)
  if config.scan_layers and not scan_layers(None):  # the layout the train loop picks here
    config, params = config.replace(scan_layers=False), unstack_layers(params)
  prompt_length = args.prompt_length if args.method == 'prompt_tuning' else 0
  trainer = Trainer(config, params, args.method, (1, 1), args.batch,
                    args.input_length - prompt_length, args.target_length, prompt_length,
                    dtype=args.dtype)
  load_before = load_average()
  peak = matmul_peak_flops()
  summary = summarize(*profile(trainer, args.steps), peak)
  summary.update(machine=machine(jax), threads=THREADS or os.cpu_count(),
                 load_before=load_before, load_after=load_average(), **{
                     k: v for k, v in vars(args).items() if k not in ('threads', 'output')})
  print_summary(summary)
  Path(args.output).parent.mkdir(parents=True, exist_ok=True)
  Path(args.output).write_text(json.dumps(summary, indent=2) + '\n')


if __name__ == '__main__':
  sys.exit(main())
