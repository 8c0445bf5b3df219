"""The prompt-method family's training cost, as ratios measured side by side in one run.

  python benchmarks/bench_methods.py [--size t5-v1_1-small] [--batch 8]

1. each method's step / the prompt-tuning step, same backbone, batch and lengths (prefixes add
   P keys per attention layer instead of P encoder positions; P-tuning's LSTM and prefix
   tuning's MLP run every step);
2. t5prompt prefix tuning / PEFT prefix tuning (PyTorch, CPU), decoder self-attention prefixes
   as PEFT places them on T5, examples per second.
JSON goes to benchmarks/results/methods.json (ignored by git).
"""

from t5prompt.xla_cpu import prepare_cpu_backend

prepare_cpu_backend()  # as the train loop runs, before JAX starts

import argparse  # pylint: disable=wrong-import-position
import tempfile  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position

from bench_training import (Trainer, random_backbone,  # pylint: disable=wrong-import-position
                            torch_train_step)
from timing import Rows, machine, side_by_side, write_rows  # pylint: disable=wrong-import-position

METHODS = ('p_tuning', 'prefix_tuning', 'deep_prompt_tuning')


def peft_prefix_trainer(directory, batch, input_length, target_length, prompt_length, hidden):
  import peft  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  base = transformers.T5ForConditionalGeneration.from_pretrained(directory)
  config = base.config
  # PEFT sizes the prefix by token_dim (d_model by default); T5 v1.1 Small has heads x d_kv =
  # 6 x 64 = 384 != 512, so it must be given explicitly.
  model = peft.get_peft_model(base, peft.PrefixTuningConfig(
      task_type='SEQ_2_SEQ_LM', num_virtual_tokens=prompt_length, prefix_projection=True,
      encoder_hidden_size=hidden, token_dim=config.num_heads * config.d_kv,
      num_attention_heads=config.num_heads))
  model.train()
  optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
  return torch_train_step(model, optimizer, batch, input_length, target_length)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', default='t5-v1_1-small')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--input-length', type=int, default=108, help='text tokens per example')
  parser.add_argument('--target-length', type=int, default=8)
  parser.add_argument('--prompt-length', type=int, default=20)
  parser.add_argument('--hidden', type=int, default=512, help='MLP / encoder hidden size')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--output', default='benchmarks/results/methods.json')
  args = parser.parse_args()
  lengths = (args.batch, args.input_length, args.target_length, args.prompt_length)
  result = {'machine': machine(jax), 'size': args.size, 'batch': args.batch,
            'input_length': args.input_length, 'prompt_length': args.prompt_length, 'rows': Rows()}
  rows = result['rows']
  with tempfile.TemporaryDirectory() as tmp:
    config, params = random_backbone(args.size, f'{tmp}/{args.size}')
    prompt = Trainer(config, params, 'prompt_tuning', (1, 1), *lengths)
    for method in METHODS:
      other = Trainer(config, params, method, (1, 1), *lengths, reparam_hidden=args.hidden)
      method_s, prompt_s = side_by_side(other, prompt, repeats=args.repeats)
      rows.append({'measure': f'{method} step / prompt-tuning step', 'a_s': method_s,
                   'b_s': prompt_s, 'ratio': method_s / prompt_s})
    ours = Trainer(config, params, 'prefix_tuning', (1, 1), *lengths, reparam_hidden=args.hidden,
                   attention=('decoder_self',))
    theirs = peft_prefix_trainer(f'{tmp}/{args.size}', *lengths, args.hidden)
    ours_s, peft_s = side_by_side(ours, theirs, repeats=args.repeats)
    rows.append({'measure': 't5prompt / PEFT (PyTorch) prefix tuning, decoder self-attention, '
                            'examples per second', 'a': args.batch / ours_s,
                 'b': args.batch / peft_s, 'ratio': peft_s / ours_s})
  print(f'{args.size}, batch {args.batch}, input {args.input_length}, target '
        f'{args.target_length}, prompt {args.prompt_length}, hidden {args.hidden}, on '
        f'{result["machine"]}')
  write_rows(result, args.output)


if __name__ == '__main__':
  main()
