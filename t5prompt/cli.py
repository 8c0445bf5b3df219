"""The `t5prompt` command. Each subcommand is a thin layer over a library function."""

import argparse
import json
import sys
import time
from pathlib import Path


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


def _split_config_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """`--config.a.b=v` tokens are config overrides; the rest goes to argparse."""
  overrides = [arg for arg in argv if arg.startswith('--config.')]
  return [arg for arg in argv if arg not in overrides], overrides


def _train(args) -> int:
  from t5prompt.run_config import load_config  # pylint: disable=import-outside-toplevel
  config = load_config(args.config, args.overrides)  # validated before any compute
  if args.distributed or args.coordinator_address:
    from t5prompt.partitioning import initialize_distributed  # pylint: disable=import-outside-toplevel
    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
  from t5prompt import train as trainer  # pylint: disable=import-outside-toplevel
  try:
    result = trainer.train(config, args.workdir)
  except trainer.Preempted as stopped:
    print(f't5prompt train: {stopped}', file=sys.stderr)
    return trainer.PREEMPTED_EXIT_CODE
  if not result:  # hosts other than the first write nothing
    return 0
  print(json.dumps({key: result[key] for key in (
      'task', 'method', 'steps', 'best_step', 'metrics', 'initial_metrics', 'wall_time_s')},
                   indent=2))
  return 0


def _eval(args) -> int:
  from t5prompt.train import evaluate_run  # pylint: disable=import-outside-toplevel
  print(json.dumps(evaluate_run(args.workdir, args.checkpoint, tuple(args.split or ())),
                   indent=2))
  return 0


def _export_peft(args) -> int:
  import numpy as np  # pylint: disable=import-outside-toplevel
  from t5prompt.models import get_size  # pylint: disable=import-outside-toplevel
  from t5prompt.prompts import peft_format  # pylint: disable=import-outside-toplevel
  from t5prompt.prompts.methods import PROMPT_METHODS  # pylint: disable=import-outside-toplevel
  from t5prompt.train import load_run_config  # pylint: disable=import-outside-toplevel
  config = load_run_config(args.workdir)
  if config.method not in PROMPT_METHODS:
    raise ValueError(f'{args.workdir} is a {config.method} run; only prompt methods '
                     f'({", ".join(PROMPT_METHODS)}) export a PEFT adapter.')
  prefix = config.method in ('prefix_tuning', 'deep_prompt_tuning')
  prompt_file = Path(args.workdir) / ('prefix.npz' if prefix else 'prompt.npy')
  if not prompt_file.is_file():
    raise FileNotFoundError(f'{prompt_file} is missing: the run has not finished; export after '
                            'it ends (or resume it).')
  record = json.loads((Path(args.workdir) / 'prompt.json').read_text())
  if config.model.checkpoint:
    from t5prompt.models.convert import load_backbone  # pylint: disable=import-outside-toplevel
    t5_config = load_backbone(config.model.checkpoint)[0]
  else:
    t5_config = get_size(config.model.size)
  base_model = args.base_model or record['backbone']['source']
  if prefix:  # the folded prefixes, as PEFT's prefix tuning saves them
    peft_format.export_peft_prefix(args.output, dict(np.load(prompt_file)), t5_config,
                                   base_model, record)
  else:  # prompt tuning, and P-tuning's / a projector's produced prompt
    peft_format.export_peft(args.output, np.load(prompt_file), t5_config, base_model, record)
  print(f'wrote PEFT {"prefix" if prefix else "prompt"}-tuning adapter to {args.output} (base '
        f'model {base_model})')
  return 0


def _import_peft(args) -> int:
  from t5prompt import atomic  # pylint: disable=import-outside-toplevel
  from t5prompt.prompts.peft_format import import_peft  # pylint: disable=import-outside-toplevel
  prompt, adapter = import_peft(args.source, args.d_model, args.encoder_rows_only)
  output = Path(args.output)
  atomic.write_npy(output, prompt)
  atomic.write_json(output.with_suffix('.json'), {
      'source': str(args.source), 'base_model': adapter.get('base_model_name_or_path'),
      'shape': list(prompt.shape), 'peft_init': adapter.get('prompt_tuning_init')})
  print(f'wrote prompt {prompt.shape} to {output}; train from it with '
        f'--config.prompt.init=file --config.prompt.init_file={output}')
  return 0


def _data_list(args) -> int:
  from t5prompt.data.tasks import describe_tasks  # pylint: disable=import-outside-toplevel
  for task in describe_tasks():
    if args.task and args.task not in task['task']:
      continue
    labels = f" labels={'/'.join(task['labels'])}" if task['labels'] else ''
    print(f"{task['task']}  metric={task['metric']} eval={task['eval_mode']}{labels}")
    for split, where in task['splits'].items():
      print(f'    {split:18s} {where}')
  return 0


def _data_show(args) -> int:
  from t5prompt.data.pipeline import load_tokenized  # pylint: disable=import-outside-toplevel
  from t5prompt.data.tasks import get_task_spec  # pylint: disable=import-outside-toplevel
  from t5prompt.data.vocab import get_vocabulary  # pylint: disable=import-outside-toplevel
  spec = get_task_spec(args.task)
  data = load_tokenized(args.task, args.split, args.input_length,
                        args.target_length or spec.target_length)
  vocabulary = get_vocabulary()
  print(f'{args.task} [{args.split}]: {len(data)} examples, from {spec.source.locate(args.split)}'
        f'\n  truncated to {args.input_length} input tokens: {data.truncated_inputs}; targets: '
        f'{data.truncated_targets}')
  for row in range(min(args.num, len(data))):
    record = data.records[row]
    length = int((data.inputs[row] > 0).sum())
    print(f'--- {row}: label={record["label"]} group={record["group"]!r} answers='
          f'{record["answers"][:3]}\n  inputs  ({length} tokens): '
          f'{vocabulary.decode(data.inputs[row].tolist())[:400]!r}\n  targets: '
          f'{vocabulary.decode(data.targets[row].tolist())!r}')
  return 0


def _library_add(args) -> int:
  from t5prompt.library import PromptLibrary  # pylint: disable=import-outside-toplevel
  library = PromptLibrary(args.library)
  if args.name and len(args.runs) > 1:
    raise ValueError('--name names one entry; add runs one at a time to name them.')
  for run in args.runs:
    name = library.add_run(run, args.name, replace=args.replace)
    print(f'added {name} to {args.library}')
  return 0


def _library_list(args) -> int:
  from t5prompt.library import PromptLibrary  # pylint: disable=import-outside-toplevel
  entries = PromptLibrary(args.library).entries()
  if not entries:
    print(f'{args.library}: no prompts yet (add finished runs with `t5prompt library add`)')
    return 0
  print('| name | task | size | method | length x d | score | backbone hash |')
  print('|---|---|---|---|---|---|---|')
  for e in entries:
    score = '' if e['score'] is None else f'{e["score"]:.1f}'
    print(f'| {e["name"]} | {e["task"]} | {e["model_size"]} | {e["method"]} | '
          f'{e["length"]} x {e["d_model"]} | {score} | {e["backbone"]["params_hash"][:12]} |')
  return 0


def _library_show(args) -> int:
  from t5prompt.library import PromptLibrary  # pylint: disable=import-outside-toplevel
  entry = dict(PromptLibrary(args.library).entry(args.name))
  nearest = entry.pop('nearest_tokens', None) or []
  print(json.dumps(entry, indent=2))
  if nearest:
    print(f'nearest vocabulary tokens (cosine), first {min(args.positions, len(nearest))} '
          'positions:')
    for position, tokens in enumerate(nearest[:args.positions]):
      print(f'  {position:3d}: {" ".join(tokens)}')
  return 0


def _retrieve(args) -> int:
  import numpy as np  # pylint: disable=import-outside-toplevel
  from t5prompt import atomic, library as library_lib  # pylint: disable=import-outside-toplevel
  library = library_lib.PromptLibrary(args.library)
  if args.query:
    query, params_hash, source = np.load(args.query), '', None
  else:
    own = [e for e in library.entries() if e['task'] == args.target]
    if not own:
      raise ValueError(f'No prompt for {args.target} in {args.library} to compare with; '
                       'train a short target prompt and pass it as --query.')
    query = library.prompt(own[0]['name'])
    params_hash, source = own[0]['backbone']['params_hash'], own[0]['backbone']['source']
  backbone = None
  if args.metric == 'on' or args.init == 'best_of_top_k':
    from t5prompt.run_setup import backbone_from_source  # pylint: disable=import-outside-toplevel
    if source is None:
      raise ValueError('--metric on and --init best_of_top_k run the backbone; with --query '
                       'give --target a library entry instead, so its backbone is known.')
    backbone = backbone_from_source(source)
  ranked = library_lib.rank(library, query, args.metric, params_hash=params_hash,
                            exclude_task=args.target, config=backbone and backbone.config,
                            backbone_params=backbone and backbone.params)
  if not ranked:
    raise ValueError(f'No library prompt of shape {query.shape} on this backbone to rank.')
  print(f'| rank | source prompt | task | {args.metric} similarity |\n|---|---|---|---|')
  for position, (name, value) in enumerate(ranked, 1):
    print(f'| {position} | {name} | {library.entry(name)["task"]} | {value:.4f} |')
  if args.output:
    top = ranked[:args.top_k]
    prompts = [library.prompt(name) for name, _ in top]
    if args.init == 'top1':
      chosen, sources = prompts[0], [top[0][0]]
    elif args.init == 'weighted_average':
      chosen, sources = library_lib.weighted_average(prompts, [v for _, v in top]), [
          name for name, _ in top]
    else:
      scores = library_lib.zero_shot_scores(backbone, args.target, prompts,
                                            args.max_eval_examples)
      best = int(np.argmax(scores))
      chosen, sources = prompts[best], [top[best][0]]
      print('zero-shot dev scores of the top-k: ' + ', '.join(
          f'{name} {score:.1f}' for (name, _), score in zip(top, scores)))
    atomic.write_npy(args.output, chosen.astype(np.float32))
    atomic.write_json(Path(args.output).with_suffix('.json'), {
        'task': '+'.join(sorted({library.entry(n)['task'] for n in sources})),
        'name': '+'.join(sources), 'strategy': args.init, 'metric': args.metric,
        'target': args.target})
    print(f'wrote the {args.init} init prompt to {args.output}; train from it with '
          f'--config.prompt.init=file --config.prompt.init_file={args.output}')
  return 0


def _ensemble(args) -> int:
  from t5prompt.ensembles import evaluate_ensemble  # pylint: disable=import-outside-toplevel
  record = evaluate_ensemble(args.runs, args.output, args.batch_size)
  scores = record['individual_scores']
  print(f'{record["task"]} ({record["model_size"]}, {record["eval_set"]}), {len(scores)} '
        f'prompts: each {", ".join(f"{s:.1f}" for s in scores)}; average '
        f'{sum(scores) / len(scores):.1f}, best {max(scores):.1f}; majority vote '
        f'{record["majority_vote"]["score"]:.1f}; mean log-likelihood '
        f'{record["mean_log_likelihood"]["score"]:.1f}')
  if args.output:
    print(f'wrote {args.output}/ensemble.json')
  return 0


def _plan(args) -> int:
  from t5prompt import plan  # pylint: disable=import-outside-toplevel
  memory = plan.parse_memory(args.device_memory)
  shape = dict(batch=args.batch, input_length=args.seq, target_length=args.targets,
               prompt_length=args.prompt_length, dtype=args.dtype)
  mesh = plan.parse_mesh(args.mesh)
  if args.counts:
    print(plan.counts_table(args.size, args.prompt_length, reparam_hidden=args.reparam_hidden))
    return 0
  if args.table:
    print(plan.markdown_table(mesh[0] * mesh[1], memory, **shape))
    return 0
  result = plan.plan(args.size, args.method, mesh, shard_embed=args.shard_embed,
                     remat=args.remat, reparam_hidden=args.reparam_hidden, **shape)
  print(plan.format_plan(result, memory))
  if not result.fits(memory):
    better = plan.suggest(args.size, args.method, mesh[0] * mesh[1], memory, **shape)
    print('  suggestion: ' + (f'mesh {better.mesh[0]}x{better.mesh[1]}, remat={better.remat}'
                              f'{", --shard-embed" if better.shard_embed else ""} '
                              f'({better.total / plan.GiB:.2f} GiB)' if better else
                              'no mesh of these devices fits; use more devices or a smaller '
                              'batch'))
  return 0


def _sweep(args) -> int:
  from t5prompt import sweep  # pylint: disable=import-outside-toplevel
  from t5prompt import train as trainer  # pylint: disable=import-outside-toplevel
  try:
    summary = sweep.run_sweep(args.config, args.workdir, args.launcher, args.parallel)
  except trainer.Preempted as stopped:
    print(f't5prompt sweep: {stopped}', file=sys.stderr)
    return trainer.PREEMPTED_EXIT_CODE
  if args.report and args.launcher == 'local':
    from analysis import report  # pylint: disable=import-outside-toplevel
    print(report.write_report(args.workdir))
  return 1 if summary.get('failed') else 0


def _report(args) -> int:
  from analysis import report  # pylint: disable=import-outside-toplevel
  print(report.write_report(args.directory, args.output))
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

  train = commands.add_parser(
      'train', help='Train one run (prompt or model tuning); resumes if the workdir has one.',
      epilog='Config overrides follow as --config.train.steps=100 --config.prompt.length=20.')
  train.add_argument('--config', required=True, help='a configs/*.py file')
  train.add_argument('--workdir', required=True, help='the run directory (outputs, checkpoints)')
  train.add_argument('--distributed', action='store_true',
                     help='multi-host: join the other processes (found from SLURM / Cloud TPU '
                          'environment variables)')
  train.add_argument('--coordinator-address', default='', help='multi-host: host:port of '
                     'process 0 (with --num-processes and --process-id)')
  train.add_argument('--num-processes', type=int, default=0)
  train.add_argument('--process-id', type=int, default=-1)
  train.set_defaults(run=_train)

  evaluate = commands.add_parser('eval', help="Evaluate a run's best or latest checkpoint.")
  evaluate.add_argument('--workdir', required=True)
  evaluate.add_argument('--checkpoint', choices=('best', 'latest'), default='best')
  evaluate.add_argument('--split', action='append', help='eval split (repeatable); default: '
                        "the run's eval splits")
  evaluate.set_defaults(run=_eval)

  export = commands.add_parser('export-peft', help="Write a run's prompt as a PEFT adapter.")
  export.add_argument('--workdir', required=True)
  export.add_argument('--output', required=True, help='adapter directory to write')
  export.add_argument('--base-model', help='base_model_name_or_path to record (default: the '
                      "run's backbone source)")
  export.set_defaults(run=_export_peft)

  import_ = commands.add_parser('import-peft', help='Read a PEFT prompt-tuning adapter into a '
                                'prompt file (for --config.prompt.init=file).')
  import_.add_argument('source', help='PEFT adapter directory')
  import_.add_argument('--output', required=True, help='prompt .npy to write')
  import_.add_argument('--d-model', type=int, help='refuse a prompt of another width')
  import_.add_argument('--encoder-rows-only', action='store_true',
                       help='accept an adapter that also prompts the decoder; keep its encoder rows')
  import_.set_defaults(run=_import_peft)

  data = commands.add_parser('data', help='Tasks and their data.')
  data_commands = data.add_subparsers(dest='data_command', required=True)
  data_list = data_commands.add_parser('list', help='Every task, its splits and where each '
                                       'split is read from (or why it is missing).')
  data_list.add_argument('task', nargs='?', default='', help='only tasks whose name contains this')
  data_list.set_defaults(run=_data_list)
  data_show = data_commands.add_parser('show', help='Rendered examples of a task split.')
  data_show.add_argument('task')
  data_show.add_argument('--split', default='validation')
  data_show.add_argument('--num', type=int, default=3)
  data_show.add_argument('--input-length', type=int, default=512)
  data_show.add_argument('--target-length', type=int, default=0)
  data_show.set_defaults(run=_data_show)

  library = commands.add_parser('library', help='A library of trained prompts.')
  library_commands = library.add_subparsers(dest='library_command', required=True)
  library_add = library_commands.add_parser('add', help='Add finished runs\' prompts.')
  library_add.add_argument('runs', nargs='+', help='run directories (`t5prompt train` workdirs)')
  library_add.add_argument('--library', required=True, help='the library directory')
  library_add.add_argument('--name', default='', help='entry name (default task-size-method-s'
                           'seed)')
  library_add.add_argument('--replace', action='store_true')
  library_add.set_defaults(run=_library_add)
  library_list = library_commands.add_parser('list', help='The library\'s prompts.')
  library_list.add_argument('--library', required=True)
  library_list.set_defaults(run=_library_list)
  library_show = library_commands.add_parser('show', help='One entry and what it "says".')
  library_show.add_argument('name')
  library_show.add_argument('--library', required=True)
  library_show.add_argument('--positions', type=int, default=10,
                            help='prompt positions whose nearest tokens to print')
  library_show.set_defaults(run=_library_show)

  retrieve = commands.add_parser('retrieve', help='Rank library prompts by similarity to a '
                                 'target task\'s prompt; optionally write a transfer init.')
  retrieve.add_argument('--library', required=True)
  retrieve.add_argument('--target', required=True, help='the target task (its prompts are not '
                        'ranked)')
  retrieve.add_argument('--query', default='', help='the target\'s prompt.npy (default: the '
                        'library\'s entry for --target)')
  retrieve.add_argument('--metric', choices=('cosine', 'per_position', 'on'), default='cosine')
  retrieve.add_argument('--init', choices=('top1', 'weighted_average', 'best_of_top_k'),
                        default='top1', help='how --output combines the top-k')
  retrieve.add_argument('--top-k', type=int, default=3)
  retrieve.add_argument('--max-eval-examples', type=int, default=0,
                        help='best_of_top_k: dev examples per candidate (0 = all)')
  retrieve.add_argument('--output', default='', help='write the init prompt (.npy) here')
  retrieve.set_defaults(run=_retrieve)

  ensemble_ = commands.add_parser('ensemble', help='Score the prompts of several runs of one '
                                  'task as an ensemble (one batch, one frozen model).')
  ensemble_.add_argument('runs', nargs='+', help='finished prompt-tuning run directories')
  ensemble_.add_argument('--output', default='', help='directory for ensemble.json (the '
                         'report reads it)')
  ensemble_.add_argument('--batch-size', type=int, default=32)
  ensemble_.set_defaults(run=_ensemble)

  plan_ = commands.add_parser('plan', help='Memory per device for a size, method and mesh.')
  plan_.add_argument('--size', default='xxl', help='small|base|large|xl|xxl (LM-adapted) or a '
                     'named size such as t5-v1_1-xl')
  plan_.add_argument('--method', default='prompt', help='prompt | model | prefix | deep | '
                     'ptuning (tuning), or a full method name')
  plan_.add_argument('--mesh', default='16x1', help='DATAxMODEL, e.g. 16x1, 4x4')
  plan_.add_argument('--batch', type=int, default=32)
  plan_.add_argument('--seq', type=int, default=512, help='input length (before the prompt)')
  plan_.add_argument('--targets', type=int, default=8, help='target length')
  plan_.add_argument('--prompt-length', type=int, default=100)
  plan_.add_argument('--reparam-hidden', type=int, default=512,
                     help="prefix tuning's MLP / P-tuning's encoder hidden size")
  plan_.add_argument('--remat', choices=('none', 'full', 'dots'), default='none')
  plan_.add_argument('--shard-embed', action='store_true', help='also shard weights over data')
  plan_.add_argument('--dtype', choices=('bfloat16', 'float32'), default='bfloat16')
  plan_.add_argument('--device-memory', default='16GiB', help='per device, e.g. 16GiB, 80GiB')
  plan_.add_argument('--table', action='store_true', help='every size x method on the mesh\'s '
                     'device count, as Markdown')
  plan_.add_argument('--counts', action='store_true', help='trainable and stored params of '
                     'every method for --size, as Markdown')
  plan_.set_defaults(run=_plan)

  sweep_ = commands.add_parser('sweep', help='Run a sweep (configs/sweeps/*.py): every run, '
                               'skipping finished ones.')
  sweep_.add_argument('--config', required=True)
  sweep_.add_argument('--workdir', required=True)
  sweep_.add_argument('--launcher', choices=('local', 'print', 'slurm', 'tpu'), default='local',
                      help='local: run here; print: the commands; slurm: write an array job; '
                           'tpu: launch/tpu_vm.sh commands')
  sweep_.add_argument('--parallel', type=int, default=1, help='local runs at a time')
  sweep_.add_argument('--report', action='store_true', help='write the report when done')
  sweep_.set_defaults(run=_sweep)

  report_ = commands.add_parser('report', help='Tables and plots from the result.json files '
                                'under a directory, beside the paper\'s numbers.')
  report_.add_argument('directory')
  report_.add_argument('--output', help='default: DIRECTORY/report')
  report_.set_defaults(run=_report)
  return parser


def main(argv=None) -> int:
  argv, overrides = _split_config_overrides(list(sys.argv[1:] if argv is None else argv))
  args = build_parser().parse_args(argv)
  if overrides and args.command != 'train':
    print(f't5prompt {args.command}: error: config overrides ({overrides[0]}, ...) are for '
          '`train` only', file=sys.stderr)
    return 2
  args.overrides = overrides
  try:
    return args.run(args)
  except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as error:
    if isinstance(error, RuntimeError) and not getattr(error, 'user_facing', False):
      raise  # a bug or a runtime failure: keep the traceback
    print(f't5prompt {args.command}: error: {error}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
