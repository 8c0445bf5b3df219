"""Backbone speed, as ratios measured side by side in one run (these machines are noisy).

  python benchmarks/bench_backbone.py [--size t5-v1_1-small] [--batch 8] [--input-length 128]

1. forward: our jitted Flax T5 vs transformers' PyTorch T5, same random weights, batch, lengths;
2. decode: greedy decoding with the KV cache vs rerunning the decoder at every step.
Timings alternate between the two sides, repeat, and report medians. Results go to
benchmarks/results/backbone.json (ignored by git).
"""

from t5prompt.xla_cpu import prepare_cpu_backend

prepare_cpu_backend()  # as the train loop runs, before JAX starts

import argparse  # pylint: disable=wrong-import-position
import json  # pylint: disable=wrong-import-position
import tempfile  # pylint: disable=wrong-import-position
from pathlib import Path  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import torch  # pylint: disable=wrong-import-position
import transformers  # pylint: disable=wrong-import-position

from t5prompt.models import T5, decode, get_size, load_hf, save_hf  # pylint: disable=wrong-import-position

import flax.linen as nn  # pylint: disable=wrong-import-position
from timing import machine, side_by_side  # pylint: disable=wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', default='t5-v1_1-small')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--input-length', type=int, default=128)
  parser.add_argument('--target-length', type=int, default=32)
  parser.add_argument('--decode-length', type=int, default=32)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--output', default='benchmarks/results/backbone.json')
  args = parser.parse_args()

  config = get_size(args.size)
  tokens = jnp.ones((1, 4), jnp.int32)
  params = nn.unbox(T5(config).init(jax.random.key(0), tokens, tokens)['params'])
  with tempfile.TemporaryDirectory() as directory:  # one set of weights for both sides
    save_hf(directory, config, params)
    hf = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
    config, params = load_hf(directory)
  model = T5(config)

  rng = np.random.RandomState(0)
  inputs = rng.randint(2, 32000, (args.batch, args.input_length)).astype(np.int32)
  decoder_inputs = rng.randint(2, 32000, (args.batch, args.target_length)).astype(np.int32)
  forward = jax.jit(lambda p, x, y: model.apply({'params': p}, x, y))
  jax_inputs, jax_decoder_inputs = jnp.asarray(inputs), jnp.asarray(decoder_inputs)
  torch_inputs = torch.tensor(inputs, dtype=torch.long)
  torch_decoder_inputs = torch.tensor(decoder_inputs, dtype=torch.long)

  def run_ours():
    forward(params, jax_inputs, jax_decoder_inputs).block_until_ready()

  def run_torch():
    with torch.inference_mode():
      hf(input_ids=torch_inputs, decoder_input_ids=torch_decoder_inputs)

  ours_s, torch_s = side_by_side(run_ours, run_torch, repeats=args.repeats)
  cached_s, uncached_s = side_by_side(
      lambda: decode.greedy_decode(model, params, jax_inputs, args.decode_length)
      .block_until_ready(),
      lambda: decode.greedy_decode_uncached(model, params, jax_inputs, args.decode_length)
      .block_until_ready(),
      repeats=args.repeats)

  result = {
      'machine': machine(jax),
      'size': args.size, 'batch': args.batch, 'input_length': args.input_length,
      'target_length': args.target_length, 'decode_length': args.decode_length,
      'forward_ours_s': ours_s, 'forward_torch_s': torch_s,
      'forward_ours_over_torch': ours_s / torch_s,
      'decode_cached_s': cached_s, 'decode_uncached_s': uncached_s,
      'decode_cached_over_uncached': cached_s / uncached_s,
  }
  print(f'{args.size}, batch {args.batch}, input {args.input_length}, target {args.target_length},'
        f' on {result["machine"]}')
  print('| measure | t5prompt (JAX) | reference | ratio |\n|---|---|---|---|')
  print(f'| forward, vs transformers PyTorch | {ours_s * 1e3:.1f} ms | {torch_s * 1e3:.1f} ms '
        f'| {ours_s / torch_s:.2f} |')
  print(f'| greedy decode {args.decode_length} tokens, cached vs uncached | {cached_s * 1e3:.1f} ms '
        f'| {uncached_s * 1e3:.1f} ms | {cached_s / uncached_s:.2f} |')
  Path(args.output).parent.mkdir(parents=True, exist_ok=True)
  Path(args.output).write_text(json.dumps(result, indent=2) + '\n')


if __name__ == '__main__':
  main()
