"""PEFT prompt-tuning adapters <-> t5prompt prompts.

An adapter directory (what `peft.PeftModel.from_pretrained` loads) holds
`adapter_model.safetensors` with one float32 tensor `prompt_embeddings` [P, d_model] and
`adapter_config.json` with `num_transformer_submodules: 1`, so only the encoder is prompted, as
in the paper (PEFT's seq2seq default of 2 would also prompt the decoder). PEFT drops keys it does
not know, so t5prompt's own record (real init, task, scores) goes in `t5prompt_adapter.json`.
"""

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from t5prompt import atomic
from t5prompt.models.sizes import T5Config

ADAPTER_WEIGHTS = 'adapter_model.safetensors'
ADAPTER_CONFIG = 'adapter_config.json'
T5PROMPT_RECORD = 't5prompt_adapter.json'
PEFT_INIT_NAMES = {'random_uniform': 'RANDOM', 'sampled_vocab': 'SAMPLE_VOCAB', 'text': 'TEXT'}


def export_peft(directory: str | os.PathLike, prompt: np.ndarray, config: T5Config,
                base_model: str, record: dict[str, Any] | None = None) -> Path:
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  prompt = np.ascontiguousarray(prompt, np.float32)
  if prompt.ndim != 2 or prompt.shape[1] != config.d_model:
    raise ValueError(f'A prompt for this backbone has shape [P, {config.d_model}], '
                     f'got {prompt.shape}.')
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  record = dict(record or {})
  init = record.get('init', {}).get('name', 'random_uniform')
  atomic.write_bytes_with(directory / ADAPTER_WEIGHTS, lambda name: save_file(
      {'prompt_embeddings': prompt}, name, metadata={'format': 'pt'}))
  atomic.write_json(directory / ADAPTER_CONFIG, {
      'peft_type': 'PROMPT_TUNING',
      'task_type': 'SEQ_2_SEQ_LM',
      'num_virtual_tokens': int(prompt.shape[0]),
      'token_dim': config.d_model,
      'num_transformer_submodules': 1,
      'num_layers': config.num_encoder_layers,
      'num_attention_heads': config.num_heads,
      'base_model_name_or_path': base_model,
      'inference_mode': True,
      # PEFT knows RANDOM, SAMPLE_VOCAB and TEXT; others (class label, file) are recorded as
      # RANDOM here and exactly in t5prompt_adapter.json. The weights are what count at load.
      'prompt_tuning_init': PEFT_INIT_NAMES.get(init, 'RANDOM'),
      'prompt_tuning_init_text': record.get('init', {}).get('text'),
      'tokenizer_name_or_path': None,
  })
  atomic.write_json(directory / T5PROMPT_RECORD, record)
  return directory


def import_peft(directory: str | os.PathLike, d_model: int | None = None,
                encoder_rows_only: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
  """(prompt float32 [P, d], adapter config) from a PEFT prompt-tuning adapter directory."""
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  directory = Path(directory)
  for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
    if not (directory / name).is_file():
      raise FileNotFoundError(f'{directory} is not a PEFT adapter directory: {name} is missing '
                              '(expected what PeftModel.save_pretrained writes).')
  adapter = json.loads((directory / ADAPTER_CONFIG).read_text())
  if adapter.get('peft_type') != 'PROMPT_TUNING':
    raise ValueError(f'{directory} holds a {adapter.get("peft_type")} adapter; import-peft reads '
                     'PROMPT_TUNING adapters only.')
  weights = load_file(directory / ADAPTER_WEIGHTS)
  if 'prompt_embeddings' not in weights:
    raise ValueError(f'{directory / ADAPTER_WEIGHTS} has no prompt_embeddings tensor '
                     f'(found {sorted(weights)}).')
  prompt = weights['prompt_embeddings'].astype(np.float32)
  length = adapter['num_virtual_tokens']
  submodules = adapter.get('num_transformer_submodules') or 1
  if prompt.shape[0] != length * submodules:
    raise ValueError(f'prompt_embeddings has {prompt.shape[0]} rows, but the adapter config says '
                     f'{length} virtual tokens x {submodules} submodules.')
  if submodules == 2:
    if not encoder_rows_only:
      raise ValueError(
          f'{directory} prompts both encoder and decoder (num_transformer_submodules: 2); '
          't5prompt prompts the encoder only (as the paper). Pass --encoder-rows-only to keep '
          'the first num_virtual_tokens rows (the encoder prompt); outputs will then differ '
          'from PEFT\'s.')
    prompt = prompt[:length]
  if d_model is not None and prompt.shape[1] != d_model:
    raise ValueError(f'{directory} holds a prompt for d_model={prompt.shape[1]} (token_dim '
                     f'{adapter.get("token_dim")}), but this backbone has d_model={d_model}; '
                     'import it for a backbone of that width.')
  return prompt, adapter
