"""PEFT prompt-tuning adapters <-> t5prompt prompts (and prefix export).

An adapter directory (what `peft.PeftModel.from_pretrained` loads) holds
`adapter_model.safetensors` with one float32 tensor `prompt_embeddings` [P, d_model] and
`adapter_config.json` with `num_transformer_submodules: 1`, so only the encoder is prompted, as
in the paper (PEFT's seq2seq default of 2 would also prompt the decoder). PEFT drops keys it does
not know, so t5prompt's own record (real init, task, scores) goes in `t5prompt_adapter.json`.
The adapter config says `prompt_tuning_init: RANDOM` whatever the init was: PEFT re-runs a TEXT
init at load (and refuses it without a tokenizer) before the saved weights replace it.
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
      'prompt_tuning_init': 'RANDOM',  # the real init: t5prompt_adapter.json
      'prompt_tuning_init_text': None,
      'tokenizer_name_or_path': None,
  })
  atomic.write_json(directory / T5PROMPT_RECORD, record)
  return directory


def export_peft_prefix(directory: str | os.PathLike, prefix: dict[str, np.ndarray],
                       config: T5Config, base_model: str, record: dict[str, Any] | None = None
                       ) -> Path:
  """A PEFT PREFIX_TUNING adapter from folded prefixes (`exported_prompt`'s arrays).

  PEFT's T5 takes prefixes in decoder self-attention only (they travel as past_key_values), so
  only a prefix trained with `prompt.attention=('decoder_self',)` can be exported. The weights
  are PEFT's saved form, the MLP already applied: `prompt_embeddings` [P, slots * 2 * h * k]
  ordered (slot, key/value, head, d_kv). PEFT's seq2seq layout hands decoder layer i the slots
  (2i mod num_layers, +1) as (self, cross) prefixes and drops the cross one; declaring
  num_layers = 2L makes that slots (2i, 2i + 1), so slot 2i holds layer i and odd slots are 0.
  (num_transformer_submodules=1 would mix the encoder's keys into the prefix cache.)
  """
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  if set(prefix) != {'decoder_self_key', 'decoder_self_value'}:
    kinds = sorted({name.rsplit('_', 1)[0] for name in prefix})
    raise ValueError(f'PEFT prefix tuning on T5 prefixes decoder self-attention only; this '
                     f'prefix covers {kinds}. Train with '
                     "--config.prompt.attention=\"('decoder_self',)\" to export it.")
  key, value = prefix['decoder_self_key'], prefix['decoder_self_value']  # [L, P, h, k]
  layers, length, heads, d_kv = key.shape
  slots = np.zeros((length, 2 * layers, 2, heads, d_kv), np.float32)
  slots[:, 0::2, 0] = key.transpose(1, 0, 2, 3)
  slots[:, 0::2, 1] = value.transpose(1, 0, 2, 3)
  flat = np.ascontiguousarray(slots.reshape(length, -1))
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  atomic.write_bytes_with(directory / ADAPTER_WEIGHTS, lambda name: save_file(
      {'prompt_embeddings': flat}, name, metadata={'format': 'pt'}))
  atomic.write_json(directory / ADAPTER_CONFIG, {
      'peft_type': 'PREFIX_TUNING', 'task_type': 'SEQ_2_SEQ_LM',
      'num_virtual_tokens': length, 'token_dim': heads * d_kv,
      'num_transformer_submodules': 2, 'num_layers': 2 * layers, 'num_attention_heads': heads,
      'encoder_hidden_size': config.d_model, 'prefix_projection': False,
      'base_model_name_or_path': base_model, 'inference_mode': True,
  })
  atomic.write_json(directory / T5PROMPT_RECORD, dict(record or {}))
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
