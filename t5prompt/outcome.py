"""A run's outcome as its typed `Result` (result.json), from what the run did: one place for
every kind of run (trained, searched, evaluated as it is)."""

import json

import jax

from t5prompt import optim
from t5prompt.backbone import Backbone
from t5prompt.prompts import methods
from t5prompt.run_dir import Result
from t5prompt.run_setup import model_label, task_spec


def truncated(eval_sets: dict) -> dict:
  """Per eval set, [inputs, targets] cut to the task's lengths."""
  return {name: [data.truncated_inputs, data.truncated_targets]
          for name, (_, data) in eval_sets.items()}


def result(config, backbone: Backbone, *, metrics: dict, init: dict | None, steps: int,
           best_step: int | None, num_trainable: int, num_stored: int, truncated: dict,
           wall_time_s: float, stopped_early: bool = False,
           initial_metrics: dict | None = None) -> Result:
  uses_prompt = methods.get(config.method).uses_prompt
  return Result(
      config=json.loads(config.to_json()), model_size=model_label(config),
      num_params=optim.num_elements(backbone.params),
      num_non_embedding_params=optim.num_non_embedding(backbone.params),
      d_model=backbone.config.d_model,
      series=config.series or config.method, method=config.method, task=config.task.name,
      seed=config.train.seed, prompt_length=config.prompt.length if uses_prompt else 0,
      init=init, steps=steps, stopped_early=stopped_early, metrics=metrics,
      metric=task_spec(config).metric, best_step=best_step, initial_metrics=initial_metrics,
      num_trainable_params=num_trainable, num_stored_params=num_stored, truncated=truncated,
      backbone={'source': backbone.source, 'params_hash': backbone.params_hash},
      wall_time_s=wall_time_s, device_kind=jax.devices()[0].device_kind,
      num_devices=jax.device_count())
