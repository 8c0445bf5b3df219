"""`t5prompt data fetch` against a local HTTP server that serves the shipped copies under their
GitHub raw URLs: files land byte-identical where the sources read them, a second fetch skips
them, a broken download resumes with a Range request, and a corrupted one is deleted, not kept."""

import http.server
import threading
import urllib.parse

import pytest

from conftest import SHARED_DATA
from t5prompt import cli
from t5prompt.data import fetch


class _Server(http.server.BaseHTTPRequestHandler):
  """Serves RELEASES by URL path from the shared data, honouring `Range: bytes=N-`."""
  by_url_path = {urllib.parse.urlparse(release.url('http://x')).path: relative
                 for relative, release in fetch.RELEASES.items()}
  requests: list = []
  corrupt: set = set()

  def do_GET(self):  # pylint: disable=invalid-name
    relative = self.by_url_path.get(self.path)
    if relative is None:
      self.send_error(404)
      return
    body = (SHARED_DATA / relative).read_bytes()
    if relative in self.corrupt:
      body = body[:-1] + bytes([body[-1] ^ 1])
    start = int(self.headers['Range'].split('=')[1].rstrip('-')) if self.headers['Range'] else 0
    self.requests.append((relative, start))
    self.send_response(206 if start else 200)
    self.send_header('Content-Length', str(len(body) - start))
    self.end_headers()
    self.wfile.write(body[start:])

  def log_message(self, *args):
    del args


@pytest.fixture
def server():
  httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Server)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  _Server.requests.clear()
  _Server.corrupt.clear()
  yield f'http://127.0.0.1:{httpd.server_address[1]}'
  httpd.shutdown()


def test_the_table_matches_the_shipped_copies():
  for relative, release in fetch.RELEASES.items():
    path = SHARED_DATA / relative
    assert path.stat().st_size == release.size, relative
  assert fetch._sha256(SHARED_DATA / 'superglue/CB/val.jsonl') == fetch.RELEASES[
      'superglue/CB/val.jsonl'].sha256


def test_fetch_lands_the_files_and_skips_them_after(server, tmp_path):
  paths = fetch.files_for(['superglue_cb', 'glue_mrpc'])
  assert 'superglue/CB/train.jsonl' in paths and 'glue/MRPC/dev.tsv' in paths
  assert set(fetch.files_for([])) >= set(paths) | {'text/gutenberg_nltk/gutenberg.zip'}
  assert set(fetch.fetch(paths, tmp_path, server).values()) == {'fetched'}
  for relative in paths:
    assert (tmp_path / relative).read_bytes() == (SHARED_DATA / relative).read_bytes()
  requests = len(_Server.requests)
  assert set(fetch.fetch(paths, tmp_path, server).values()) == {'present'}
  assert len(_Server.requests) == requests  # nothing downloaded again


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
  relative = 'superglue/CB/val.jsonl'
  original = (SHARED_DATA / relative).read_bytes()
  part = tmp_path / (relative + '.part')
  part.parent.mkdir(parents=True)
  part.write_bytes(original[:1000])
  assert fetch.fetch([relative], tmp_path, server) == {relative: 'fetched'}
  assert _Server.requests == [(relative, 1000)]
  assert (tmp_path / relative).read_bytes() == original and not part.exists()


def test_a_corrupted_download_is_deleted_and_named(server, tmp_path):
  relative = 'superglue/CB/val.jsonl'
  _Server.corrupt.add(relative)
  with pytest.raises(ValueError, match='did not match its recorded size 24598 and sha256'):
    fetch.fetch([relative], tmp_path, server)
  assert not (tmp_path / relative).exists()
  assert not (tmp_path / (relative + '.part')).exists()


def test_offline_and_unknown_names_are_one_line(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('T5PROMPT_DATA_DIR', str(tmp_path))
  monkeypatch.setenv('T5PROMPT_DATA_MIRROR', 'http://127.0.0.1:9')  # nothing listens there
  assert cli.main(['data', 'fetch', 'superglue_cb']) == 2
  err = capsys.readouterr().err
  assert 'Could not fetch http://127.0.0.1:9/' in err and 'rerun `t5prompt data fetch`' in err
  assert cli.main(['data', 'fetch', 'superglue_cbb']) == 2
  assert 'superglue_cb' in capsys.readouterr().err  # the nearest name suggested
