"""The report on synthetic result.json sets with known means and stds: every cell, the gap row,
the paper's columns, robustness rows, skipped malformed files, the plot."""

import csv
import json

import numpy as np
import pytest

from analysis import paper, report

SIZES = {'small': 77_000_000, 'base': 250_000_000}
# (series, size, task) -> scores for seeds 0, 1, 2
SCORES = {
    ('prompt_tuning', 'small', 'superglue_rte'): (50.0, 52.0, 54.0),
    ('prompt_tuning', 'small', 'superglue_cb'): (60.0, 60.0, 66.0),
    ('prompt_tuning', 'base', 'superglue_rte'): (70.0, 71.0, 72.0),
    ('prompt_tuning', 'base', 'superglue_cb'): (80.0, 82.0, 84.0),
    ('model_tuning', 'small', 'superglue_rte'): (55.0, 57.0, 59.0),
    ('model_tuning', 'small', 'superglue_cb'): (70.0, 72.0, 74.0),
    ('model_tuning', 'base', 'superglue_rte'): (72.0, 72.0, 72.0),
    ('model_tuning', 'base', 'superglue_cb'): (85.0, 86.0, 87.0),
}


def _result(series, size, task, seed, score, extra_evals=(), extra_metrics=None, share=60.0):
  return {
      'config': {'task': {'eval_splits': ['validation'], 'extra_evals': list(extra_evals)}},
      'model_size': size, 'num_params': SIZES[size], 'method': series, 'series': series,
      'task': task, 'seed': seed, 'best_step': 10,
      'metrics': {'validation': {'score': score, 'majority_prediction_share': share},
                  **(extra_metrics or {})}}


@pytest.fixture
def results(tmp_path):
  for (series, size, task), scores in SCORES.items():
    for seed, score in enumerate(scores):
      run = tmp_path / f'{series}-{size}-{task}-{seed}'
      run.mkdir()
      (run / 'result.json').write_text(json.dumps(_result(series, size, task, seed, score)))
  return tmp_path


def test_every_cell_is_the_mean_and_std_over_seeds(results):
  runs, skipped = report.collect(results)
  assert len(runs) == 24 and not skipped
  header, rows, cells = report.scale_table(runs)
  assert header == ['task', 'series', 'small', 'base']  # ordered by parameter count
  for key, scores in SCORES.items():
    mean, std, n = cells[key]
    assert mean == pytest.approx(np.mean(scores)) and n == 3
    assert std == pytest.approx(np.std(scores, ddof=1))
  # The SuperGLUE average: per seed over its tasks, then mean ± std over seeds.
  for series in ('prompt_tuning', 'model_tuning'):
    for size in SIZES:
      per_seed = [np.mean([SCORES[(series, size, t)][s] for t in ('superglue_rte',
                                                                   'superglue_cb')])
                  for s in range(3)]
      mean, std, n = cells[(series, size, report.AVERAGE)]
      assert (mean, std, n) == (pytest.approx(np.mean(per_seed)),
                                pytest.approx(np.std(per_seed, ddof=1)), 3)
  table = {(row[0], row[1]): row[2:] for row in rows}
  assert table[('superglue_rte', 'prompt_tuning')] == ['52.0 ± 2.0 (3)', '71.0 ± 1.0 (3)']
  assert table[('superglue_cb', 'model_tuning')] == ['72.0 ± 2.0 (3)', '86.0 ± 1.0 (3)']


def test_gap_row_and_paper_columns(results):
  runs, _ = report.collect(results)
  _, rows, _ = report.scale_table(runs)
  table = {(row[0], row[1]): row[2:] for row in rows}
  # rte small: 57 - 52; base: 72 - 71. Average: small 64.5 - 57.0, base 79.0 - 76.5
  assert table[('superglue_rte', 'gap (model - prompt tuning)')] == ['+5.0', '+1.0']
  assert table[(report.AVERAGE, 'gap (model - prompt tuning)')] == ['+7.5', '+2.5']
  assert table[(f'{report.AVERAGE} (paper)', 'prompt_tuning')] == ['59.8', '63.1']
  assert table[(f'{report.AVERAGE} (paper)', 'model_tuning')] == ['62.8', '73.7']
  assert paper.scale('prompt_tuning', 'xxl') == 88.8


def test_report_files_plot_and_malformed_results(results, capsys):
  (results / 'broken').mkdir()
  (results / 'broken' / 'result.json').write_text('{"model_size": ')
  (results / 'empty').mkdir()
  (results / 'empty' / 'result.json').write_text(json.dumps({'model_size': 'small'}))
  summary = report.write_report(results)
  err = capsys.readouterr().err
  assert f'skipped {results / "broken" / "result.json"}' in err
  assert 'missing method, task, seed, metrics, config' in err
  assert '24 runs, 2 skipped, 0 collapsed' in summary
  out = results / 'report'
  for name in ('scale_table.md', 'scale_table.csv', 'scale_table.tex', 'scale_plot.png',
               'scale_plot.pdf', 'runs.csv'):
    assert (out / name).stat().st_size > 0, name
  assert (out / 'scale_plot.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  rows = list(csv.reader((out / 'scale_table.csv').open()))
  assert rows[0] == ['task', 'series', 'small', 'base'] and len(rows) > 8
  assert '\\begin{tabular}' in (out / 'scale_table.tex').read_text()
  assert len(list(csv.reader((out / 'runs.csv').open()))) == 25


def test_robustness_rows_and_collapse_flag(tmp_path):
  runs = []
  for method, (in_score, drop) in {'model_tuning': (90.0, 60.0),
                                   'prompt_tuning': (89.0, 65.0)}.items():
    for seed in range(2):
      runs.append(_result(method, 'base', 'mrqa_squad', seed, in_score + seed,
                          extra_evals=('mrqa_drop:validation',),
                          extra_metrics={'mrqa_drop:validation': {'score': drop + seed}},
                          share=100.0 if method == 'model_tuning' and seed == 0 else 50.0))
  for index, result in enumerate(runs):
    (tmp_path / str(index)).mkdir()
    (tmp_path / str(index) / 'result.json').write_text(json.dumps(result))
  collected, _ = report.collect(tmp_path)
  header, rows = report.robustness_rows(collected)
  table = {row[2]: row for row in rows}
  drop = table['mrqa_drop:validation']
  assert drop[3:6] == ['60.5 ± 0.7 (2)', '65.5 ± 0.7 (2)', '+5.0']
  assert drop[6:] == ['68.9', '67.1']  # the paper's XXL model / prompt tuning F1
  assert table['mrqa_squad (in-domain)'][5] == '-1.0'
  assert sum(report.collapsed(r) for r in collected) == 1
  summary = report.write_report(tmp_path)
  assert '1 collapsed to one class' in summary and (tmp_path / 'report' / 'robustness.md').exists()


def test_empty_directory_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='No readable result.json'):
    report.write_report(tmp_path)
