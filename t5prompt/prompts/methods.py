"""The prompt-method family on one frozen T5: which module each method adds, what it trains,
how its training-time reparameterisation folds away for inference, and what it exports.

  method               adds (params subtree)        trains       inference / export
  prompt_tuning        SoftPrompt (prompt/)         prompt/      prompt.npy [P, d]
  p_tuning             PromptEncoder (prompt/)      prompt/      encoder folded -> prompt.npy
  cross_model_transfer ProjectedPrompt (prompt/)    projector    projected -> prompt.npy
  prefix_tuning        Prefix + MLP (prefix/)       prefix/      MLP folded -> prefix.npz
  deep_prompt_tuning   Prefix, direct (prefix/)     prefix/      prefix.npz
  model_tuning         nothing                      everything   (the checkpoints)
  prompt_design        nothing (a hand-written      nothing      (zero/few-shot, no training)
                       template, data.templates)
"""

import numpy as np
from flax import linen as nn

from t5prompt.models.sizes import T5Config
from t5prompt.models.t5 import T5
from t5prompt.partitioning import to_host
from t5prompt.prompts import prefix as prefix_lib
from t5prompt.prompts import prompt_encoder as encoder_lib
from t5prompt.prompts.initializers import load_prompt_file
from t5prompt.prompts.projector import ProjectedPrompt
from t5prompt.prompts.soft_prompt import SoftPrompt

METHODS = ('prompt_tuning', 'model_tuning', 'prefix_tuning', 'deep_prompt_tuning', 'p_tuning',
           'cross_model_transfer', 'prompt_design')
# Prepend [P, d] to the encoder input.
INPUT_PROMPT_METHODS = ('prompt_tuning', 'p_tuning', 'cross_model_transfer')
PREFIX_METHODS = ('prefix_tuning', 'deep_prompt_tuning')  # key/values at attention layers
PROMPT_METHODS = INPUT_PROMPT_METHODS + PREFIX_METHODS  # the methods with a prompt length


def method_options(config) -> dict:
  """`build_model`'s keyword options from a run config (its `prompt` section; cross-model
  transfer also reads the source prompt's width from `prompt.init_file`)."""
  prompt = config.prompt
  options = dict(attention=tuple(prompt.attention), layer_lengths=tuple(prompt.layer_lengths),
                 reparam_hidden=prompt.reparam_hidden, encoder=prompt.encoder)
  if config.method == 'cross_model_transfer':
    options['source_dim'] = int(load_prompt_file(prompt.init_file).shape[1])
  return options


def build_model(config: T5Config, method: str, prompt_length: int, *,
                attention: tuple[str, ...] = prefix_lib.ATTENTION_KINDS,
                layer_lengths: tuple[int, ...] = (), reparam_hidden: int = 512,
                encoder: str = 'lstm', source_dim: int = 0) -> T5:
  """The T5 a method trains (`reparam_hidden`: prefix MLP / P-tuning encoder / projector hidden
  size; `source_dim`: the transferred prompt's width, cross-model transfer)."""
  if method == 'prompt_tuning':
    return T5(config, prompt=SoftPrompt(prompt_length))
  if method == 'p_tuning':
    return T5(config, prompt=encoder_lib.PromptEncoder(prompt_length, encoder, reparam_hidden))
  if method == 'cross_model_transfer':
    return T5(config, prompt=ProjectedPrompt(prompt_length, source_dim or config.d_model,
                                             reparam_hidden))
  if method in PREFIX_METHODS:
    hidden = reparam_hidden if method == 'prefix_tuning' else 0
    return T5(config, prefix=prefix_lib.Prefix(config, prompt_length, tuple(attention),
                                               tuple(layer_lengths), hidden))
  if method in ('model_tuning', 'prompt_design'):
    return T5(config)
  raise ValueError(f'Unknown method {method!r}; choose one of {", ".join(METHODS)}.')


def module_params(model: T5, rng) -> tuple[str, dict]:
  """('prompt' | 'prefix', params) of the method's own module from its initialiser, without
  running (or initialising) the backbone."""
  if model.prompt is not None:
    variables = model.prompt.clone(parent=None).init(
        rng, model.config.d_model, method=type(model.prompt).produce_prompt)
    return 'prompt', nn.unbox(variables)['params']
  return 'prefix', nn.unbox(model.prefix.clone(parent=None).init(rng))['params']


def for_inference(model: T5, params: dict) -> tuple[T5, dict]:
  """(model, params) with any training-time reparameterisation folded away: P-tuning and a
  projected prompt become plain prompt tuning, prefix tuning becomes direct prefixes. Outputs
  are unchanged."""
  if isinstance(model.prompt, (encoder_lib.PromptEncoder, ProjectedPrompt)):
    prompt = model.prompt.clone(parent=None).apply(
        {'params': params['prompt']}, model.config.d_model,
        method=type(model.prompt).produce_prompt)
    return (T5(model.config, prompt=SoftPrompt(model.prompt.length)),
            {**params, 'prompt': {'prompt': prompt}})
  if model.prefix is not None and model.prefix.reparam_hidden:
    module, folded = prefix_lib.fold(model.prefix, params['prefix'])
    return T5(model.config, prefix=module), {**params, 'prefix': folded}
  return model, params


def exported_prompt(model: T5, params: dict) -> dict[str, np.ndarray] | None:
  """The portable artefact of a trained prompt method, after folding: {'prompt': [P, d]} or
  {'<kind>_key' | '<kind>_value': [layers, P, h, k]}; None for model tuning / prompt design.
  `params` needs only the method's subtree (`prompt` or `prefix`), frozen parts included (a
  projector's source prompt). Call it on every host."""
  model, params = for_inference(model, params)
  if model.prompt is not None:
    return {'prompt': to_host(params['prompt']['prompt']).astype(np.float32)}
  if model.prefix is not None:
    return {name: to_host(value).astype(np.float32) for name, value in params['prefix'].items()}
  return None
