"""The `t5prompt` command. Each subcommand is a thin layer over a library function."""

import argparse
import sys
import time


def _convert(args) -> int:
  from t5prompt.models import convert  # pylint: disable=import-outside-toplevel
  config, params = convert.load_backbone(args.source, scan_layers=False)
  if args.format == 'hf':
    convert.save_hf(args.output, config, params)
    digest = convert.params_hash(params)
  else:
    digest = convert.save_t5prompt(args.output, config, params)
  print(f'wrote {args.format} checkpoint to {args.output}\n'
        f'  {config.feed_forward_proj}, d_model={config.d_model}, '
        f'layers={config.num_encoder_layers}+{config.num_decoder_layers}, '
        f'tied head={config.tie_word_embeddings}\n  params_hash={digest}')
  return 0


def _smoke(args) -> int:
  """Runs the model end to end on real text: tokenize, forward, greedy and beam decode."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import linen as nn  # pylint: disable=import-outside-toplevel
  from t5prompt.data.vocab import get_vocabulary  # pylint: disable=import-outside-toplevel
  from t5prompt.models import T5, decode, get_size  # pylint: disable=import-outside-toplevel
  from t5prompt.models.convert import load_backbone  # pylint: disable=import-outside-toplevel

  if args.checkpoint:
    config, params = load_backbone(args.checkpoint)
    source = args.checkpoint
  else:
    config = get_size(args.size)
    tokens = jnp.ones((1, 8), jnp.int32)
    params = nn.unbox(T5(config).init(jax.random.key(args.seed), tokens, tokens)['params'])
    source = f'{args.size} (random weights, seed {args.seed})'
  vocabulary = get_vocabulary()
  model = T5(config)
  texts = [args.text, 'The <extra_id_0> walks in <extra_id_1> park.']
  ids = [vocabulary.encode(text)[:args.max_input_length - 1] + [1] for text in texts]
  batch = np.zeros((len(ids), max(map(len, ids))), np.int32)
  for row, sequence in enumerate(ids):
    batch[row, :len(sequence)] = sequence
  batch = jnp.asarray(batch)
  start = time.perf_counter()
  logits = jax.jit(model.apply)({'params': params}, batch, decode.shift_right(batch))
  logits.block_until_ready()
  forward_s = time.perf_counter() - start
  greedy = decode.greedy_decode(model, params, batch, args.max_decode_length)
  beams, _ = decode.beam_search(model, params, batch, args.max_decode_length, num_beams=4)
  print(f'model: {source}\n  {config}')
  print(f'forward: logits {tuple(logits.shape)} in {forward_s:.2f}s (incl. compile), '
        f'finite={bool(jnp.isfinite(logits).all())}')
  for row, text in enumerate(texts):
    print(f'input:  {text[:100]!r} ({len(ids[row])} tokens)')
    print(f'  greedy: {vocabulary.decode(np.asarray(greedy[row]).tolist())!r}')
    print(f'  beam-4: {vocabulary.decode(np.asarray(beams[row]).tolist())!r}')
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='t5prompt', description='Prompt methods on a frozen Flax T5, from Small to XXL.')
  commands = parser.add_subparsers(dest='command', required=True)

  convert = commands.add_parser(
      'convert', help='Hugging Face T5 checkpoint <-> t5prompt params (T5X names).')
  convert.add_argument('source', help='HF checkpoint directory or hub id, or a t5prompt directory')
  convert.add_argument('output', help='directory to write')
  convert.add_argument('--format', choices=('t5prompt', 'hf'), default='t5prompt',
                       help='t5prompt: params.safetensors + t5prompt_config.json; '
                            'hf: config.json + model.safetensors that transformers loads')
  convert.set_defaults(run=_convert)

  smoke = commands.add_parser('smoke', help='Run the model end to end on real text.')
  smoke.add_argument('--size', default='tiny-v1_1', help='named size (random weights)')
  smoke.add_argument('--checkpoint', help='HF or t5prompt checkpoint instead of random weights')
  smoke.add_argument('--text', default='Is the Eiffel tower in Paris? The Eiffel Tower is a '
                     'wrought-iron lattice tower on the Champ de Mars in Paris, France.')
  smoke.add_argument('--seed', type=int, default=0)
  smoke.add_argument('--max-input-length', type=int, default=512)
  smoke.add_argument('--max-decode-length', type=int, default=16)
  smoke.set_defaults(run=_smoke)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.run(args)
  except (ValueError, FileNotFoundError) as error:
    print(f't5prompt {args.command}: error: {error}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
