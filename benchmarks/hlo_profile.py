"""An optimized HLO module's ops and a Perfetto trace of it, joined: each op's time and matmul
FLOPs (`profile_step.py` prints them; the functions are tested in tests/test_benchmarks.py)."""

import collections
import gzip
import json
import math
from pathlib import Path
import re

_COMPUTATION = re.compile(r'^(?:ENTRY )?(%[\w.\-]+) [^\n]*\{\n(.*?)\n\}', re.S | re.M)
_INSTRUCTION = re.compile(  # name = shape (an array's or a tuple's) opcode(operands...
    r'^\s*(?:ROOT )?%([\w.\-]+) = (\([^)]*\)|\S+) ([\w\-]+)\((.*)$', re.M)
_ARRAY = re.compile(r'(\w+)\[([\d,]*)\]')
_CALLS = re.compile(r'calls=(%[\w.\-]+)')
_CONTRACTING = re.compile(r'lhs_contracting_dims=\{([\d,]*)\}')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CONTROL_FLOW = ('while', 'call', 'conditional')  # not counted: their bodies' ops are


def _instructions(body: str) -> dict:
  """name -> (dims, opcode, rest of the line) for one computation's instructions (a
  tuple-shaped one: no dims)."""
  instructions = {}
  for name, shape, opcode, rest in _INSTRUCTION.findall(body):
    array = _ARRAY.fullmatch(shape.split('{')[0])
    dims = [int(d) for d in array.group(2).split(',') if d] if array else []
    instructions[name] = (dims, opcode, rest)
  return instructions


def _dot_flops(dims: list, rest: str, instructions: dict) -> int:
  """2 x output elements x contracted size of one dot (its operands among `instructions`)."""
  lhs = rest.split(',', 1)[0].split()[-1].lstrip('%')
  contracted = [int(d) for d in _CONTRACTING.search(rest).group(1).split(',') if d]
  return 2 * math.prod(dims) * math.prod(instructions[lhs][0][d] for d in contracted)


def _computation_flops(instructions: dict) -> int:
  return sum(_dot_flops(dims, rest, instructions)
             for dims, opcode, rest in instructions.values() if opcode == 'dot')


def hlo_ops(hlo_text: str) -> dict:
  """The ops an optimized HLO module runs, each a name in the trace: name -> {'flops': its
  matmul FLOPs (a fusion's: its fused dots'), 'op_name': the JAX op it came from}.
  A fusion's own instructions are not ops: they run inside it."""
  computations = {name: _instructions(body) for name, body in _COMPUTATION.findall(hlo_text)}
  fused = {_CALLS.search(rest).group(1) for computation in computations.values()
           for _, opcode, rest in computation.values() if opcode == 'fusion'}
  ops = {}
  for computation_name, computation in computations.items():
    if computation_name in fused:
      continue
    for name, (dims, opcode, rest) in computation.items():
      if opcode in _CONTROL_FLOW or opcode == 'parameter':
        continue
      if opcode == 'fusion':
        flops = _computation_flops(computations[_CALLS.search(rest).group(1)])
      elif opcode == 'dot':
        flops = _dot_flops(dims, rest, computation)
      else:
        flops = 0
      op_name = _OP_NAME.search(rest)
      ops[name] = {'flops': flops, 'op_name': op_name.group(1) if op_name else ''}
  return ops


def kind(name: str, op: dict) -> str:
  """matmul (any op that runs a dot), convert, copy (transposes, slices, copies) or other."""
  if op['flops']:
    return 'matmul'
  if 'convert' in name:
    return 'convert'
  if any(word in name for word in ('copy', 'transpose', 'slice')):
    return 'copy'
  return 'other'


def matmul_group(op_name: str) -> str:
  """'fwd encoder/mlp/wi_0' from a dot's JAX op name: one group per projection over the layers
  (a backward op's name carries `transpose(`)."""
  direction = 'bwd' if 'transpose(' in op_name else 'fwd'
  parts = [part for part in op_name.split('/')[:-1]  # the last: the primitive
           if not re.fullmatch(r'(jit|jvp|transpose)\(.*|layers_\d+|\S*->\S*|\S*\.\S*', part)]
  return f'{direction} {"/".join(parts[-3:])}'


def op_seconds(trace_dir: str, ops: dict, steps: int) -> dict:
  """Seconds per step of each HLO op, from the Perfetto trace `jax.profiler` wrote."""
  trace_file = sorted(Path(trace_dir).glob('**/*.trace.json.gz'))[-1]
  events = json.loads(gzip.decompress(trace_file.read_bytes()))
  events = events['traceEvents'] if isinstance(events, dict) else events
  seconds = collections.Counter()
  for event in events:
    if event.get('ph') == 'X' and event.get('name') in ops:
      seconds[event['name']] += event['dur'] * 1e-6 / steps
  return seconds


def summarize(ops: dict, seconds: dict, step_s: float, peak: float) -> dict:
  """Time by kind, and by matmul group with GFLOP/s and % of `peak`."""
  by_kind, groups = collections.Counter(), collections.defaultdict(lambda: [0.0, 0, 0])
  for name, op_s in seconds.items():
    op = ops[name]
    by_kind[kind(name, op)] += op_s
    if op['flops']:
      group = groups[matmul_group(op['op_name'])]
      group[0] += op_s
      group[1] += op['flops']
      group[2] += 1
  matmul_flops = sum(g[1] for g in groups.values())
  return {
      'step_ms': step_s * 1e3, 'ops_ms': sum(seconds.values()) * 1e3,
      'by_kind_ms': {k: v * 1e3 for k, v in by_kind.most_common()},
      'matmul_gflops_per_s': matmul_flops / by_kind['matmul'] * 1e-9,
      'matmul_percent_of_peak': 100 * matmul_flops / by_kind['matmul'] / peak,
      'step_percent_of_peak': 100 * matmul_flops / step_s / peak,
      'peak_gflops_per_s': peak * 1e-9,
      'matmul_groups': [
          {'group': name, 'ms': s * 1e3, 'ops': count, 'gflops_per_s': flops / s * 1e-9,
           'percent_of_peak': 100 * flops / s / peak}
          for name, (s, flops, count) in sorted(groups.items(), key=lambda kv: -kv[1][0])]}
