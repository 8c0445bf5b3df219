"""Sweeps: named stages of runs, every run validated before any runs, finished runs skipped, the
rest run here (one after another, or N at a time) or through a launcher, failures recorded
without stopping the sweep.

A sweep config (`configs/sweeps/*.py`) defines `get_sweep(workdir)` returning a `Sweep`: stages
in order, each a list of `(run name, ConfigDict)` (build them with `runs` and `product`). A later
stage may read an earlier stage's outputs (SPoT targets start from the source prompts; tuning
runs from the pre-trained backbones), so a stage runs only after the one before it. A run's
directory is `<stage root or the sweep's workdir>/<run name>`; it is finished when it holds the
result of exactly its config. Names come from the keys that vary, so narrowing or widening a grid
renames runs: a run then finds its finished result under its old name (`_adopt_renamed`).
"""

import dataclasses
import itertools
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import ml_collections

from t5prompt import pretrain, train
from t5prompt.models import get_size
from t5prompt.preemption import Preempted
from t5prompt.run_config import (default_config, load_config, python_file, set_field, validate,
                                 with_method)
from t5prompt.data.sources import DataNotFoundError
from t5prompt.run_dir import FAILED, RunDir
from t5prompt.run_setup import describe_missing, load_eval_sets, load_train_data, missing_data

LAUNCHERS = ('local', 'print', 'slurm', 'tpu')
RunConfigs = list[tuple[str, ml_collections.ConfigDict]]


@dataclasses.dataclass(frozen=True, eq=False)
class Stage:
  name: str
  runs: RunConfigs
  # Where its run directories go; None: the sweep's workdir. A fixed root (e.g. the cache of
  # pre-trained backbones) lets several sweeps share a stage's runs.
  root: str | Path | None = None
  # Its runs are pre-training configs (`t5prompt pretrain`) rather than train runs.
  pretrain: bool = False


@dataclasses.dataclass(frozen=True)
class Sweep:
  name: str
  stages: Sequence[Stage]


@dataclasses.dataclass(frozen=True)
class Run:
  stage: Stage
  name: str
  config: ml_collections.ConfigDict
  workdir: Path

  @property
  def key(self) -> str:
    """How `--run` names it: stage/name."""
    return f'{self.stage.name}/{self.name}'

  def finished(self) -> bool:
    return self.finished_in(self.workdir)

  def finished_in(self, directory: Path) -> bool:
    """Whether `directory` holds a finished run of exactly this run's config."""
    if self.stage.pretrain:
      return pretrain.finished(self.config, directory)
    return RunDir(directory).finished(self.config, default_config())

  def missing_data(self) -> list[tuple[str, str]]:
    configs = ([self.config[stage] for stage in pretrain.STAGES] if self.stage.pretrain
               else [self.config])
    return [problem for config in configs for problem in missing_data(config)]

  def execute(self) -> None:
    if self.stage.pretrain:
      pretrain.run(self.config, self.workdir)
    else:
      train.train(self.config, self.workdir)


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


def configure(base: Callable[[], ml_collections.ConfigDict],
              overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """`base()` with `overrides` ({'train.steps': 100, ...}) set, type-checked. A 'method'
  override comes first and brings the method's default optimizer settings (its record's)."""
  config = base()
  overrides = dict(overrides)
  if 'method' in overrides:
    with_method(config, overrides.pop('method'))
  for key, value in overrides.items():
    set_field(config, key, value)
  return config


def runs(base: Callable[[], ml_collections.ConfigDict],
         overrides: list[dict[str, Any]]) -> RunConfigs:
  """(name, config) per override dict, named by the fewest keys that tell the runs apart."""
  return [(name, configure(base, o)) for o, name in zip(overrides, _short_names(overrides))]


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


def _short_names(overrides: list[dict[str, Any]]) -> list[str]:
  """Names from the fewest keys that tell the runs apart: a key enters only if it separates
  runs the keys before it did not (so a method's optimizer settings ride along unnamed)."""
  keys = list(dict.fromkeys(key for o in overrides for key in o))
  if 'model.label' in keys:  # the label names the backbone more briefly than its path
    keys.remove('model.label')
    keys.insert(0, 'model.label')
  chosen, groups = [], len({()})
  for key in keys:
    trial = {tuple(repr(o.get(k)) for k in chosen + [key]) for o in overrides}
    if len(trial) > groups:
      chosen.append(key)
      groups = len(trial)
  return [run_name({key: o[key] for key in chosen if key in o}) for o in overrides]


def load_sweep(path: str | Path, workdir: str | Path) -> Sweep:
  """The sweep the config at `path` defines for `workdir` (a later stage may name an earlier
  stage's outputs there)."""
  return python_file(Path(path), 'get_sweep', 'a t5prompt.sweep.Sweep')(Path(workdir))


def expand(sweep: Sweep, workdir: str | Path) -> list[Run]:
  """Every run of every stage, validated; all invalid runs are reported together, before any
  run starts."""
  expanded, problems, keys = [], [], set()
  for stage in sweep.stages:
    root = Path(stage.root) if stage.root is not None else Path(workdir)
    for name, config in stage.runs:
      key = f'{stage.name}/{name}'
      if key in keys:
        problems.append(f'two runs are both named {key!r}; make their overrides differ')
      keys.add(key)
      try:
        config = _validated(stage, config)
      except (ValueError, FileNotFoundError) as error:
        problems.append(f'{key}: {" ".join(str(error).split())[:300]}')
        continue
      expanded.append(Run(stage, name, config, root / name))
  if problems:
    raise ValueError(f'Sweep {sweep.name!r} has {len(problems)} invalid run(s); nothing ran:\n  '
                     + '\n  '.join(problems))
  return _adopt_renamed(expanded)


def _adopt_renamed(expanded: list[Run]) -> list[Run]:
  """Each run not finished under its own name takes the directory, beside it, of a finished
  run of exactly its config that no run of this sweep is named for: its result from before the
  grid changed and renamed it. Without this a narrowed grid would run finished runs again."""
  owned = {run.workdir for run in expanded}
  orphans = {}  # stage root -> directories there no run of this sweep is named for
  adopted = []
  for run in expanded:
    root = run.workdir.parent
    if root not in orphans:
      orphans[root] = sorted(path for path in root.glob('*/')
                             if path.is_dir() and path not in owned) if root.is_dir() else []
    if not run.finished():
      match = next((path for path in orphans[root] if run.finished_in(path)), None)
      if match is not None:
        print(f'[sweep] {run.key}: finished as {match.name} (its name before the grid changed)',
              file=sys.stderr)
        orphans[root].remove(match)
        run = dataclasses.replace(run, workdir=match)
    adopted.append(run)
  return adopted


def check_data(sweep: Sweep, expanded: list[Run]) -> None:
  """Every piece of data the runs need is here, or all that is missing is listed at once."""
  missing = [problem for run in expanded for problem in run.missing_data()]
  if missing:
    raise DataNotFoundError(f'Sweep {sweep.name!r} needs data that is missing; nothing ran:'
                            + describe_missing(missing))


def _validated(stage: Stage, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  if stage.pretrain:
    return pretrain.validate(config)
  config = validate(config)
  if not config.model.checkpoint:
    get_size(config.model.size)
  return config


def _status(done: int, failed: int, total: int, current: str = '') -> str:
  left = total - done - failed
  return f'[sweep] {done} done, {failed} failed, {left} left of {total}' + (
      f' | now: {current}' if current else '')


WORKER_REPORT_S = 60  # how often a parallel sweep shows what each worker is doing


def run_local(expanded: list[Run], sweep_command: list[str], parallel: int = 1) -> dict:
  """Runs every unfinished run, stage by stage (here, or split over `parallel` worker
  processes); a failure is written to the run's `failed.json` and the sweep goes on."""
  pending = [run for run in expanded if not run.finished()]
  done, failed = len(expanded) - len(pending), 0
  print(_status(done, failed, len(expanded)) + f' ({done} already finished, skipped)',
        file=sys.stderr)
  for stage in dict.fromkeys(run.stage.name for run in pending):
    stage_runs = [run for run in pending if run.stage.name == stage]
    if parallel > 1:
      _run_workers(stage, stage_runs, sweep_command, parallel)
      for run in stage_runs:
        done, failed = (done + 1, failed) if run.finished() else (done, failed + 1)
      print(_status(done, failed, len(expanded)), file=sys.stderr)
      continue
    for run in stage_runs:
      print(_status(done, failed, len(expanded), run.key), file=sys.stderr)
      if _execute(run):
        done += 1
      else:
        failed += 1
  print(_status(done, failed, len(expanded)), file=sys.stderr)
  if pending and failed == len(pending):
    first = next((RunDir(run.workdir).failure() for run in pending
                  if RunDir(run.workdir).failure()), {'error': 'no failed.json (see the logs)'})
    print(f'[sweep] every run it ran failed; the first: {first["error"][:500]}', file=sys.stderr)
  return {'done': done, 'failed': failed, 'total': len(expanded)}


def _execute(run: Run) -> bool:
  """Runs one run; a failure (not a preemption) is recorded in its directory."""
  RunDir(run.workdir).clear_failure()
  try:
    run.execute()
    return True
  except Preempted:
    raise
  except Exception as error:  # pylint: disable=broad-except  (recorded; the sweep goes on)
    RunDir(run.workdir).record_failure(error)
    print(f'[sweep] {run.key} FAILED: {type(error).__name__}: {str(error)[:300]} '
          f'(see {run.workdir / FAILED})', file=sys.stderr)
    return False


def _run_workers(stage: str, stage_runs: list[Run], sweep_command: list[str],
                 parallel: int) -> None:
  """`parallel` worker processes (`t5prompt sweep ... --shard i/n --stage S`), each running
  every n-th pending run of the stage one after another, in one process (data and compiled
  steps are reused across its runs); their output goes to the sweep's workdir."""
  workdir = Path(sweep_command[sweep_command.index('--workdir') + 1])
  workdir.mkdir(parents=True, exist_ok=True)
  _prepare_shared_data(stage_runs)
  workers = []
  for index in range(min(parallel, len(stage_runs))):
    path = workdir / f'sweep_{stage}_worker{index}.log'
    log = open(path, 'w', encoding='utf-8')  # pylint: disable=consider-using-with
    command = [sys.executable, '-m', 't5prompt.cli', *sweep_command[1:], '--stage', stage,
               '--shard', f'{index}/{parallel}']
    workers.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log, path))
  shown, last_report = {}, time.monotonic()
  while any(process.poll() is None for process, _, _ in workers):
    time.sleep(1.0)
    if time.monotonic() - last_report < WORKER_REPORT_S:
      continue
    last_report = time.monotonic()
    for index, (process, _, path) in enumerate(workers):
      line = _last_line(path)
      if process.poll() is None and line and shown.get(index) != line:
        print(f'[sweep] worker {index} ({path.name}): {line}', file=sys.stderr)
        shown[index] = line
  for _, log, _ in workers:
    log.close()


def _last_line(path: Path) -> str:
  """The last line (or progress-bar state) a worker wrote."""
  with open(path, 'rb') as handle:
    handle.seek(max(0, path.stat().st_size - 4096))
    tail = handle.read().decode('utf-8', 'replace')
  lines = [line.strip() for line in tail.replace('\r', '\n').split('\n') if line.strip()]
  return lines[-1][:160] if lines else ''


def _prepare_shared_data(stage_runs: list[Run]) -> None:
  """What every worker would otherwise build for itself at once: a trained vocabulary and
  the tokenized pre-training text (minutes each), made here, once, before they start."""
  from t5prompt.data.vocab import get_vocabulary  # pylint: disable=import-outside-toplevel
  for run in stage_runs:
    if not run.stage.pretrain:  # task splits tokenize in seconds, in each worker
      continue
    for stage in pretrain.STAGES:
      config = run.config[stage]
      vocabulary = get_vocabulary(config.model.vocabulary)  # what stage 1 trains with and saves
      load_train_data(config, vocabulary)
      load_eval_sets(config, vocabulary)


def run_shard(expanded: list[Run], stage: str, shard: str) -> dict:
  """A worker's share of a stage: its pending runs i, i + n, i + 2n, ... (shard 'i/n')."""
  index, count = (int(part) for part in shard.split('/'))
  pending = [run for run in expanded if run.stage.name == stage and not run.finished()]
  mine = pending[index::count]
  results = [_execute(run) for run in mine]
  return {'done': sum(results), 'failed': len(results) - sum(results), 'total': len(mine)}


def launch_commands(expanded: list[Run], sweep_command: list[str], launcher: str,
                    workdir: Path) -> str:
  """The unfinished runs as commands (each `t5prompt sweep ... --run <key>`), stage by stage:
  printed, SLURM array jobs (each stage after the one before), or TPU VM launches."""
  pending = [run for run in expanded if not run.finished()]
  per_stage = {}
  for run in pending:
    per_stage.setdefault(run.stage.name, []).append(
        shlex.join(sweep_command + ['--run', run.key]))
  if launcher == 'print':
    return '\n'.join(command for commands in per_stage.values() for command in commands)
  if launcher == 'slurm':
    return _slurm_scripts(per_stage, workdir)
  if launcher == 'tpu':
    return '\n'.join(f'launch/tpu_vm.sh $TPU_NAME $ZONE {command}'
                     for commands in per_stage.values() for command in commands)
  raise ValueError(f'Unknown launcher {launcher!r}; choose one of {", ".join(LAUNCHERS)}.')


def _slurm_scripts(per_stage: dict[str, list[str]], workdir: Path) -> str:
  """One array job per stage; the submission chains them (a stage starts after the last)."""
  workdir.mkdir(parents=True, exist_ok=True)
  submit, previous = [], ''
  for index, (stage, commands) in enumerate(per_stage.items()):
    listing = workdir / f'sweep_{index}_{stage}_commands.txt'
    listing.write_text('\n'.join(commands) + '\n')
    script = workdir / f'sweep_{index}_{stage}.sbatch'
    script.write_text(
        '#!/usr/bin/env bash\n'
        f'#SBATCH --array=1-{len(commands)}\n#SBATCH --gpus-per-node=8\n'
        f'#SBATCH --output={workdir}/slurm-%A_%a.out\nset -euo pipefail\n'
        f'command=$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {listing})\n'
        'eval "srun .venv/bin/${command} --distributed"\n')
    dependency = f'--dependency=afterany:${previous} ' if previous else ''
    submit.append(f'stage{index}=$(sbatch --parsable {dependency}{script})   '
                  f'# {stage}: {len(commands)} runs')
    previous = f'stage{index}'
  return '\n'.join(submit)


def run_sweep(path: str | Path, workdir: str | Path, launcher: str = 'local',
              parallel: int = 1, only: str = '', stage: str = '', shard: str = '') -> dict:
  """Runs (or launches) the sweep at `path` into `workdir`; `only` runs the one run of that
  key (stage/name), as remote launchers do; `stage` with `shard` ('i/n') a parallel worker's
  share of that stage."""
  workdir = Path(workdir)
  sweep = load_sweep(path, workdir)
  expanded = expand(sweep, workdir)  # every run validated, and its data found, before any runs
  check_data(sweep, expanded)
  sweep_command = ['t5prompt', 'sweep', '--config', str(path), '--workdir', str(workdir)]
  if only:
    selected = [run for run in expanded if run.key == only]
    if not selected:
      raise ValueError(f'No run {only!r} in {sweep.name}; runs are named stage/name, e.g. '
                       f'{expanded[0].key if expanded else "(none)"}.')
    selected[0].execute()
    return {'done': 1, 'failed': 0, 'total': 1}
  if shard:
    return run_shard(expanded, stage, shard)
  print(f'[sweep] {sweep.name}: {len(expanded)} runs in {len(sweep.stages)} stage(s), '
        f'{workdir}', file=sys.stderr)
  if launcher != 'local':
    print(launch_commands(expanded, sweep_command, launcher, workdir))
    return {'total': len(expanded)}
  return run_local(expanded, sweep_command, parallel)


def from_file(path: str | Path) -> Callable[[], ml_collections.ConfigDict]:
  """A base for `runs`: the config file at `path` (relative to the repository root, or
  absolute)."""
  path = Path(path)
  if not path.is_absolute():
    path = Path(__file__).resolve().parents[1] / path
  return lambda: load_config(path)
