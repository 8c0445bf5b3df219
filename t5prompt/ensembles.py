"""Evaluating a prompt ensemble: the prompts of several finished runs of one task on one
backbone, run together as one batch on the frozen model (`prompts.ensemble`), scored on the
task's eval split: each prompt alone, the majority vote and the mean log-likelihood."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from t5prompt import atomic, metrics
from t5prompt.backbone import backbone_from_source
from t5prompt.data import pipeline
from t5prompt.data.tasks import get_task_spec
from t5prompt.evaluate import label_targets
from t5prompt.library import finished_prompt_run
from t5prompt.models import T5
from t5prompt.prompts import ensemble
from t5prompt.prompts.soft_prompt import PromptBank, bank_from_prompts
from t5prompt.run_dir import ENSEMBLE, Result, RunDir


def _run(run_dir: RunDir) -> tuple[Result, np.ndarray]:
  return finished_prompt_run(run_dir), run_dir.prompt()


def evaluate_ensemble(run_dirs: list[str | Path], output: str | Path = '',
                      batch_size: int = 32) -> dict:
  """Scores of each prompt and of the two ensembles; written to `output` (run_dir.ENSEMBLE)."""
  if len(run_dirs) < 2:
    raise ValueError('An ensemble needs at least two runs.')
  runs = [_run(RunDir(d)) for d in run_dirs]
  first = runs[0][0]
  for result, prompt in runs:
    if (result.task, result.backbone['params_hash']) != (
        first.task, first.backbone['params_hash']) or prompt.shape != runs[0][1].shape:
      raise ValueError('Ensembled runs must share task, backbone and prompt shape; '
                       f'{result.task} on {result.backbone["source"]} {prompt.shape} vs '
                       f'{first.task} on {first.backbone["source"]} {runs[0][1].shape}.')
  task_config = first.config['task']
  spec = get_task_spec(first.task)
  if not spec.label_names:
    raise ValueError(f'{spec.name} is not a classification task; ensembles vote over labels.')
  split = first.in_domain
  target_length = task_config['target_length'] or spec.target_length
  backbone = backbone_from_source(first.backbone['source'])
  data = pipeline.load_tokenized(spec.name, split, task_config['input_length'], target_length,
                                 backbone.vocabulary)
  prompts = [prompt for _, prompt in runs]
  model = T5(backbone.config, prompt=PromptBank(len(prompts), prompts[0].shape[0]))
  params = {**backbone.params, 'prompt': bank_from_prompts(prompts)}
  labels = label_targets(spec, backbone.vocabulary, target_length)
  scores = []
  for batch, count in pipeline.eval_batches(data, batch_size):
    scores.append(np.asarray(ensemble.ensemble_scores(model, params, jnp.asarray(
        batch['inputs']), labels))[:count])
  predictions = ensemble.ensemble_predictions(np.concatenate(scores))
  record = {
      'task': first.task, 'model_size': first.model_size, 'eval_set': split,
      'runs': [str(d) for d in run_dirs],
      'individual_scores': [metrics.compute(spec.metric, p, data.records)['score']
                            for p in predictions['individual']],
      'majority_vote': metrics.compute(spec.metric, predictions['majority_vote'], data.records),
      'mean_log_likelihood': metrics.compute(spec.metric, predictions['mean_log_likelihood'],
                                             data.records),
  }
  if output:
    Path(output).mkdir(parents=True, exist_ok=True)
    atomic.write_json(Path(output) / ENSEMBLE, record)
  return record


def summary(record: dict) -> str:
  """One line: each prompt's score, their average and best, and the two ensembles'."""
  scores = record['individual_scores']
  return (f'{record["task"]} ({record["model_size"]}, {record["eval_set"]}), {len(scores)} '
          f'prompts: each {", ".join(f"{s:.1f}" for s in scores)}; average '
          f'{sum(scores) / len(scores):.1f}, best {max(scores):.1f}; majority vote '
          f'{record["majority_vote"]["score"]:.1f}; mean log-likelihood '
          f'{record["mean_log_likelihood"]["score"]:.1f}')
