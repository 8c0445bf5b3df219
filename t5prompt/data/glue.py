"""GLUE paraphrase tasks: MRPC and QQP, in T5's formats, and a shared paraphrase format for the
domain-shift study (train on one, evaluate on the other; Lester et al. 2021, section 7.1).

Sources: TFDS `glue/mrpc`, `glue/qqp` when prepared, else the GLUE tsv files under
`$T5PROMPT_DATA_DIR/glue/` (MRPC `train/dev/test.tsv`; QQP `train/dev.tsv`, and LM-BFF's
16-shot samples `QQP/lmbff_k_shot/16-<seed>/{train,dev}.tsv`).
"""

import functools

from t5prompt.data.sources import Source, read_tsv
from t5prompt.data.spec import TaskSpec, labelled, record

HOW_TO_GET = ('Get GLUE (https://gluebenchmark.com/tasks, or download_glue_data.py) into '
              '$T5PROMPT_DATA_DIR/glue/<TASK>/, or prepare TFDS glue in $TFDS_DATA_DIR.')
KSHOT_SEEDS = (13, 21, 42, 87, 100)
TFDS_SPLITS = {'train': 'train', 'validation': 'validation', 'test': 'test'}


def _mrpc_row(row):
  """GLUE MRPC tsv (`Quality, #1 String, #2 String`; test: `index` and no label) or TFDS."""
  if 'sentence1' in row:
    return row
  return {'sentence1': row['#1 String'], 'sentence2': row['#2 String'],
          'label': int(row['Quality']) if 'Quality' in row else -1}


def _qqp_row(row):
  if 'is_duplicate' in row:
    return {'question1': row['question1'], 'question2': row['question2'],
            'label': int(row['is_duplicate'])}
  return row


def _records(name, benchmark, features, label_names, normalise, shared_format, example, split,
             with_prefix):
  del split
  example = normalise(example)
  texts = [example[feature] for feature in features]
  if shared_format:  # the same input format and labels for MRPC and QQP, so prompts transfer
    pairs = zip(('sentence1', 'sentence2'), texts)
  else:
    pairs = zip(features, texts)
  parts = [benchmark] if with_prefix else []
  for feature, text in pairs:
    parts += [f'{feature}:', text]
  label = example.get('label', -1)
  if label == -1:
    return [record(' '.join(parts), '')]
  label = labelled(label_names, int(label), name)
  return [record(' '.join(parts), label_names[label], label)]


def _mrpc_source():
  return Source({'train': ['glue/MRPC/train.tsv'], 'validation': ['glue/MRPC/dev.tsv'],
                 'test': ['glue/MRPC/test.tsv']}, read_tsv, 'glue/mrpc', TFDS_SPLITS,
                how_to_get=HOW_TO_GET)


def _qqp_source():
  local = {'train': ['glue/QQP/train.tsv'], 'validation': ['glue/QQP/dev.tsv'],
           'test': ['glue/QQP/test.tsv']}
  for seed in KSHOT_SEEDS:
    for split, file in (('train', 'train'), ('dev', 'dev')):
      local[f'kshot16_{seed}_{split}'] = [f'glue/QQP/lmbff_k_shot/16-{seed}/{file}.tsv']
  return Source(local, read_tsv, 'glue/qqp', TFDS_SPLITS, how_to_get=HOW_TO_GET)


PARAPHRASE_LABELS = ('not_duplicate', 'duplicate')


def _task(name, source, benchmark, features, label_names, normalise, shared_format=False):
  return TaskSpec(name, source, functools.partial(_records, name, benchmark, features,
                                                  label_names, normalise, shared_format),
                  'f1_accuracy', label_names)


TASKS = {
    'mrpc': _task('mrpc', _mrpc_source(), 'mrpc', ('sentence1', 'sentence2'),
                  ('not_equivalent', 'equivalent'), _mrpc_row),
    'qqp': _task('qqp', _qqp_source(), 'qqp', ('question1', 'question2'), PARAPHRASE_LABELS,
                 _qqp_row),
    # Shared format for transfer: `sentence1: .. sentence2: ..` -> not_duplicate / duplicate.
    'paraphrase_mrpc': _task('paraphrase_mrpc', _mrpc_source(), 'paraphrase',
                             ('sentence1', 'sentence2'), PARAPHRASE_LABELS, _mrpc_row, True),
    'paraphrase_qqp': _task('paraphrase_qqp', _qqp_source(), 'paraphrase',
                            ('question1', 'question2'), PARAPHRASE_LABELS, _qqp_row, True),
}
