"""A finished run's prompt for other tools, and theirs for ours: PEFT adapters.

`export_peft` writes the adapter PEFT's `PeftModel.from_pretrained` loads for a run's exported
artefact (a prompt as a prompt-tuning adapter, folded prefixes as a prefix-tuning adapter);
`import_peft` turns a PEFT prompt-tuning adapter into a prompt file for `prompt.init=file`.
"""

import os
from pathlib import Path

import numpy as np

from t5prompt import atomic
from t5prompt.models import get_size
from t5prompt.models.convert import load_backbone
from t5prompt.prompts import methods, peft_format
from t5prompt.run_config import load_run_config
from t5prompt.run_dir import RunDir


def export_peft(workdir: str | os.PathLike, output: str | os.PathLike,
                base_model: str = '') -> str:
  """The run's artefact as a PEFT adapter in `output`; returns what was written."""
  config = load_run_config(workdir)
  kind = methods.get(config.method).artefact
  if not kind:
    exporting = ', '.join(name for name, method in methods.METHODS.items() if method.artefact)
    raise ValueError(f'{workdir} is a {config.method} run; only prompt methods ({exporting}) '
                     'export a PEFT adapter.')
  run_dir = RunDir(workdir)
  artefact = run_dir.artefact_path(kind)
  if not artefact.is_file():
    raise FileNotFoundError(f'{artefact} is missing: the run has not finished; export after '
                            'it ends (or resume it).')
  record = run_dir.prompt_record()
  t5_config = (load_backbone(config.model.checkpoint)[0] if config.model.checkpoint
               else get_size(config.model.size))
  base_model = base_model or record['backbone']['source']
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
