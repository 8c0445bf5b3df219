"""Hand-written templates and verbalizers for SuperGLUE: the "prompt design" baseline.

PET-style (Schick & Schütze 2021): each task's example becomes a natural-language question the
frozen model answers with a verbalizer word, scored by rank classification (the word with the
highest likelihood wins, so no prediction is invalid). Each template task is registered as
`superglue_<task>_template`; the records keep the original label index, so the task's metric
applies unchanged. Few-shot demonstrations (filled templates with their answers) are prepended
by `t5prompt.prompt_design`. ReCoRD has no fixed verbalizer and no template here.
"""

import dataclasses
import functools

from t5prompt.data.spec import TaskSpec, labelled, record
from t5prompt.data.superglue import TASKS, _remove_markup


@dataclasses.dataclass(frozen=True)
class Template:
  render: callable  # release example -> the question text
  verbalizer: tuple[str, ...]  # one word per label of the base task, in its label order


def _yes_no(question: str) -> str:
  return f'{question} Yes or no?'


TEMPLATES = {
    'boolq': Template(lambda ex: f'{ex["passage"]} Question: {ex["question"]}? Answer:',
                      ('No', 'Yes')),
    'cb': Template(lambda ex: f'{ex["premise"]} Question: {ex["hypothesis"]} Yes, no, or maybe?',
                   ('Yes', 'No', 'Maybe')),  # entailment, contradiction, neutral
    'copa': Template(lambda ex: (f'{ex["premise"]} What was the {ex["question"]}? Option 1: '
                                 f'{ex["choice1"]} Option 2: {ex["choice2"]} Answer: Option'),
                     ('1', '2')),
    'rte': Template(lambda ex: _yes_no(f'{ex["premise"]} Question: {ex["hypothesis"]}'),
                    ('Yes', 'No')),  # entailment, not_entailment
    'wic': Template(lambda ex: _yes_no(f'{ex["sentence1"]} {ex["sentence2"]} Does the word '
                                       f'"{ex["word"]}" mean the same in both sentences?'),
                    ('No', 'Yes')),
    'wsc': Template(lambda ex: _yes_no(f'{ex["text"]} In the passage above, does "'
                                       f'{ex["target"]["span2_text"]}" refer to "'
                                       f'{ex["target"]["span1_text"]}"?'), ('No', 'Yes')),
    'multirc': Template(None, ('No', 'Yes')),  # one question per answer: see _multirc_records
}


def _records(name: str, template: Template, example, split, with_prefix):
  del with_prefix  # a template is its own instruction
  base = TASKS[BASES.get(name, name)]
  inputs = template.render(example)
  if 'label' not in example or example['label'] == -1:
    return [record(inputs, '')]
  label = labelled(base.label_names, example['label'], name, f' (idx {example.get("idx")}, '
                   f'{split})')
  return [record(inputs, template.verbalizer[label], label)]


def _multirc_records(example, split, with_prefix):
  del split, with_prefix
  paragraph = _remove_markup(example['passage']['text'])
  out = []
  for question in example['passage']['questions']:
    group = f'{example["idx"]}-{question["idx"]}'
    for answer in question['answers']:
      inputs = _yes_no(f'{paragraph} Question: {question["question"]} Is the correct answer "'
                       f'{answer["text"]}"?')
      label = int(answer['label']) if 'label' in answer else -1
      out.append(record(inputs, ('No', 'Yes')[label] if label >= 0 else '', label, group=group))
  return out


# The template asks about one (noun, pronoun) pair: WSC's binary form, with its labels.
BASES = {'wsc': 'wsc_binary'}


def template_specs() -> dict[str, TaskSpec]:
  """`superglue_<task>_template` for every task with a template."""
  specs = {}
  for name, template in TEMPLATES.items():
    base = TASKS[BASES.get(name, name)]
    to_records = (_multirc_records if name == 'multirc'
                  else functools.partial(_records, name, template))
    full = f'superglue_{name}_template'
    specs[full] = dataclasses.replace(
        base, name=full, to_records=to_records, label_names=template.verbalizer,
        eval_mode='rank', description=f'{name} as a hand-written question (prompt design)')
  return specs


def template_task(task_name: str) -> str:
  """The template task for a SuperGLUE task name (`superglue_cb` -> `superglue_cb_template`)."""
  base = task_name.removeprefix('superglue_').removesuffix('_prefixed').removesuffix('_template')
  if not task_name.startswith('superglue_') or base not in TEMPLATES:
    raise ValueError(f'No hand-written template for {task_name!r}; prompt_design covers '
                     f'{", ".join(f"superglue_{name}" for name in TEMPLATES)}.')
  return f'superglue_{base}_template'
