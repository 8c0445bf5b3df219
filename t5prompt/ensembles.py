"""Evaluating a prompt ensemble: the prompts of several finished runs of one task on one
backbone, run together as one batch on the frozen model (`prompts.ensemble`), scored on the
task's eval split: each prompt alone, the majority vote and the mean log-likelihood."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from t5prompt import atomic, metrics
from t5prompt.data import pipeline
from t5prompt.data.tasks import get_task_spec
from t5prompt.data.vocab import get_vocabulary
from t5prompt.evaluate import label_targets
from t5prompt.models import T5
from t5prompt.prompts import ensemble
from t5prompt.prompts.soft_prompt import PromptBank, bank_from_prompts
from t5prompt.run_setup import backbone_from_source


def _run(run_dir: Path) -> tuple[dict, np.ndarray]:
  result_path, prompt_path = run_dir / 'result.json', run_dir / 'prompt.npy'
  if not result_path.is_file() or not prompt_path.is_file():
    raise FileNotFoundError(f'{run_dir} is not a finished prompt run (needs result.json and '
                            'prompt.npy).')
  return json.loads(result_path.read_text()), np.load(prompt_path)


def evaluate_ensemble(run_dirs: list[str | Path], output: str | Path = '',
                      batch_size: int = 32) -> dict:
  """Scores of each prompt and of the two ensembles; written to `output`/ensemble.json."""
  if len(run_dirs) < 2:
    raise ValueError('An ensemble needs at least two runs.')
  runs = [_run(Path(d)) for d in run_dirs]
  first = runs[0][0]
  for result, prompt in runs:
    if (result['task'], result['backbone']['params_hash']) != (
        first['task'], first['backbone']['params_hash']) or prompt.shape != runs[0][1].shape:
      raise ValueError('Ensembled runs must share task, backbone and prompt shape; '
                       f'{result["task"]} on {result["backbone"]["source"]} {prompt.shape} vs '
                       f'{first["task"]} on {first["backbone"]["source"]} {runs[0][1].shape}.')
  config = first['config']
  spec = get_task_spec(first['task'])
  if not spec.label_names:
    raise ValueError(f'{spec.name} is not a classification task; ensembles vote over labels.')
  split = config['task']['eval_splits'][0]
  target_length = config['task']['target_length'] or spec.target_length
  data = pipeline.load_tokenized(spec.name, split, config['task']['input_length'], target_length)
  backbone = backbone_from_source(first['backbone']['source'])
  prompts = [prompt for _, prompt in runs]
  model = T5(backbone.config, prompt=PromptBank(len(prompts), prompts[0].shape[0]))
  params = {**backbone.params, 'prompt': bank_from_prompts(prompts)}
  labels = label_targets(spec, get_vocabulary(), target_length)
  scores = []
  for batch, count in pipeline.eval_batches(data, batch_size):
    scores.append(np.asarray(ensemble.ensemble_scores(model, params, jnp.asarray(
        batch['inputs']), labels))[:count])
  predictions = ensemble.ensemble_predictions(np.concatenate(scores))
  record = {
      'task': first['task'], 'model_size': first['model_size'], 'eval_set': split,
      'runs': [str(d) for d in run_dirs],
      'individual_scores': [metrics.compute(spec.metric, p, data.records)['score']
                            for p in predictions['individual']],
      'majority_vote': metrics.compute(spec.metric, predictions['majority_vote'], data.records),
      'mean_log_likelihood': metrics.compute(spec.metric, predictions['mean_log_likelihood'],
                                             data.records),
  }
  if output:
    Path(output).mkdir(parents=True, exist_ok=True)
    atomic.write_json(Path(output) / 'ensemble.json', record)
  return record
