"""Named T5 sizes: the published Hugging Face configs plus tiny sizes for tests and the demo.

A size is a frozen `T5Config`, hashable, so it can be a static argument of `jax.jit`.
Numbers are those of the checkpoints' `config.json` on the hub (t5-*, google/t5-v1_1-*,
google/t5-*-lm-adapt). LM-adapted checkpoints share v1.1's architecture.
"""

import dataclasses
import difflib

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Architecture of one T5. Field names follow Hugging Face's `T5Config`."""
  vocab_size: int = 32128
  d_model: int = 512
  d_kv: int = 64
  d_ff: int = 2048
  num_heads: int = 8
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  dropout_rate: float = 0.1
  layer_norm_epsilon: float = 1e-6
  # 'relu' (T5 v1.0) or 'gated-gelu' (v1.1 and LM-adapted).
  feed_forward_proj: str = 'relu'
  # v1.0 ties the LM head to the token embedding and scales the decoder output by
  # d_model**-0.5 before it; v1.1 has a separate head and no scaling. The two are separate
  # flags because transformers 5 builds tied-but-unscaled models when asked for v1.1.
  tie_word_embeddings: bool = True
  scale_decoder_outputs: bool = True
  # Compute dtype of activations and matmul operands (accumulation is float32). Trained params
  # are float32; a lower precision keeps the frozen backbone's matrices in it (`build`).
  dtype: str = 'float32'
  # The projection kernels arrive in float32 already holding `dtype`'s values: set by `build`
  # for a frozen backbone on a CPU without low-precision dot units, where a bf16 matmul
  # multiplies float32 operands anyway, so no step widens them again.
  prerounded_kernels: bool = False
  # Stack layers with nn.scan (one compiled layer body: bounded compile time at XXL).
  scan_layers: bool = True
  # Layers per iteration of the scanned loop. 0: by backend, every layer on CPU (no loop: the
  # loop's stacked residual buffers cost more than the longer compile there), 1 on GPU/TPU.
  scan_unroll: int = 0
  # Rematerialise each layer in the backward pass ('none', 'full' or 'dots').
  remat_policy: str = 'none'

  def __post_init__(self):
    if self.feed_forward_proj not in ('relu', 'gated-gelu'):
      raise ValueError(
          f"feed_forward_proj must be 'relu' or 'gated-gelu', got {self.feed_forward_proj!r}")
    if self.dtype not in ('float32', 'bfloat16', 'float16'):
      raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
    if self.scan_unroll < 0:
      raise ValueError(f'scan_unroll must be >= 0 (0: by backend), got {self.scan_unroll}')
    if self.remat_policy not in ('none', 'full', 'dots'):
      raise ValueError(f"remat_policy must be 'none', 'full' or 'dots', got {self.remat_policy!r}")

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def is_gated(self) -> bool:
    return self.feed_forward_proj == 'gated-gelu'

  def replace(self, **changes) -> 'T5Config':
    return dataclasses.replace(self, **changes)


def _v1_0(d_model, d_ff, d_kv, num_heads, num_layers):
  return T5Config(d_model=d_model, d_ff=d_ff, d_kv=d_kv, num_heads=num_heads,
                  num_encoder_layers=num_layers, num_decoder_layers=num_layers,
                  feed_forward_proj='relu', tie_word_embeddings=True, scale_decoder_outputs=True)


def _v1_1(d_model, d_ff, num_heads, num_layers):
  return T5Config(d_model=d_model, d_ff=d_ff, d_kv=64, num_heads=num_heads,
                  num_encoder_layers=num_layers, num_decoder_layers=num_layers,
                  feed_forward_proj='gated-gelu', tie_word_embeddings=False,
                  scale_decoder_outputs=False)


def _ladder(d_model, num_heads, num_layers):
  return T5Config(vocab_size=4224, d_model=d_model, d_kv=16, d_ff=2 * d_model,
                  num_heads=num_heads, num_encoder_layers=num_layers,
                  num_decoder_layers=num_layers, feed_forward_proj='gated-gelu',
                  tie_word_embeddings=True, scale_decoder_outputs=True)


_V1_1 = {
    'small': _v1_1(512, 1024, 6, 8),
    'base': _v1_1(768, 2048, 12, 12),
    'large': _v1_1(1024, 2816, 16, 24),
    'xl': _v1_1(2048, 5120, 32, 24),
    'xxl': _v1_1(4096, 10240, 64, 24),
}

SIZES: dict[str, T5Config] = {
    # T5 v1.0 (Raffel et al. 2020): t5-small ... t5-11b.
    't5-small': _v1_0(512, 2048, 64, 8, 6),
    't5-base': _v1_0(768, 3072, 64, 12, 12),
    't5-large': _v1_0(1024, 4096, 64, 16, 24),
    't5-3b': _v1_0(1024, 16384, 128, 32, 24),
    't5-11b': _v1_0(1024, 65536, 128, 128, 24),
    # T5 v1.1 (span corruption only) and LM-adapted (+100K prefix-LM steps): same shapes.
    **{f't5-v1_1-{name}': config for name, config in _V1_1.items()},
    **{f't5-lm-adapt-{name}': config for name, config in _V1_1.items()},
    # Tiny sizes for tests and the offline demo (random or briefly pre-trained weights).
    'tiny-v1_0': T5Config(vocab_size=32128, d_model=32, d_kv=8, d_ff=64, num_heads=4,
                          num_encoder_layers=2, num_decoder_layers=2,
                          feed_forward_proj='relu', tie_word_embeddings=True),
    'tiny-v1_1': T5Config(vocab_size=32128, d_model=32, d_kv=8, d_ff=64, num_heads=4,
                          num_encoder_layers=2, num_decoder_layers=2,
                          feed_forward_proj='gated-gelu', tie_word_embeddings=False,
                          scale_decoder_outputs=False),
    # The miniature's ladder (configs/pretrain/ladder.py): v1.1's gated-GELU blocks with a tied,
    # scaled head (fewer parameters outside the transformer), sized for a 4,000-piece vocabulary
    # (+ 100 sentinels, padded to 4,224 rows). Its size axis is the transformer's.
    **{f'ladder-{index}': _ladder(d_model, num_heads, num_layers)
       for index, (d_model, num_heads, num_layers) in enumerate(
           ((48, 3, 2), (64, 4, 2), (96, 6, 3), (128, 8, 4)))},
}

# Hub ids of the published checkpoints behind each real size name.
HUB_IDS: dict[str, str] = {
    **{f't5-{name}': f'google-t5/t5-{name}' for name in ('small', 'base', 'large', '3b', '11b')},
    **{f't5-v1_1-{name}': f'google/t5-v1_1-{name}' for name in _V1_1},
    **{f't5-lm-adapt-{name}': f'google/t5-{name}-lm-adapt' for name in _V1_1},
}


def get_size(name: str) -> T5Config:
  """Returns the config of a named size; an unknown name lists the valid ones."""
  if name not in SIZES:
    close = difflib.get_close_matches(name, SIZES, n=3)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    raise ValueError(
        f'Unknown T5 size {name!r}.{hint} Valid sizes: {", ".join(SIZES)}.')
  return SIZES[name]


def num_params(config: T5Config) -> int:
  """Parameter count of the backbone (embedding counted once when tied)."""
  d, h, kv, ff = config.d_model, config.num_heads, config.d_kv, config.d_ff
  attention = 4 * d * h * kv
  mlp = (3 if config.is_gated else 2) * d * ff
  relpos = 2 * config.relative_attention_num_buckets * h
  encoder = config.num_encoder_layers * (attention + mlp + 2 * d) + d
  decoder = config.num_decoder_layers * (2 * attention + mlp + 3 * d) + d
  embeddings = config.vocab_size * d * (1 if config.tie_word_embeddings else 2)
  return encoder + decoder + embeddings + relpos
