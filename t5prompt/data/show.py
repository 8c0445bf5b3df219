"""`t5prompt data list` and `data show`: the tasks, where each split is read from, and
rendered examples of a split, as text."""

from t5prompt.data.pipeline import load_tokenized
from t5prompt.data.tasks import describe_tasks, get_task_spec
from t5prompt.data.vocab import get_vocabulary


def task_list(name_filter: str = '') -> str:
  """Every task (whose name contains `name_filter`), its metric, labels and splits' sources."""
  lines = []
  for task in describe_tasks():
    if name_filter and name_filter not in task['task']:
      continue
    labels = f" labels={'/'.join(task['labels'])}" if task['labels'] else ''
    lines.append(f"{task['task']}  metric={task['metric']} eval={task['eval_mode']}{labels}")
    lines += [f'    {split:18s} {where}' for split, where in task['splits'].items()]
  return '\n'.join(lines)


def split_examples(task: str, split: str, num: int, input_length: int,
                   target_length: int = 0) -> str:
  """The first `num` examples of a split as the model sees them, with truncation counts."""
  spec = get_task_spec(task)
  data = load_tokenized(task, split, input_length, target_length or spec.target_length)
  vocabulary = get_vocabulary()
  lines = [f'{task} [{split}]: {len(data)} examples, from {spec.source.locate(split)}',
           f'  truncated to {input_length} input tokens: {data.truncated_inputs}; targets: '
           f'{data.truncated_targets}']
  for row in range(min(num, len(data))):
    record = data.records[row]
    length = int((data.inputs[row] > 0).sum())
    lines += [f'--- {row}: label={record["label"]} group={record["group"]!r} answers='
              f'{record["answers"][:3]}',
              f'  inputs  ({length} tokens): '
              f'{vocabulary.decode(data.inputs[row].tolist())[:400]!r}',
              f'  targets: {vocabulary.decode(data.targets[row].tolist())!r}']
  return '\n'.join(lines)
