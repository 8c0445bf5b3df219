"""Pre-training the miniature: T5X's init, span corruption that reconstructs the text, encoder
reliance that can tell a model that reads its input from one that does not, the vocabulary
travelling with the backbone, and `t5prompt pretrain` through the train loop."""

import json
import math
import shutil
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import REPO, SHARED_DATA, random_t5_params
from t5prompt import cli, pretrain, smoke
from t5prompt.backbone import load_model_backbone
from t5prompt.build import make_train_step
from t5prompt.data import pipeline, pretraining, text
from t5prompt.data.pipeline import TokenizedSplit
from t5prompt.data.sources import cache_reference
from t5prompt.data.spec import record
from t5prompt.data.vocab import get_vocabulary
from t5prompt.evaluate import language_model_metrics
from t5prompt.models import T5, T5Config, get_size
from t5prompt.models.decode import shift_right
from t5prompt.report import tables
from t5prompt.run_config import default_config
from t5prompt.run_dir import RunDir


@pytest.mark.parametrize('size, tied', [('tiny-v1_0', True), ('tiny-v1_1', False),
                                        ('ladder-2', True),
                                        pytest.param('t5-v1_1-small', False,
                                                     marks=pytest.mark.slow)])
def test_a_random_model_starts_near_the_uniform_loss(size, tied):
  """T5X's init: unit-variance logits give ln(vocab) + ~0.5 on real text (an LM head drawn
  from N(0, 1) gave 22-27 nats at ln(32128) = 10.4). The text: CB premises, their first 32
  tokens as targets (varied tokens, not a few label words)."""
  config = get_size(size)
  assert config.tie_word_embeddings == tied
  data = pipeline.load_tokenized('superglue_cb', 'validation', 64, 8)
  model = T5(config)
  inputs = data.inputs[:16] % config.vocab_size
  targets = inputs[:, :32]
  logits = jax.jit(model.apply)({'params': random_t5_params(config)}, inputs, shift_right(targets))
  log_probs = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
  loss = float(jnp.sum(nll * (targets > 0)) / jnp.sum(targets > 0))
  assert abs(loss - math.log(config.vocab_size)) < 1.0, loss


def test_span_corruption_reconstructs_the_text_exactly():
  """Filling each sentinel of the inputs with the span after it in the targets gives back the
  chunk, on real text; the noise is 15% of the tokens in spans of mean length 3."""
  vocabulary = get_vocabulary()
  tokens = np.asarray(vocabulary.encode(text.documents('validation')[0]))[:pretraining.CHUNK]
  first_sentinel = vocabulary.vocab_size - 1
  inputs, targets = pretraining.span_corruption(tokens, np.random.RandomState(3), first_sentinel)
  sentinels = [t for t in inputs.tolist() if t > first_sentinel - 100]
  assert sentinels == list(range(first_sentinel, first_sentinel - len(sentinels), -1))
  spans, current = {}, None
  for token in targets.tolist():
    if token in sentinels:
      current = token
      spans[current] = []
    else:
      spans[current].append(token)
  rebuilt = [t for token in inputs.tolist()
             for t in (spans[token] if token in spans else [token])]
  np.testing.assert_array_equal(rebuilt, tokens)
  noise = sum(len(span) for span in spans.values())
  assert noise == round(0.15 * len(tokens))
  assert len(spans) == round(noise / 3)
  prefix, rest = pretraining.prefix_lm(tokens, np.random.RandomState(3))
  np.testing.assert_array_equal(np.concatenate([prefix, rest]), tokens)
  assert 1 <= len(rest) <= pretraining.PREFIX_LM_TARGET


def _copy_split(rng, count=64, length=8, vocab=40) -> TokenizedSplit:
  """Inputs of random tokens; the target repeats the input: only the encoder can tell it."""
  tokens = rng.randint(3, vocab, (count, length)).astype(np.int32)
  with_eos = np.concatenate([tokens, np.ones((count, 1), np.int32)], axis=1)
  return TokenizedSplit('copy', 'validation', with_eos, with_eos, np.full(count, -1), 0, 0,
                        [record('', '')] * count)


@pytest.mark.slow  # in `pytest -m slow` (CI runs both): keeps the default suite under 10 min
def test_reliance_is_zero_for_a_random_model_and_large_after_learning_to_copy():
  config = T5Config(vocab_size=48, d_model=32, d_kv=8, d_ff=64, num_heads=4,
                    num_encoder_layers=2, num_decoder_layers=2, feed_forward_proj='gated-gelu',
                    tie_word_embeddings=False, scale_decoder_outputs=False, dropout_rate=0.0)
  model = T5(config)
  rng = np.random.RandomState(0)
  held_out = _copy_split(rng)
  trainable = random_t5_params(config)
  before = language_model_metrics(model, trainable, held_out, 32)
  assert abs(before['reliance']) < 0.05  # a random decoder does not read its input
  optimizer = optax.adam(1e-2)
  opt_state = optimizer.init(trainable)
  step = jax.jit(make_train_step(model, optimizer))
  for index in range(300):
    batch = _copy_split(rng, count=32)
    trainable, opt_state, metrics = step(trainable, opt_state, {}, {
        'inputs': batch.inputs, 'targets': batch.targets}, jax.random.key(0), index)
  after = language_model_metrics(model, trainable, held_out, 32)
  assert after['loss'] < before['loss'] - 1.5 and after['reliance'] > 1.0
  assert after['shuffled_loss'] == pytest.approx(after['loss'] + after['reliance'])


@pytest.fixture(scope='module')
def small_corpus(tmp_path_factory):
  """The shipped text files, cut short (the real formats: CRLF WikiText, the Gutenberg zip,
  MRQA jsonl), in a data directory of their own, with a cache beside it."""
  root = tmp_path_factory.mktemp('corpus')
  data = root / 'data'
  for relative in text.WIKITEXT + text.MRQA_CONTEXTS:
    (data / relative).parent.mkdir(parents=True, exist_ok=True)
    with open(SHARED_DATA / relative, 'rb') as source:
      lines = source.readlines()
    (data / relative).write_bytes(b''.join(lines[:120 if 'wiki' in relative else 12]))
  (data / text.GUTENBERG).parent.mkdir(parents=True, exist_ok=True)
  with zipfile.ZipFile(SHARED_DATA / text.GUTENBERG) as full, \
       zipfile.ZipFile(data / text.GUTENBERG, 'w') as small:
    for name in ('gutenberg/carroll-alice.txt', 'gutenberg/blake-poems.txt'):
      small.writestr(name, full.read(name)[:20000])
  return data, root / 'cache'


def _tiny_pretraining(steps: int):
  config = pretrain.default_config('ladder-0', 'miniature-300')
  for stage in pretrain.STAGES:
    config[stage].task.input_length = 64
    config[stage].train.update(steps=steps, batch_size=8, eval_every=steps,
                               checkpoint_every=2, log_every=1, max_eval_examples=16,
                               eval_batch_size=16)
  return config


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_the_vocabulary_travels_with_the_backbone(small_corpus, tmp_path, monkeypatch):
  data, cache = small_corpus
  monkeypatch.setenv('T5PROMPT_DATA_DIR', str(data))
  monkeypatch.setenv('T5PROMPT_CACHE', str(cache))
  workdir = cache / 'ladder' / 'ladder-0'  # where the miniature keeps its ladder
  directories = pretrain.run(_tiny_pretraining(2), workdir)
  backbone_dir = workdir / 'lm_adapted'
  assert directories == {'span_corruption': str(workdir / 'span_corruption'),
                         'lm_adapted': str(backbone_dir)}
  trained = cache / 'vocabularies' / 'miniature-300.model'
  assert (backbone_dir / 'spiece.model').read_bytes() == trained.read_bytes()
  record = RunDir(backbone_dir).backbone_record()
  assert record['vocab_size'] == 400 and record['steps'] == 2 and record['task'] == \
      'pretrain_prefix_lm'
  assert 'encoder_reliance' in record and record['held_out_lm_loss'] > 0
  # A run on the backbone tokenizes with the backbone's vocabulary, wherever the cache is.
  shutil.rmtree(cache / 'vocabularies')
  model_config = default_config().model
  model_config.checkpoint = cache_reference(backbone_dir)  # as the miniature names it
  assert model_config.checkpoint == 'cache:ladder/ladder-0/lm_adapted'
  assert record['trained_from'] == 'cache:ladder/ladder-0/span_corruption'
  backbone = load_model_backbone(model_config)
  assert backbone.vocabulary.vocab_size == 400
  assert backbone.vocabulary.encode('the cat') != get_vocabulary().encode('the cat')
  assert backbone.params_hash == record['params_hash']
  # `t5prompt smoke` on it tokenizes with the backbone's vocabulary too.
  own, t5 = (len(vocabulary.encode(smoke.SENTINEL_TEXT)) + 1
             for vocabulary in (backbone.vocabulary, get_vocabulary()))
  assert own != t5
  assert f'({own} tokens)' in smoke.smoke('the cat', model_config.checkpoint,
                                          max_decode_length=2)
  # The report's backbone table follows the stages back from the backbone a run names.
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'result.json').write_text(json.dumps({
      'config': {'model': {'checkpoint': model_config.checkpoint}}, 'model_size': 'ladder-0',
      'num_params': record['num_params'], 'method': 'prompt_tuning', 'task': 'superglue_cb',
      'seed': 0, 'metrics': {'validation': {'score': 50.0}}}))
  header, rows = tables.backbone_rows(tables.collect(run)[0])
  assert header[2] == 'steps per stage' and len(rows) == 1
  assert rows[0][:4] == ['ladder-0', f"{record['num_non_embedding_params'] / 1e6:.2g}M",
                         '2 + 2', f"{record['held_out_lm_loss']:.2f}"]


@pytest.mark.slow  # run by `pytest -m slow` (CI runs both)
def test_pretraining_resumes_bitwise_after_sigterm(small_corpus, tmp_path):
  """SIGTERM during stage 1: the command stops with a checkpoint (exit 75); rerunning it
  finishes both stages with the same backbone as an uninterrupted run."""
  import os, signal, subprocess, sys, time  # pylint: disable=import-outside-toplevel
  data, cache = small_corpus
  env = {**os.environ, 'T5PROMPT_DATA_DIR': str(data), 'T5PROMPT_CACHE': str(cache)}
  config = tmp_path / 'tiny.py'
  config.write_text('from test_pretrain import _tiny_pretraining\n\n'
                    'def get_config():\n  return _tiny_pretraining(12)\n')
  env['PYTHONPATH'] = f'{REPO / "tests"}:{env.get("PYTHONPATH", "")}'

  def command(workdir):
    return [sys.executable, '-m', 't5prompt.cli', 'pretrain', '--config', str(config),
            '--workdir', str(workdir)]
  assert subprocess.run(command(tmp_path / 'straight'), env=env, capture_output=True,
                        check=False).returncode == 0
  process = subprocess.Popen(command(tmp_path / 'stopped'), env=env, stderr=subprocess.PIPE,
                             text=True)
  metrics = tmp_path / 'stopped' / 'span_corruption' / 'metrics.jsonl'
  while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 4):
    assert process.poll() is None, process.stderr.read()
    time.sleep(0.2)
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=300) == 75
  assert subprocess.run(command(tmp_path / 'stopped'), env=env, capture_output=True,
                        check=False).returncode == 0
  for stage in ('span_corruption', 'lm_adapted'):
    straight = (tmp_path / 'straight' / stage / 'params.safetensors').read_bytes()
    assert (tmp_path / 'stopped' / stage / 'params.safetensors').read_bytes() == straight
  assert json.loads((tmp_path / 'stopped' / 'lm_adapted' / 'result.json').read_text())[
      'steps'] == 12


def test_pretrain_command_and_its_bad_configs(tmp_path, capsys):
  path = REPO / 'configs' / 'pretrain' / 'ladder.py'
  assert cli.main(['pretrain', '--config', f'{path}:ladder-0', '--workdir', str(tmp_path),
                   '--config.span_corruption.train.export_backbone=False']) == 2
  assert 'export_backbone must be True' in capsys.readouterr().err
  assert cli.main(['pretrain', '--config', f'{path}:ladder-0', '--workdir', str(tmp_path),
                   '--config.lm_adaptation.model.vocabulary=nope']) == 2
  assert "Unknown vocabulary 'nope'" in capsys.readouterr().err
  assert not any(tmp_path.iterdir())
  config = pretrain.load_config(f'{path}:ladder-2')
  assert config.span_corruption.model.size == 'ladder-2'
