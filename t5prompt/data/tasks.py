"""Every task t5prompt trains and evaluates on, registered with seqio in this one place.

Names: `superglue_<task>` (T5's format without the task prefix, as the paper) and
`superglue_<task>_prefixed`; `mrqa_squad` and the out-of-domain `mrqa_<set>`; `glue_mrpc`,
`glue_qqp`; `paraphrase_mrpc`, `paraphrase_qqp` (one shared format, for transfer between them);
`superglue_<task>_template` (hand-written questions for prompt design, `data.templates`).
Mixture: `superglue_mixture` (the eight scored SuperGLUE tasks, examples-proportional).
Each is a standard seqio Task (`seqio.get_mixture_or_task(name)`), and `get_task_spec(name)`
gives t5prompt's `TaskSpec` for it (labels, metric, scoring mode, where its data is).
"""

import dataclasses
import difflib
import functools

from t5prompt.data import glue, mrqa, ppt, pretraining, superglue, templates
from t5prompt.data.sources import DataNotFoundError
from t5prompt.data.spec import TaskSpec
from t5prompt.data.tf_setup import tensorflow
from t5prompt.data.vocab import get_vocabulary

SUPERGLUE_MIXTURE = 'superglue_mixture'


@functools.cache
def task_specs() -> dict[str, TaskSpec]:
  specs = {}
  for name, spec in superglue.TASKS.items():
    specs[f'superglue_{name}'] = dataclasses.replace(spec, name=f'superglue_{name}')
    specs[f'superglue_{name}_prefixed'] = dataclasses.replace(
        spec, name=f'superglue_{name}_prefixed', with_prefix=True)
  for name, spec in mrqa.TASKS.items():
    specs[f'mrqa_{name}'] = dataclasses.replace(spec, name=f'mrqa_{name}')
  for name, spec in glue.TASKS.items():
    full = name if name.startswith('paraphrase_') else f'glue_{name}'
    specs[full] = dataclasses.replace(spec, name=full)
  specs.update(templates.template_specs())
  specs.update(pretraining.TASKS)
  specs.update(ppt.TASKS)
  return specs


def get_task_spec(name: str) -> TaskSpec:
  specs = task_specs()
  if name not in specs:
    close = difflib.get_close_matches(name, list(specs), n=3, cutoff=0.5)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    raise ValueError(f'Unknown task {name!r}.{hint} Known tasks: {", ".join(specs)}.')
  return specs[name]


def _dataset_fn(spec: TaskSpec):
  def dataset_fn(split, shuffle_files=False, seed=None):
    del shuffle_files, seed  # one file per split; shuffling is the pipeline's job
    records = spec.records(split)
    if records is None:  # a token-level task: the documents' text, tokenized as targets
      return tensorflow().data.Dataset.from_tensor_slices(
          {'targets': [row['text'] for row in spec.source.rows(split)]})
    return tensorflow().data.Dataset.from_tensor_slices(
        {key: [r[key] for r in records] for key in ('inputs', 'targets', 'label')})
  return dataset_fn


def _task_args(spec: TaskSpec, vocabulary) -> dict:
  import seqio  # pylint: disable=import-outside-toplevel
  return dict(
      source=seqio.FunctionDataSource(_dataset_fn(spec), splits=spec.splits),
      preprocessors=[seqio.preprocessors.tokenize, *spec.token_preprocessors,
                     seqio.CacheDatasetPlaceholder(), seqio.preprocessors.append_eos_after_trim],
      output_features={'inputs': seqio.Feature(vocabulary, add_eos=True),
                       'targets': seqio.Feature(vocabulary, add_eos=True)})


@functools.cache
def seqio_task(name: str, spm_file: str = ''):
  """The seqio Task `name`: with T5's vocabulary (spm_file '', the default) the registered
  one, with another SentencePiece model (a backbone's own) the same task built on it."""
  register_tasks()
  import seqio  # pylint: disable=import-outside-toplevel
  if not spm_file or spm_file == get_vocabulary().sentencepiece_model_file:
    return seqio.get_mixture_or_task(name)
  return seqio.Task(name, **_task_args(get_task_spec(name), get_vocabulary(spm_file)))


@functools.cache
def register_tasks() -> tuple[str, ...]:
  """Registers every task (with T5's vocabulary) and the SuperGLUE mixture with seqio (once);
  returns the task names."""
  tensorflow()
  import seqio  # pylint: disable=import-outside-toplevel
  vocabulary = get_vocabulary()
  for name, spec in task_specs().items():
    if name not in seqio.TaskRegistry.names():
      seqio.TaskRegistry.add(name, **_task_args(spec, vocabulary))
  if SUPERGLUE_MIXTURE not in seqio.MixtureRegistry.names():
    # Examples-proportional: a task's rate is its number of training records (read lazily).
    seqio.MixtureRegistry.add(
        SUPERGLUE_MIXTURE, [f'superglue_{name}' for name in superglue.SCORED_TASKS],
        default_rate=lambda task: len(get_task_spec(task.name).records('train')))
  return tuple(task_specs())


def describe_tasks() -> list[dict]:
  """For `t5prompt data list`: every task, each split, and where its data is (or why not)."""
  out = []
  for name, spec in task_specs().items():
    splits = {}
    for split in spec.splits:
      try:
        splits[split] = spec.source.locate(split)
      except DataNotFoundError as error:
        splits[split] = f'MISSING: {error}'
    out.append({'task': name, 'metric': spec.metric, 'eval_mode': spec.eval_mode,
                'labels': list(spec.label_names), 'splits': splits})
  return out
