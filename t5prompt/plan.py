"""Memory per device for a size, a method and a mesh, before renting the machine.

Params, optimizer state and gradients are exact: their abstract shapes come from the real model
and optimizer (`jax.eval_shape`, no compute) and their per-device shards from the same rules
and shardings training uses (on an abstract mesh, so no devices are needed). Activations are an
estimate (see `activation_bytes`).
"""

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import AbstractMesh, AxisType

from t5prompt import optim
from t5prompt.backbone import abstract_backbone
from t5prompt.build import build
from t5prompt.models import T5Config, get_size
from t5prompt.partitioning import Partitioning, bytes_per_device, logical_axis_rules
from t5prompt.prompts import methods
from t5prompt.run_config import default_config, set_field

GiB = 1024 ** 3
# (a per-task method costs what its one-task form does: prompt tuning)
TRAINED_METHODS = tuple(name for name, method in methods.METHODS.items()
                        if method.trains and not method.per_task)
SIZE_ALIASES = {name: f't5-lm-adapt-{name}' for name in ('small', 'base', 'large', 'xl', 'xxl')}
METHOD_ALIASES = {'prompt': 'prompt_tuning', 'model': 'model_tuning', 'prefix': 'prefix_tuning',
                  'deep': 'deep_prompt_tuning', 'ptuning': 'p_tuning'}
TABLE_METHODS = ('prompt_tuning', 'model_tuning')  # the paper's two, in `plan --table`


@dataclasses.dataclass(frozen=True)
class Plan:
  size: str
  method: str
  mesh: tuple[int, int]
  shard_embed: bool
  remat: str
  params: int  # bytes per device, all params (frozen + trainable), float32
  trainable: int
  optimizer_state: int
  gradients: int
  activations: int  # estimate
  num_trainable: int
  num_params: int
  largest_tensor: int = 0  # bytes of the checkpoint's largest tensor (float32)

  @property
  def total(self) -> int:
    return self.params + self.optimizer_state + self.gradients + self.activations

  def fits(self, device_memory_bytes: float) -> bool:
    return self.total <= device_memory_bytes

  def host_memory_at_load(self, devices_per_host: int) -> tuple[int, int]:
    """Host RAM while one host loads the backbone: streamed (its devices' params, and one
    checkpoint tensor at a time: the train loop's load) and read whole (the checkpoint as
    float32, a second copy in our layout, then the params placed)."""
    placed = self.params * devices_per_host
    return placed + self.largest_tensor, placed + 2 * 4 * self.num_params


def resolve_size(name: str) -> tuple[str, T5Config]:
  name = SIZE_ALIASES.get(name, name)
  return name, get_size(name)


def activation_bytes(config: T5Config, batch_per_device: int, input_length: int,
                     target_length: int, model_axis: int, remat: str) -> int:
  """Activations kept for the backward pass, per device (an estimate).

  Per layer and token: the residual input and norm output (2 d), q/k/v/attention output
  (4 h dkv / model), attention scores and probabilities (2 h L / model, float32) and the MLP
  (up to 3 d_ff / model); the decoder adds cross-attention. With remat 'full' only each layer's
  input is kept, plus one layer's activations while it is recomputed. The float32 logits and
  their gradient (2 V / model per target token) come on top. Prompt tuning needs the same
  activations as model tuning: the gradient flows back through every layer to the prompt.
  """
  act = np.dtype(config.compute_dtype).itemsize
  heads_kv = config.num_heads * config.d_kv / model_axis
  mlp = (3 if config.is_gated else 2) * config.d_ff / model_axis

  def layer(length, attended, cross_length=0):
    per_token = (2 * config.d_model + 4 * heads_kv + mlp) * act
    per_token += 2 * config.num_heads / model_axis * attended * 4
    if cross_length:
      per_token += (config.d_model + 2 * heads_kv) * act
      per_token += 2 * config.num_heads / model_axis * cross_length * 4
    return length * per_token

  encoder_layer = layer(input_length, input_length)
  decoder_layer = layer(target_length, target_length, input_length)
  if remat == 'full':
    kept = (config.num_encoder_layers * input_length + config.num_decoder_layers
            * target_length) * config.d_model * act + max(encoder_layer, decoder_layer)
  else:
    kept = config.num_encoder_layers * encoder_layer + config.num_decoder_layers * decoder_layer
  logits = 2 * target_length * config.vocab_size / model_axis * 4
  return int(batch_per_device * (kept + logits))


def run_config_for(method: str, prompt_length: int = 100, optimizer_config=None,
                   **prompt_options):
  """The run config a plan builds: the method with its defaults (and `prompt_options`, fields of
  the config's `prompt` section, e.g. reparam_hidden, attention)."""
  config = default_config(method)
  config.prompt.length = prompt_length
  for key, value in prompt_options.items():
    set_field(config, f'prompt.{key}', value)
  if optimizer_config is not None:
    config.optimizer = optimizer_config
  return config


def plan(size: str, method: str, mesh: tuple[int, int], batch: int = 32,
         input_length: int = 512, target_length: int = 8, prompt_length: int = 100,
         shard_embed: bool = False, remat: str = 'none', dtype: str = 'bfloat16',
         optimizer_config=None, **prompt_options) -> Plan:
  """The memory plan of the run the training builder would build (its shapes and shardings on
  an abstract mesh); `optimizer_config` defaults to the method's (the paper's Adafactor)."""
  method = METHOD_ALIASES.get(method, method)
  if method not in TRAINED_METHODS:
    raise ValueError(f'plan covers the trained methods {TRAINED_METHODS}; got {method!r}.')
  name, t5_config = resolve_size(size)
  data, model_axis = mesh
  if batch % data:
    raise ValueError(f'batch {batch} does not split over data={data}.')
  partitioning = Partitioning(
      AbstractMesh((data, model_axis), ('data', 'model'),
                   axis_types=(AxisType.Auto, AxisType.Auto)),
      logical_axis_rules(shard_embed))
  config = run_config_for(method, prompt_length, optimizer_config, **prompt_options)
  backbone = abstract_backbone(t5_config.replace(dtype=dtype, remat_policy=remat))
  run = build(config, backbone, partitioning)
  state, shardings = run.state, run.shardings
  trainable_bytes = bytes_per_device(state.trainable, shardings.trainable)
  encoder_length = input_length + (prompt_length if run.method.artefact == methods.PROMPT else 0)
  return Plan(
      size=name, method=method, mesh=(data, model_axis), shard_embed=shard_embed, remat=remat,
      params=trainable_bytes + bytes_per_device(state.frozen, shardings.frozen),
      trainable=trainable_bytes,
      optimizer_state=bytes_per_device(state.opt_state, shardings.opt_state),
      gradients=trainable_bytes,
      activations=activation_bytes(backbone.config, batch // data, encoder_length,
                                   target_length, model_axis, remat),
      num_trainable=optim.num_elements(state.trainable),
      num_params=optim.num_elements(state.trainable) + optim.num_elements(state.frozen),
      largest_tensor=4 * _largest_tensor(backbone.params))


def _largest_tensor(params) -> int:
  """Elements of the largest tensor a checkpoint holds (one layer of a stacked leaf)."""
  sizes = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    stacked = any(getattr(key, 'key', None) == 'layers' for key in path)
    sizes.append(math.prod(leaf.shape[1:] if stacked else leaf.shape))
  return max(sizes)


def candidate_meshes(num_devices: int) -> list[tuple[int, int]]:
  """(data, model) splits of the devices, least model parallelism first."""
  return [(num_devices // model, model) for model in range(1, num_devices + 1)
          if num_devices % model == 0]


def suggest(size: str, method: str, num_devices: int, device_memory_bytes: float,
            **kwargs) -> Plan | None:
  """The first mesh (least model parallelism; then with remat, then 2-D weights) that fits."""
  for remat, shard_embed in (('none', False), ('full', False), ('full', True)):
    for mesh in candidate_meshes(num_devices):
      try:
        candidate = plan(size, method, mesh, remat=remat, shard_embed=shard_embed, **kwargs)
      except ValueError:
        continue
      if candidate.fits(device_memory_bytes):
        return candidate
  return None


def format_plan(p: Plan, device_memory_bytes: float | None = None,
                devices_per_host: int = 8) -> str:
  lines = [f'{p.size}  {p.method}  mesh data={p.mesh[0]} x model={p.mesh[1]}'
           f'{"  (embed over data)" if p.shard_embed else ""}  remat={p.remat}',
           f'  trainable params: {p.num_trainable:,} of {p.num_params:,} '
           f'({100 * p.num_trainable / p.num_params:.4f}%)',
           '  per device:']
  for label, value in (('params (fp32)', p.params), ('optimizer state', p.optimizer_state),
                       ('gradients', p.gradients), ('activations (est.)', p.activations),
                       ('total', p.total)):
    lines.append(f'    {label:20s} {value / GiB:9.3f} GiB')
  if device_memory_bytes:
    verdict = 'fits' if p.fits(device_memory_bytes) else 'does NOT fit'
    lines.append(f'  {verdict} in {device_memory_bytes / GiB:.0f} GiB per device')
  streamed, whole = p.host_memory_at_load(devices_per_host)
  lines.append(f'  host RAM at load ({devices_per_host} devices per host): {streamed / GiB:.2f} '
               f'GiB streamed (safetensors, the train loop), {whole / GiB:.2f} GiB read whole')
  return '\n'.join(lines)


def parse_memory(text: str) -> float:
  text = text.strip().upper().removesuffix('B').removesuffix('I')
  units = {'K': 1024, 'M': 1024 ** 2, 'G': GiB, 'T': 1024 ** 4}
  if text and text[-1] in units:
    return float(text[:-1]) * units[text[-1]]
  return float(text)


def parse_mesh(text: str) -> tuple[int, int]:
  try:
    data, model = (int(part) for part in text.lower().split('x'))
  except ValueError as error:
    raise ValueError(f'--mesh is DATAxMODEL, e.g. 16x1 or 4x4; got {text!r}.') from error
  if data <= 0 or model <= 0:
    raise ValueError(f'--mesh sizes must be positive, got {text!r}.')
  return data, model


def markdown_table(num_devices: int, device_memory_bytes: float, **kwargs) -> str:
  """Every LM-adapted size x {prompt, model tuning}: the mesh `suggest` picks, and its total."""
  lines = ['| size | method | trainable params | mesh (data x model) | remat | embed over data '
           '| GiB per device |', '|---|---|---|---|---|---|---|']
  for alias in SIZE_ALIASES:
    for method in TABLE_METHODS:
      best = suggest(alias, method, num_devices, device_memory_bytes, **kwargs)
      if best is None:
        lines.append(f'| {alias} | {method} | | does not fit {num_devices} devices | | | |')
        continue
      lines.append(f'| {alias} | {method} | {best.num_trainable:,} | {best.mesh[0]} x '
                   f'{best.mesh[1]} | {best.remat} | {"yes" if best.shard_embed else "no"} | '
                   f'{best.total / GiB:.2f} |')
  return '\n'.join(lines)


def parameter_counts(size: str, prompt_length: int = 100, **prompt_options) -> list[dict]:
  """Per trained method: the params it trains and the params it stores after training (the
  reparameterisations folded away), beside the backbone's count. Shapes only, no compute."""
  _, t5_config = resolve_size(size)
  backbone = abstract_backbone(t5_config)
  num_backbone = optim.num_elements(backbone.params)
  rows = []
  for method in TRAINED_METHODS:
    options = methods.PromptOptions.from_config(
        run_config_for(method, prompt_length, **prompt_options))
    model, _ = methods.get(method).make_model(t5_config, options, None)
    own = jax.eval_shape(lambda rng, model=model: methods.module_params(model, rng),
                         jax.random.key(0))
    trainable, _ = optim.split_params({**backbone.params, **own},
                                      methods.get(method).trainable_rules)
    if own:  # what the folded method keeps: the produced prompt or the direct prefixes
      folded = jax.eval_shape(lambda p, model=model: methods.for_inference(model, p)[1], own)
      stored = optim.num_elements(folded)
    else:
      stored = optim.num_elements(trainable)
    rows.append({'method': method, 'trainable': optim.num_elements(trainable), 'stored': stored,
                 'backbone': num_backbone})
  return rows


def counts_table(size: str, prompt_length: int = 100, **prompt_options) -> str:
  name, _ = resolve_size(size)
  lines = [f'{name}, prompt length {prompt_length}',
           '| method | trainable params | stored after training | % of backbone |',
           '|---|---|---|---|']
  for row in parameter_counts(size, prompt_length, **prompt_options):
    lines.append(f'| {row["method"]} | {row["trainable"]:,} | {row["stored"]:,} | '
                 f'{100 * row["trainable"] / row["backbone"]:.4f} |')
  return '\n'.join(lines)


def plan_text(size: str, method: str, mesh_text: str, device_memory: str, *,
              shard_embed: bool = False, remat: str = 'none', reparam_hidden: int = 512,
              devices_per_host: int = 8, **shape) -> str:
  """`t5prompt plan`: the plan for a mesh, and a mesh that fits when it does not."""
  memory, mesh = parse_memory(device_memory), parse_mesh(mesh_text)
  result = plan(size, method, mesh, shard_embed=shard_embed, remat=remat,
                reparam_hidden=reparam_hidden, **shape)
  lines = [format_plan(result, memory, min(devices_per_host, mesh[0] * mesh[1]))]
  if not result.fits(memory):
    better = suggest(size, method, mesh[0] * mesh[1], memory, reparam_hidden=reparam_hidden,
                     **shape)
    lines.append('  suggestion: ' + (
        f'mesh {better.mesh[0]}x{better.mesh[1]}, remat={better.remat}'
        f'{", --shard-embed" if better.shard_embed else ""} ({better.total / GiB:.2f} GiB)'
        if better else 'no mesh of these devices fits; use more devices or a smaller batch'))
  return '\n'.join(lines)
