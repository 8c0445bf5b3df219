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

import numpy as np

from t5prompt import atomic
from t5prompt.prompts import similarity

ENTRY_FILE = 'entry.json'
PROMPT_FILE = 'prompt.npy'
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
    run_dir = Path(run_dir)
    result_path, prompt_path = run_dir / 'result.json', run_dir / 'prompt.npy'
    if not result_path.is_file():
      raise FileNotFoundError(f'{run_dir} has no result.json: add a finished `t5prompt train` '
                              'run.')
    if not prompt_path.is_file():
      raise ValueError(f'{run_dir} exported no prompt.npy: only input prompts (prompt tuning, '
                       'P-tuning, cross-model transfer) go in the library, not prefixes or '
                       'model-tuning runs.')
    result = json.loads(result_path.read_text())
    prompt_record = json.loads((run_dir / 'prompt.json').read_text())
    # A prompt trained on a task mixture (generic SPoT) is named and matched by all its tasks.
    tasks = [result['task'], *result['config']['task'].get('mixture', [])]
    mixed = f'-mix{len(tasks)}' if len(tasks) > 1 else ''
    name = name or (f'{result["task"]}{mixed}-{result["model_size"]}-{result["method"]}'
                    f'-s{result["seed"]}')
    if not _NAME.match(name):
      raise ValueError(f'Library names are letters, digits, ".", "_" and "-"; got {name!r}.')
    target = self.root / name
    if (target / ENTRY_FILE).exists() and not replace:
      raise FileExistsError(f'{name!r} is already in {self.root}; pass --replace or a --name.')
    prompt = np.load(prompt_path).astype(np.float32)
    in_domain = result['config']['task']['eval_splits'][0]
    score = (result.get('metrics') or {}).get(in_domain, {}).get('score')
    entry = {
        'name': name, 'task': '+'.join(tasks), 'method': result['method'],
        'model_size': result['model_size'], 'd_model': int(prompt.shape[1]),
        'backbone': result['backbone'], 'length': int(prompt.shape[0]),
        'init': result.get('init'), 'seed': result['seed'], 'score': score,
        'metric': result.get('metric'), 'eval_set': in_domain,
        'source_run': str(run_dir.resolve()),
        'nearest_tokens': prompt_record.get('nearest_tokens'),
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
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from t5prompt.data import pipeline  # pylint: disable=import-outside-toplevel
  from t5prompt.data.tasks import get_task_spec  # pylint: disable=import-outside-toplevel
  from t5prompt.data.vocab import get_vocabulary  # pylint: disable=import-outside-toplevel
  from t5prompt.evaluate import evaluate  # pylint: disable=import-outside-toplevel
  from t5prompt.models import T5  # pylint: disable=import-outside-toplevel
  from t5prompt.prompts.soft_prompt import SoftPrompt  # pylint: disable=import-outside-toplevel
  spec = get_task_spec(task)
  data = pipeline.load_tokenized(task, 'validation', input_length, spec.target_length)
  scores = []
  for prompt in prompts:
    model = T5(backbone.config, prompt=SoftPrompt(prompt.shape[0]))
    params = {**backbone.params, 'prompt': {'prompt': jnp.asarray(prompt, jnp.float32)}}
    metrics = evaluate(model, params, {'dev': (spec, data)}, get_vocabulary(), batch_size,
                       max_examples)
    scores.append(metrics['dev']['score'])
  return scores
