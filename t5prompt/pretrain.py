"""Brief pre-training of tiny T5s on shipped text, for the offline demo (a miniature of the
real checkpoints: span corruption as T5 v1.1, then prefix-LM "LM adaptation" as the
checkpoints the paper prompt-tunes).

The text is unlabelled context from the MRQA out-of-domain dev files (DuoRC plots, DROP and
RelationExtraction passages), none of which the demo evaluates on. Results are cached by
(size, objective steps, seed): a rerun loads them instead of training again.
"""

import functools
import json
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np

from t5prompt import atomic
from t5prompt.backbone import load_model_backbone
from t5prompt.build import build
from t5prompt.data.mrqa import TASKS as MRQA_TASKS
from t5prompt.data.vocab import get_vocabulary
from t5prompt.models import get_size
from t5prompt.models.convert import save_t5prompt
from t5prompt.partitioning import make_partitioning
from t5prompt.run_config import default_config as default_run_config

EOS_ID = 1
TEXT_SOURCES = ('drop', 'duorc', 'relation_extraction')


def pretraining_text() -> list[str]:
  texts = []
  for name in TEXT_SOURCES:
    texts += list(dict.fromkeys(row['context'] for row in MRQA_TASKS[name].source.rows(
        'validation')))
  return texts


def token_stream(texts, vocabulary) -> np.ndarray:
  return np.concatenate([np.asarray(vocabulary.encode(text) + [EOS_ID], np.int32)
                         for text in texts])


def noise_mask(length: int, rng: np.random.RandomState, density: float = 0.15,
               mean_span: float = 3.0) -> np.ndarray:
  """T5's random spans: round(length * density) noise tokens in about
  length * density / mean_span spans, interleaved with non-noise spans."""
  num_noise = max(1, int(round(length * density)))
  num_spans = max(1, int(round(num_noise / mean_span)))

  def segments(total, count):
    cuts = np.sort(rng.choice(np.arange(1, total), count - 1, replace=False)) if count > 1 else []
    return np.diff(np.concatenate([[0], cuts, [total]])).astype(int)

  noise, keep = segments(num_noise, num_spans), segments(length - num_noise, num_spans)
  mask = np.concatenate([np.concatenate([np.zeros(k, bool), np.ones(n, bool)])
                         for k, n in zip(keep, noise)])
  return mask


def span_corruption(chunk: np.ndarray, rng, first_sentinel: int) -> tuple[np.ndarray, np.ndarray]:
  """Inputs keep the non-noise tokens with one sentinel per noise span; targets list each
  sentinel followed by its span (T5, Raffel et al. 2020, section 3.1.4). Sentinels count down
  from `first_sentinel` (<extra_id_0>)."""
  mask = noise_mask(len(chunk), rng)
  inputs, targets, sentinel, previous_noisy = [], [], first_sentinel + 1, False
  for token, noisy in zip(chunk.tolist(), mask):
    if noisy and not previous_noisy:
      sentinel -= 1
      inputs.append(sentinel)
      targets.append(sentinel)
    (targets if noisy else inputs).append(token)
    previous_noisy = noisy
  return np.asarray(inputs + [EOS_ID], np.int32), np.asarray(targets + [EOS_ID], np.int32)


def prefix_lm(chunk: np.ndarray, rng, max_target: int) -> tuple[np.ndarray, np.ndarray]:
  """LM adaptation: a random prefix is the input, the rest (at most `max_target` - 1 tokens)
  the target."""
  split = rng.randint(max(1, len(chunk) - max_target + 1), len(chunk))
  return (np.asarray(list(chunk[:split]) + [EOS_ID], np.int32),
          np.asarray(list(chunk[split:]) + [EOS_ID], np.int32))


def _pad(rows, length):
  out = np.zeros((len(rows), length), np.int32)
  for i, row in enumerate(rows):
    row = row[:length - 1].tolist() + [EOS_ID] if len(row) > length else row
    out[i, :len(row)] = row
  return out


def make_batches(stream, objective, steps, batch_size, chunk_length, target_length, seed,
                 first_sentinel):
  rng = np.random.RandomState(seed)
  num_chunks = len(stream) // chunk_length
  for _ in range(steps):
    rows = [stream[i * chunk_length:(i + 1) * chunk_length]
            for i in rng.randint(0, num_chunks, batch_size)]
    pairs = [span_corruption(row, rng, first_sentinel) if objective == 'span_corruption'
             else prefix_lm(row, rng, target_length) for row in rows]
    yield {'inputs': _pad([p[0] for p in pairs], chunk_length),
           'targets': _pad([p[1] for p in pairs], target_length)}


STAGES = ('span_corruption', 'lm_adapted')
MANIFEST = 'backbone.json'


def default_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.size = 'ladder-1'  # a named size, from random weights
  config.span_steps = 300  # span corruption, then
  config.lm_steps = 150  # prefix LM ("LM adaptation")
  config.batch_size = 32
  config.chunk_length = 64
  config.target_length = 24
  config.learning_rate = 0.01
  config.seed = 0
  return config


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  get_size(config.size)
  for key in ('span_steps', 'lm_steps', 'batch_size', 'chunk_length', 'target_length'):
    if config[key] <= 0:
      raise ValueError(f'pre-training {key} must be positive, got {config[key]}.')
  return config


def finished(config: ml_collections.ConfigDict, workdir: str | Path) -> bool:
  path = Path(workdir) / MANIFEST
  return path.is_file() and json.loads(path.read_text()).get('config') == config.to_dict()


@functools.cache
def _stream() -> np.ndarray:
  return token_stream(pretraining_text(), get_vocabulary())


def _run_config(config) -> ml_collections.ConfigDict:
  """The train-run config the builder takes: model tuning of a random backbone."""
  run_config = default_run_config('model_tuning')
  run_config.model.size = config.size
  run_config.model.init_seed = config.seed
  run_config.model.dropout_rate = 0.0
  run_config.optimizer.update(learning_rate=config.learning_rate, warmup_steps=20)
  run_config.train.seed = config.seed
  return run_config


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, str]:
  """Span corruption for `span_steps`, then prefix LM for `lm_steps`; saves both stages as
  t5prompt checkpoints (the v1.1-like and the LM-adapted-like backbone) in
  `workdir/<stage>`. Returns their dirs."""
  workdir = Path(workdir)
  out = {stage: str(workdir / stage) for stage in STAGES}
  if finished(config, workdir):
    print(f'pre-trained {config.size}: cached in {workdir}', file=sys.stderr)
    return out
  run_config = _run_config(config)
  backbone = load_model_backbone(run_config.model)
  partitioning = make_partitioning((1, 1), devices=jax.devices()[:1])
  with partitioning.activate():
    built = build(run_config, backbone, partitioning)
  state = built.state
  stream = _stream()
  step = 0
  for objective, steps in (('span_corruption', config.span_steps),
                           ('lm_adapted', config.lm_steps)):
    losses = []
    for batch in make_batches(stream, 'span_corruption' if objective == 'span_corruption'
                              else 'prefix_lm', steps, config.batch_size, config.chunk_length,
                              config.target_length, config.seed + step,
                              get_vocabulary().vocab_size - 1):
      with partitioning.activate():
        state.trainable, state.opt_state, metrics = built.train_step(
            state.trainable, state.opt_state, state.frozen, batch, jax.random.key(config.seed),
            step)
      losses.append(metrics['loss'])
      step += 1
    first, last = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
    print(f'pre-trained {config.size} ({objective}): {steps} steps, loss {first:.2f} -> '
          f'{last:.2f}', file=sys.stderr)
    save_t5prompt(out[objective], backbone.config.replace(dropout_rate=0.1),
                  jax.device_get(state.trainable))
  atomic.write_json(workdir / MANIFEST, {'config': config.to_dict(), 'stages': out})
  return out
