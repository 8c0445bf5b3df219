"""Few-shot prompt tuning from scratch, from PPT's pre-trained prompts and from SPoT, on the
miniature ladder (Gu et al. 2022's comparison, in miniature).

  1. sources, per ladder size: prompts pre-trained on PPT's sentence-pair and multiple-choice
     tasks and one on the mixture of all three PPT formats (unified PPT), over the shipped
     unlabelled text (data/ppt.py); and a SPoT source prompt trained on the labelled RTE and CB
     train sets (a generic SPoT mixture);
  2. few_shot: BoolQ (sentence-pair format) and COPA (multiple choice) from FewGLUE's 32
     training examples (the shipped few-shot splits), 3 seeds, four starts: the class-label init
     (from scratch), PPT of the task's format (prompt.init=ppt), unified PPT and SPoT; 200
     steps (100 epochs of the 32 examples).

  t5prompt sweep --config configs/sweeps/few_shot_ppt.py --workdir runs/few_shot_ppt --parallel 2
  t5prompt report runs/few_shot_ppt/few_shot

The prompt settings are the main demo's (50 tokens, Adam at 0.1). Scores are on the tasks' dev
sets (BoolQ: its first 500 examples), the best of the evaluations every 50 steps, as in every
other study here.
"""

from t5prompt import miniature, run_dir
from t5prompt.data import ppt
from t5prompt.sweep import Stage, Sweep, product, runs

# The best-read backbone (encoder reliance 0.58); a size costs ~45 min here, so one on 2 cores.
SIZES = ('ladder-1',)
TASKS = {'superglue_boolq': 256, 'superglue_copa': 128}  # FewGLUE ships for these: input length
SEEDS = (0, 1, 2)
PROMPT = {'prompt.length': 50, 'optimizer.name': 'adam', 'optimizer.learning_rate': 0.1}
SOURCES = {
    'ppt': [{'task.name': ppt.task_name('sentence_pair')},
            {'task.name': ppt.task_name('multiple_choice')}],
    'ppt_unified': [{'task.name': ppt.task_name('sentence_pair'),
                     'task.mixture': [ppt.task_name(f) for f in ppt.FORMATS[1:]]}],
    'spot': [{'task.name': 'superglue_rte', 'task.mixture': ['superglue_cb']}],
}
SOURCE_TRAINING = {'train.steps': 800, 'train.eval_every': 200, 'train.checkpoint_every': 200,
                   'train.seed': 0, 'train.max_eval_examples': 300, 'task.input_length': 256}
FEW_SHOT = {'task.train_split': 'fewglue_train', 'train.steps': 200, 'train.eval_every': 50,
            'train.checkpoint_every': 100, 'train.max_eval_examples': 500}


def get_sweep(workdir):
  sources_dir = workdir / 'sources'
  sources = product([miniature.backbone(size) for size in SIZES],
                    [{**PROMPT, **SOURCE_TRAINING, **task, 'series': f'{name}_source'}
                     for name, tasks in SOURCES.items() for task in tasks])
  source_runs = runs(miniature.run_base, sources)
  spot_prompt = {o['model.label']: sources_dir / name / run_dir.PROMPT
                 for o, (name, _) in zip(sources, source_runs) if o['series'] == 'spot_source'}

  few_shot = []
  for size in SIZES:
    starts = [
        {'series': 'prompt_tuning'},  # from scratch: the class-label init
        {'series': 'ppt', 'prompt.init': 'ppt', 'prompt.ppt_runs': str(sources_dir)},
        {'series': 'ppt_unified', 'prompt.init': 'ppt', 'prompt.ppt_choice': 'unified',
         'prompt.ppt_runs': str(sources_dir)},
        {'series': 'spot', 'prompt.init': 'file', 'prompt.init_file': str(spot_prompt[size])},
    ]
    few_shot += product([miniature.backbone(size)], [{**PROMPT, **FEW_SHOT}],
                        [{'task.name': task, 'task.input_length': length}
                         for task, length in TASKS.items()],
                        starts, {'train.seed': list(SEEDS)})
  return Sweep('few_shot_ppt', [miniature.ladder_stage(),
                                Stage('sources', source_runs, root=sources_dir),
                                Stage('few_shot', runs(miniature.run_base, few_shot),
                                      root=workdir / 'few_shot')])
