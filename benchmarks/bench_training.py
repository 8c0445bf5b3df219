"""Training speed and size, as ratios measured side by side in one run.

  python benchmarks/bench_training.py [--sizes t5-v1_1-small,t5-v1_1-base] [--batch 8]
      [--threads 1] [--dtypes float32,bfloat16] [--scan-layers true] [--compare-layouts]

1. prompt-tuning step / model-tuning step, same size, batch and encoder length (prompt + input),
   at each size. The limit is ~0.67: forward + activation backward, no weight gradients. At the
   first size the same ratio for PyTorch (PEFT prompt tuning / fine-tuning every weight);
2. t5prompt prompt tuning / PEFT prompt tuning (PyTorch, CPU), same random HF T5, batch and
   lengths, examples per second, both warmed up;
3. optimizer-state bytes / prompt bytes, and checkpoint bytes per save (prompt vs model tuning);
4. 8-device / 1-device prompt-tuning step time (data parallel), where there are 8 devices: on a
   CPU with XLA_FLAGS=--xla_force_host_platform_device_count=8, which slows the 1-device rows
   by ~10% (the idle virtual devices' threads), so the other rows run without it;
5. the step's own FLOPs (XLA's cost analysis of the jitted step) per second, for t5prompt and
   for PEFT doing the same work, beside an fp32 matmul peak measured in the same run (a 1024^3
   `jnp.dot`), as % of that peak;
6. with `--dtypes float32,bfloat16`: the bf16 compute mode (`model.dtype`) against t5prompt's
   own fp32 step, and against PEFT in fp32 and in bf16;
7. what dropout 0.1 (the default config's) adds to a prompt-tuning step, on each side and in each
   of `--dtypes` (the rows above run without dropout), and t5prompt / PEFT examples per second
   with it;
8. with `--compare-layouts`: scanned / unrolled layers (`model.scan_layers`), the first step
   (compilation) and the step, for prompt and model tuning at each size and dtype.
`--threads N` pins the process to the last N cores and both sides to N threads (XLA's CPU thread pool,
torch.set_num_threads); the load average before and after is recorded and a run started on a
busy machine (load above the pinned threads + 1) is marked as such. On a GPU this script also reports
MFU: model FLOPs (6 N per token for model tuning, 4 N for prompt tuning: no weight gradients)
per second over the device's peak, and tokens per second. JSON goes to
benchmarks/results/training.json (ignored by git).
"""

import os
import sys


def _threads_from_argv() -> int:
  """--threads, read before JAX is imported (its thread pool is sized at startup)."""
  for index, arg in enumerate(sys.argv):
    if arg.startswith('--threads'):
      return int(arg.split('=', 1)[1] if '=' in arg else sys.argv[index + 1])
  return 0


THREADS = _threads_from_argv()
if THREADS:
  # The last cores: core 0 also serves the machine's I/O interrupts (a VM's vsock, disks).
  os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[-THREADS:]))
  # XLA's CPU thread pool takes the cores the process may run on; one core: no pool at all.
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_cpu_multi_thread_eigen={str(THREADS > 1).lower()}').strip()

from t5prompt import xla_cpu  # pylint: disable=wrong-import-position

xla_cpu.prepare_cpu_backend()  # as the train loop runs: XLA's flags, one malloc arena

import argparse  # pylint: disable=wrong-import-position
import tempfile  # pylint: disable=wrong-import-position
from pathlib import Path  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from t5prompt.backbone import (Backbone, random_params,  # pylint: disable=wrong-import-position
                               scan_layers)
from t5prompt.build import build  # pylint: disable=wrong-import-position
from t5prompt.checkpoints import RunCheckpoints  # pylint: disable=wrong-import-position
from t5prompt.models import get_size, load_hf, save_hf  # pylint: disable=wrong-import-position
from t5prompt.models.convert import unstack_layers  # pylint: disable=wrong-import-position
from t5prompt.partitioning import make_partitioning  # pylint: disable=wrong-import-position
from t5prompt.plan import run_config_for  # pylint: disable=wrong-import-position
from timing import (Rows, machine, median_seconds,  # pylint: disable=wrong-import-position
                    min_seconds, side_by_side, write_rows)

PEAK_FLOPS = {'H100': 989e12, 'H200': 989e12, 'A100': 312e12}  # dense bf16


class Trainer:
  """The train loop's own jitted step (`build`) for one method on a mesh, ready to time."""

  def __init__(self, config, params, method, mesh, batch, input_length, target_length,
               prompt_length, dtype='float32', **prompt_options):
    self.partitioning = make_partitioning(mesh, devices=jax.devices()[:mesh[0] * mesh[1]])
    run_config = run_config_for(method, prompt_length, init='random_uniform', **prompt_options)
    rng = np.random.RandomState(0)
    backbone = Backbone(config.replace(dtype=dtype), params, 'benchmark', '')
    with self.partitioning.activate():
      self.run = build(run_config, backbone, self.partitioning)
      self.batch = self.partitioning.full_batch_to_global({
          'inputs': rng.randint(2, 32000, (batch, input_length)).astype(np.int32),
          'targets': rng.randint(2, 32000, (batch, target_length)).astype(np.int32)})
    self.step = 0

  def __call__(self):
    state = self.run.state
    with self.partitioning.activate():
      state.trainable, state.opt_state, metrics = self.run.train_step(
          state.trainable, state.opt_state, state.frozen, self.batch, state.rng, self.step)
      metrics['loss'].block_until_ready()
    self.step += 1

  def compiled(self):
    """The step as XLA compiled it for this trainer's state and batch."""
    state = self.run.state
    with self.partitioning.activate():
      return self.run.train_step.lower(state.trainable, state.opt_state, state.frozen,
                                       self.batch, state.rng, 0).compile()

  def flops(self) -> float:
    """The step's FLOPs by XLA's cost analysis of the compiled step (of an unscanned model:
    the analysis counts a scanned layer body once)."""
    analysis = self.compiled().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis['flops'])


def add_layout_rows(rows, size, config, params, lengths, args) -> None:
  """Scanned (stacked) / unrolled layers, for prompt and model tuning in each of `--dtypes`:
  the first step of a new trainer (compilation included) and the step, side by side."""
  batch, prompt_input, target_length, prompt_length = lengths
  layouts = {'scanned': (config, params),
             'unrolled': (config.replace(scan_layers=False), unstack_layers(params))}
  for dtype in args.dtypes.split(','):
    for method, method_lengths in (('prompt_tuning', lengths),
                                   ('model_tuning', (batch, args.input_length, target_length, 0))):
      trainers, first_s = [], []
      for layout_config, layout_params in layouts.values():
        trainers.append(Trainer(layout_config, layout_params, method, (1, 1), *method_lengths,
                                dtype=dtype))
        first_s.append(median_seconds(trainers[-1], 1))
      steps_s = side_by_side(*trainers, repeats=args.repeats)
      label = f'{size}: {method} {dtype}, scanned / unrolled layers'
      rows.append({'measure': f'{label}, first step (compilation)',
                   'a_s': first_s[0], 'b_s': first_s[1], 'ratio': first_s[0] / first_s[1]})
      rows.append({'measure': f'{label}, step', 'a_s': steps_s[0], 'b_s': steps_s[1],
                   'ratio': steps_s[0] / steps_s[1]})


def matmul_peak_flops(repeats: int = 10) -> float:
  """The fp32 matmul peak a step is measured against, in FLOP/s on this process's threads.

  The fastest of `repeats` runs of a jitted matmul, for 1024^3 and for the two shapes of the
  Small MLP ([1024, 512] x [512, 1024] and back); the highest of these. A peak is a ceiling, and
  on a shared VM noise only lowers it: a median of one shape measured low (the step's own
  matmuls ran at 102-108% of it), so % of peak read high. It is taken at the start and again
  beside the timed steps; the higher counts."""
  random = np.random.RandomState(0)
  dot = jax.jit(lambda x, y: x @ y)
  best = 0.0
  for m, k, n in ((1024, 1024, 1024), (1024, 512, 1024), (1024, 1024, 512)):
    a, b = (jnp.asarray(random.randn(*shape), jnp.float32) for shape in ((m, k), (k, n)))
    run = lambda a=a, b=b: dot(a, b).block_until_ready()
    run()
    best = max(best, 2 * m * k * n / min_seconds(run, repeats))
  return best


def load_average() -> float:
  return os.getloadavg()[0]


def random_backbone(size: str, directory: str):
  """Random weights of a named size, saved as an HF checkpoint both sides load."""
  config = get_size(size).replace(dropout_rate=0.0)
  save_hf(directory, config, random_params(config, seed=0))
  return load_hf(directory, dropout_rate=0.0)


def torch_t5(directory, dtype='float32', dropout_rate=0.0):
  """The HF checkpoint as a PyTorch T5 in training mode, on this run's threads."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  if THREADS:
    torch.set_num_threads(THREADS)
  return transformers.T5ForConditionalGeneration.from_pretrained(
      directory, dtype=getattr(torch, dtype), dropout_rate=dropout_rate).train()


def peft_trainer(directory, batch, input_length, target_length, prompt_length,
                 dtype='float32', dropout_rate=0.0):
  import peft  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  model = peft.get_peft_model(torch_t5(directory, dtype, dropout_rate), peft.PromptTuningConfig(
      task_type='SEQ_2_SEQ_LM', num_virtual_tokens=prompt_length, num_transformer_submodules=1))
  model.train()
  optimizer = transformers.optimization.Adafactor(
      [p for p in model.parameters() if p.requires_grad], lr=0.3, scale_parameter=False,
      relative_step=False, warmup_init=False, weight_decay=1e-5, decay_rate=-0.8)
  return torch_train_step(model, optimizer, batch, input_length, target_length)


def torch_model_tuning(directory, batch, input_length, target_length):
  """PyTorch T5 fine-tuning every weight (Adafactor, as T5 did): PEFT's baseline."""
  import transformers  # pylint: disable=import-outside-toplevel
  model = torch_t5(directory)
  optimizer = transformers.optimization.Adafactor(
      model.parameters(), lr=1e-3, scale_parameter=False, relative_step=False,
      warmup_init=False)
  return torch_train_step(model, optimizer, batch, input_length, target_length)


def torch_train_step(model, optimizer, batch, input_length, target_length):
  """A PyTorch (PEFT) train step on a fixed random batch, ready to time."""
  import torch  # pylint: disable=import-outside-toplevel
  rng = np.random.RandomState(0)
  inputs = torch.tensor(rng.randint(2, 32000, (batch, input_length)), dtype=torch.long)
  labels = torch.tensor(rng.randint(2, 32000, (batch, target_length)), dtype=torch.long)

  def step():
    loss = model(input_ids=inputs, attention_mask=torch.ones_like(inputs), labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
  return step


def directory_bytes(path: Path) -> int:
  return sum(f.stat().st_size for f in path.rglob('*') if f.is_file())


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
  """The timed step's shape and threads, shared with profile_step.py (`--threads` is also read
  from argv before JAX starts, at import)."""
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--input-length', type=int, default=128, help='encoder length, prompt incl.')
  parser.add_argument('--target-length', type=int, default=8)
  parser.add_argument('--prompt-length', type=int, default=20)
  parser.add_argument('--threads', type=int, default=0,
                      help='pin to this many cores and threads (0: as the machine gives)')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='t5-v1_1-small,t5-v1_1-base')
  add_step_arguments(parser)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--dtypes', default='float32',
                      help='compute dtypes to time against PEFT, e.g. float32,bfloat16')
  parser.add_argument('--scan-layers', type=lambda v: v.lower() == 'true', default=None,
                      help='model.scan_layers of the timed models, true or false (default: as '
                           'the train loop picks by backend: unrolled on CPU, scanned on GPU/TPU)')
  parser.add_argument('--compare-layouts', action='store_true',
                      help='also time both layer layouts: first step (compilation) and step')
  parser.add_argument('--output', default='benchmarks/results/training.json')
  args = parser.parse_args()
  args.scan_layers = scan_layers(args.scan_layers)
  sizes = args.sizes.split(',')
  prompt_input = args.input_length - args.prompt_length  # same encoder length for both methods
  lengths = (args.batch, prompt_input, args.target_length, args.prompt_length)
  result = {'machine': machine(jax), 'batch': args.batch, 'encoder_length': args.input_length,
            'target_length': args.target_length, 'prompt_length': args.prompt_length,
            'scan_layers': args.scan_layers, 'threads': args.threads or os.cpu_count(),
            'load_before': load_average(), 'rows': Rows()}
  rows = result['rows']
  peak = matmul_peak_flops()
  result['matmul_peak_gflops'] = peak / 1e9

  with tempfile.TemporaryDirectory() as tmp:
    for size in sizes:
      directory = f'{tmp}/{size}'
      config, params = random_backbone(size, directory)  # stacked
      if args.compare_layouts:
        add_layout_rows(rows, size, config, params, lengths, args)
      if not args.scan_layers:
        config, params = config.replace(scan_layers=False), unstack_layers(params)
      prompt = Trainer(config, params, 'prompt_tuning', (1, 1), *lengths)
      model = Trainer(config, params, 'model_tuning', (1, 1), args.batch, args.input_length,
                      args.target_length, 0)
      prompt_s, model_s = side_by_side(prompt, model, repeats=args.repeats)
      rows.append({'measure': f'{size}: prompt-tuning step / model-tuning step',
                   'a_s': prompt_s, 'b_s': model_s, 'ratio': prompt_s / model_s})
      if size == sizes[0]:  # the same ratio for PyTorch (PEFT prompt tuning / fine-tuning)
        peft_prompt_s, torch_model_s = side_by_side(
            peft_trainer(directory, *lengths),
            torch_model_tuning(directory, args.batch, args.input_length, args.target_length),
            repeats=args.repeats)
        rows.append({'measure': f'{size}: PEFT prompt-tuning step / PyTorch model-tuning step',
                     'a_s': peft_prompt_s, 'b_s': torch_model_s,
                     'ratio': peft_prompt_s / torch_model_s})
      if size == sizes[0]:
        unscanned = unstack_layers(params) if config.scan_layers else params
        flops = Trainer(config.replace(scan_layers=False), unscanned,  # both sides
                        'prompt_tuning', (1, 1), *lengths).flops()  # do this work per step
        peft_fp32 = peft_trainer(directory, *lengths)
        for dtype in args.dtypes.split(','):
          ours = prompt if dtype == 'float32' else Trainer(config, params, 'prompt_tuning',
                                                           (1, 1), *lengths, dtype=dtype)
          if dtype != 'float32':  # the mode's own gain: never below 1 (the contract)
            low_s, fp32_s = side_by_side(ours, prompt, repeats=args.repeats)
            rows.append({'measure': f'{size}: t5prompt {dtype} / float32 prompt tuning, '
                                    'examples per second',
                         'a': args.batch / low_s, 'b': args.batch / fp32_s,
                         'ratio': fp32_s / low_s})
          for peft_dtype in dict.fromkeys(('float32', dtype)):
            peft_step = peft_fp32 if peft_dtype == 'float32' else peft_trainer(
                directory, *lengths, dtype=peft_dtype)
            ours_s, peft_s = side_by_side(ours, peft_step, repeats=args.repeats)
            rows.append({'measure': f'{size}: t5prompt {dtype} / PEFT (PyTorch) {peft_dtype} '
                                    'prompt tuning, examples per second',
                         'a': args.batch / ours_s, 'b': args.batch / peft_s,
                         'ratio': peft_s / ours_s})
            if dtype == peft_dtype == 'float32':
              peak = max(peak, matmul_peak_flops())  # again, beside the timed steps
              result['matmul_peak_gflops'] = peak / 1e9
              rows.append({'measure': f'{size}: fp32 step GFLOP/s, t5prompt / PEFT (% of the '
                                      f'{peak / 1e9:.1f} GFLOP/s matmul peak: '
                                      f'{100 * flops / ours_s / peak:.0f}% / '
                                      f'{100 * flops / peft_s / peak:.0f}%)',
                           'a': flops / ours_s / 1e9, 'b': flops / peft_s / 1e9,
                           'ratio': peft_s / ours_s})
          # Dropout at the default config's 0.1 on both sides (the rows above run without).
          ours_dropout_s, ours_s, peft_dropout_s, peft_s = side_by_side(
              Trainer(config.replace(dropout_rate=0.1), params, 'prompt_tuning', (1, 1),
                      *lengths, dtype=dtype), ours,
              peft_trainer(directory, *lengths, dtype=dtype, dropout_rate=0.1), peft_step,
              repeats=args.repeats)
          rows.append({'measure': f'{size}: {dtype} prompt-tuning step, dropout 0.1 / none, '
                                  't5prompt / PEFT (ratio: examples per second at 0.1)',
                       'a': ours_dropout_s / ours_s, 'b': peft_dropout_s / peft_s,
                       'ratio': peft_dropout_s / ours_dropout_s})
        prompt_bytes = prompt.run.state.trainable['prompt']['prompt'].nbytes
        state_bytes = sum(x.nbytes for x in jax.tree.leaves(prompt.run.state.opt_state))
        rows.append({'measure': f'{size}: optimizer-state bytes / prompt bytes',
                     'a': state_bytes, 'b': prompt_bytes, 'ratio': state_bytes / prompt_bytes})
        for name, trainer in (('prompt', prompt), ('model', model)):
          checkpoints = RunCheckpoints(f'{tmp}/ckpt_{name}')
          state = trainer.run.state
          checkpoints.save(1, {'trainable': state.trainable, 'opt_state': state.opt_state,
                               'rng': jax.random.key_data(state.rng)}, {'step': 1})
          checkpoints.close()
          result[f'checkpoint_bytes_{name}_tuning'] = directory_bytes(
              Path(f'{tmp}/ckpt_{name}/checkpoints/1'))
        rows.append({'measure': f'{size}: checkpoint bytes per save, prompt / model tuning',
                     'a': result['checkpoint_bytes_prompt_tuning'],
                     'b': result['checkpoint_bytes_model_tuning'],
                     'ratio': result['checkpoint_bytes_prompt_tuning']
                     / result['checkpoint_bytes_model_tuning']})
        if jax.device_count() >= 8:  # on a CPU: XLA_FLAGS=--xla_force_host_platform_device_count=8
          eight = Trainer(config, params, 'prompt_tuning', (8, 1), *lengths)
          eight_s, one_s = side_by_side(eight, prompt, repeats=args.repeats)
          rows.append({'measure': f'{size}: prompt-tuning step, 8 devices / 1 device '
                                  f'({jax.devices()[0].platform}, data parallel)',
                       'a_s': eight_s, 'b_s': one_s, 'ratio': eight_s / one_s})
      kind = jax.devices()[0].device_kind
      device_peak = next((f for name, f in PEAK_FLOPS.items() if name in kind), None)
      if device_peak:
        tokens = args.batch * (args.input_length + args.target_length)
        n = sum(x.size for x in jax.tree.leaves(params))
        rows.append({'measure': f'{size}: MFU model / prompt tuning on {kind}',
                     'a': 6 * n * tokens / model_s / device_peak,
                     'b': 4 * n * tokens / prompt_s / device_peak, 'ratio': None})
        rows.append({'measure': f'{size}: tokens per second, model / prompt tuning on {kind}',
                     'a': tokens / model_s, 'b': tokens / prompt_s, 'ratio': prompt_s / model_s})

  result['load_after'] = load_average()  # includes this run's own threads
  busy = result['load_before'] > result['threads'] + 1
  print(f'batch {args.batch}, encoder length {args.input_length} (prompt {args.prompt_length} + '
        f'input {prompt_input} for prompt tuning), target {args.target_length}, on '
        f'{result["machine"]}, {result["threads"]} threads, load average '
        f'{result["load_before"]:.1f} before, {result["load_after"]:.1f} after'
        f'{" (BUSY MACHINE: ratios unreliable)" if busy else ""}')
  result['busy'] = busy
  write_rows(result, args.output)


if __name__ == '__main__':
  main()
