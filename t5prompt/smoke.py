"""`t5prompt smoke`: the model end to end on real text (tokenize, forward, greedy and beam
decode), on a checkpoint or a named size with random weights."""

import time

import jax
import jax.numpy as jnp
import numpy as np

from t5prompt.backbone import checkpoint_vocabulary, random_params
from t5prompt.data.sources import local_path
from t5prompt.data.vocab import get_vocabulary
from t5prompt.models import T5, decode, get_size
from t5prompt.models.convert import load_backbone

SENTINEL_TEXT = 'The <extra_id_0> walks in <extra_id_1> park.'


def smoke(text: str, checkpoint: str = '', size: str = 'tiny-v1_1', seed: int = 0,
          max_input_length: int = 512, max_decode_length: int = 16) -> str:
  """What the model makes of `text` and a span-corruption sentence, as lines to print."""
  if checkpoint:
    config, params = load_backbone(local_path(checkpoint))
    source = checkpoint
  else:
    config = get_size(size)
    params = random_params(config, seed)
    source = f'{size} (random weights, seed {seed})'
  vocabulary = get_vocabulary(checkpoint_vocabulary(checkpoint))  # '': T5's
  model = T5(config)
  texts = [text, SENTINEL_TEXT]
  ids = [vocabulary.encode(t)[:max_input_length - 1] + [decode.EOS_ID] for t in texts]
  batch = np.zeros((len(ids), max(map(len, ids))), np.int32)
  for row, sequence in enumerate(ids):
    batch[row, :len(sequence)] = sequence
  batch = jnp.asarray(batch)
  start = time.perf_counter()
  logits = jax.jit(model.apply)({'params': params}, batch, decode.shift_right(batch))
  logits.block_until_ready()
  forward_s = time.perf_counter() - start
  greedy = decode.greedy_decode(model, params, batch, max_decode_length)
  beams, _ = decode.beam_search(model, params, batch, max_decode_length, num_beams=4)
  lines = [f'model: {source}\n  {config}',
           f'forward: logits {tuple(logits.shape)} in {forward_s:.2f}s (incl. compile), '
           f'finite={bool(jnp.isfinite(logits).all())}']
  for row, sample in enumerate(texts):
    lines += [f'input:  {sample[:100]!r} ({len(ids[row])} tokens)',
              f'  greedy: {vocabulary.decode(np.asarray(greedy[row]).tolist())!r}',
              f'  beam-4: {vocabulary.decode(np.asarray(beams[row]).tolist())!r}']
  return '\n'.join(lines)
