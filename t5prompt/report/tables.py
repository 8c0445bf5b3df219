"""`t5prompt report DIR`: every result.json under DIR -> tables (Markdown, CSV, LaTeX) and
plots (PNG, PDF), beside the paper's numbers.

Outputs in DIR/report/:
  scale_table.{md,csv,tex}  rows = series (method, or an ablation's value), columns = sizes by
                            parameter count; cells mean ± std over seeds per task and the
                            SuperGLUE average; the gap row (model - prompt tuning); the paper's
  scale_plot.{png,pdf}      score vs parameters (log x), one line per series with seed error
                            bars, the paper's curves dashed
  robustness.{md,csv}       per domain-shift eval set: model tuning, prompt tuning, delta
  runs.csv                  every run's score per eval set, and a flag on collapsed runs
  backbones.csv             backbones pre-trained by `t5prompt pretrain`: steps, held-out LM
                            loss, encoder reliance, minutes
"""

import collections
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from t5prompt.data.sources import local_path
from t5prompt.prompts import methods
from t5prompt.report import paper, transfer
from t5prompt.run_dir import RESULT, Result, RunDir, find_results

COLLAPSE_SHARE = 99.0  # % of predictions on one label: the run collapsed to a single class
# A backbone whose decoder gains less than this from reading its input (held-out prefix-LM loss
# with another example's input minus with its own, nats) barely uses the encoder: a prompt,
# which only changes the encoder's input, can then hardly steer it.
RELIANCE_FLOOR = 0.5
AVERAGE = 'SuperGLUE avg'
# The paper's two series: the gap row is the first minus the second; robustness compares them.
GAP = ('model_tuning', 'prompt_tuning')
PAPER_CURVES = GAP + ('model_tuning_multitask',)  # the paper's figure 1


def collect(directory: str | Path) -> tuple[list[Result], list[str]]:
  """Every readable result under `directory`, each measurement once; unreadable ones and
  copies of a run (the same config in a second directory) are named and skipped."""
  runs, skipped, seen = [], [], {}
  for run_dir in find_results(directory):
    try:
      result = run_dir.result()
      if not result.metrics:
        raise ValueError('no metrics (no eval ran)')
    except (json.JSONDecodeError, ValueError, TypeError, UnicodeDecodeError) as error:
      skipped.append(f'{run_dir / RESULT}: {error}')
      continue
    if result.identity in seen:
      skipped.append(f'{run_dir / RESULT}: the same config as {seen[result.identity]}, '
                     'counted once')
      continue
    seen[result.identity] = run_dir / RESULT
    runs.append(result)
  return runs, skipped


def _mean_std(values) -> tuple[float, float, int]:
  values = np.asarray(values, float)
  std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  return float(np.mean(values)), std, len(values)


def scale_cells(runs: list[Result]) -> dict:
  """{(series, size, task): (mean, std, n, collapsed runs)} of in-domain scores, plus the
  SuperGLUE average (per seed, the mean over the SuperGLUE tasks that seed has; then mean ±
  std over seeds; collapsed counts the seeds with a collapsed task)."""
  scores = collections.defaultdict(list)
  per_seed = collections.defaultdict(lambda: collections.defaultdict(list))
  for result in runs:
    key = (result.series_name, result.model_size)
    for task, metrics in result.task_metrics.items():
      task = task_label(task)
      scores[key + (task,)].append((metrics['score'], _collapsed(metrics)))
      if task.startswith('superglue_'):
        per_seed[key][result.seed].append((metrics['score'], _collapsed(metrics)))
  cells = {}
  for key, values in scores.items():
    cells[key] = _mean_std([v for v, _ in values]) + (sum(c for _, c in values),)
  for key, seeds in per_seed.items():
    cells[key + (AVERAGE,)] = _mean_std([np.mean([v for v, _ in s]) for s in seeds.values()]) + (
        sum(any(c for _, c in s) for s in seeds.values()),)
  return cells


def majority_baselines(runs: list[Result]) -> dict:
  """{(size, task): the score of always answering the eval set's most frequent label}."""
  return {(r.model_size, task_label(task)): metrics['majority_baseline'] for r in runs
          for task, metrics in r.task_metrics.items() if 'majority_baseline' in metrics}


def task_label(task: str) -> str:
  """A task's column in the tables: T5's task prefix (multi-task training) is not a task."""
  return task.removesuffix('_prefixed')


def sizes_in_order(runs: list[Result]) -> list[str]:
  params = {}
  for result in runs:
    params[result.model_size] = result.num_params
  return sorted(params, key=lambda size: (params[size], size))


def _millions(count: int) -> str:
  return f'{count / 1e6:,.0f}M' if count >= 1e7 else f'{count / 1e6:.2g}M'


def size_labels(runs: list[Result]) -> dict[str, str]:
  """Each size's column header: its name and parameter count (and the transformer's alone,
  without the embeddings and LM head, where a run recorded it)."""
  labels = {}
  for result in runs:
    count = _millions(result.num_params) if result.num_params else '?'
    if result.num_non_embedding_params:
      count += f', {_millions(result.num_non_embedding_params)} non-emb.'
    labels[result.model_size] = f'{result.model_size} ({count})'
  return labels


def _fmt(cell) -> str:
  """`mean ± std (n)`; one run has no std; † and a count mark runs collapsed to one class."""
  if cell is None:
    return ''
  mean, std, n, collapsed_runs = cell
  text = f'{mean:.1f} ± {std:.1f} ({n})' if n > 1 else f'{mean:.1f} (n=1)'
  return text + (f' †{collapsed_runs}' if collapsed_runs else '')


def tasks_in_order(runs: list[Result]) -> list[str]:
  tasks = sorted({task_label(task) for r in runs for task in r.task_metrics})
  return tasks + [AVERAGE] if sum(t.startswith('superglue_') for t in tasks) > 1 else tasks


def scale_table(runs: list[Result]) -> tuple[list[str], list[list[str]], dict]:
  """(header, rows, cells) of the scale table; rows per (task, series), the majority-class
  baseline, the gap; the backbones' encoder reliance; the paper."""
  cells = scale_cells(runs)
  sizes = sizes_in_order(runs)
  series = sorted({r.series_name for r in runs})
  baselines = majority_baselines(runs)
  labels = size_labels(runs)
  header = ['task', 'series'] + [labels[size] for size in sizes]
  rows = []
  for task in tasks_in_order(runs):
    for name in series:
      if any((name, size, task) in cells for size in sizes):  # a series that ran this task
        rows.append([task, name] + [_fmt(cells.get((name, size, task))) for size in sizes])
    if any((size, task) in baselines for size in sizes):
      rows.append([task, 'majority-class baseline'] + [
          f'{baselines[(size, task)]:.1f}' if (size, task) in baselines else '' for size in sizes])
    if set(GAP) <= set(series):
      gap = []
      for size in sizes:
        first, second = (cells.get((name, size, task)) for name in GAP)
        gap.append(f'{first[0] - second[0]:+.1f}' if first and second else '')
      rows.append([task, 'gap (model - prompt tuning)'] + gap)
  reliance = backbone_reliance(runs)
  if reliance:
    rows.append(['backbone', f'encoder reliance (nats; ⚠ < {RELIANCE_FLOOR})'] + [
        '' if reliance.get(size) is None else
        f'{reliance[size]:.2f}' + (' ⚠' if reliance[size] < RELIANCE_FLOOR else '')
        for size in sizes])
  if any(paper.scale(GAP[1], size) is not None for size in sizes):
    for name in paper.SCALE:
      rows.append([f'{AVERAGE} (paper)', name] + [
          f'{paper.scale(name, size):.1f}' if paper.scale(name, size) is not None else ''
          for size in sizes])
  return header, rows, cells


def backbone_reliance(runs: list[Result]) -> dict[str, float]:
  """{size: encoder reliance} of the backbones that recorded it (pre-trained by t5prompt)."""
  reliance = {}
  for result in runs:
    checkpoint = result.config.get('model', {}).get('checkpoint')
    record = RunDir(local_path(checkpoint)).backbone_record() if checkpoint else {}
    if record.get('encoder_reliance') is not None:
      reliance[result.model_size] = record['encoder_reliance']
  return reliance


def _pretraining_chain(checkpoint: str) -> list[RunDir]:
  """The directories of a pre-trained backbone's stages, first stage first (each stage's record
  names the backbone it continued)."""
  chain, reference = [], checkpoint
  while reference:
    stage = RunDir(local_path(reference))
    record = stage.backbone_record()
    if not record:
      break
    chain.insert(0, stage)
    reference = record.get('trained_from')
  return chain


def backbone_rows(runs: list[Result]) -> tuple[list[str], list[list[str]]]:
  """The backbones t5prompt pre-trained (`t5prompt pretrain`), one row per size: parameters,
  each stage's steps, the final held-out LM loss, encoder reliance and wall time."""
  header = ['size', 'non-emb. params', 'steps per stage', 'held-out LM loss',
            f'encoder reliance (nats; ⚠ < {RELIANCE_FLOOR})', 'pre-training min']
  rows = {}
  for result in runs:
    checkpoint = result.config.get('model', {}).get('checkpoint')
    chain = _pretraining_chain(checkpoint) if checkpoint else []
    if not chain or result.model_size in rows:
      continue
    last = chain[-1].backbone_record()
    minutes = sum(stage.result().wall_time_s for stage in chain if stage.result()) / 60
    reliance = last['encoder_reliance']
    rows[result.model_size] = (result.num_params, [
        result.model_size, _millions(last['num_non_embedding_params']),
        ' + '.join(str(stage.backbone_record()['steps']) for stage in chain),
        f"{last['held_out_lm_loss']:.2f}",
        f'{reliance:.2f}' + (' ⚠' if reliance < RELIANCE_FLOOR else ''), f'{minutes:.1f}'])
  return header, [row for _, row in sorted(rows.values(), key=lambda item: item[0])]


def _markdown(header, rows) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'


def _latex(header, rows) -> str:
  escape = lambda text: (text.replace('\\', '\\textbackslash{}').replace('_', '\\_')
                         .replace('±', '$\\pm$').replace('%', '\\%').replace('&', '\\&'))
  lines = ['\\begin{tabular}{ll' + 'r' * (len(header) - 2) + '}', '\\toprule',
           ' & '.join(escape(h) for h in header) + ' \\\\', '\\midrule']
  lines += [' & '.join(escape(cell) for cell in row) + ' \\\\' for row in rows]
  lines += ['\\bottomrule', '\\end{tabular}']
  return '\n'.join(lines) + '\n'


def _csv(header, rows) -> str:
  buffer = io.StringIO()
  writer = csv.writer(buffer)
  writer.writerow(header)
  writer.writerows(rows)
  return buffer.getvalue()


def paper_table() -> tuple[list[str], list[list[str]]]:
  header = ['series'] + [f'{size} ({paper.PARAMS[size] / 1e6:,.0f}M)' for size in paper.SIZES]
  return header, [[name] + [f'{v:.1f}' for v in values] for name, values in paper.SCALE.items()]


def scale_plot(runs: list[Result], cells: dict, output: Path) -> list[Path]:
  """One panel per task (and the SuperGLUE average): each series' score vs parameters with seed
  error bars, collapsed runs as crosses, the majority-class baseline dotted. The paper's curves
  are a SuperGLUE average: drawn on that panel when there is one, else on a panel of their own,
  never over a single task's scores."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  tasks = tasks_in_order(runs)
  panels = tasks + ([] if AVERAGE in tasks else ['paper'])
  figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
  colors = {}
  for axis, task in zip(axes[0], panels):
    if task != 'paper':
      _task_panel(axis, runs, cells, task, colors)
    if task in (AVERAGE, 'paper'):
      _paper_curves(axis, colors, with_design_band=any(not methods.get(r.method).trains
                                                       for r in runs))
    axis.set_xscale('log')
    axis.set_xlabel('model parameters')
    axis.grid(True, which='both', alpha=0.3)
    axis.legend(fontsize=7)
  figure.tight_layout()
  paths = [output / 'scale_plot.png', output / 'scale_plot.pdf']
  for path in paths:
    figure.savefig(path, dpi=150)
  plt.close(figure)
  return paths


def _task_panel(axis, runs: list[Result], cells: dict, task: str, colors: dict) -> None:
  params = {r.model_size: r.num_params for r in runs}
  for name in sorted({r.series_name for r in runs}):
    points = sorted((params[size], *cells[(name, size, t)]) for (s, size, t) in cells
                    if s == name and t == task)
    if not points:
      continue
    x, mean, std, _, collapsed_runs = zip(*points)
    line = axis.errorbar(x, mean, yerr=std, marker='o', capsize=3, label=name,
                         color=colors.get(name))
    colors[name] = line[0].get_color()
    crossed = [(xi, yi) for xi, yi, c in zip(x, mean, collapsed_runs) if c]
    if crossed:
      axis.scatter(*zip(*crossed), marker='x', s=90, color='black', zorder=5,
                   label=f'{name}: collapsed run(s)')
  baselines = sorted((params[size], value) for (size, t), value in majority_baselines(runs).items()
                     if t == task)
  if baselines:
    axis.plot(*zip(*baselines), linestyle=':', color='grey', label='majority class')
  axis.set_ylabel('score (dev)')
  axis.set_title(f'{task} (t5prompt)')


def _paper_curves(axis, colors: dict, with_design_band: bool) -> None:
  for name, values in paper.SCALE.items():
    if name in PAPER_CURVES:
      axis.plot([paper.PARAMS[s] for s in paper.SIZES], values, linestyle='--', marker='x',
                color=colors.get(name), alpha=0.7, label=f'{name} (paper)')
  if with_design_band:
    low, high = paper.GPT3_PROMPT_DESIGN
    axis.axhspan(low, high, color='grey', alpha=0.12,
                 label=f'GPT-3 prompt design (paper, {low}-{high})')
  if axis.get_title() == '':
    axis.set_title('the paper: SuperGLUE dev average, T5 1.1 LM-adapted')
    axis.set_ylabel('SuperGLUE score (dev)')


def robustness_rows(runs: list[Result]) -> tuple[list[str], list[list[str]]]:
  """Per eval set of runs that evaluate beyond their own task: model vs prompt tuning, delta,
  with the paper's values where the set is one of its domain-shift sets."""
  values = collections.defaultdict(list)
  for result in runs:
    mixed_in = result.config['task'].get('mixture', ())
    for name, metrics in result.metrics.items():
      if ':' in name and name.partition(':')[0] not in mixed_in:  # a domain-shift set
        values[(result.model_size, result.task, name, result.method)].append(metrics)
      elif name == result.in_domain and result.config['task']['extra_evals']:
        values[(result.model_size, result.task, f'{result.task} (in-domain)',
                result.method)].append(metrics)
  header = ['size', 'trained on', 'eval set', 'model tuning', 'prompt tuning', 'delta',
            'paper model', 'paper prompt']
  rows = []
  for size, task, name in sorted({key[:3] for key in values}):
    model, prompt = (values.get((size, task, name, method)) for method in GAP)
    model_cell, prompt_cell = (
        (*_mean_std([m['score'] for m in v]), sum(map(_collapsed, v))) if v else None
        for v in (model, prompt))  # collapsed seeds on that set are marked as in the scale table
    delta = f'{prompt_cell[0] - model_cell[0]:+.1f}' if model_cell and prompt_cell else ''
    eval_task = name.split(':')[0].replace(' (in-domain)', '')
    published = paper.MRQA.get(eval_task) if task == 'mrqa_squad' else None
    if (task, eval_task) in paper.PARAPHRASE:
      published = tuple(pair[0] for pair in paper.PARAPHRASE[(task, eval_task)])
    rows.append([size, task, name, _fmt(model_cell), _fmt(prompt_cell), delta,
                 *(f'{v:.1f}' for v in published or ('', ''))])
  return header, rows


def collapsed(result: Result) -> bool:
  """Whether the run answers (nearly) one class on its in-domain eval set."""
  return _collapsed(result.metrics[result.in_domain])


def _collapsed(metrics: dict) -> bool:
  return metrics.get('majority_prediction_share', 0.0) >= COLLAPSE_SHARE


def runs_rows(runs: list[Result]) -> tuple[list[str], list[list[str]]]:
  header = ['size', 'series', 'task', 'seed', 'eval set', 'score', 'best step', 'collapsed',
            'path']
  rows = []
  for result in sorted(runs, key=lambda r: (r.model_size, r.series_name, r.task, r.seed)):
    for name, metrics in result.metrics.items():
      rows.append([result.model_size, result.series_name, result.task, str(result.seed),
                   name, f'{metrics["score"]:.2f}', str(result.best_step),
                   'yes' if name == result.in_domain and collapsed(result) else '',
                   result.path])
  return header, rows


def methods_rows(runs: list[Result]) -> tuple[list[str], list[list[str]]]:
  """Per (series, size): the method, its trained and stored parameter counts (stored = what a
  task keeps after training: the folded prompt or prefix, or a whole model copy)."""
  seen = {}
  for result in runs:
    key = (result.series_name, result.model_size)
    seen.setdefault(key, result)
  scores = collections.defaultdict(list)
  for result in runs:
    scores[(result.series_name, result.model_size, result.task)].append(result.score)
  header = ['series', 'method', 'size', 'trained params', 'stored', '% of backbone',
            'task: score (seeds)']
  rows = []
  for (name, size), result in sorted(seen.items()):
    trained = result.num_trainable_params
    stored = result.num_stored_params or trained
    share = f'{100 * stored / result.num_params:.3f}' if result.num_params else ''
    if methods.get(result.method).artefact == methods.TRIGGERS:  # tokens, not parameters
      text = RunDir(result.path).triggers()['pieces'] if result.path else []
      stored, share = f'{stored} tokens ' + ' '.join(f'"{piece}"' for piece in text), ''
    else:
      stored = f'{stored:,}'
    cells = '; '.join(f'{task}: {np.mean(values):.1f} ({len(values)})'
                      for (series, at, task), values in sorted(scores.items())
                      if (series, at) == (name, size))
    rows.append([name, result.method, size, f'{trained:,}', stored, share, cells])
  return header, rows


def prompt_words(runs: list[Result], positions: int = 5) -> str:
  """What each trained input prompt "says": nearest vocabulary tokens of its first positions
  (from the run's prompt.json), one row per run."""
  lines = []
  for result in sorted(runs, key=lambda r: (r.series_name, r.model_size, r.task, r.seed)):
    nearest = RunDir(result.path).prompt_record().get('nearest_tokens')
    if nearest:
      words = ' / '.join(' '.join(tokens[:3]) for tokens in nearest[:positions])
      lines.append(f'| {result.series_name} | {result.model_size} | {result.task} | '
                   f'{result.seed} | {words} |')
  if not lines:
    return ''
  return '\n'.join([f'# Prompt words: nearest vocabulary tokens (cosine) of the first '
                     f'{positions} positions, top 3 each\n',
                     '| series | size | task | seed | positions 0.. |', '|---|---|---|---|---|',
                     *lines, ''])


def write_report(directory: str | Path, output: str | Path | None = None) -> str:
  """Writes every table and plot; returns a summary (the scale table in Markdown)."""
  runs, skipped = collect(directory)
  for line in skipped:
    print(f'report: skipped {line}', file=sys.stderr)
  if not runs:
    raise FileNotFoundError(f'No readable result.json under {directory}; run a sweep (or '
                            '`t5prompt train`) into it first.')
  output = Path(output) if output else Path(directory) / 'report'
  output.mkdir(parents=True, exist_ok=True)
  header, rows, cells = scale_table(runs)
  paper_header, paper_rows = paper_table()
  markdown = (f'# Scale: in-domain dev score, mean ± std (seeds), {len(runs)} runs\n\n'
              + _markdown(header, rows)
              + '\n## The paper (Lester et al. 2021), SuperGLUE dev average\n\n'
              + _markdown(paper_header, paper_rows))
  (output / 'scale_table.md').write_text(markdown)
  (output / 'scale_table.csv').write_text(_csv(header, rows))
  (output / 'scale_table.tex').write_text(_latex(header, rows))
  scale_plot(runs, cells, output)
  robust_header, robust_rows = robustness_rows(runs)
  if robust_rows:
    (output / 'robustness.md').write_text('# Domain shift: score on each eval set\n\n'
                                          + _markdown(robust_header, robust_rows))
    (output / 'robustness.csv').write_text(_csv(robust_header, robust_rows))
  pretrained_header, pretrained_rows = backbone_rows(runs)
  if pretrained_rows:
    markdown += ('\n## Backbones pre-trained by t5prompt (span corruption + LM adaptation)\n\n'
                 + _markdown(pretrained_header, pretrained_rows))
    (output / 'backbones.csv').write_text(_csv(pretrained_header, pretrained_rows))
    (output / 'scale_table.md').write_text(markdown)
  method_header, method_rows = methods_rows(runs)
  if len({r.method for r in runs}) > 1:
    markdown += ('\n## Methods: parameters trained and stored per task\n\n'
                 + _markdown(method_header, method_rows))
    (output / 'methods.csv').write_text(_csv(method_header, method_rows))
    (output / 'scale_table.md').write_text(markdown)
  for name, text in (('transfer.md', transfer.transfer_tables(runs)),
                     ('ensembles.md', transfer.ensemble_table(directory)),
                     ('prompt_words.md', prompt_words(runs))):
    if text:
      (output / name).write_text(text)
      markdown += '\n' + text
  run_header, run_rows = runs_rows(runs)
  (output / 'runs.csv').write_text(_csv(run_header, run_rows))
  flagged = sum(1 for r in runs if collapsed(r))
  return (markdown + f'\n{len(runs)} runs, {len(skipped)} skipped, {flagged} collapsed to one '
          f'class; tables and plots in {output}\n')
