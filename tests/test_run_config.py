"""Configs: Python files with overrides, validated before any compute; bad input is refused
with a message that names the problem and writes nothing."""

import re

import jax
import pytest

from t5prompt import cli
from t5prompt.backbone import load_model_backbone, scan_layers
from t5prompt.data.tasks import get_task_spec
from t5prompt.run_config import apply_override, default_config, load_config, load_run_config
from t5prompt.run_dir import RunDir

from conftest import REPO

SMOKE = str(REPO / 'configs' / 'smoke.py')


def test_configs_in_the_repo_load():
  for path in sorted((REPO / 'configs').glob('*.py')):
    config = load_config(path)
    assert config.train.steps > 0, path


def test_overrides_are_typed():
  config = load_config(SMOKE, ['--config.train.steps=7', '--config.optimizer.learning_rate=1',
                               '--config.task.eval_splits=validation',
                               '--config.prompt.init=sampled_vocab'])
  assert config.train.steps == 7 and config.optimizer.learning_rate == 1.0
  assert config.task.eval_splits == ('validation',) and config.prompt.init == 'sampled_vocab'
  with pytest.raises(ValueError, match=r"'train.steps' takes a int value .*got 'many'"):
    apply_override(default_config(), 'train.steps=many')


def test_paper_defaults():
  config = default_config()
  assert (config.prompt.length, config.prompt.init) == (100, 'class_label')
  assert (config.train.batch_size, config.train.steps) == (32, 30000)
  # Targets 8 for classification (the paper); 0 means the task's own length.
  assert (config.task.input_length, config.task.target_length) == (512, 0)
  assert get_task_spec(config.task.name).target_length == 8
  assert config.model.dropout_rate == 0.1


def test_layer_layout_is_chosen_by_backend_unless_set(tmp_path):
  config = default_config()
  assert config.model.scan_layers is None
  assert scan_layers(None) is (jax.default_backend() != 'cpu') and scan_layers(True) is True
  config.model.size = 'tiny-v1_1'
  unrolled = load_model_backbone(config.model)
  assert 'layers_0' in unrolled.params['encoder']  # on CPU
  apply_override(config, 'model.scan_layers=true')
  stacked = load_model_backbone(config.model)
  assert 'layers' in stacked.params['encoder']
  assert stacked.params_hash == unrolled.params_hash  # a seed names the same random weights
  apply_override(config, 'model.scan_layers=no')
  assert config.model.scan_layers is False
  with pytest.raises(ValueError, match=r"'model.scan_layers' takes a bool value .*got 'often'"):
    apply_override(config, 'model.scan_layers=often')
  # A run directory keeps what its config said: a layout, or None (by backend).
  for value in (True, None):
    config.model.scan_layers = value
    RunDir(tmp_path).write_config(config)
    assert load_run_config(tmp_path).model.scan_layers is value


@pytest.mark.parametrize('override, message', [
    ('--config.train.stpes=10', r"(?s)Unknown config key 'train.stpes'. Valid keys: .*train.steps"),
    ('--config.prompt.length=0', 'prompt.length must be positive, got 0'),
    ('--config.prompt.length=-3', 'prompt.length must be positive, got -3'),
    ('--config.prompt.init=zeros', "prompt.init must be one of .*got 'zeros'"),
    ('--config.method=lora', "method must be one of"),
    ('--config.prompt.init=text', 'prompt.init="text" needs prompt.init_text'),
    ('--config.task.name=superglue_rtee', "Unknown task 'superglue_rtee'. Did you mean "
                                          'superglue_rte'),
    ('--config.task.extra_evals=mrqa_dorp:validation', "Did you mean mrqa_drop"),
])
def test_bad_config_is_refused_before_anything_is_written(override, message, tmp_path, capsys):
  workdir = tmp_path / 'run'
  assert cli.main(['train', '--config', SMOKE, '--workdir', str(workdir), override]) == 2
  assert capsys.readouterr().err.startswith('t5prompt train: error: ')
  assert not workdir.exists()
  with pytest.raises(ValueError, match=message):
    load_config(SMOKE, [override])


@pytest.mark.parametrize('checkpoint, message', [
    ('cache:ladder/ladder-9/lm_adapted', r'(?s)The backbone cache:ladder/ladder-9/lm_adapted is '
                                         r'not here: .*cache/ladder/ladder-9/lm_adapted is not a '
                                         r'directory.*demo sweeps pre-train.*t5prompt pretrain'),
    ('/nonexistent/t5-small', 'The backbone /nonexistent/t5-small is not here'),
])
def test_missing_backbone_is_refused_before_anything_is_written(checkpoint, message, tmp_path,
                                                                capsys, monkeypatch):
  monkeypatch.setenv('T5PROMPT_CACHE', str(tmp_path / 'cache'))
  workdir = tmp_path / 'run'
  assert cli.main(['train', '--config', SMOKE, '--workdir', str(workdir),
                   f'--config.model.checkpoint={checkpoint}']) == 2
  error = capsys.readouterr().err
  assert error.startswith('t5prompt train: error: '), error
  assert re.search(message, error), error
  assert not workdir.exists()


def test_unknown_key_in_a_config_file(tmp_path):
  bad = tmp_path / 'bad.py'
  bad.write_text('from t5prompt.run_config import default_config\n\n'
                 'def get_config():\n  config = default_config()\n'
                 '  config.train.learning_rate = 0.1\n  return config\n')
  with pytest.raises(ValueError, match=r"(?s)Unknown config key 'train.learning_rate'.*"
                                       r'optimizer.learning_rate'):
    load_config(bad)
  with pytest.raises(FileNotFoundError, match='No config file'):
    load_config(tmp_path / 'missing.py')


def test_init_text_longer_than_the_prompt_writes_nothing(tmp_path, capsys):
  workdir = tmp_path / 'run'
  code = cli.main(['train', '--config', SMOKE, '--workdir', str(workdir),
                   '--config.prompt.init=text', '--config.prompt.length=2',
                   '--config.prompt.init_text=a rather long initial text'])
  assert code == 2
  assert 'init text has' in capsys.readouterr().err
  assert not (workdir / 'manifest.json').exists() and not (workdir / 'checkpoints').exists()
