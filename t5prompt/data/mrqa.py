"""MRQA 2019: SQuAD for training and in-domain evaluation, and the out-of-domain dev sets used
for the domain-shift study (Lester et al. 2021, section 7.1).

Sources: TFDS `mrqa/*` when prepared, else the MRQA release files under
`$T5PROMPT_DATA_DIR/mrqa/` (`in_domain_train/`, `in_domain_dev/`, `out_of_domain_dev/`, `.jsonl`
or `.jsonl.gz`). Format as T5's SQuAD task: `question: ... context: ...` -> the answer text;
scored by decoding, with SQuAD's EM/F1 (max over the gold answers).
"""

from t5prompt.data.sources import Source, read_mrqa
from t5prompt.data.spec import TaskSpec, record

HOW_TO_GET = ('Get the MRQA 2019 files (https://github.com/mrqa/MRQA-Shared-Task-2019, '
              'download_in_domain_dev.sh / download_out_of_domain_dev.sh) into '
              '$T5PROMPT_DATA_DIR/mrqa/, or prepare TFDS mrqa in $TFDS_DATA_DIR.')

# name -> (release file stems, TFDS config); DuoRC's file is DuoRC.ParaphraseRC in the release.
OUT_OF_DOMAIN = {
    'textbookqa': (('TextbookQA',), 'textbook_qa'),
    'bioasq': (('BioASQ',), 'bio_asq'),
    'race': (('RACE',), 'race'),
    'relation_extraction': (('RelationExtraction',), 'relation_extraction'),
    'duorc': (('DuoRC.ParaphraseRC', 'DuoRC'), 'duo_rc'),
    'drop': (('DROP',), 'drop'),
}


def _candidates(folder: str, stems) -> list[str]:
  return [f'mrqa/{folder}/{stem}{suffix}' for stem in stems for suffix in ('.jsonl.gz', '.jsonl')]


def _from_tfds(example):
  """TFDS mrqa has one question per example; rebuild the release's context-with-qas shape."""
  return {'context': example['context'],
          'qas': [{'qid': example['qid'], 'question': example['question'],
                   'answers': example['answers']}]}


def _qa_records(example, split, with_prefix):
  del split
  out = []
  for qa in example['qas']:
    answers = list(qa['answers'])
    text = f'question: {qa["question"]} context: {example["context"]}'
    out.append(record(('squad ' if with_prefix else '') + text, answers[0] if answers else '',
                      answers=answers, group=qa.get('qid', '')))
  return out


def _task(name, local, tfds_config, tfds_splits) -> TaskSpec:
  return TaskSpec(name, Source(local, read_mrqa, f'mrqa/{tfds_config}', tfds_splits,
                               _from_tfds, HOW_TO_GET),
                  _qa_records, 'squad', eval_mode='decode', target_length=32)


TASKS = {
    'squad': _task('squad', {'train': _candidates('in_domain_train', ('SQuAD',)),
                             'validation': _candidates('in_domain_dev', ('SQuAD',))},
                   'squad', {'train': 'train', 'validation': 'validation'}),
}
for _name, (_stems, _tfds) in OUT_OF_DOMAIN.items():
  # Eval-only: MRQA's out-of-domain sets have a dev split only (TFDS calls it `test`).
  TASKS[_name] = _task(_name, {'validation': _candidates('out_of_domain_dev', _stems)}, _tfds,
                       {'validation': 'test'})
