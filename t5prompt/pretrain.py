"""`t5prompt pretrain`: a backbone pre-trained from random weights on the shipped text, in two
stages of the ordinary train loop (checkpoints, exact resume, SIGTERM, NaN stop, metrics):

  1. span corruption (T5 v1.1's objective), mixed half and half with T5's BERT-style
     denoising                                  -> <workdir>/span_corruption
  2. prefix LM from stage 1 ("LM adaptation")   -> <workdir>/lm_adapted   (the paper's kind)

Each stage is model tuning on a pre-training task (`data.pretraining`) that exports its best
params as a backbone (`train.export_backbone`): a t5prompt checkpoint with its vocabulary and
`backbone.json` (the text, steps, losses and encoder reliance). A pre-training config
(configs/pretrain/*.py) is the two stages' run configs; `model.vocabulary` names the
vocabulary both use (stage 2 reads stage 1's from its directory).
"""

import os
from pathlib import Path

import ml_collections

from t5prompt import run_config
from t5prompt.data.sources import cache_reference
from t5prompt.run_dir import RunDir
from t5prompt.train import train

STAGES = ('span_corruption', 'lm_adaptation')
DIRECTORIES = {'span_corruption': 'span_corruption', 'lm_adaptation': 'lm_adapted'}
TASKS = {'span_corruption': 'pretrain_span_corruption', 'lm_adaptation': 'pretrain_prefix_lm'}
# Stage 1 mixes in BERT-style denoising (data.pretraining says why); examples-proportional
# over the same chunks: half and half.
MIXTURES = {'span_corruption': ('pretrain_denoising',), 'lm_adaptation': ()}
TARGET_LENGTHS = {'span_corruption': 72, 'lm_adaptation': 24}  # a whole chunk + EOS; 16 + EOS
RELIANCE_EVAL = 'pretrain_prefix_lm:validation'  # encoder reliance is measured on the prefix LM


def stage_config(stage: str, size: str, vocabulary: str) -> ml_collections.ConfigDict:
  """One stage's run config: model tuning of `size` on the stage's pre-training task."""
  config = run_config.default_config('model_tuning')
  config.model.size = size
  config.model.vocabulary = vocabulary
  config.model.dropout_rate = 0.0
  config.task.name = TASKS[stage]
  config.task.mixture = MIXTURES[stage]
  config.task.input_length = 72  # a chunk of 64 tokens with its corruption or EOS
  config.task.target_length = TARGET_LENGTHS[stage]
  config.task.extra_evals = () if stage == 'lm_adaptation' else (RELIANCE_EVAL,)
  config.optimizer.update(name='adam', learning_rate=3e-3, warmup_steps=100, b2=0.99,
                          grad_clip_norm=1.0)
  config.train.update(steps=1000, batch_size=32, eval_every=500, checkpoint_every=500,
                      log_every=50, eval_batch_size=128, max_eval_examples=1024,
                      export_backbone=True)
  return config


def default_config(size: str = 'ladder-1',
                   vocabulary: str = 'miniature-4000') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  for stage in STAGES:
    config[stage] = stage_config(stage, size, vocabulary)
  return config


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Both stages' run configs, validated before any compute."""
  if set(config) != set(STAGES):
    raise ValueError(f'A pre-training config has the stages {STAGES}; got {sorted(config)}.')
  for stage in STAGES:
    run_config.validate(config[stage])
    if not config[stage].train.export_backbone:
      raise ValueError(f'{stage}.train.export_backbone must be True: a stage exports the '
                       'backbone the next one (and prompt tuning) starts from.')
  return config


def _stage_configs(config, workdir: Path) -> list[tuple[ml_collections.ConfigDict, Path]]:
  """Each stage's run config with its directory; stage 2 starts from stage 1's backbone."""
  out, previous = [], None
  for stage in STAGES:
    stage_run = ml_collections.ConfigDict(config[stage].to_dict())
    if previous is not None:
      stage_run.model.checkpoint = cache_reference(previous)
    out.append((stage_run, workdir / DIRECTORIES[stage]))
    previous = workdir / DIRECTORIES[stage]
  return out


def finished(config, workdir: str | os.PathLike) -> bool:
  return all(RunDir(path).finished(stage_run, run_config.default_config())
             for stage_run, path in _stage_configs(config, Path(workdir)))


def load_config(path: str | Path, overrides: list[str] = ()) -> ml_collections.ConfigDict:
  """A pre-training config file (configs/pretrain/*.py[:arg]) with overrides, validated."""
  config = run_config.config_from_file(path)
  for override in overrides:
    run_config.apply_override(config, override)
  return validate(config)


def run(config, workdir: str | os.PathLike) -> dict[str, str]:
  """Runs (or resumes, or recognises) both stages; returns {stage: backbone directory}."""
  directories = {}
  for stage_run, path in _stage_configs(validate(config), Path(workdir)):
    train(run_config.validate(stage_run), path)
    directories[path.name] = str(path)
  return directories
