"""SuperGLUE (and the AX-b/AX-g diagnostics) in T5's text-to-text formats.

Sources: TFDS `super_glue/*` when prepared, else the release files under
`$T5PROMPT_DATA_DIR/superglue/<Task>/` (`train/val/test.jsonl`, FewGLUE's `fewglue_32/`).
Formats follow T5 (`t5.data.preprocessors.glue` and its SuperGLUE variants): the benchmark name
as an optional prefix, then `feature: text` pairs. Where we simplify, the docstring says so.
"""

import functools
import re

from t5prompt.data.sources import Source, read_jsonl
from t5prompt.data.spec import TaskSpec, labelled, record

_RELEASE = ('Get the SuperGLUE release (https://super.gluebenchmark.com/tasks) and unpack it '
            'under $T5PROMPT_DATA_DIR/superglue/, or prepare TFDS super_glue in $TFDS_DATA_DIR.')
_FEWGLUE = ('Get FewGLUE (https://github.com/timoschick/fewglue: <Task>/train.jsonl) and '
            'FewGLUE_32dev (https://github.com/THUDM/P-tuning: FewGLUE_32dev/<Task>/dev32.jsonl) '
            'into $T5PROMPT_DATA_DIR/superglue/<Task>/fewglue_32/.')
HOW_TO_GET = {'': _RELEASE, 'fewglue_train': _FEWGLUE, 'fewglue_dev32': _FEWGLUE}
SPLIT_FILES = {'train': 'train.jsonl', 'validation': 'val.jsonl', 'test': 'test.jsonl',
               'fewglue_train': 'fewglue_32/train.jsonl', 'fewglue_dev32': 'fewglue_32/dev32.jsonl'}
TFDS_SPLITS = {'train': 'train', 'validation': 'validation', 'test': 'test'}


def _source(directory: str, tfds_config: str, from_tfds=lambda example: example,
            splits=tuple(SPLIT_FILES)) -> Source:
  return Source({split: [f'superglue/{directory}/{SPLIT_FILES[split]}'] for split in splits},
                read_jsonl, f'super_glue/{tfds_config}', TFDS_SPLITS, from_tfds, HOW_TO_GET)


def _glue_text(benchmark: str, pairs, with_prefix: bool) -> str:
  parts = [benchmark] if with_prefix else []
  for feature, text in pairs:
    parts += [f'{feature}:', str(text)]
  return ' '.join(parts)


def _classification(name: str, benchmark: str, features, label_names, example, split,
                    with_prefix, group_field: str = ''):
  inputs = _glue_text(benchmark, [(f, example[f]) for f in features], with_prefix)
  group = str(example.get(group_field, '')) if group_field else ''
  if 'label' not in example or example['label'] == -1:
    return [record(inputs, '', group=group)]  # unlabelled (test)
  label = labelled(label_names, example['label'], name, f' (idx {example.get("idx")}, {split})')
  return [record(inputs, label_names[label], label, group=group)]


def _classification_task(name, benchmark, directory, tfds_config, features, label_names,
                         metric='accuracy', splits=tuple(SPLIT_FILES), description=''):
  return TaskSpec(
      name=name, source=_source(directory, tfds_config, splits=splits),
      to_records=functools.partial(_classification, name, benchmark, features, label_names),
      metric=metric, label_names=label_names, description=description)


def _remove_markup(text: str) -> str:
  """MultiRC paragraphs carry HTML (`<b>Sent 1: </b>`, `<br>`); T5 feeds plain text."""
  return re.sub(r'\s+', ' ', re.sub(r'<[^>]+>', ' ', text)).strip()


def _multirc(example, split, with_prefix):
  """One record per answer option (label False/True), grouped by question for EM."""
  del split
  paragraph = _remove_markup(example['passage']['text'])
  out = []
  for question in example['passage']['questions']:
    group = f'{example["idx"]}-{question["idx"]}'
    for answer in question['answers']:
      inputs = _glue_text('multirc', [('question', question['question']),
                                      ('answer', answer['text']), ('paragraph', paragraph)],
                          with_prefix)
      label = labelled(('False', 'True'), answer.get('label', -1), 'multirc',
                       f' (question {group})') if 'label' in answer else -1
      out.append(record(inputs, ('False', 'True')[label] if label >= 0 else '', label,
                        group=group))
  return out


def _record_passage(text: str) -> str:
  """T5's ReCoRD cleanup: `@highlight` bullet lines become sentences."""
  text = re.sub(r'(\.|\?|\!|\"|\')\n@highlight\n', r'\1 ', text)
  return re.sub(r'\n@highlight\n', '. ', text)


def _record(example, split, with_prefix):
  """T5's ReCoRD format: the query, the passage's entities, the passage; the target is an
  answer entity. Training has one record per answer; evaluation one per query, scored by
  max over the gold answers."""
  passage = example['passage']['text']
  entities = list(dict.fromkeys(passage[span['start']:span['end'] + 1]
                                for span in example['passage']['entities']))
  clean = _record_passage(passage)
  out = []
  for qa in example['qas']:
    inputs = _glue_text('record', [('query', qa['query']), ('entities', ', '.join(entities)),
                                   ('passage', clean)], with_prefix)
    answers = list(dict.fromkeys(answer['text'] for answer in qa.get('answers', [])))
    if split in ('train', 'fewglue_train'):
      out.extend(record(inputs, answer, answers=answers, group=str(qa['idx']))
                 for answer in answers)
    else:
      out.append(record(inputs, answers[0] if answers else '', answers=answers,
                        group=str(qa['idx'])))
  return out


def _wsc_from_tfds(example):
  return {**example, 'target': {key: example[key] for key in (
      'span1_index', 'span2_index', 'span1_text', 'span2_text')}}


def _wsc_simple(example, split, with_prefix):
  """WSC as T5 scores it (`wsc_simple`, the paper's numbers): the text with its pronoun marked
  `*he*`, the target the candidate referent (span1); the model decodes a noun phrase, right
  when it names the referent exactly for true pairs and anything else for false ones
  (`metrics.wsc_simple`). Training keeps only the true pairs, as T5 does."""
  target = example['target']
  words = example['text'].split(' ')
  index = target['span2_index']
  words[index] = f'*{words[index]}*'
  inputs = ('wsc: ' if with_prefix else '') + ' '.join(words)
  if example.get('label') is None:
    return [record(inputs, target['span1_text'], answers=[target['span1_text']])]
  label = int(example['label'])
  if split in ('train', 'fewglue_train') and not label:
    return []
  return [record(inputs, target['span1_text'], label, answers=[target['span1_text']])]


def _wsc(example, split, with_prefix):
  """WSC as a yes/no question about one (noun, pronoun) pair (`superglue_wsc_binary`): every
  pair, rank classification; `superglue_wsc` is T5's referent-decoding form."""
  target = example['target']
  flat = {'span1_text': target['span1_text'], 'span2_text': target['span2_text'],
          'text': example['text'], 'label': example.get('label'), 'idx': example.get('idx')}
  if flat['label'] is None:
    flat.pop('label')
  return _classification('wsc', 'wsc', ('span1_text', 'span2_text', 'text'), ('False', 'True'),
                         flat, split, with_prefix)


BOOLEAN = ('False', 'True')
ENTAILMENT_2 = ('entailment', 'not_entailment')

TASKS = {
    'boolq': _classification_task('boolq', 'boolq', 'BoolQ', 'boolq', ('passage', 'question'),
                                  BOOLEAN),
    'cb': _classification_task('cb', 'cb', 'CB', 'cb', ('hypothesis', 'premise'),
                               ('entailment', 'contradiction', 'neutral'), metric='cb'),
    'copa': _classification_task('copa', 'copa', 'COPA', 'copa',
                                 ('choice1', 'choice2', 'premise', 'question'),
                                 ('choice1', 'choice2')),
    'multirc': TaskSpec('multirc', _source('MultiRC', 'multirc'), _multirc, 'multirc',
                        BOOLEAN),
    'record': TaskSpec('record', _source('ReCoRD', 'record'), _record, 'record',
                       eval_mode='decode', target_length=32),
    'rte': _classification_task('rte', 'rte', 'RTE', 'rte', ('hypothesis', 'premise'),
                                ENTAILMENT_2),
    'wic': _classification_task('wic', 'wic', 'WiC', 'wic', ('sentence1', 'sentence2', 'word'),
                                BOOLEAN),
    'wsc': TaskSpec('wsc', _source('WSC', 'wsc.fixed', _wsc_from_tfds), _wsc_simple,
                    'wsc_simple', eval_mode='decode', target_length=16),
    'wsc_binary': TaskSpec('wsc_binary', _source('WSC', 'wsc.fixed', _wsc_from_tfds), _wsc,
                           'accuracy', BOOLEAN),
    # Diagnostics: evaluated with an RTE-trained prompt, hence RTE's format and labels.
    'axb': TaskSpec('axb', Source({'test': ['superglue/AX-b/AX-b.jsonl']}, read_jsonl,
                                  'super_glue/axb', {'test': 'test'}, how_to_get=HOW_TO_GET),
                    functools.partial(_classification, 'axb', 'rte', ('sentence1', 'sentence2'),
                                      ENTAILMENT_2), 'axb', ENTAILMENT_2),
    'axg': TaskSpec('axg', Source({'test': ['superglue/AX-g/AX-g.jsonl']}, read_jsonl,
                                  'super_glue/axg', {'test': 'test'}, how_to_get=HOW_TO_GET),
                    functools.partial(_classification, 'axg', 'rte', ('hypothesis', 'premise'),
                                      ENTAILMENT_2, group_field='pair_id'), 'axg', ENTAILMENT_2),
}
# The eight tasks of the SuperGLUE score (the diagnostics are not in it).
SCORED_TASKS = ('boolq', 'cb', 'copa', 'multirc', 'record', 'rte', 'wic', 'wsc')
