"""Bad input gets a clear error that names the problem and the fix."""

import json

import pytest

from conftest import make_hf_t5
from t5prompt import cli
from t5prompt.models import convert, get_size, load_hf


def test_unknown_size_suggests_and_lists():
  with pytest.raises(ValueError, match=r"Unknown T5 size 't5-smal'.*Did you mean t5-small.*"
                                       r"Valid sizes: .*t5-lm-adapt-xxl"):
    get_size('t5-smal')


def test_directory_without_checkpoint(tmp_path):
  with pytest.raises(convert.CheckpointError, match=r'No config\.json in .*'):
    load_hf(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 't5'}))
  (tmp_path / 'notes.txt').write_text('hello')
  with pytest.raises(convert.CheckpointError,
                     match=r'No T5 weights in .*expected one of model\.safetensors.*notes\.txt'):
    load_hf(tmp_path)


def test_other_model_type(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'bert'}))
  with pytest.raises(convert.CheckpointError, match="describes a 'bert' model, not T5"):
    load_hf(tmp_path)


def _checkpoint_with_edited_config(directory, **edits):
  """A real one-layer checkpoint whose config.json then says something else."""
  make_hf_t5(vocab_size=64, d_model=16, d_kv=4, d_ff=24, num_heads=2,
             num_layers=1).save_pretrained(directory)
  config = json.loads((directory / 'config.json').read_text())
  (directory / 'config.json').write_text(json.dumps({**config, **edits}))
  return directory


def test_shapes_that_do_not_match_the_config(tmp_path):
  with pytest.raises(convert.CheckpointError,
                     match=r'tensor for .*mlp/wi/kernel has shape \(16, 24\), but config\.json '
                           r'.*d_ff=32.* implies \(16, 32\)'):
    load_hf(_checkpoint_with_edited_config(tmp_path, d_ff=32))


def test_missing_layer(tmp_path):
  with pytest.raises(convert.CheckpointError,
                     match=r'tensor encoder\.block\.1\..* is missing; '
                           r'config\.json describes a 2\+1-layer'):
    load_hf(_checkpoint_with_edited_config(tmp_path, num_layers=2))


def test_hub_id_offline_says_what_to_do(monkeypatch):
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  with pytest.raises(convert.CheckpointError,
                     match=r"(?s)'google/t5-base-lm-adapt' is not a local directory.*Pass a directory"):
    load_hf('google/t5-base-lm-adapt')


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
  assert cli.main(['convert', str(tmp_path / 'nope'), str(tmp_path / 'out')]) == 2
  assert 'is not a directory holding a T5 checkpoint' in capsys.readouterr().err
  assert not (tmp_path / 'out').exists()
