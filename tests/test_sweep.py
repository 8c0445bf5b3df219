"""Sweeps: expansion and names, validation before anything runs, skipping finished runs,
recording failures, launchers."""

import json
from types import SimpleNamespace

import pytest

from t5prompt import cli, sweep
from t5prompt.prompts import methods
from t5prompt.run_config import default_config
from t5prompt.run_dir import RunDir, manifest
from t5prompt.run_setup import check_or_write_manifest, in_saved_layout

from conftest import REPO

SWEEP = '''
from t5prompt.sweep import Stage, Sweep, from_file, runs

def get_sweep(workdir):
  return Sweep('mini', [Stage('runs', runs(from_file({base!r}), {runs}))])
'''
TINY = {'model.size': 'tiny-v1_1', 'task.input_length': 64, 'train.batch_size': 8,
        'train.steps': 2, 'train.eval_every': 2, 'train.checkpoint_every': 2,
        'train.eval_at_start': False, 'train.max_eval_examples': 8}


def _write_sweep(tmp_path, runs):
  path = tmp_path / 'mini.py'
  path.write_text(SWEEP.format(base=str(REPO / 'configs' / 'smoke.py'), runs=runs))
  return path


def test_product_and_short_names():
  runs = sweep.product({'model.size': ['a', 'b']},
                       [{'method': 'prompt_tuning'},
                        {'method': 'model_tuning', 'optimizer.learning_rate': 0.001}],
                       {'train.seed': [0, 1]})
  assert len(runs) == 8
  assert runs[2] == {'model.size': 'a', 'method': 'model_tuning',
                     'optimizer.learning_rate': 0.001, 'train.seed': 0}
  names = sweep._short_names(runs)  # pylint: disable=protected-access
  assert len(set(names)) == 8
  assert names[2] == 'size=a,method=model_tuning,seed=0'  # the LR rides along unnamed


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_every_config_in_the_repo_expands():
  ladder = 4  # the demos' shared pre-training stage
  expected = {'scale_superglue': 240 + 15, 'ablation_prompt_length': 600, 'ablation_init': 360,
              'ablation_objective': 240, 'robustness_mrqa': 6, 'robustness_paraphrase': 12,
              'demo': ladder + 48, 'demo_methods': ladder + 28 + 12,  # + AutoPrompt's stage
              'demo_transfer': ladder + 16 + 32, 'transfer_spot': 45 + 5 * 8 * (1 + 1 + 7) * 3,
              'few_shot_ppt': ladder + 4 + 2 * 4 * 3}
  for name, count in expected.items():
    runs = sweep.expand(sweep.load_sweep(REPO / 'configs' / 'sweeps' / f'{name}.py', '/tmp/x'),
                        '/tmp/x')
    assert len(runs) == count, name
    assert len({run.key for run in runs}) == count
    assert len({run.workdir for run in runs}) == count


def test_invalid_names_are_all_listed_before_anything_runs(tmp_path):
  path = _write_sweep(tmp_path, [
      {**TINY, 'model.size': 'tiny-v9'}, {**TINY, 'task.name': 'superglue_rtx'},
      {**TINY, 'method': 'lora'}, {**TINY, 'train.seed': 3}])
  with pytest.raises(ValueError, match=r"(?s)3 invalid run\(s\); nothing ran.*Unknown T5 size "
                                       r"'tiny-v9'.*Unknown task 'superglue_rtx'.*method must be"):
    sweep.run_sweep(path, tmp_path / 'runs')
  assert not (tmp_path / 'runs').exists()


def test_missing_data_is_listed_before_anything_runs(tmp_path, capsys):
  path = _write_sweep(tmp_path, [{**TINY, 'train.seed': 0},
                                 {**TINY, 'train.seed': 1, 'task.train_split': 'fewglue_train'},
                                 {**TINY, 'train.seed': 2, 'task.name': 'superglue_record'}])
  assert cli.main(['sweep', '--config', str(path), '--workdir', str(tmp_path / 'runs')]) == 2
  err = capsys.readouterr().err
  assert "Sweep 'mini' needs data that is missing; nothing ran" in err
  assert 'fewglue_32/train.jsonl' in err and 'ReCoRD/train.jsonl' in err
  assert not (tmp_path / 'runs').exists()


def _finish(run, directory):
  """A result.json of exactly `run`'s config in `directory`, as train writes it."""
  directory.mkdir(parents=True, exist_ok=True)
  (directory / 'result.json').write_text(json.dumps(
      {'config': json.loads(run.config.to_json()), 'model_size': 'tiny-v1_1',
       'method': 'prompt_tuning', 'task': 'superglue_cb', 'seed': run.config.train.seed,
       'metrics': {'validation': {'score': 50.0}}}))


def test_a_narrowed_grid_finds_its_finished_runs_under_their_old_names(tmp_path, capsys):
  """Names come from the keys that vary: one seed left, the run is `base`, not `seed=0`. It
  must not run again, and a directory another run is named for is never taken."""
  wide = sweep.expand(sweep.load_sweep(_write_sweep(tmp_path, [
      {**TINY, 'train.seed': 0}, {**TINY, 'train.seed': 1}]), tmp_path / 'runs'),
      tmp_path / 'runs')
  assert [run.name for run in wide] == ['seed=0', 'seed=1']
  _finish(wide[0], tmp_path / 'runs' / 'seed=0')
  _finish(wide[1], tmp_path / 'runs' / 'seed=0' / 'x')  # not a directory beside the runs
  (narrow,) = sweep.expand(sweep.load_sweep(_write_sweep(tmp_path, [{**TINY, 'train.seed': 0}]),
                                            tmp_path / 'runs'), tmp_path / 'runs')
  assert narrow.name == 'base' and narrow.workdir == tmp_path / 'runs' / 'seed=0'
  assert narrow.finished()
  assert "runs/base: finished as seed=0 (its name before the grid changed)" in (
      capsys.readouterr().err)
  # seed=1's result in seed=0's directory: seed=0 is a run of this sweep, so it is not taken.
  _finish(wide[1], tmp_path / 'runs' / 'seed=0')
  again = sweep.expand(sweep.load_sweep(_write_sweep(tmp_path, [
      {**TINY, 'train.seed': 0}, {**TINY, 'train.seed': 1}]), tmp_path / 'runs'),
      tmp_path / 'runs')
  assert [run.workdir.name for run in again] == ['seed=0', 'seed=1']
  assert [run.finished() for run in again] == [False, False]


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_restarted_sweep_runs_only_unfinished_runs_and_records_failures(tmp_path, capsys):
  not_a_checkpoint = tmp_path / 'empty'
  not_a_checkpoint.mkdir()
  path = _write_sweep(tmp_path, [{**TINY, 'train.seed': 0}, {**TINY, 'train.seed': 1},
                                 {**TINY, 'train.seed': 2,
                                  'model.checkpoint': str(not_a_checkpoint)}])
  assert cli.main(['sweep', '--config', str(path), '--workdir', str(tmp_path / 'runs')]) == 1
  err = capsys.readouterr().err
  assert '[sweep] 2 done, 1 failed, 0 left of 3' in err
  failure = json.loads((tmp_path / 'runs' / 'seed=2' / 'failed.json').read_text())
  assert str(not_a_checkpoint) in failure['error']
  first = (tmp_path / 'runs' / 'seed=0' / 'result.json').read_text()
  (tmp_path / 'runs' / 'seed=1' / 'result.json').unlink()  # as if interrupted before the end
  assert sweep.run_sweep(path, tmp_path / 'runs') == {'done': 2, 'failed': 1, 'total': 3}
  err = capsys.readouterr().err
  assert '(1 already finished, skipped)' in err and 'now: runs/seed=1' in err
  assert 'now: runs/seed=0' not in err
  assert (tmp_path / 'runs' / 'seed=0' / 'result.json').read_text() == first
  assert (tmp_path / 'runs' / 'seed=1' / 'result.json').exists()
  path = _write_sweep(tmp_path, [{**TINY, 'train.seed': 0}])  # narrowed: its run is now `base`
  assert sweep.run_sweep(path, tmp_path / 'runs') == {'done': 1, 'failed': 0, 'total': 1}
  assert '(1 already finished, skipped)' in capsys.readouterr().err
  assert not (tmp_path / 'runs' / 'base').exists()


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_launchers_print_commands_and_a_slurm_array(tmp_path, capsys):
  path = _write_sweep(tmp_path, [{**TINY, 'train.seed': 0}, {**TINY, 'train.seed': 1}])
  assert cli.main(['sweep', '--config', str(path), '--workdir', str(tmp_path / 'runs'),
                   '--launcher', 'print']) == 0
  printed = capsys.readouterr().out.strip().splitlines()
  assert len(printed) == 2 and printed[0].startswith(f't5prompt sweep --config {path} ')
  assert printed[0].endswith('--run runs/seed=0')
  assert cli.main(['sweep', '--config', str(path), '--workdir', str(tmp_path / 'runs'),
                   '--launcher', 'slurm']) == 0
  assert 'sbatch --parsable' in capsys.readouterr().out
  script = (tmp_path / 'runs' / 'sweep_0_runs.sbatch').read_text()
  assert '#SBATCH --array=1-2' in script
  assert len((tmp_path / 'runs' / 'sweep_0_runs_commands.txt').read_text().splitlines()) == 2
  assert cli.main(['sweep', '--config', str(path), '--workdir', str(tmp_path / 'runs'),
                   '--run', 'runs/seed=1']) == 0  # what one launched job runs
  assert (tmp_path / 'runs' / 'seed=1' / 'result.json').is_file()
  assert not (tmp_path / 'runs' / 'seed=0').exists()


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_parallel_workers_share_a_stage_and_report_progress(tmp_path, capsys, monkeypatch):
  """--parallel 2: two worker processes split the stage's runs (each run once), write their
  logs in the workdir, and the sweep shows what they are doing while they run."""
  monkeypatch.setattr(sweep, 'WORKER_REPORT_S', 2)
  path = _write_sweep(tmp_path, [{**TINY, 'train.seed': seed} for seed in range(3)])
  assert sweep.run_sweep(path, tmp_path / 'runs', parallel=2) == {'done': 3, 'failed': 0,
                                                                  'total': 3}
  err = capsys.readouterr().err
  assert '[sweep] 3 done, 0 failed, 0 left of 3' in err
  assert '[sweep] worker 0 (sweep_runs_worker0.log)' in err
  logs = [(tmp_path / 'runs' / f'sweep_runs_worker{i}.log').read_text() for i in range(2)]
  assert sum(log.count('already finished') for log in logs) == 0  # no run was run twice
  for seed in range(3):
    assert (tmp_path / 'runs' / f'seed={seed}' / 'result.json').is_file()


def test_a_run_saved_before_a_field_existed_is_finished_while_the_field_holds_its_default(
    tmp_path):
  """Adding a config field must not make every finished run (a cached ladder, a finished
  sweep) run again; setting the new field to something else must."""
  config = default_config()
  saved = json.loads(config.to_json())
  del saved['prompt']['trigger_init']  # as a run written before the field was added
  (tmp_path / 'result.json').write_text(json.dumps(
      {'config': saved, 'model_size': 'small', 'method': 'prompt_tuning', 'task': 'x',
       'seed': 0, 'metrics': {}}))
  run = RunDir(tmp_path)
  assert run.finished(config, default_config())
  assert not run.finished(config)  # without the defaults: exact match only
  config.prompt.trigger_init = 'a'
  assert not run.finished(config, default_config())
  config.prompt.trigger_init = 'the'
  config.train.steps += 1  # a field the run did save
  assert not run.finished(config, default_config())


def test_a_run_finished_on_another_layout_is_the_same_run(tmp_path):
  """The mesh and the layer layout say how a run ran, not what it computed: a sweep finished
  with scanned layers (the default before `model.scan_layers` None) is not run again."""
  saved = default_config()
  saved.model.scan_layers, saved.partitioning.mesh = True, (2, 4)
  (tmp_path / 'result.json').write_text(json.dumps(
      {'config': json.loads(saved.to_json()), 'model_size': 'small', 'method': 'prompt_tuning',
       'task': 'x', 'seed': 0, 'metrics': {}}))
  run, config = RunDir(tmp_path), default_config()
  assert config.model.scan_layers is None and run.finished(config, default_config())
  config.model.dtype = 'bfloat16'  # what it computes
  assert not run.finished(config, default_config())


def test_a_resume_accepts_fields_added_since_while_they_hold_their_default(tmp_path):
  backbone = SimpleNamespace(source='random:x', params_hash='abc',
                             config=SimpleNamespace(d_model=8))
  config, prompt_tuning = default_config(), methods.get('prompt_tuning')
  saved = manifest(config, backbone, prompt_tuning)
  del saved['prompt']['trigger_init']  # a run started before the field existed
  (tmp_path / 'manifest.json').write_text(json.dumps(saved))
  run, defaults = RunDir(tmp_path), manifest(default_config(), backbone, prompt_tuning)
  assert run.check_or_write_manifest(manifest(config, backbone, prompt_tuning),
                                     defaults=defaults)
  with pytest.raises(ValueError, match='refusing to resume'):
    run.check_or_write_manifest(manifest(config, backbone, prompt_tuning))  # exact, no defaults
  config.prompt.trigger_init = 'a'
  with pytest.raises(ValueError, match=r"prompt.trigger_init: saved before the field existed "
                                       r"\(so 'the'\), now 'a'"):
    run.check_or_write_manifest(manifest(config, backbone, prompt_tuning), defaults=defaults)


def _backbones_in_both_layouts():
  """The same (stand-in) backbone loaded unrolled and stacked."""
  return (SimpleNamespace(source='random:x', params_hash='abc',
                          config=SimpleNamespace(d_model=8, scan_layers=scan))
          for scan in (False, True))


def test_a_resume_on_the_other_layer_layout_is_refused(tmp_path):
  """A model-tuning checkpoint written with unrolled layers cannot be resumed as a stack: the
  manifest refuses it (a None setting takes the saved layout first: `in_saved_layout`)."""
  unrolled, stacked = _backbones_in_both_layouts()
  config, model_tuning = default_config('model_tuning'), methods.get('model_tuning')
  run = RunDir(tmp_path)
  assert not run.check_or_write_manifest(manifest(config, unrolled, model_tuning))
  with pytest.raises(ValueError, match='model.scan_layers: saved False, now True'):
    run.check_or_write_manifest(manifest(config, stacked, model_tuning),
                                defaults=manifest(default_config(), stacked, model_tuning))
  # A prompt's checkpoints hold no layers: its run resumes on either layout.
  prompt_tuning = methods.get('prompt_tuning')
  assert 'scan_layers' not in manifest(config, stacked, prompt_tuning)['model']


def test_a_default_layout_setting_takes_the_layout_a_model_tuning_run_was_saved_in(tmp_path):
  unrolled, stacked = _backbones_in_both_layouts()
  config, model_tuning = default_config('model_tuning'), methods.get('model_tuning')
  run = RunDir(tmp_path)
  assert in_saved_layout(run, config, model_tuning).model.scan_layers is None  # a new run
  run.check_or_write_manifest(manifest(config, stacked, model_tuning))  # trained on a GPU
  assert in_saved_layout(run, config, model_tuning).model.scan_layers is True
  assert config.model.scan_layers is None  # the caller's config is left as it was
  config.model.scan_layers = False  # explicit: left for the manifest check to refuse
  assert in_saved_layout(run, config, model_tuning).model.scan_layers is False
  prompt_tuning, prompt_config = methods.get('prompt_tuning'), default_config()
  assert in_saved_layout(run, prompt_config, prompt_tuning).model.scan_layers is None
  legacy = manifest(default_config('model_tuning'), unrolled, model_tuning)
  del legacy['model']['scan_layers']  # saved before the field existed: stacked
  (tmp_path / 'manifest.json').write_text(json.dumps(legacy))
  legacy_config = in_saved_layout(run, default_config('model_tuning'), model_tuning)
  assert legacy_config.model.scan_layers is True


def test_a_model_tuning_run_saved_before_the_layout_was_recorded_resumes_only_stacked(tmp_path):
  """Its manifest lacks model.scan_layers; its checkpoints hold the layers as a stack (the
  default then), so an unrolled resume is refused with the field named, a stacked one goes on."""
  unrolled, stacked = _backbones_in_both_layouts()
  config, model_tuning = default_config('model_tuning'), methods.get('model_tuning')
  legacy = manifest(config, stacked, model_tuning)
  del legacy['model']['scan_layers']
  run = RunDir(tmp_path)
  run.check_or_write_manifest(legacy)
  with pytest.raises(ValueError, match=r'model.scan_layers: saved before the field existed '
                                       r'\(so True\), now False'):
    check_or_write_manifest(run, config, unrolled, model_tuning)
  assert check_or_write_manifest(run, config, stacked, model_tuning)  # resumes
