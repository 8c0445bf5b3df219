"""Brief pre-training of tiny T5s on shipped text, for the offline demo (a miniature of the
real checkpoints: span corruption as T5 v1.1, then prefix-LM "LM adaptation" as the
checkpoints the paper prompt-tunes).

The text is unlabelled context from the MRQA out-of-domain dev files (DuoRC plots, DROP and
RelationExtraction passages), none of which the demo evaluates on. Results are cached by
(size, objective steps, seed): a rerun loads them instead of training again.
"""

import functools
import hashlib
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from t5prompt import optim
from t5prompt.data.mrqa import TASKS as MRQA_TASKS
from t5prompt.data.vocab import get_vocabulary
from t5prompt.models import T5, get_size
from t5prompt.models.convert import save_t5prompt
from t5prompt.run_config import default_config

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


def pretrained_dirs(size: str, cache_dir: str | Path, **settings) -> dict[str, str]:
  """Where `pretrain` saves (or has saved) its two stages: a pure function of the settings."""
  key = hashlib.sha256(json.dumps({'size': size, **settings}, sort_keys=True).encode())
  key = key.hexdigest()[:10]
  return {'span_corruption': str(Path(cache_dir) / f'{size}-span-{key}'),
          'lm_adapted': str(Path(cache_dir) / f'{size}-lm-{key}')}


@functools.cache
def _stream() -> np.ndarray:
  return token_stream(pretraining_text(), get_vocabulary())


def pretrain(size: str, cache_dir: str | Path, span_steps: int = 300, lm_steps: int = 150,
             batch_size: int = 32, chunk_length: int = 64, target_length: int = 24,
             learning_rate: float = 0.01, seed: int = 0) -> dict[str, str]:
  """Span corruption for `span_steps`, then prefix LM for `lm_steps`; saves both stages as
  t5prompt checkpoints (the v1.1-like and the LM-adapted-like backbone). Returns their dirs."""
  out = pretrained_dirs(size, cache_dir, span_steps=span_steps, lm_steps=lm_steps,
                        batch_size=batch_size, chunk_length=chunk_length,
                        target_length=target_length, learning_rate=learning_rate, seed=seed)
  if all((Path(d) / 'params.safetensors').exists() for d in out.values()):
    print(f'pre-trained {size}: cached in {Path(cache_dir)}', file=sys.stderr)
    return out
  config = get_size(size).replace(dropout_rate=0.0)
  model = T5(config)
  tokens = jnp.ones((1, 8), jnp.int32)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(seed), tokens, tokens)['params'])
  optimizer_config = default_config().optimizer
  optimizer_config.update(learning_rate=learning_rate, weight_decay=0.0, factored=True,
                          warmup_steps=20)
  rules = optim.label_rules('model_tuning')
  optimizer = optim.make_optimizer(optimizer_config, rules)
  opt_state = optimizer.init(params)
  from t5prompt.train import make_train_step  # pylint: disable=import-outside-toplevel
  step_fn = jax.jit(make_train_step(model, optimizer), donate_argnums=(0, 1))
  stream = _stream()
  step = 0
  for objective, steps in (('span_corruption', span_steps), ('lm_adapted', lm_steps)):
    losses = []
    for batch in make_batches(stream, 'span_corruption' if objective == 'span_corruption'
                              else 'prefix_lm', steps, batch_size, chunk_length, target_length,
                              seed + step, get_vocabulary().vocab_size - 1):
      params, opt_state, metrics = step_fn(params, opt_state, {}, batch, jax.random.key(seed),
                                           step)
      losses.append(metrics['loss'])
      step += 1
    first, last = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
    print(f'pre-trained {size} ({objective}): {steps} steps, loss {first:.2f} -> {last:.2f}',
          file=sys.stderr)
    save_t5prompt(out[objective], config.replace(dropout_rate=0.1), params)
  return out
