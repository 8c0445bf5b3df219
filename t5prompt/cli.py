"""The `t5prompt` command: parses arguments and calls the library function of each subcommand.

Library modules are imported inside the handlers, so `t5prompt --help` and a bad argument answer
without loading JAX or TensorFlow.
"""

import argparse
import json
import os
import signal
import sys

# pylint: disable=import-outside-toplevel


def _convert(args) -> int:
  from t5prompt.models.convert import convert_checkpoint
  print(convert_checkpoint(args.source, args.output, args.format))
  return 0


def _smoke(args) -> int:
  from t5prompt.smoke import smoke
  print(smoke(args.text, args.checkpoint, args.size, args.seed, args.max_input_length,
              args.max_decode_length))
  return 0


def _split_config_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """`--config.a.b=v` tokens are config overrides; the rest goes to argparse."""
  overrides = [arg for arg in argv if arg.startswith('--config.')]
  for arg in overrides:
    if '=' not in arg:
      raise ValueError(f'{arg} needs its value after "=", as in {arg}=VALUE (not a space).')
  return [arg for arg in argv if arg not in overrides], overrides


def _use_compilation_cache() -> None:
  """Compiled programs kept on disk (`<cache>/jax`, unless JAX_COMPILATION_CACHE_DIR says
  where): a rerun, and every seed after the first in a sweep, skips most of XLA's compiling."""
  import jax
  from t5prompt.data.sources import cache_dir
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', str(cache_dir() / 'jax'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def _distributed(args) -> None:
  if args.distributed or args.coordinator_address:
    from t5prompt.partitioning import initialize_distributed
    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)


def _until_preempted(command: str, work):
  """`work()`'s value, or the exit code a scheduler reruns on (75) if a signal stopped it."""
  from t5prompt.preemption import PREEMPTED_EXIT_CODE, Preempted
  try:
    return work()
  except Preempted as stopped:
    print(f't5prompt {command}: {stopped}', file=sys.stderr)
    return PREEMPTED_EXIT_CODE


def _train(args) -> int:
  from t5prompt.run_config import load_config
  config = load_config(args.config, args.overrides)  # validated before any compute
  _distributed(args)
  _use_compilation_cache()
  from t5prompt import train as trainer
  result = _until_preempted('train', lambda: trainer.train(config, args.workdir))
  if isinstance(result, int) or result is None:  # preempted; hosts after the first write nothing
    return result or 0
  print(json.dumps({key: getattr(result, key) for key in (
      'task', 'method', 'steps', 'best_step', 'metrics', 'initial_metrics', 'wall_time_s')},
                   indent=2))
  return 0


def _pretrain(args) -> int:
  from t5prompt import pretrain
  config = pretrain.load_config(args.config, args.overrides)  # validated before any compute
  _use_compilation_cache()
  directories = _until_preempted('pretrain', lambda: pretrain.run(config, args.workdir))
  if isinstance(directories, int):
    return directories
  print(json.dumps(directories, indent=2))
  return 0


def _eval(args) -> int:
  from t5prompt.evaluate import evaluate_run
  _use_compilation_cache()
  result = evaluate_run(args.workdir, args.checkpoint, tuple(args.split or ()), args.max_examples)
  cap = result['max_eval_examples']
  print(f'evaluating {"every" if not cap else f"the first {cap}"} example(s) of each eval set'
        f'{" (as the run did)" if args.max_examples is None else ""}', file=sys.stderr)
  print(json.dumps(result, indent=2))
  return 0


def _export_peft(args) -> int:
  from t5prompt.export import export_peft
  print(export_peft(args.workdir, args.output, args.base_model or ''))
  return 0


def _import_peft(args) -> int:
  from t5prompt.export import import_peft
  print(import_peft(args.source, args.output, args.d_model, args.encoder_rows_only))
  return 0


def _data_list(args) -> int:
  from t5prompt.data.show import task_list
  print(task_list(args.task))
  return 0


def _data_show(args) -> int:
  from t5prompt.data.show import split_examples
  print(split_examples(args.task, args.split, args.num, args.input_length, args.target_length))
  return 0


def _data_fetch(args) -> int:
  from t5prompt.data.fetch import fetch, files_for
  from t5prompt.data.sources import data_dir
  status = fetch(files_for(args.names))
  for path, state in status.items():
    print(f'{state:8s} {data_dir() / path}')
  print(f'{sum(s == "fetched" for s in status.values())} fetched, '
        f'{sum(s == "present" for s in status.values())} already present, in {data_dir()}')
  return 0


def _library_add(args) -> int:
  from t5prompt.library import PromptLibrary
  library = PromptLibrary(args.library)
  if args.name and len(args.runs) > 1:
    raise ValueError('--name names one entry; add runs one at a time to name them.')
  for run in args.runs:
    print(f'added {library.add_run(run, args.name, replace=args.replace)} to {args.library}')
  return 0


def _library_list(args) -> int:
  from t5prompt.library import PromptLibrary, entries_table
  print(entries_table(PromptLibrary(args.library)))
  return 0


def _library_show(args) -> int:
  from t5prompt.library import PromptLibrary, entry_text
  print(entry_text(PromptLibrary(args.library), args.name, args.positions))
  return 0


def _retrieve(args) -> int:
  from t5prompt.library import PromptLibrary, retrieve
  print(retrieve(PromptLibrary(args.library), args.target, query_path=args.query,
                 metric=args.metric, init=args.init, top_k=args.top_k,
                 max_eval_examples=args.max_eval_examples, output=args.output))
  return 0


def _ensemble(args) -> int:
  from t5prompt.ensembles import evaluate_ensemble, summary
  record = evaluate_ensemble(args.runs, args.output, args.batch_size)
  print(summary(record))
  if args.output:
    print(f'wrote the ensemble record to {args.output}')
  return 0


def _plan(args) -> int:
  from t5prompt import plan
  shape = dict(batch=args.batch, input_length=args.seq, target_length=args.targets,
               prompt_length=args.prompt_length, dtype=args.dtype)
  if args.counts:
    print(plan.counts_table(args.size, args.prompt_length, reparam_hidden=args.reparam_hidden))
  elif args.table:
    mesh = plan.parse_mesh(args.mesh)
    print(plan.markdown_table(mesh[0] * mesh[1], plan.parse_memory(args.device_memory),
                              **shape))
  else:
    print(plan.plan_text(args.size, args.method, args.mesh, args.device_memory,
                         shard_embed=args.shard_embed, remat=args.remat,
                         reparam_hidden=args.reparam_hidden,
                         devices_per_host=args.devices_per_host, **shape))
  return 0


def _sweep(args) -> int:
  from t5prompt import sweep
  _distributed(args)
  _use_compilation_cache()
  summary = _until_preempted('sweep', lambda: sweep.run_sweep(
      args.config, args.workdir, args.launcher, args.parallel, args.only, args.stage, args.shard))
  if isinstance(summary, int):
    return summary
  if args.report and args.launcher == 'local' and not (args.only or args.shard):
    if summary['done']:
      from t5prompt.report import write_report
      print(write_report(args.workdir))
    else:
      print('t5prompt sweep: no run finished, so there is no report.', file=sys.stderr)
  return 1 if summary.get('failed') else 0


def _report(args) -> int:
  from t5prompt.report import write_report
  print(write_report(args.directory, args.output))
  return 0


# --- The parser, one function per subcommand ------------------------------------------------
def _add_convert(commands) -> None:
  command = commands.add_parser(
      'convert', help='Hugging Face T5 checkpoint <-> t5prompt params (T5X names).')
  command.add_argument('source', help='HF checkpoint directory or hub id, or a t5prompt directory')
  command.add_argument('output', help='directory to write')
  command.add_argument('--format', choices=('t5prompt', 'hf'), default='t5prompt',
                       help='t5prompt: params.safetensors + t5prompt_config.json; '
                            'hf: config.json + model.safetensors that transformers loads')
  command.set_defaults(run=_convert)


def _add_smoke(commands) -> None:
  command = commands.add_parser('smoke', help='Run the model end to end on real text.')
  command.add_argument('--size', default='tiny-v1_1', help='named size (random weights)')
  command.add_argument('--checkpoint', default='',
                       help='HF or t5prompt checkpoint instead of random weights')
  command.add_argument('--text', default='Is the Eiffel tower in Paris? The Eiffel Tower is a '
                       'wrought-iron lattice tower on the Champ de Mars in Paris, France.')
  command.add_argument('--seed', type=int, default=0)
  command.add_argument('--max-input-length', type=int, default=512)
  command.add_argument('--max-decode-length', type=int, default=16)
  command.set_defaults(run=_smoke)


def _add_multi_host(command) -> None:
  command.add_argument('--distributed', action='store_true',
                       help='multi-host: join the other processes (found from SLURM / Cloud TPU '
                            'environment variables)')
  command.add_argument('--coordinator-address', default='', help='multi-host: host:port of '
                       'process 0 (with --num-processes and --process-id)')
  command.add_argument('--num-processes', type=int, default=0)
  command.add_argument('--process-id', type=int, default=-1)


def _add_train(commands) -> None:
  command = commands.add_parser(
      'train', help='Train one run (prompt or model tuning); resumes if the workdir has one.',
      epilog='Config overrides follow as --config.train.steps=100 --config.prompt.length=20.')
  command.add_argument('--config', required=True, help='a configs/*.py file')
  command.add_argument('--workdir', required=True,
                       help='the run directory (outputs, checkpoints)')
  _add_multi_host(command)
  command.set_defaults(run=_train)


def _add_pretrain(commands) -> None:
  command = commands.add_parser(
      'pretrain', help='Pre-train a backbone on the shipped text (span corruption, then LM '
      'adaptation); resumes if the workdir has one.',
      epilog='Overrides follow as --config.span_corruption.train.steps=100.')
  command.add_argument('--config', required=True, help='a configs/pretrain/*.py file, '
                       'optionally with its argument: configs/pretrain/ladder.py:ladder-2')
  command.add_argument('--workdir', required=True, help='where the two stages\' backbones go')
  command.set_defaults(run=_pretrain)


def _add_eval(commands) -> None:
  command = commands.add_parser('eval', help="Evaluate a run's best or latest checkpoint.")
  command.add_argument('--workdir', required=True)
  command.add_argument('--checkpoint', choices=('best', 'latest'), default='best')
  command.add_argument('--split', action='append', help='eval split (repeatable); default: '
                       "the run's eval splits")
  command.add_argument('--max-examples', type=int, default=None, help='examples per eval set '
                       "(0 = all); default: as many as the run evaluated (train.max_eval_examples)")
  command.set_defaults(run=_eval)


def _add_peft(commands) -> None:
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
                       help='accept an adapter that also prompts the decoder; keep its encoder '
                            'rows')
  import_.set_defaults(run=_import_peft)


def _add_data(commands) -> None:
  data = commands.add_parser('data', help='Tasks and their data.')
  data_commands = data.add_subparsers(dest='data_command', required=True)
  listing = data_commands.add_parser('list', help='Every task, its splits and where each '
                                     'split is read from (or why it is missing).')
  listing.add_argument('task', nargs='?', default='',
                       help='only tasks whose name contains this')
  listing.set_defaults(run=_data_list)
  show = data_commands.add_parser('show', help='Rendered examples of a task split.')
  show.add_argument('task')
  show.add_argument('--split', default='validation')
  show.add_argument('--num', type=int, default=3)
  show.add_argument('--input-length', type=int, default=512)
  show.add_argument('--target-length', type=int, default=0)
  show.set_defaults(run=_data_show)
  fetch = data_commands.add_parser(
      'fetch', help='Download the data files tasks read (when online) into $T5PROMPT_DATA_DIR: '
      'pinned public copies, checked by sha256, resumable.')
  fetch.add_argument('names', nargs='*', help="tasks (default: the demo's: CB, MRPC, the "
                     "pre-training text), or 'all'")
  fetch.set_defaults(run=_data_fetch)


def _add_library(commands) -> None:
  library = commands.add_parser('library', help='A library of trained prompts.')
  library_commands = library.add_subparsers(dest='library_command', required=True)
  add = library_commands.add_parser('add', help="Add finished runs' prompts.")
  add.add_argument('runs', nargs='+', help='run directories (`t5prompt train` workdirs)')
  add.add_argument('--library', required=True, help='the library directory')
  add.add_argument('--name', default='', help='entry name (default task-size-method-sseed)')
  add.add_argument('--replace', action='store_true')
  add.set_defaults(run=_library_add)
  listing = library_commands.add_parser('list', help="The library's prompts.")
  listing.add_argument('--library', required=True)
  listing.set_defaults(run=_library_list)
  show = library_commands.add_parser('show', help='One entry and what it "says".')
  show.add_argument('name')
  show.add_argument('--library', required=True)
  show.add_argument('--positions', type=int, default=10,
                    help='prompt positions whose nearest tokens to print')
  show.set_defaults(run=_library_show)


def _add_retrieve(commands) -> None:
  command = commands.add_parser('retrieve', help="Rank library prompts by similarity to a "
                                "target task's prompt; optionally write a transfer init.")
  command.add_argument('--library', required=True)
  command.add_argument('--target', required=True,
                       help='the target task (its prompts are not ranked)')
  command.add_argument('--query', default='', help="the target's prompt.npy (default: the "
                       "library's entry for --target)")
  command.add_argument('--metric', choices=('cosine', 'per_position', 'on'), default='cosine')
  command.add_argument('--init', choices=('top1', 'weighted_average', 'best_of_top_k'),
                       default='top1', help='how --output combines the top-k')
  command.add_argument('--top-k', type=int, default=3)
  command.add_argument('--max-eval-examples', type=int, default=0,
                       help='best_of_top_k: dev examples per candidate (0 = all)')
  command.add_argument('--output', default='', help='write the init prompt (.npy) here')
  command.set_defaults(run=_retrieve)


def _add_ensemble(commands) -> None:
  command = commands.add_parser('ensemble', help='Score the prompts of several runs of one '
                                'task as an ensemble (one batch, one frozen model).')
  command.add_argument('runs', nargs='+', help='finished prompt-tuning run directories')
  command.add_argument('--output', default='',
                       help='directory for the ensemble record (the report reads it)')
  command.add_argument('--batch-size', type=int, default=32)
  command.set_defaults(run=_ensemble)


def _add_plan(commands) -> None:
  command = commands.add_parser('plan', help='Memory per device for a size, method and mesh.')
  command.add_argument('--size', default='xxl', help='small|base|large|xl|xxl (LM-adapted) or '
                       'a named size such as t5-v1_1-xl')
  command.add_argument('--method', default='prompt', help='prompt | model | prefix | deep | '
                       'ptuning (tuning), or a full method name')
  command.add_argument('--mesh', default='16x1', help='DATAxMODEL, e.g. 16x1, 4x4')
  command.add_argument('--batch', type=int, default=32)
  command.add_argument('--seq', type=int, default=512, help='input length (before the prompt)')
  command.add_argument('--targets', type=int, default=8, help='target length')
  command.add_argument('--prompt-length', type=int, default=100)
  command.add_argument('--reparam-hidden', type=int, default=512,
                       help="prefix tuning's MLP / P-tuning's encoder hidden size")
  command.add_argument('--remat', choices=('none', 'full', 'dots'), default='none')
  command.add_argument('--shard-embed', action='store_true', help='also shard weights over data')
  command.add_argument('--dtype', choices=('bfloat16', 'float32'), default='bfloat16')
  command.add_argument('--device-memory', default='16GiB',
                       help='per device, e.g. 16GiB, 80GiB')
  command.add_argument('--devices-per-host', type=int, default=8,
                       help='for the host RAM a load needs (e.g. 8 GPUs, 4 TPU v4 chips)')
  command.add_argument('--table', action='store_true', help="every size x method on the mesh's "
                       'device count, as Markdown')
  command.add_argument('--counts', action='store_true', help='trainable and stored params of '
                       'every method for --size, as Markdown')
  command.set_defaults(run=_plan)


def _add_sweep(commands) -> None:
  command = commands.add_parser('sweep', help='Run a sweep (configs/sweeps/*.py): its stages in '
                                'order, every run validated first, finished runs skipped.')
  command.add_argument('--config', required=True)
  command.add_argument('--workdir', required=True)
  command.add_argument('--launcher', choices=('local', 'print', 'slurm', 'tpu'), default='local',
                       help='local: run here; print: the commands; slurm: array jobs, one per '
                            'stage; tpu: launch/tpu_vm.sh commands')
  command.add_argument('--parallel', type=int, default=1, help='local worker processes, each '
                       "running its share of a stage's runs")
  command.add_argument('--run', dest='only', default='', help='run only this run (stage/name), as '
                       'launched jobs do')
  command.add_argument('--stage', default='', help=argparse.SUPPRESS)  # a parallel worker's
  command.add_argument('--shard', default='', help=argparse.SUPPRESS)  # stage and share, i/n
  command.add_argument('--report', action='store_true', help='write the report when done')
  _add_multi_host(command)
  command.set_defaults(run=_sweep)


def _add_report(commands) -> None:
  command = commands.add_parser('report', help='Tables and plots from the results under a '
                                "directory, beside the paper's numbers.")
  command.add_argument('directory')
  command.add_argument('--output', help='default: DIRECTORY/report')
  command.set_defaults(run=_report)


def _unknown_options(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
  """`--options` that no parser on the command's path knows (a typo'd flag): argparse would
  first complain about a required option the typo was meant to be."""
  known, current = set(), parser
  for token in [*argv, None]:
    actions = current._actions  # pylint: disable=protected-access
    known |= {option for action in actions for option in action.option_strings}
    commands = next((a.choices for a in actions if isinstance(a, argparse._SubParsersAction)),  # pylint: disable=protected-access
                    {})
    if token in commands:
      current = commands[token]
  return [token for token in argv if token.startswith('--') and token.split('=')[0] not in known]


def build_parser() -> argparse.ArgumentParser:
  from importlib.metadata import version  # light: no JAX
  parser = argparse.ArgumentParser(
      prog='t5prompt', description='Prompt methods on a frozen Flax T5, from Small to XXL.')
  parser.add_argument('--version', action='version', version=f'%(prog)s {version("t5prompt")}')
  commands = parser.add_subparsers(dest='command', required=True)
  for add in (_add_convert, _add_smoke, _add_train, _add_pretrain, _add_eval, _add_peft,
              _add_data, _add_library, _add_retrieve, _add_ensemble, _add_plan, _add_sweep,
              _add_report):
    add(commands)
  return parser


# Where the stop message goes: a copy of stderr taken at startup, which still reaches the user
# while TensorFlow's import has fd 2 pointed at /dev/null (data/tf_setup.py).
_STDERR = [2]


def _stop_at_once(signum, frame) -> None:
  """Ctrl-C or SIGTERM outside a train loop (imports, data, compilation, exports): stop now, in
  one line, exit 128 + the signal (130, 143). Nothing is half-written (every file is written
  whole or not at all), and exiting from here, not by an exception, cannot be swallowed by a
  callback or crash inside a C library. A train loop installs its own handler while it runs:
  finish the step, checkpoint, exit 75."""
  del frame
  name = signal.Signals(signum).name
  os.write(_STDERR[0], f'\nt5prompt: stopped by {name}; every file written is whole: rerun the '
                       'same command to continue.\n'.encode())
  os._exit(128 + signum)  # pylint: disable=protected-access


def main(argv=None) -> int:
  from t5prompt.xla_cpu import prepare_cpu_backend
  prepare_cpu_backend()  # before JAX starts, which the handlers import
  if argv is None:  # the command itself (not a test calling main): stop cleanly from line one
    _STDERR[0] = os.dup(2)
    for signum in (signal.SIGINT, signal.SIGTERM):
      signal.signal(signum, _stop_at_once)
  try:
    argv, overrides = _split_config_overrides(list(sys.argv[1:] if argv is None else argv))
  except ValueError as error:
    print(f't5prompt: error: {error}', file=sys.stderr)
    return 2
  parser = build_parser()
  unknown = _unknown_options(parser, argv)
  if unknown:
    parser.error(f'unrecognized arguments: {" ".join(unknown)}')
  args = parser.parse_args(argv)
  if overrides and args.command not in ('train', 'pretrain'):
    print(f't5prompt {args.command}: error: config overrides ({overrides[0]}, ...) are for '
          '`train` and `pretrain` only', file=sys.stderr)
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
