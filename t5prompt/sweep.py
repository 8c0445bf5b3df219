"""Sweeps: expand a sweep config into runs, validate them all, skip finished ones, run the rest
(one after another, N at a time, or through a launcher), and record failures without stopping.

A sweep config (`configs/sweeps/*.py`) defines `get_sweep()` returning a `Sweep`: a base run
config file and a list of runs, each a dict of config overrides (build it with `product`).
Each run gets `<workdir>/<run name>/`; a run is finished when its `result.json` holds the config
it would run now.
"""

import dataclasses
import importlib.util
import itertools
import json
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from t5prompt import atomic
from t5prompt.run_config import load_config

LAUNCHERS = ('local', 'print', 'slurm', 'tpu')
FAILED = 'failed.json'


@dataclasses.dataclass
class Sweep:
  name: str
  base_config: str  # a run config file, relative to the repository root or absolute
  runs: list[dict[str, Any]]  # config overrides per run
  # Called once, after validation and before the runs (the demo pre-trains its backbones).
  prepare: Callable[[], None] | None = None


def product(*axes: Sequence[dict[str, Any]] | dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """The cartesian product of axes. An axis is {key: [values]} (one key varying) or a list of
  override dicts (settings that vary together, e.g. a method with its optimizer)."""
  expanded = []
  for axis in axes:
    if isinstance(axis, dict):
      (key, values), = axis.items()
      expanded.append([{key: value} for value in values])
    else:
      expanded.append(list(axis))
  return [dict(itertools.chain.from_iterable(d.items() for d in combo))
          for combo in itertools.product(*expanded)]


def load_sweep(path: str | Path) -> Sweep:
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'No sweep config at {path}; sweeps live in configs/sweeps/*.py.')
  spec = importlib.util.spec_from_file_location(f'_t5prompt_sweep_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, str(path.resolve().parent))  # sweeps import their shared `common.py`
  try:
    spec.loader.exec_module(module)
  finally:
    sys.path.remove(str(path.resolve().parent))
  if not hasattr(module, 'get_sweep'):
    raise ValueError(f'{path} must define get_sweep() returning a t5prompt.sweep.Sweep.')
  return module.get_sweep()


def run_name(overrides: dict[str, Any]) -> str:
  """A readable, unique directory name from the overrides (values shortened)."""
  parts = []
  for key, value in overrides.items():
    short_key = key.split('.')[-1]
    text = str(value)
    if isinstance(value, str) and '/' in value:  # a path: its name (a file: with its folder)
      path = Path(value)
      text = f'{path.parent.name}/{path.name}' if path.suffix else path.name
    parts.append(f'{short_key}={text}')
  name = ','.join(parts) or 'base'
  return ''.join(ch if ch.isalnum() or ch in '=,._-' else '_' for ch in name)


def _short_names(runs: list[dict[str, Any]]) -> list[str]:
  """Names from the fewest keys that tell the runs apart: a key enters only if it separates
  runs the keys before it did not (so a method's optimizer settings ride along unnamed)."""
  keys = list(dict.fromkeys(key for overrides in runs for key in overrides))
  if 'model.label' in keys:  # the label names the backbone more briefly than its path
    keys.remove('model.label')
    keys.insert(0, 'model.label')
  chosen, groups = [], len({()})
  for key in keys:
    trial = {tuple(repr(o.get(k)) for k in chosen + [key]) for o in runs}
    if len(trial) > groups:
      chosen.append(key)
      groups = len(trial)
  return [run_name({key: o[key] for key in chosen if key in o}) for o in runs]


def _override_args(overrides: dict[str, Any]) -> list[str]:
  return [f'--config.{key}={value!r}' if not isinstance(value, str) else
          f'--config.{key}={value}' for key, value in overrides.items()]


def _resolve(path: str) -> Path:
  candidate = Path(path)
  if candidate.is_absolute() or candidate.exists():
    return candidate
  return Path(__file__).resolve().parents[1] / path


def config_for(base_config: str, overrides: dict[str, Any]):
  """The validated run config of a base config file with a sweep's override dict (sweeps whose
  `prepare` trains runs of its own, e.g. transfer sources, use it too)."""
  return load_config(_resolve(base_config), _override_args(overrides))


@dataclasses.dataclass
class Run:
  name: str
  overrides: dict[str, Any]
  workdir: Path
  config: Any = None  # the validated run config

  def finished(self) -> bool:
    result = self.workdir / 'result.json'
    if not result.exists():
      return False
    try:
      return json.loads(result.read_text()).get('config') == json.loads(self.config.to_json())
    except json.JSONDecodeError:
      return False


def expand(sweep: Sweep, workdir: str | Path) -> list[Run]:
  """Every run, its config validated; all invalid runs are reported together, before any runs."""
  base = _resolve(sweep.base_config)
  runs, problems, names = [], [], set()
  for overrides, name in zip(sweep.runs, _short_names(sweep.runs)):
    if name in names:
      problems.append(f'two runs are both named {name!r}; make their overrides differ')
    names.add(name)
    try:
      config = config_for(str(base), overrides)
      _check_size(config)
    except (ValueError, FileNotFoundError) as error:
      problems.append(f'{name}: {" ".join(str(error).split())[:300]}')
      continue
    runs.append(Run(name, overrides, Path(workdir) / name, config))
  if problems:
    raise ValueError(f'Sweep {sweep.name!r} has {len(problems)} invalid run(s); nothing ran:\n  '
                     + '\n  '.join(problems))
  return runs


def _check_size(config) -> None:
  if not config.model.checkpoint:
    from t5prompt.models import get_size  # pylint: disable=import-outside-toplevel
    get_size(config.model.size)


def _record_failure(run: Run, error: BaseException) -> None:
  atomic.write_json(run.workdir / FAILED, {
      'error': f'{type(error).__name__}: {error}', 'traceback': traceback.format_exc(),
      'time': time.strftime('%Y-%m-%d %H:%M:%S')})


def _status(done: int, failed: int, total: int, current: str = '') -> str:
  left = total - done - failed
  return f'[sweep] {done} done, {failed} failed, {left} left of {total}' + (
      f' | now: {current}' if current else '')


def run_local(runs: list[Run], parallel: int = 1, base_config: Path | None = None) -> dict:
  """Runs every unfinished run; a failure is written to its `failed.json`, the sweep goes on."""
  from t5prompt import train as trainer  # pylint: disable=import-outside-toplevel
  pending = [run for run in runs if not run.finished()]
  done, failed = len(runs) - len(pending), 0
  print(_status(done, failed, len(runs)) + f' ({done} already finished, skipped)',
        file=sys.stderr)
  if parallel > 1:
    return _run_parallel(pending, parallel, base_config, done, len(runs))
  for run in pending:
    print(_status(done, failed, len(runs), run.name), file=sys.stderr)
    (run.workdir / FAILED).unlink(missing_ok=True)
    try:
      trainer.train(run.config, run.workdir)
      done += 1
    except trainer.Preempted:
      raise
    except Exception as error:  # pylint: disable=broad-except  (recorded; the sweep goes on)
      failed += 1
      _record_failure(run, error)
      print(f'[sweep] {run.name} FAILED: {type(error).__name__}: {str(error)[:300]} '
            f'(see {run.workdir / FAILED})', file=sys.stderr)
  print(_status(done, failed, len(runs)), file=sys.stderr)
  return {'done': done, 'failed': failed, 'total': len(runs)}


def command_for(run: Run, base_config: Path) -> list[str]:
  return ['t5prompt', 'train', '--config', str(base_config), '--workdir', str(run.workdir),
          *_override_args(run.overrides)]


def _run_parallel(pending, parallel, base_config, done, total) -> dict:
  """N runs at a time, each its own process (`t5prompt train`)."""
  failed, queue, active = 0, list(pending), []
  while queue or active:
    while queue and len(active) < parallel:
      run = queue.pop(0)
      run.workdir.mkdir(parents=True, exist_ok=True)
      log = open(run.workdir / 'train.log', 'w', encoding='utf-8')  # pylint: disable=consider-using-with
      command = [sys.executable, '-m', 't5prompt.cli'] + command_for(run, base_config)[1:]
      active.append((run, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log))
    time.sleep(1)
    for item in list(active):
      run, process, log = item
      if process.poll() is None:
        continue
      log.close()
      active.remove(item)
      if process.returncode == 0:
        done += 1
      else:
        failed += 1
        atomic.write_json(run.workdir / FAILED, {'error': f'exit code {process.returncode}',
                                                 'log': str(run.workdir / 'train.log')})
      print(_status(done, failed, total), file=sys.stderr)
  return {'done': done, 'failed': failed, 'total': total}


def launch_commands(runs: list[Run], base_config: Path, launcher: str, workdir: Path) -> str:
  """The unfinished runs as commands: printed, a SLURM array script, or TPU VM launches."""
  pending = [run for run in runs if not run.finished()]
  commands = [shlex.join(command_for(run, base_config)) for run in pending]
  if launcher == 'print':
    return '\n'.join(commands)
  if launcher == 'slurm':
    workdir.mkdir(parents=True, exist_ok=True)
    listing = workdir / 'sweep_commands.txt'
    listing.write_text('\n'.join(commands) + '\n')
    script = workdir / 'sweep_slurm.sbatch'
    script.write_text(
        '#!/usr/bin/env bash\n'
        f'#SBATCH --array=1-{len(commands)}\n#SBATCH --gpus-per-node=8\n'
        f'#SBATCH --output={workdir}/slurm-%A_%a.out\nset -euo pipefail\n'
        f'command=$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {listing})\n'
        'eval "srun .venv/bin/${command} --distributed"\n')
    return f'sbatch {script}   # {len(commands)} runs, one array task each'
  if launcher == 'tpu':
    return '\n'.join(f'launch/tpu_vm.sh $TPU_NAME $ZONE {base_config} {run.workdir} '
                     + ' '.join(shlex.quote(a) for a in _override_args(run.overrides))
                     for run in pending)
  raise ValueError(f'Unknown launcher {launcher!r}; choose one of {", ".join(LAUNCHERS)}.')


def run_sweep(path: str | Path, workdir: str | Path, launcher: str = 'local',
              parallel: int = 1) -> dict:
  sweep = load_sweep(path)
  workdir = Path(workdir)
  runs = expand(sweep, workdir)  # every run validated before anything runs
  if sweep.prepare and launcher == 'local':
    sweep.prepare()
  base = _resolve(sweep.base_config)
  print(f'[sweep] {sweep.name}: {len(runs)} runs in {workdir}', file=sys.stderr)
  if launcher != 'local':
    print(launch_commands(runs, base, launcher, workdir))
    return {'total': len(runs)}
  return run_local(runs, parallel, base)
