"""What a run leaves for other runs and tools.

  * `export_prompt`: the trained prompt or prefix (run_dir's prompt.npy / prefix.npz) with its
    record and, for a prompt, what it "says" (nearest vocabulary tokens);
  * `export_backbone`: a model-tuned run's weights as a backbone checkpoint (`model.checkpoint`
    names it), with its vocabulary and record, including its measured encoder reliance;
  * `export_peft` / `import_peft`: a run's artefact as the adapter PEFT's
    `PeftModel.from_pretrained` loads (a prompt as a prompt-tuning adapter, folded prefixes as
    a prefix-tuning adapter), and a PEFT prompt-tuning adapter as a prompt file.
"""

import os
from pathlib import Path

import jax
import numpy as np

from t5prompt import atomic, optim
from t5prompt.backbone import Backbone
from t5prompt.data import pipeline
from t5prompt.data.pretraining import RELIANCE_TASK
from t5prompt.data.sources import local_path
from t5prompt.data.tasks import get_task_spec
from t5prompt.evaluate import language_model_metrics
from t5prompt.models import T5, get_size
from t5prompt.models.convert import load_backbone, save_t5prompt
from t5prompt.prompts import methods, peft_format
from t5prompt.prompts.interpret import nearest_tokens
from t5prompt.run_config import load_run_config
from t5prompt.run_dir import RunDir
from t5prompt.run_setup import model_label, task_spec


def export_prompt(run_dir: RunDir, artefact: dict, backbone: Backbone, record: dict) -> Path:
  """The best prompt or prefix with its record (a prompt's nearest tokens added)."""
  if 'prompt' in artefact:  # what the prompt "says": its nearest vocabulary tokens
    record = {**record, 'nearest_tokens': nearest_tokens(
        artefact['prompt'], backbone.params['token_embedder']['embedding'], backbone.vocabulary)}
  return run_dir.export_prompt(artefact, record)


def _size_label(config) -> str:
  """A later stage keeps the name of the size it continues (not its checkpoint's folder)."""
  if config.model.checkpoint and not config.model.label:
    record = RunDir(local_path(config.model.checkpoint)).backbone_record()
    return record.get('size') or model_label(config)
  return model_label(config)


def export_backbone(config, model: T5, params: dict, run_dir: RunDir, backbone: Backbone,
                    record: dict) -> None:
  """The params as a backbone checkpoint in `run_dir` (with the vocabulary it was trained with)
  and its record: the text, the steps (`record`), losses, and the encoder reliance measured on
  the held-out prefix LM (what prompt methods need: a decoder that reads its input)."""
  held_out = pipeline.load_tokenized(RELIANCE_TASK, 'validation', config.task.input_length,
                                     get_task_spec(RELIANCE_TASK).target_length,
                                     backbone.vocabulary)
  language_model = language_model_metrics(model, params, held_out, config.train.eval_batch_size,
                                          config.train.max_eval_examples)
  params = jax.device_get(params)
  vocabulary_file = backbone.vocabulary.sentencepiece_model_file
  digest = save_t5prompt(run_dir.path, backbone.config, params, vocabulary_file)
  spec = task_spec(config)
  losses = run_dir.train_losses()
  run_dir.write_backbone_record({
      'encoder_reliance': language_model['reliance'],
      'held_out_lm_loss': language_model['loss'],
      'shuffled_input_lm_loss': language_model['shuffled_loss'],
      'reliance_examples': language_model['num_examples'],
      'train_loss': {'first': losses[0][1], 'last': losses[-1][1]} if losses else None,
      'params_hash': digest, 'size': _size_label(config),
      'num_params': optim.num_elements(params),
      'num_non_embedding_params': optim.num_non_embedding(params),
      'trained_from': backbone.source, 'task': spec.name, 'text': spec.description,
      'data': spec.source.locate(config.task.train_split),
      'vocabulary': Path(vocabulary_file).name, 'vocab_size': backbone.vocabulary.vocab_size,
      'batch_size': config.train.batch_size, **record})


def export_peft(workdir: str | os.PathLike, output: str | os.PathLike,
                base_model: str = '') -> str:
  """The run's artefact as a PEFT adapter in `output`; returns what was written."""
  config = load_run_config(workdir)
  kind = methods.get(config.method).artefact
  if not kind:
    exporting = ', '.join(name for name, method in methods.METHODS.items() if method.artefact)
    raise ValueError(f'{workdir} is a {config.method} run; only prompt methods ({exporting}) '
                     'export a PEFT adapter.')
  if kind == methods.TRIGGERS:
    raise ValueError(f'{workdir} is an autoprompt run: its prompt is text (the trigger tokens '
                     'in triggers.json), not a PEFT adapter.')
  run_dir = RunDir(workdir)
  artefact = run_dir.artefact_path(kind)
  if not artefact.is_file():
    raise FileNotFoundError(f'{artefact} is missing: the run has not finished; export after '
                            'it ends (or resume it).')
  record = run_dir.prompt_record()
  t5_config = (load_backbone(local_path(config.model.checkpoint))[0] if config.model.checkpoint
               else get_size(config.model.size))
  base_model = base_model or local_path(record['backbone']['source'])
  if kind == methods.PREFIX:  # the folded prefixes, as PEFT's prefix tuning saves them
    peft_format.export_peft_prefix(output, dict(np.load(artefact)), t5_config, base_model,
                                   record)
  else:  # prompt tuning, and P-tuning's / a projector's produced prompt
    peft_format.export_peft(output, np.load(artefact), t5_config, base_model, record)
  return f'wrote PEFT {kind}-tuning adapter to {output} (base model {base_model})'


def import_peft(source: str | os.PathLike, output: str | os.PathLike, d_model: int | None = None,
                encoder_rows_only: bool = False) -> str:
  """A PEFT prompt-tuning adapter's prompt as `output` (.npy, with a .json record beside it)."""
  prompt, adapter = peft_format.import_peft(source, d_model, encoder_rows_only)
  output = Path(output)
  atomic.write_npy(output, prompt)
  atomic.write_json(output.with_suffix('.json'), {
      'source': str(source), 'base_model': adapter.get('base_model_name_or_path'),
      'shape': list(prompt.shape), 'peft_init': adapter.get('prompt_tuning_init')})
  return (f'wrote prompt {prompt.shape} to {output}; train from it with '
          f'--config.prompt.init=file --config.prompt.init_file={output}')
