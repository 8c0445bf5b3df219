"""Prompt initialisers (Lester et al. 2021, section 3.2), each a shape-checked closure
`(rng, shape) -> [P, d] float32`, like google-research/prompt-tuning's `prompts.py`.

`embedding` is the frozen backbone's token embedding table [vocab, d_model].
"""

import json
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from t5prompt.prompts.soft_prompt import Initializer, uniform_init
from t5prompt.data import ppt
from t5prompt.run_dir import PROMPT, PROMPT_RECORD, find_results

# SentencePiece orders pieces by score, so ids 3.. are the most frequent tokens; 0-2 are
# <pad>, </s>, <unk> and never a useful starting point.
FIRST_ORDINARY_ID = 3
VOCAB_POPULATION = 5000
INIT_NAMES = ('random_uniform', 'sampled_vocab', 'class_label', 'text', 'file', 'ppt')
PPT_CHOICES = ('matching', 'unified')  # the prompt of the task's format, or the all-format one


def _check_shape(shape, embedding) -> tuple[int, int]:
  if len(shape) != 2 or shape[1] != embedding.shape[1]:
    raise ValueError(f'A prompt has shape [prompt_length, d_model={embedding.shape[1]}], '
                     f'asked for {tuple(shape)}.')
  return shape


def sampled_vocab(embedding, population: int = VOCAB_POPULATION) -> Initializer:
  """Rows drawn without replacement from the embeddings of the `population` most frequent
  tokens (with replacement only if the prompt is longer than the population)."""
  population = min(population, embedding.shape[0] - FIRST_ORDINARY_ID)

  def init(rng, shape):
    length, _ = _check_shape(shape, embedding)
    ids = FIRST_ORDINARY_ID + jax.random.choice(rng, population, (length,),
                                                replace=length > population)
    return jnp.asarray(embedding, jnp.float32)[ids]
  return init


def class_label(embedding, label_token_ids: Sequence[Sequence[int]],
                population: int = VOCAB_POPULATION) -> Initializer:
  """Row i is the embedding of class label i (the mean over its tokens if it has several);
  the remaining rows are sampled from the vocabulary."""
  if not label_token_ids or any(len(ids) == 0 for ids in label_token_ids):
    raise ValueError('class_label init needs at least one label, each with at least one token.')
  table = jnp.asarray(embedding, jnp.float32)
  labels = jnp.stack([table[jnp.asarray(ids)].mean(axis=0) for ids in label_token_ids])
  rest = sampled_vocab(embedding, population)

  def init(rng, shape):
    length, _ = _check_shape(shape, embedding)
    if length < len(label_token_ids):
      raise ValueError(f'class_label init has {len(label_token_ids)} labels but the prompt has '
                       f'only {length} positions; use a longer prompt.')
    if length == len(label_token_ids):
      return labels
    return jnp.concatenate([labels, rest(rng, (length - len(label_token_ids), shape[1]))])
  return init


def text(embedding, token_ids: Sequence[int]) -> Initializer:
  """The embeddings of a text's tokens, repeated to fill the prompt (PEFT's TEXT init).

  Unlike PEFT, a text longer than the prompt is an error rather than silently cut.
  """
  if not token_ids:
    raise ValueError('text init needs a non-empty text.')
  table = jnp.asarray(embedding, jnp.float32)

  def init(rng, shape):
    del rng
    length, _ = _check_shape(shape, embedding)
    if len(token_ids) > length:
      raise ValueError(f'The init text has {len(token_ids)} tokens but the prompt has only '
                       f'{length} positions; shorten the text or lengthen the prompt.')
    repeats = -(-length // len(token_ids))
    return table[jnp.asarray((list(token_ids) * repeats)[:length])]
  return init


def load_prompt_file(path: str | Path) -> np.ndarray:
  """A prompt saved by t5prompt (`.npy`, float32 [P, d])."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'No prompt file at {path}; give the .npy a run exported '
                            '(<workdir>/prompt.npy) or a `t5prompt import-peft` output.')
  prompt = np.load(path)
  if prompt.ndim != 2:
    raise ValueError(f'{path} holds an array of shape {prompt.shape}, not a [P, d] prompt.')
  return prompt.astype(np.float32)


def prompt_source(path: str | Path) -> dict[str, Any]:
  """Where a saved prompt came from (task, size, method), read from the library entry or run
  export beside it; {} for a bare file. Transfer reports group runs by it."""
  path = Path(path)
  for name in ('entry.json', PROMPT_RECORD):  # a library entry's record, or a run's export
    beside = path.parent / name
    if beside.is_file():
      record = json.loads(beside.read_text())
      return {key: record.get(key) for key in ('name', 'task', 'model_size', 'method')
              if record.get(key) is not None}
  return {}


def from_array(prompt: np.ndarray) -> Initializer:
  """Exactly `prompt` (transfer from a saved prompt); the shape must match."""
  def init(rng, shape):
    del rng
    if tuple(shape) != prompt.shape:
      raise ValueError(f'The saved prompt has shape {prompt.shape} but this run needs '
                       f'{tuple(shape)} (prompt_length, d_model); use a matching prompt_length '
                       'and backbone.')
    return jnp.asarray(prompt)
  return init


def pretrained_prompt(directory: str | Path, task: str, choice: str,
                      params_hash: str) -> tuple[Path, str]:
  """PPT: the prompt pre-trained under `directory` (finished prompt-tuning runs on the `ppt_*`
  tasks) for `task`'s format (`choice` 'matching') or on every format ('unified'), on this
  backbone; (its prompt.npy, the format). The best-scoring one if several."""
  wanted = ppt.UNIFIED if choice == 'unified' else ppt.format_of(task)
  found = []
  for run in find_results(directory) if Path(directory).is_dir() else []:
    result = run.result()
    mixture = tuple(result.config['task'].get('mixture', ()))
    form = ppt.UNIFIED if mixture else result.task.removeprefix('ppt_')
    if (result.task.startswith('ppt_') and form == wanted and result.method == 'prompt_tuning'
        and result.backbone.get('params_hash') == params_hash and (run.path / PROMPT).is_file()):
      found.append((result.score, str(run.path / PROMPT)))
  if not found:
    raise FileNotFoundError(
        f'prompt.init="ppt" found no pre-trained prompt of the {wanted!r} format for this '
        f'backbone (params hash {params_hash[:12]}) under {directory}. Pre-train it first: the '
        "'ppt' stage of configs/sweeps/few_shot_ppt.py, or prompt tuning on "
        f"{ppt.task_name(ppt.FORMATS[0]) if wanted == ppt.UNIFIED else ppt.task_name(wanted)}"
        + (' with task.mixture set to the other ppt_* tasks' if wanted == ppt.UNIFIED else '')
        + ', into that directory.')
  return Path(max(found)[1]), wanted


def make_initializer(name: str, *, embedding, vocabulary=None, labels: Sequence[str] = (),
                     init_text: str = '', path: str = '', population: int = VOCAB_POPULATION,
                     ppt_runs: str = '', ppt_choice: str = 'matching', task: str = '',
                     params_hash: str = '') -> tuple[Initializer, dict[str, Any]]:
  """The initialiser a config names, and the record of it a run writes to its outputs."""
  record: dict[str, Any] = {'name': name}
  # Sampled rows come from the vocabulary's own pieces, never its sentinels or the table's
  # padding rows (a small vocabulary can have fewer pieces than `population`).
  if vocabulary is not None:
    population = min(population, vocabulary.vocab_size - vocabulary.extra_ids
                     - FIRST_ORDINARY_ID)
  if name == 'random_uniform':
    record['range'] = [-0.5, 0.5]
    return uniform_init(0.5), record
  if name == 'sampled_vocab':
    record['population'] = population
    return sampled_vocab(embedding, population), record
  if name == 'class_label':
    if not labels:
      raise ValueError('class_label init needs the task\'s label strings (prompt.labels or a '
                       'task with a label set).')
    label_ids = [vocabulary.encode(label) for label in labels]
    record.update(labels=list(labels), label_token_ids=label_ids, population=population)
    return class_label(embedding, label_ids, population), record
  if name == 'text':
    # As PEFT with the T5 tokenizer: the text's tokens followed by EOS.
    token_ids = list(vocabulary.encode(init_text)) + [1] if init_text else []
    record.update(text=init_text, token_ids=token_ids)
    return text(embedding, token_ids), record
  if name == 'file':
    record['path'] = str(path)
    source = prompt_source(path)
    if source:
      record['source'] = source
    return from_array(load_prompt_file(path)), record
  if name == 'ppt':  # a pre-trained prompt: a file found by the task's format
    path, form = pretrained_prompt(ppt_runs, task, ppt_choice, params_hash)
    record.update(format=form, path=str(path), source=prompt_source(path))
    return from_array(load_prompt_file(path)), record
  raise ValueError(f'Unknown prompt init {name!r}; choose one of {", ".join(INIT_NAMES)}.')
