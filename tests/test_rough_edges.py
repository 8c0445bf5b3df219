"""What a new user meets first: a stop at any moment of startup, quiet output, one-line errors
for bad config files and arguments, readable result files, a lock that goes away."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from t5prompt import atomic, cli
from t5prompt.run_config import apply_override, default_config
from t5prompt.run_dir import LOCK, RunDir

# What TensorFlow, absl and XLA's CUDA probe print when nobody silences them.
FOREIGN_LINE = re.compile(r'tensorflow|absl|cuda|oneDNN|^[EWI]\d{4} |^WARNING: All log messages',
                          re.IGNORECASE | re.MULTILINE)


def _t5prompt(*args):
  return [sys.executable, '-c', 'import sys; from t5prompt.cli import main; sys.exit(main())',
          *args]


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_data_show_prints_no_foreign_lines():
  done = subprocess.run(_t5prompt('data', 'show', 'superglue_cb', '--num', '1'),
                        capture_output=True, text=True, check=False, timeout=300)
  assert done.returncode == 0, done.stderr
  assert 'superglue_cb [validation]' in done.stdout
  assert not FOREIGN_LINE.search(done.stderr), done.stderr


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_sigint_at_any_moment_of_startup_stops_at_once_in_one_line(tmp_path):
  """20 real `t5prompt train` processes, each interrupted at a different moment before its loop
  starts (imports, config, data, backbone, compilation): exit 130, one line, no traceback."""
  config = REPO / 'configs' / 'smoke.py'
  for attempt in range(20):
    delay = 0.3 + 0.35 * attempt  # 0.3 s (imports) ... 7 s (data, compilation)
    process = subprocess.Popen(
        _t5prompt('train', '--config', str(config), '--workdir', str(tmp_path / str(attempt))),
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 130, (delay, process.returncode, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith('t5prompt: stopped by SIGINT'), (delay, stderr)
    assert 'Traceback' not in stderr and 'Exception ignored' not in stderr, (delay, stderr)
    result = tmp_path / str(attempt) / 'result.json'
    assert not result.exists()


@pytest.mark.parametrize('umask', [0o022, 0o002, 0o077])
def test_result_files_take_the_mode_the_umask_gives(tmp_path, umask):
  previous = os.umask(umask)
  try:
    path = atomic.write_json(tmp_path / 'result.json', {'score': 1.0})
    plain = tmp_path / 'plain.txt'
    plain.write_text('x')
  finally:
    os.umask(previous)
  assert path.stat().st_mode & 0o777 == 0o666 & ~umask == plain.stat().st_mode & 0o777
  assert json.loads(path.read_text()) == {'score': 1.0}


def test_the_lock_goes_when_released_and_refuses_a_second_holder(tmp_path):
  run_dir = RunDir(tmp_path)
  with run_dir.lock():
    assert (tmp_path / LOCK).exists()
    with pytest.raises((RuntimeError, FileExistsError, ValueError)):
      with RunDir(tmp_path).lock():
        pass
  assert not (tmp_path / LOCK).exists()


@pytest.mark.parametrize('content, expected', [
    (b'this is not python\n', 'Python config file'),
    (b'\x00\x01binary', 'Python config file'),
    (b'def get_config(:\n', 'Python config file'),
])
def test_a_garbage_config_file_is_one_line(tmp_path, capsys, content, expected):
  path = tmp_path / 'bad.py'
  path.write_bytes(content)
  assert cli.main(['train', '--config', str(path), '--workdir', str(tmp_path / 'run')]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and expected in err and str(path) in err, err


def test_readme_as_a_config_is_one_line(tmp_path, capsys):
  assert cli.main(['train', '--config', str(REPO / 'README.md'), '--workdir',
                   str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and 'README.md' in err, err


@pytest.mark.parametrize('text, value', [('true', True), ('False', False), ('1', True),
                                         ('0', False), ('yes', True), ('no', False)])
def test_booleans_read_every_usual_spelling(text, value):
  config = default_config()
  config.train.eval_at_start = not value
  apply_override(config, f'train.eval_at_start={text}')
  assert config.train.eval_at_start is value


def test_argument_errors_name_the_argument(tmp_path, capsys):
  smoke = str(REPO / 'configs' / 'smoke.py')
  with pytest.raises(SystemExit) as stopped:
    cli.main(['train', '--config', smoke, '--workdri', str(tmp_path)])
  assert stopped.value.code == 2
  assert 'unrecognized arguments: --workdri' in capsys.readouterr().err
  assert cli.main(['train', '--config', smoke, '--workdir', str(tmp_path),
                   '--config.train.steps', '10']) == 2
  err = capsys.readouterr().err
  assert '--config.train.steps=VALUE' in err and len(err.strip().splitlines()) == 1, err
  with pytest.raises(SystemExit) as stopped:
    cli.main(['--version'])
  assert stopped.value.code == 0
  assert re.match(r't5prompt \d+\.\d+', capsys.readouterr().out)
