"""The method family on one frozen T5: one record per method, and the few functions that read it.

Everything that depends on the method asks its record here: the model it trains, what trains,
how its params start, what a finished run keeps and exports, its default optimizer settings,
its config checks. Adding a method is its own module plus one row of `METHODS`.

  method               adds (params subtree)        trains       artefact (folded)
  prompt_tuning        SoftPrompt (prompt/)         prompt/      prompt [P, d]
  multitask_prompt_    PromptBank (prompt/), one    prompt/      a prompt [P, d] per task
    tuning             prompt per task of a mixture              (prompts/<task>/)
  p_tuning             PromptEncoder (prompt/)      prompt/      encoder folded -> prompt
  cross_model_transfer ProjectedPrompt (prompt/)    projector    projected -> prompt
  prefix_tuning        Prefix + MLP (prefix/)       prefix/      MLP folded -> prefix
  deep_prompt_tuning   Prefix, direct (prefix/)     prefix/      prefix
  model_tuning         nothing                      everything   (the checkpoints)
  prompt_design        nothing (a hand-written      nothing      (zero/few-shot, no training)
                       template, data.templates)
  autoprompt           nothing (k trigger tokens    nothing      triggers.json: k tokens
                       in prompt.template)          (searched)   (search.py)
"""

import dataclasses
from typing import Any, Callable, Optional

import numpy as np
from flax import linen as nn

from t5prompt.data.templates import template_task
from t5prompt.models.sizes import T5Config
from t5prompt.models.t5 import T5
from t5prompt.optim import LabelRules
from t5prompt.partitioning import to_host
from t5prompt.prompts import autoprompt, design
from t5prompt.prompts import prefix as prefix_lib
from t5prompt.prompts import prompt_encoder as encoder_lib
from t5prompt.prompts.initializers import INIT_NAMES, load_prompt_file, make_initializer
from t5prompt.prompts.projector import ProjectedPrompt
from t5prompt.prompts.soft_prompt import PromptBank, SoftPrompt

# The kinds of artefact a prompt method keeps: an input prompt, prefixes, trigger tokens.
PROMPT, PREFIX, TRIGGERS = 'prompt', 'prefix', 'triggers'


@dataclasses.dataclass(frozen=True)
class PromptOptions:
  """The run config's `prompt` section, as the prompt modules take it."""
  length: int = 100
  init: str = 'random_uniform'
  init_text: str = ''
  init_file: str = ''
  ppt_runs: str = ''
  ppt_choice: str = 'matching'
  vocab_population: int = 5000
  attention: tuple[str, ...] = prefix_lib.ATTENTION_KINDS
  layer_lengths: tuple[int, ...] = ()
  reparam_hidden: int = 512
  encoder: str = 'lstm'
  num_tasks: int = 1  # the run's task and the tasks mixed in (one prompt each, if per task)

  @classmethod
  def from_config(cls, config) -> 'PromptOptions':
    """From a run config: its `prompt` section and the number of tasks it trains on."""
    fields = {field.name for field in dataclasses.fields(cls)}
    values = {key: value for key, value in config.prompt.items() if key in fields}
    values['num_tasks'] = 1 + len(config.task.mixture)
    return cls(**{key: tuple(value) if isinstance(value, list) else value
                  for key, value in values.items()})


@dataclasses.dataclass(frozen=True)
class InitContext:
  """What a prompt initialiser may read: the frozen token embeddings, the vocabulary, the
  task's verbalised labels (class-label init), the task and the backbone's hash (PPT)."""
  embedding: Any
  vocabulary: Any
  label_names: tuple[str, ...] = ()
  task: str = ''  # the run's task (PPT picks the prompt of its format)
  params_hash: str = ''  # the backbone's (PPT's prompt must come from the same one)


# (T5 config, prompt options, init context or None) -> (the T5 the method trains, init record).
# Without a context (shapes only: the planner) the modules keep their default initialisers.
ModelBuilder = Callable[[T5Config, PromptOptions, Optional[InitContext]],
                        tuple[T5, Optional[dict]]]


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  make_model: ModelBuilder
  trainable_rules: LabelRules  # the first matching regex wins; every leaf must match one
  artefact: str = ''  # PROMPT | PREFIX | TRIGGERS | '' (nothing beyond the checkpoints)
  optimizer: tuple[tuple[str, Any], ...] = ()  # defaults over the run config's `optimizer`
  trains: bool = True  # False: no gradient training (the run evaluates, or searches)
  searches: bool = False  # the run is a discrete search over tokens (search.py), no weights
  trains_backbone: bool = False  # every weight trains (its run can export a backbone)
  # One prompt per task of the mixture: batches carry each example's task (`prompt_ids`),
  # each task is evaluated and exported with its own prompt.
  per_task: bool = False
  # Prepares the eval sets of a run: (config, eval sets, vocabulary) -> (eval sets, the record
  # of what the method did, e.g. prompt design's demonstrations); None: use them as they are.
  prepare_eval: Optional[Callable[[Any, dict, Any], tuple[dict, dict]]] = None
  # The task a run of this method evaluates, from the config's task name.
  eval_task: Callable[[str], str] = lambda name: name
  # Config problems particular to this method: config -> list of messages.
  check: Callable[[Any], list[str]] = lambda config: []

  @property
  def uses_prompt(self) -> bool:
    """Whether the `prompt` config section (length, init, ...) shapes this method's run."""
    return bool(self.artefact)


def _prompt_tuning(config: T5Config, options: PromptOptions, init: InitContext | None):
  if init is None:
    return T5(config, prompt=SoftPrompt(options.length)), None
  init_fn, record = make_initializer(
      options.init, embedding=init.embedding, vocabulary=init.vocabulary,
      labels=init.label_names, init_text=options.init_text, path=options.init_file,
      population=options.vocab_population, ppt_runs=options.ppt_runs,
      ppt_choice=options.ppt_choice, task=init.task, params_hash=init.params_hash)
  return T5(config, prompt=SoftPrompt(options.length, init_fn)), record


def _multitask_prompt_tuning(config: T5Config, options: PromptOptions,
                             init: InitContext | None):
  if init is None:
    return T5(config, prompt=PromptBank(options.num_tasks, options.length)), None
  init_fn, record = make_initializer(
      options.init, embedding=init.embedding, vocabulary=init.vocabulary,
      population=options.vocab_population)
  return T5(config, prompt=PromptBank(options.num_tasks, options.length, init_fn)), record


def _check_multitask_prompt_tuning(config) -> list[str]:
  problems = []
  if not tuple(config.task.mixture):
    problems.append('method=multitask_prompt_tuning trains a prompt per task of a mixture: '
                    'set task.mixture (and task.extra_evals to score each task)')
  if config.prompt.init not in ('random_uniform', 'sampled_vocab'):
    problems.append('method=multitask_prompt_tuning starts every task\'s prompt the same way: '
                    'prompt.init must be random_uniform or sampled_vocab')
  return problems


def _p_tuning(config: T5Config, options: PromptOptions, init: InitContext | None):
  # The encoder starts from its own initialisers, as PEFT's.
  module = encoder_lib.PromptEncoder(options.length, options.encoder, options.reparam_hidden)
  return T5(config, prompt=module), None if init is None else {'name': 'module_default'}


def _cross_model_transfer(config: T5Config, options: PromptOptions, init: InitContext | None):
  if not options.init_file:  # shapes only (the planner): a source as wide as this model
    return T5(config, prompt=ProjectedPrompt(options.length, config.d_model,
                                             options.reparam_hidden)), None
  source = load_prompt_file(options.init_file)
  if source.shape[0] != options.length:
    raise ValueError(f'The source prompt {options.init_file} has shape {source.shape}; set '
                     f'prompt.length={source.shape[0]}.')
  source_init, record = make_initializer('file', embedding=None, path=options.init_file)
  module = ProjectedPrompt(options.length, source.shape[1], options.reparam_hidden, source_init)
  return T5(config, prompt=module), None if init is None else record


def _check_cross_model_transfer(config) -> list[str]:
  if config.prompt.init == 'file' and config.prompt.init_file:
    return []
  return ['method=cross_model_transfer projects a saved prompt: set prompt.init="file" and '
          "prompt.init_file to its prompt.npy (e.g. from a smaller model's run)"]


def _prefix(reparameterised: bool) -> ModelBuilder:
  def make_model(config: T5Config, options: PromptOptions, init: InitContext | None):
    hidden = options.reparam_hidden if reparameterised else 0
    module = prefix_lib.Prefix(config, options.length, tuple(options.attention),
                               tuple(options.layer_lengths), hidden)
    return T5(config, prefix=module), None if init is None else {'name': 'module_default'}
  return make_model


def _check_layer_lengths(config) -> list[str]:
  if tuple(config.prompt.layer_lengths):
    return ['prompt.layer_lengths is for method=deep_prompt_tuning (per-layer prompts)']
  return []


def _check_autoprompt(config) -> list[str]:
  problems = []
  template = config.prompt.template
  if template.count(autoprompt.INPUT) != 1 or template.count(autoprompt.TRIGGERS) != 1:
    problems.append(f'prompt.template={template!r} must hold the task input '
                    f'{autoprompt.INPUT} once and the trigger block {autoprompt.TRIGGERS} once, '
                    f'e.g. "{autoprompt.INPUT} {autoprompt.TRIGGERS}"')
  if config.prompt.length > 64:
    problems.append(f'method=autoprompt searches prompt.length={config.prompt.length} trigger '
                    'tokens, one slot per iteration; use a handful (AutoPrompt used 3-10)')
  if config.prompt.candidates <= 0:
    problems.append('prompt.candidates must be positive (the tokens scored per iteration)')
  return problems


def _plain(config: T5Config, options: PromptOptions, init: InitContext | None):
  del options, init
  return T5(config), None


_PROMPT_RULES = ((r'^prompt/', 'train'), (r'.*', 'freeze'))
_PREFIX_RULES = ((r'^prefix/', 'train'), (r'.*', 'freeze'))
# T5's fine-tuning settings (Adafactor with factored second moments, LR 1e-3, no decay).
_MODEL_TUNING_OPTIMIZER = (('learning_rate', 1e-3), ('weight_decay', 0.0), ('factored', True))

METHODS: dict[str, Method] = {method.name: method for method in (
    Method('prompt_tuning', _prompt_tuning, _PROMPT_RULES, PROMPT,
           check=_check_layer_lengths),
    Method('multitask_prompt_tuning', _multitask_prompt_tuning, _PROMPT_RULES, PROMPT,
           per_task=True, check=lambda config: _check_layer_lengths(config)
           + _check_multitask_prompt_tuning(config)),
    Method('model_tuning', _plain, ((r'.*', 'train'),), optimizer=_MODEL_TUNING_OPTIMIZER,
           trains_backbone=True, check=_check_layer_lengths),
    Method('prefix_tuning', _prefix(reparameterised=True), _PREFIX_RULES, PREFIX,
           check=_check_layer_lengths),
    Method('deep_prompt_tuning', _prefix(reparameterised=False), _PREFIX_RULES, PREFIX),
    Method('p_tuning', _p_tuning, _PROMPT_RULES, PROMPT, check=_check_layer_lengths),
    # The transferred prompt stays fixed; its projector into this model trains.
    Method('cross_model_transfer', _cross_model_transfer,
           ((r'^prompt/source$', 'freeze'),) + _PROMPT_RULES, PROMPT,
           check=lambda config: _check_layer_lengths(config)
           + _check_cross_model_transfer(config)),
    # Nothing trains: a hand-written template, zero- or few-shot.
    Method('prompt_design', _plain, ((r'.*', 'freeze'),), trains=False,
           prepare_eval=design.with_shots, eval_task=template_task,
           check=_check_layer_lengths),
    # Nothing trains: k trigger tokens are searched (search.py) and kept as text.
    Method('autoprompt', _plain, ((r'.*', 'freeze'),), TRIGGERS, trains=False, searches=True,
           check=lambda config: _check_layer_lengths(config) + _check_autoprompt(config)),
)}
# The init names a run config may give (`prompt.init`).
PROMPT_INITS = INIT_NAMES


def get(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f'Unknown method {name!r}; choose one of {", ".join(METHODS)}.')
  return METHODS[name]


def build_model(config: T5Config, method: str, prompt_length: int = 100, **options) -> T5:
  """The T5 a method trains, with its modules' default initialisers (tests, shapes); `options`
  are `PromptOptions` fields (attention, layer_lengths, reparam_hidden, encoder, init_file)."""
  return get(method).make_model(config, PromptOptions(length=prompt_length, **options), None)[0]


def module_params(model: T5, rng) -> dict[str, dict]:
  """{'prompt' | 'prefix': params} of the method's own module from its initialiser, without
  running (or initialising) the backbone; {} for a plain T5."""
  if model.prompt is not None:
    variables = model.prompt.clone(parent=None).init(
        rng, model.config.d_model, method=type(model.prompt).produce_prompt)
    return {'prompt': nn.unbox(variables)['params']}
  if model.prefix is not None:
    return {'prefix': nn.unbox(model.prefix.clone(parent=None).init(rng))['params']}
  return {}


def for_inference(model: T5, params: dict, task_index: int = 0) -> tuple[T5, dict]:
  """(model, params) with any training-time reparameterisation folded away (each module folds
  itself): P-tuning and a projected prompt become plain prompt tuning, prefix tuning becomes
  direct prefixes, a prompt bank becomes the prompt of task `task_index`. Outputs are
  unchanged."""
  if isinstance(model.prompt, PromptBank):
    module, row = model.prompt.row(params['prompt'], task_index)
    return model.clone(prompt=module, parent=None), {**params, 'prompt': row}
  if model.prompt is not None:
    module, folded = model.prompt.folded(params['prompt'], model.config.d_model)
    return model.clone(prompt=module, parent=None), {**params, 'prompt': folded}
  if model.prefix is not None:
    module, folded = model.prefix.folded(params['prefix'])
    return model.clone(prefix=module, parent=None), {**params, 'prefix': folded}
  return model, params


def exported_prompt(model: T5, params: dict, task_index: int = 0) -> dict[str, np.ndarray] | None:
  """The portable artefact of a trained prompt method, after folding: {'prompt': [P, d]} or
  {'<kind>_key' | '<kind>_value': [layers, P, h, k]}; None for a plain T5.
  `params` needs only the method's subtree (`prompt` or `prefix`), frozen parts included (a
  projector's source prompt). Call it on every host."""
  model, params = for_inference(model, params, task_index)
  if model.prompt is not None:
    return {'prompt': to_host(params['prompt']['prompt']).astype(np.float32)}
  if model.prefix is not None:
    return {name: to_host(value).astype(np.float32) for name, value in params['prefix'].items()}
  return None
