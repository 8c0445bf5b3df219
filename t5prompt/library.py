"""A prompt library: trained soft prompts kept as small, portable artefacts, with what is needed
to reuse them (the backbone and its hash, task, length, init, score), and retrieval by task
similarity (SPoT, Vu et al. 2022; On Transferability, Su et al. 2022).

Layout: one directory per entry, `<library>/<name>/prompt.npy` (float32 [P, d]) and
`<library>/<name>/entry.json`. Entries come from finished runs (`add_run`): the run's exported
prompt (P-tuning's is already folded) and its result.
"""

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from t5prompt import atomic
from t5prompt import run_dir as run_dir_lib
from t5prompt.backbone import backbone_from_source
from t5prompt.data import pipeline
from t5prompt.data.tasks import get_task_spec
from t5prompt.evaluate import evaluate
from t5prompt.models import T5
from t5prompt.prompts import similarity
from t5prompt.prompts.soft_prompt import SoftPrompt
from t5prompt.run_dir import Result, RunDir

ENTRY_FILE = 'entry.json'
PROMPT_FILE = run_dir_lib.PROMPT  # an entry keeps its prompt as a run exports it
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')


class PromptLibrary:

  def __init__(self, root: str | os.PathLike):
    self.root = Path(root)

  def names(self) -> list[str]:
    if not self.root.is_dir():
      return []
    return sorted(path.parent.name for path in self.root.glob(f'*/{ENTRY_FILE}'))

  def entry(self, name: str) -> dict[str, Any]:
    path = self.root / name / ENTRY_FILE
    if not path.is_file():
      known = ', '.join(self.names()) or 'none'
      raise FileNotFoundError(f'No prompt {name!r} in the library {self.root} (entries: '
                              f'{known}).')
    return json.loads(path.read_text())

  def entries(self) -> list[dict[str, Any]]:
    return [self.entry(name) for name in self.names()]

  def prompt(self, name: str) -> np.ndarray:
    self.entry(name)  # a clear error for a missing name
    return np.load(self.root / name / PROMPT_FILE)

  def add_run(self, run_dir: str | os.PathLike, name: str = '', replace: bool = False) -> str:
    """Adds a finished run's exported prompt; returns the entry name."""
    run = RunDir(run_dir)
    result = finished_prompt_run(run)
    # A prompt trained on a task mixture (generic SPoT) is named and matched by all its tasks.
    tasks = [result.task, *result.config['task'].get('mixture', [])]
    mixed = f'-mix{len(tasks)}' if len(tasks) > 1 else ''
    name = name or f'{result.task}{mixed}-{result.model_size}-{result.method}-s{result.seed}'
    if not _NAME.match(name):
      raise ValueError(f'Library names are letters, digits, ".", "_" and "-"; got {name!r}.')
    target = self.root / name
    if (target / ENTRY_FILE).exists() and not replace:
      raise FileExistsError(f'{name!r} is already in {self.root}; pass --replace or a --name.')
    prompt = run.prompt().astype(np.float32)
    entry = {
        'name': name, 'task': '+'.join(tasks), 'method': result.method,
        'model_size': result.model_size, 'd_model': int(prompt.shape[1]),
        'backbone': result.backbone, 'length': int(prompt.shape[0]),
        'init': result.init, 'seed': result.seed,
        'score': (result.metrics or {}).get(result.in_domain, {}).get('score'),
        'metric': result.metric, 'eval_set': result.in_domain,
        'source_run': str(run.path.resolve()),
        'nearest_tokens': run.prompt_record().get('nearest_tokens'),
    }
    staging = self.root / f'.{name}.adding'
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    atomic.write_npy(staging / PROMPT_FILE, prompt)
    atomic.write_json(staging / ENTRY_FILE, entry)
    if target.exists():
      shutil.rmtree(target)
    os.replace(staging, target)  # an entry appears whole or not at all
    return name


def finished_prompt_run(run: RunDir) -> Result:
  """The result of a finished run that exported an input prompt; a clear error otherwise."""
  result = run.result()
  if result is None:
    raise FileNotFoundError(f'{run.path} has no result: give a finished `t5prompt train` run.')
  if not (run / run_dir_lib.PROMPT).is_file():
    raise ValueError(f'{run.path} exported no input prompt: only input prompts (prompt tuning, '
                     'P-tuning, cross-model transfer) go in the library and ensembles, not '
                     'prefixes or model-tuning runs.')
  return result


def compatible(entry: dict, params_hash: str) -> bool:
  return entry['backbone']['params_hash'] == params_hash


def rank(library: PromptLibrary, query: np.ndarray, metric: str = 'cosine', *,
         params_hash: str = '', exclude_task: str = '', config=None,
         backbone_params=None) -> list[tuple[str, float]]:
  """(entry name, similarity to `query`), most similar first; ties by name, so the order is
  reproducible. Only entries on the same backbone (`params_hash`, when given) and of the
  query's shape compete; `exclude_task` drops the target's own prompts."""
  if metric == 'on':
    query_mask = similarity.activated_neurons(config, backbone_params, query)
  scored = []
  for entry in library.entries():
    if params_hash and not compatible(entry, params_hash):
      continue
    if entry['task'] == exclude_task or (entry['length'], entry['d_model']) != query.shape:
      continue
    prompt = library.prompt(entry['name'])
    if metric == 'on':
      value = similarity.neuron_overlap(
          query_mask, similarity.activated_neurons(config, backbone_params, prompt))
    else:
      value = similarity.similarity(metric, query, prompt)
    scored.append((entry['name'], value))
  return sorted(scored, key=lambda item: (-item[1], item[0]))


def weighted_average(prompts: list[np.ndarray], similarities: list[float]) -> np.ndarray:
  """On Transferability's top-k weighted average: prompts averaged with weights proportional to
  their (positive) similarity to the target; uniform if none is positive."""
  weights = np.maximum(np.asarray(similarities, np.float64), 0.0)
  if weights.sum() <= 0:
    weights = np.ones_like(weights)
  weights = weights / weights.sum()
  return np.tensordot(weights, np.stack(prompts).astype(np.float64), axes=1).astype(np.float32)


def zero_shot_scores(backbone, task: str, prompts: list[np.ndarray], max_examples: int = 0,
                     input_length: int = 512, batch_size: int = 32) -> list[float]:
  """Each candidate prompt's dev score on `task` before any training (best of top-k picks the
  highest)."""
  spec = get_task_spec(task)
  data = pipeline.load_tokenized(task, 'validation', input_length, spec.target_length,
                                 backbone.vocabulary)
  scores = []
  for prompt in prompts:
    model = T5(backbone.config, prompt=SoftPrompt(prompt.shape[0]))
    params = {**backbone.params, 'prompt': {'prompt': jnp.asarray(prompt, jnp.float32)}}
    metrics = evaluate(model, params, {'dev': (spec, data)}, backbone.vocabulary, batch_size,
                       max_examples)
    scores.append(metrics['dev']['score'])
  return scores


def entries_table(library: PromptLibrary) -> str:
  """`library list`: one Markdown row per entry."""
  entries = library.entries()
  if not entries:
    return f'{library.root}: no prompts yet (add finished runs with `t5prompt library add`)'
  lines = ['| name | task | size | method | length x d | score | backbone hash |',
           '|---|---|---|---|---|---|---|']
  for e in entries:
    score = '' if e['score'] is None else f'{e["score"]:.1f}'
    lines.append(f'| {e["name"]} | {e["task"]} | {e["model_size"]} | {e["method"]} | '
                 f'{e["length"]} x {e["d_model"]} | {score} | '
                 f'{e["backbone"]["params_hash"][:12]} |')
  return '\n'.join(lines)


def entry_text(library: PromptLibrary, name: str, positions: int = 10) -> str:
  """`library show`: an entry's record and the nearest tokens of its first positions."""
  entry = dict(library.entry(name))
  nearest = entry.pop('nearest_tokens', None) or []
  lines = [json.dumps(entry, indent=2)]
  if nearest:
    lines.append(f'nearest vocabulary tokens (cosine), first {min(positions, len(nearest))} '
                 'positions:')
    lines += [f'  {position:3d}: {" ".join(tokens)}'
              for position, tokens in enumerate(nearest[:positions])]
  return '\n'.join(lines)


def retrieve(library: PromptLibrary, target: str, *, query_path: str = '',
             metric: str = 'cosine', init: str = 'top1', top_k: int = 3,
             max_eval_examples: int = 0, output: str = '') -> str:
  """`t5prompt retrieve`: the library ranked by similarity to the target task's prompt (its
  library entry, or `query_path`); with `output`, writes the `init` combination of the top-k
  as a transfer init. Returns the ranking (and what was written) as text."""
  if query_path:
    query, params_hash, source = np.load(query_path), '', None
  else:
    own = [e for e in library.entries() if e['task'] == target]
    if not own:
      raise ValueError(f'No prompt for {target} in {library.root} to compare with; train a '
                       'short target prompt and pass it as --query.')
    query = library.prompt(own[0]['name'])
    params_hash, source = own[0]['backbone']['params_hash'], own[0]['backbone']['source']
  backbone = None
  if metric == 'on' or init == 'best_of_top_k':
    if source is None:
      raise ValueError('--metric on and --init best_of_top_k run the backbone; with --query '
                       'give --target a library entry instead, so its backbone is known.')
    backbone = backbone_from_source(source)
  ranked = rank(library, query, metric, params_hash=params_hash, exclude_task=target,
                config=backbone and backbone.config,
                backbone_params=backbone and backbone.params)
  if not ranked:
    raise ValueError(f'No library prompt of shape {query.shape} on this backbone to rank.')
  lines = [f'| rank | source prompt | task | {metric} similarity |', '|---|---|---|---|']
  lines += [f'| {position} | {name} | {library.entry(name)["task"]} | {value:.4f} |'
            for position, (name, value) in enumerate(ranked, 1)]
  if output:
    lines += _write_init(library, ranked[:top_k], target, metric, init, backbone,
                         max_eval_examples, output)
  return '\n'.join(lines)


def _write_init(library: PromptLibrary, top: list[tuple[str, float]], target: str, metric: str,
                init: str, backbone, max_eval_examples: int, output: str) -> list[str]:
  """Combines the top-k prompts by `init` into the transfer init at `output`."""
  lines = []
  prompts = [library.prompt(name) for name, _ in top]
  if init == 'top1':
    chosen, sources = prompts[0], [top[0][0]]
  elif init == 'weighted_average':
    chosen, sources = weighted_average(prompts, [v for _, v in top]), [n for n, _ in top]
  else:
    scores = zero_shot_scores(backbone, target, prompts, max_eval_examples)
    best = int(np.argmax(scores))
    chosen, sources = prompts[best], [top[best][0]]
    lines.append('zero-shot dev scores of the top-k: ' + ', '.join(
        f'{name} {score:.1f}' for (name, _), score in zip(top, scores)))
  atomic.write_npy(output, chosen.astype(np.float32))
  atomic.write_json(Path(output).with_suffix('.json'), {
      'task': '+'.join(sorted({library.entry(n)['task'] for n in sources})),
      'name': '+'.join(sources), 'strategy': init, 'metric': metric, 'target': target})
  lines.append(f'wrote the {init} init prompt to {output}; train from it with '
               f'--config.prompt.init=file --config.prompt.init_file={output}')
  return lines
