"""Report tables for prompt reuse: the SPoT transfer matrix, how well prompt similarity
predicts transfer, top-1 retrieval vs scratch vs the oracle, and prompt ensembles.

A transfer run is a prompt-tuning run initialised from a saved prompt (`init.name == 'file'`)
whose source task is recorded (`init.source.task`, from the library entry or run export it came
from); a scratch run is one of the same method, size and task without a file init. Similarity
is the cosine of the source prompt and the target task's scratch-trained prompt (SPoT's task
embedding), read from their prompt.npy files.
"""

import collections
import json
from pathlib import Path

import numpy as np

from t5prompt.prompts import similarity
from t5prompt.report import paper
from t5prompt.run_dir import ENSEMBLE, Result, RunDir

SPOT_METHOD = 'prompt_tuning'  # SPoT transfers prompt-tuning prompts


def _source_task(result: Result) -> str | None:
  init = result.init or {}
  return (init.get('source') or {}).get('task') if init.get('name') == 'file' else None


def transfer_pairs(runs: list[Result]) -> list[dict]:
  """One record per (size, target, source): mean transfer score, mean scratch score, gain and
  the similarity of the source prompt to the target's scratch prompt."""
  scratch, transfer, scratch_prompts, source_prompts = (collections.defaultdict(list),
                                                        collections.defaultdict(list), {}, {})
  for result in runs:
    if result.method != SPOT_METHOD:
      continue
    source = _source_task(result)
    key = (result.model_size, result.task)
    if source is None:
      scratch[key].append(result.score)
      if key not in scratch_prompts:
        try:
          scratch_prompts[key] = RunDir(result.path).prompt()
        except FileNotFoundError:
          pass
    else:
      transfer[key + (source,)].append(result.score)
      path = Path(result.init['path'])
      if path.is_file():
        source_prompts[key + (source,)] = np.load(path)
  pairs = []
  for (size, target, source), scores in sorted(transfer.items()):
    if (size, target) not in scratch:
      continue
    base = float(np.mean(scratch[(size, target)]))
    query = scratch_prompts.get((size, target))
    prompt = source_prompts.get((size, target, source))
    comparable = query is not None and prompt is not None and query.shape == prompt.shape
    cosine = similarity.cosine(prompt, query) if comparable else None
    pairs.append({'size': size, 'target': target, 'source': source,
                  'score': float(np.mean(scores)), 'n': len(scores), 'scratch': base,
                  'gain': float(np.mean(scores)) - base, 'similarity': cosine})
  return pairs


def _spearman(x, y) -> float:
  rank = lambda v: np.argsort(np.argsort(v)).astype(np.float64)  # no ties expected in cosines
  return float(np.corrcoef(rank(x), rank(y))[0, 1])


def transfer_tables(runs: list[Result]) -> str:
  """The transfer section of the report in Markdown ('' when there are no transfer runs)."""
  pairs = transfer_pairs(runs)
  if not pairs:
    return ''
  lines = ['# Prompt transfer (SPoT): target score from each source prompt\n',
           '| size | target | source | score | scratch | gain | cosine(source, target) |',
           '|---|---|---|---|---|---|---|']
  for p in pairs:
    similarity = '' if p['similarity'] is None else f'{p["similarity"]:.3f}'
    lines.append(f'| {p["size"]} | {p["target"]} | {p["source"]} | {p["score"]:.1f} | '
                 f'{p["scratch"]:.1f} | {p["gain"]:+.1f} | {similarity} |')
  lines += ['', '## Retrieval: does similarity predict the gain?\n',
            '| size | pairs | Pearson(sim, gain) | Spearman(sim, gain) | scratch | top-1 '
            'retrieved | oracle |', '|---|---|---|---|---|---|---|']
  by_size = collections.defaultdict(list)
  for p in pairs:
    by_size[p['size']].append(p)
  for size, group in by_size.items():
    known = [p for p in group if p['similarity'] is not None]
    pearson = spearman = ''
    if len(known) >= 3 and len({p['gain'] for p in known}) > 1:
      sims, gains = [p['similarity'] for p in known], [p['gain'] for p in known]
      pearson, spearman = f'{np.corrcoef(sims, gains)[0, 1]:+.2f}', f'{_spearman(sims, gains):+.2f}'
    targets = sorted({p['target'] for p in group})
    scratch = np.mean([next(p['scratch'] for p in group if p['target'] == t) for t in targets])
    top1 = np.mean([max((p for p in known if p['target'] == t), key=lambda p: p['similarity'],
                        default={'score': np.nan})['score'] for t in targets])
    oracle = np.mean([max(p['score'] for p in group if p['target'] == t) for t in targets])
    lines.append(f'| {size} | {len(group)} | {pearson} | {spearman} | {scratch:.1f} | '
                 f'{top1:.1f} | {oracle:.1f} |')
  s = paper.SPOT_RETRIEVAL
  lines += ['', f'Paper (SPoT, T5 Base, averaged over targets): scratch {s["scratch"]}, top-1 '
            f'by cosine {s["top1_cosine"]}, oracle {s["oracle"]}.', '']
  return '\n'.join(lines)


def ensemble_table(directory: str | Path) -> str:
  """Every ensemble.json (`t5prompt ensemble`) under `directory`, beside the paper's table."""
  rows = []
  for path in sorted(Path(directory).rglob(ENSEMBLE)):
    record = json.loads(path.read_text())
    individual = record['individual_scores']
    rows.append(f'| {record["task"]} | {record["model_size"]} | {len(individual)} | '
                f'{np.mean(individual):.1f} | {max(individual):.1f} | '
                f'{record["majority_vote"]["score"]:.1f} | '
                f'{record["mean_log_likelihood"]["score"]:.1f} |')
  if not rows:
    return ''
  e = paper.ENSEMBLE
  return '\n'.join(['# Prompt ensembles: N prompts for one task, one frozen model\n',
                    '| task | size | prompts | average | best single | majority vote | mean '
                    'log-likelihood |', '|---|---|---|---|---|---|---|', *rows, '',
                    f'Paper (T5 XXL, SuperGLUE, 5 prompts): average {e["average"]}, best single '
                    f'{e["best"]}, majority vote {e["majority_vote"]}.', ''])
