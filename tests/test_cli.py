"""The `t5prompt` command: convert round trips and the smoke run, as a user calls them."""

import subprocess
import sys

import pytest
import transformers

from conftest import REPO, hf_logits, make_hf_t5, random_batch, save_as_hub_v4
from t5prompt import cli
from t5prompt.models import convert


def test_convert_hf_to_t5prompt_and_back(tmp_path, capsys):
  model = make_hf_t5(untied_head=True, vocab_size=80, d_model=16, d_kv=4, d_ff=24, num_heads=2,
                     num_layers=2, feed_forward_proj='gated-gelu', tie_word_embeddings=False)
  save_as_hub_v4(model, tmp_path / 'hf')
  assert cli.main(['convert', str(tmp_path / 'hf'), str(tmp_path / 'ours')]) == 0
  digest = convert.params_hash(convert.load_hf(tmp_path / 'hf', scan_layers=False)[1])
  assert f'params_hash={digest}' in capsys.readouterr().out
  assert cli.main(['convert', str(tmp_path / 'ours'), str(tmp_path / 'back'),
                   '--format', 'hf']) == 0
  reloaded = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / 'back').eval()
  reference = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / 'hf').eval()
  inputs, decoder_inputs = random_batch(80, 2, 9, 5)
  assert (hf_logits(reloaded, inputs, decoder_inputs)
          == hf_logits(reference, inputs, decoder_inputs)).all()


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_smoke_command_runs_end_to_end():
  result = subprocess.run([sys.executable, '-m', 't5prompt.cli', 'smoke', '--max-decode-length',
                           '4'], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'forward: logits (2, 36, 32128)' in result.stdout
  assert 'finite=True' in result.stdout
  assert result.stdout.count('greedy:') == 2
