"""Pre-training tasks over the shipped unlabelled text (`data.text`), as seqio Tasks: T5's span
corruption (Raffel et al. 2020, section 3.1.4), T5's "BERT-style" denoising (section 3.3.1)
and the prefix LM of LM adaptation (Lester et al. 2021, section 3.2).

Each tokenizes every document with the backbone's vocabulary, cuts the token stream into chunks
of `CHUNK` tokens, and turns every chunk into an (inputs, targets) pair:
  * span corruption: round(0.15 * length) noise tokens in round(noise / 3) spans, interleaved
    with kept spans; inputs keep the kept tokens with one sentinel per noise span, targets
    list each sentinel followed by its span (sentinels count down from `<extra_id_0>`);
  * BERT-style denoising: 15% of the tokens corrupted (90% to a mask token, `<extra_id_99>`,
    10% to a random token), the target the whole original chunk. Most of the target is copied
    from the input, so the decoder learns early to read its encoder, which the miniature's
    backbones do not learn from span corruption alone in the steps they can afford (README);
  * prefix LM: the chunk split at a random point, at most `PREFIX_LM_TARGET` tokens after it,
    the start the input and the rest the target.
The randomness of a chunk is a pure function of its place in the split, so a split tokenizes
to the same arrays every time (the pipeline's batches, and resumes, depend on that).
"""

import functools

import numpy as np

from t5prompt.data.spec import TaskSpec
from t5prompt.data.text import TextSource
from t5prompt.data.tf_setup import tensorflow

CHUNK = 64  # tokens of text per example, before corruption
NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN = 3.0
PREFIX_LM_TARGET = 16  # at most this many continuation tokens (+ EOS) per example
EOS_ID = 1
RELIANCE_TASK = 'pretrain_prefix_lm'  # a backbone's encoder reliance is measured on it


def noise_mask(length: int, rng: np.random.RandomState, density: float = NOISE_DENSITY,
               mean_span: float = MEAN_NOISE_SPAN) -> np.ndarray:
  """T5's random spans: round(length * density) noise tokens in round(noise / mean_span)
  spans, interleaved with non-noise spans, the text starting with a kept span."""
  num_noise = min(max(1, int(round(length * density))), length - 1)
  num_spans = max(1, min(int(round(num_noise / mean_span)), num_noise, length - num_noise))

  def segments(total, count):
    cuts = np.sort(rng.choice(np.arange(1, total), count - 1, replace=False)) if count > 1 else []
    return np.diff(np.concatenate([[0], cuts, [total]])).astype(int)

  noise, keep = segments(num_noise, num_spans), segments(length - num_noise, num_spans)
  return np.concatenate([np.concatenate([np.zeros(k, bool), np.ones(n, bool)])
                         for k, n in zip(keep, noise)])


def span_corruption(tokens: np.ndarray, rng: np.random.RandomState,
                    first_sentinel: int) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets) of one chunk, without EOS; sentinels count down from `first_sentinel`."""
  mask = noise_mask(len(tokens), rng)
  inputs, targets, sentinel, previous_noisy = [], [], first_sentinel + 1, False
  for token, noisy in zip(tokens.tolist(), mask):
    if noisy and not previous_noisy:
      sentinel -= 1
      inputs.append(sentinel)
      targets.append(sentinel)
    (targets if noisy else inputs).append(token)
    previous_noisy = noisy
  return np.asarray(inputs, np.int32), np.asarray(targets, np.int32)


def bert_denoising(tokens: np.ndarray, rng: np.random.RandomState,
                   first_sentinel: int) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets) of one chunk: 15% of its tokens masked or (one in ten) replaced by a
  random ordinary token; the target is the chunk itself."""
  inputs = tokens.astype(np.int32).copy()
  corrupted = rng.rand(len(tokens)) < NOISE_DENSITY
  random_token = rng.rand(len(tokens)) < 0.1
  mask_id = first_sentinel - 99  # <extra_id_99>: far from the sentinels span corruption uses
  inputs[corrupted & ~random_token] = mask_id
  replaced = corrupted & random_token
  inputs[replaced] = rng.randint(3, mask_id, replaced.sum())
  return inputs, tokens.astype(np.int32)


def prefix_lm(tokens: np.ndarray, rng: np.random.RandomState,
              max_target: int = PREFIX_LM_TARGET) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets) of one chunk: its start, and the next 1..max_target tokens."""
  split = rng.randint(max(1, len(tokens) - max_target), len(tokens))
  return tokens[:split].astype(np.int32), tokens[split:].astype(np.int32)


def _chunks(dataset, output_features):
  """Each tokenized document's stream cut into chunks of CHUNK tokens (a short last chunk
  is kept if it has at least two tokens)."""
  del output_features
  tf = tensorflow()

  def cut(example):
    tokens = example['targets']
    whole = tf.size(tokens) // CHUNK * CHUNK
    chunks = tf.data.Dataset.from_tensor_slices({'targets': tf.reshape(tokens[:whole],
                                                                       [-1, CHUNK])})
    return chunks.concatenate(tf.data.Dataset.from_tensors({'targets': tokens[whole:]}))
  return dataset.flat_map(cut).filter(lambda example: tf.size(example['targets']) >= 2)


def _objective(make_pair, dataset, output_features):
  """Every chunk as (inputs, targets) by `make_pair(tokens, rng, first_sentinel)`, the RNG
  seeded by the chunk's index in the split."""
  tf = tensorflow()
  first_sentinel = output_features['targets'].vocabulary.vocab_size - 1  # <extra_id_0>

  def pair(index, tokens):
    return make_pair(tokens, np.random.RandomState(int(index)), first_sentinel)

  def apply(index, example):
    inputs, targets = tf.numpy_function(pair, [index, example['targets']], [tf.int32, tf.int32])
    inputs.set_shape([None])
    targets.set_shape([None])
    return {'inputs': inputs, 'targets': targets}
  return dataset.enumerate().map(apply)


def _task(name: str, make_pair, description: str) -> TaskSpec:
  return TaskSpec(
      name=name, source=TextSource(), to_records=None, metric='lm', eval_mode='loss',
      target_length=CHUNK + 8, description=description,
      token_preprocessors=(_chunks, functools.partial(_objective, make_pair)),
      # Change the format (these constants, the objectives) and the cached splits change name.
      cache_key=f'chunk{CHUNK}-noise{NOISE_DENSITY}-span{MEAN_NOISE_SPAN}-lm{PREFIX_LM_TARGET}-v1')


TASKS = {
    'pretrain_span_corruption': _task(
        'pretrain_span_corruption', span_corruption,
        'T5 span corruption (density 0.15, mean span 3) over the shipped text'),
    'pretrain_denoising': _task(
        'pretrain_denoising', bert_denoising,
        'T5 BERT-style denoising (15% masked or replaced, the whole text the target)'),
    'pretrain_prefix_lm': _task(
        'pretrain_prefix_lm',
        lambda tokens, rng, first_sentinel: prefix_lm(tokens, rng),
        f'prefix LM (LM adaptation): a chunk\'s start, then up to {PREFIX_LM_TARGET} tokens'),
}
