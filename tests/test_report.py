"""The report on synthetic result.json sets with known means and stds: every cell, the gap row,
the paper's columns, robustness rows, skipped malformed files, the plot."""

import csv
import json

import numpy as np
import pytest

from t5prompt.report import paper, transfer
from t5prompt.report import tables as report

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


def _result(series, size, task, seed, score, extra_evals=(), extra_metrics=None, share=60.0,
            baseline=None):
  baseline = {} if baseline is None else {'majority_baseline': baseline}
  return {
      'config': {'method': series, 'model': {'size': size}, 'train': {'seed': seed},
                 'task': {'name': task, 'eval_splits': ['validation'],
                          'extra_evals': list(extra_evals)}},
      'model_size': size, 'num_params': SIZES[size], 'method': series, 'series': series,
      'task': task, 'seed': seed, 'best_step': 10,
      'metrics': {'validation': {'score': score, 'majority_prediction_share': share,
                                 **baseline},
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
  assert header == ['task', 'series', 'small (77M)', 'base (250M)']  # by parameter count
  for key, scores in SCORES.items():
    mean, std, n, collapsed_runs = cells[key]
    assert mean == pytest.approx(np.mean(scores)) and n == 3 and collapsed_runs == 0
    assert std == pytest.approx(np.std(scores, ddof=1))
  # The SuperGLUE average: per seed over its tasks, then mean ± std over seeds.
  for series in ('prompt_tuning', 'model_tuning'):
    for size in SIZES:
      per_seed = [np.mean([SCORES[(series, size, t)][s] for t in ('superglue_rte',
                                                                   'superglue_cb')])
                  for s in range(3)]
      mean, std, n, _ = cells[(series, size, report.AVERAGE)]
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
  assert rows[0] == ['task', 'series', 'small (77M)', 'base (250M)'] and len(rows) > 8
  assert '\\begin{tabular}' in (out / 'scale_table.tex').read_text()
  assert len(list(csv.reader((out / 'runs.csv').open()))) == 25


def test_a_run_in_two_directories_is_counted_once(results, capsys):
  """A copy of a finished run (the same config, say run again under another name) is one
  measurement: counting it twice would shrink the std and shift the mean."""
  copy = results / 'rerun-of-seed-2'  # sorts after the first: the first is kept
  copy.mkdir()
  source = results / 'prompt_tuning-small-superglue_cb-2' / 'result.json'
  record = json.loads(source.read_text())
  record['config']['partitioning'] = {'mesh': [2, 4]}  # laid out differently: the same run
  (copy / 'result.json').write_text(json.dumps(record))
  runs, skipped = report.collect(results)
  assert len(runs) == 24
  assert skipped == [f'{copy / "result.json"}: the same config as {source}, counted once']
  _, _, cells = report.scale_table(runs)
  assert cells[('prompt_tuning', 'small', 'superglue_cb')][:3] == (
      pytest.approx(62.0), pytest.approx(np.std([60.0, 60.0, 66.0], ddof=1)), 3)
  record['config']['train']['seed'] = 7  # another seed: another measurement
  (copy / 'result.json').write_text(json.dumps(record))
  assert len(report.collect(results)[0]) == 25


def test_collapsed_runs_single_seeds_and_the_majority_baseline_are_marked(tmp_path):
  scores = {('prompt_tuning', 0): (40.0, 100.0), ('prompt_tuning', 1): (50.0, 70.0),
            ('model_tuning', 0): (60.0, 55.0)}
  for (series, seed), (score, share) in scores.items():
    (tmp_path / f'{series}{seed}').mkdir()
    (tmp_path / f'{series}{seed}' / 'result.json').write_text(json.dumps(_result(
        series, 'small', 'superglue_cb', seed, score, share=share, baseline=36.1)))
  runs, _ = report.collect(tmp_path)
  _, rows, _ = report.scale_table(runs)
  table = {(row[0], row[1]): row[2:] for row in rows}
  assert table[('superglue_cb', 'prompt_tuning')] == ['45.0 ± 7.1 (2) †1']  # one collapsed
  assert table[('superglue_cb', 'model_tuning')] == ['60.0 (n=1)']
  assert table[('superglue_cb', 'majority-class baseline')] == ['36.1']
  assert table[('superglue_cb', 'gap (model - prompt tuning)')] == ['+15.0']


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
  assert table['mrqa_squad (in-domain)'][3].endswith('†1')  # model tuning's seed 0 collapsed
  assert sum(report.collapsed(r) for r in collected) == 1
  summary = report.write_report(tmp_path)
  assert '1 collapsed to one class' in summary and (tmp_path / 'report' / 'robustness.md').exists()


def test_empty_directory_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='No readable result.json'):
    report.write_report(tmp_path)


def _transfer_run(directory, task, score, prompt, source=None, seed=0):
  """A prompt-tuning run on size 'small': from scratch, or from a library prompt of `source`."""
  directory.mkdir(parents=True)
  result = _result('spot' if source else 'prompt_tuning', 'small', task, seed, score)
  result['method'] = 'prompt_tuning'
  result['init'] = {'name': 'sampled_vocab'}
  if source:
    entry = directory.parent / f'library-{source}'
    entry.mkdir(exist_ok=True)
    np.save(entry / 'prompt.npy', source[1])
    result['init'] = {'name': 'file', 'path': str(entry / 'prompt.npy'),
                      'source': {'task': source[0]}}
  result['config']['prompt'] = {'init': result['init']}
  np.save(directory / 'prompt.npy', prompt)
  (directory / 'result.json').write_text(json.dumps(result))


def test_transfer_matrix_gains_similarity_and_retrieval(tmp_path):
  e = np.eye(8)
  target = np.stack([e[0], e[1]])
  # Sources ordered by similarity to the target: rte (0.5) > copa (0.0) > wsc (-0.5 ...).
  rte, copa, wsc = np.stack([e[0], e[2]]), np.stack([e[3], e[4]]), np.stack([-e[0], e[5]])
  _transfer_run(tmp_path / 'scratch0', 'superglue_cb', 50.0, target)
  _transfer_run(tmp_path / 'scratch1', 'superglue_cb', 54.0, target, seed=1)
  _transfer_run(tmp_path / 'rte', 'superglue_cb', 60.0, target, ('superglue_rte', rte))
  _transfer_run(tmp_path / 'copa', 'superglue_cb', 55.0, target, ('superglue_copa', copa))
  _transfer_run(tmp_path / 'wsc', 'superglue_cb', 40.0, target, ('superglue_wsc', wsc))
  runs, _ = report.collect(tmp_path)
  pairs = {p['source']: p for p in transfer.transfer_pairs(runs)}
  assert pairs['superglue_rte']['scratch'] == 52.0 and pairs['superglue_rte']['gain'] == 8.0
  assert pairs['superglue_rte']['similarity'] == pytest.approx(0.5)
  assert pairs['superglue_copa']['similarity'] == pytest.approx(0.0)
  assert pairs['superglue_wsc']['similarity'] == pytest.approx(-0.5)
  text = transfer.transfer_tables(runs)
  assert '| small | superglue_cb | superglue_rte | 60.0 | 52.0 | +8.0 | 0.500 |' in text
  # Gains 8, 3, -12 rise with similarity: rank correlation 1; top-1 = rte = the oracle.
  assert '| small | 3 | +0.96 | +1.00 | 52.0 | 60.0 | 60.0 |' in text
  assert 'top-1 by cosine 76.7' in text  # the paper's row beside ours
  summary = report.write_report(tmp_path)
  assert (tmp_path / 'report' / 'transfer.md').read_text() == text and 'SPoT' in summary


def test_methods_table_and_prompt_words(tmp_path):
  for method, trained, stored in (('prompt_tuning', 640, 640), ('prefix_tuning', 9000, 1536),
                                  ('prompt_design', 0, 0), ('autoprompt', 0, 2)):
    run = tmp_path / method
    run.mkdir()
    result = _result(method, 'small', 'superglue_cb', 0, 50.0)
    result.update(num_trainable_params=trained, num_stored_params=stored)
    (run / 'result.json').write_text(json.dumps(result))
  (tmp_path / 'autoprompt' / 'triggers.json').write_text(json.dumps(
      {'ids': [7, 9], 'pieces': ['▁so', '▁maybe'], 'text': 'so maybe'}))
  (tmp_path / 'prompt_tuning' / 'prompt.json').write_text(json.dumps(
      {'nearest_tokens': [['▁yes', '▁no', '▁maybe'], ['▁the', '▁a', '▁an']]}))
  runs, _ = report.collect(tmp_path)
  header, rows = report.methods_rows(runs)
  assert header[3:5] == ['trained params', 'stored']
  assert ['prefix_tuning', 'prefix_tuning', 'small', '9,000', '1,536', '0.002',
          'superglue_cb: 50.0 (1)'] in rows
  assert ['autoprompt', 'autoprompt', 'small', '0', '2 tokens "▁so" "▁maybe"', '',
          'superglue_cb: 50.0 (1)'] in rows
  (tmp_path / 'mrpc').mkdir()  # one series on a second task: no empty rows for the others
  (tmp_path / 'mrpc' / 'result.json').write_text(json.dumps(
      _result('prompt_tuning', 'small', 'glue_mrpc', 0, 70.0)))
  _, scale_rows, _ = report.scale_table(report.collect(tmp_path)[0])
  assert [row[1] for row in scale_rows if row[0] == 'glue_mrpc'] == ['prompt_tuning']
  words = report.prompt_words(runs)
  assert '| prompt_tuning | small | superglue_cb | 0 | ▁yes ▁no ▁maybe / ▁the ▁a ▁an |' in words
  summary = report.write_report(tmp_path)
  assert 'Methods: parameters trained and stored' in summary
  assert (tmp_path / 'report' / 'methods.csv').is_file()
