"""The published numbers t5prompt's reports print beside its own (../shared/reference/
paper_numbers.md): Lester et al. 2021 (Figure 1 as tabulated in SPoT's appendix, Tables 1-2)."""

SIZES = ('small', 'base', 'large', 'xl', 'xxl')
# Parameter counts of the LM-adapted T5 v1.1 checkpoints the paper prompt-tuned.
PARAMS = {'small': 77e6, 'base': 250e6, 'large': 800e6, 'xl': 3e9, 'xxl': 11e9}

# SuperGLUE dev average score by size.
SCALE = {
    'model_tuning': (62.8, 73.7, 81.3, 83.1, 89.9),
    'model_tuning_multitask': (64.6, 79.2, 84.5, 88.0, 90.1),
    'prompt_tuning': (59.8, 63.1, 74.5, 79.2, 88.8),
    'spot': (64.5, 73.2, 82.7, 88.7, 91.2),
}

# GPT-3 few-shot prompt design on SuperGLUE, smallest model to 175B (the paper's figure 1).
GPT3_PROMPT_DESIGN = (40.6, 52.8)

# Prompt ensembles, T5 XXL, SuperGLUE dev, 5 prompts (section 4 of paper_numbers.md).
ENSEMBLE = {'average': 90.5, 'best': 91.0, 'majority_vote': 91.3}
# SPoT retrieval, T5 Base, averaged over targets (section 5).
SPOT_RETRIEVAL = {'scratch': 74.7, 'oracle': 80.7, 'top1_cosine': 76.7}

# MRQA, trained on SQuAD, F1 (T5 XXL): eval task -> (model tuning, prompt tuning).
MRQA = {
    'mrqa_squad': (94.9, 94.8), 'mrqa_textbookqa': (54.3, 66.8), 'mrqa_bioasq': (77.9, 79.1),
    'mrqa_race': (59.8, 60.7), 'mrqa_relation_extraction': (88.4, 88.8),
    'mrqa_duorc': (68.9, 67.7), 'mrqa_drop': (68.9, 67.1),
}
# Paraphrase transfer, accuracy / F1 (T5 XXL): (train, eval) -> (model tuning, prompt tuning).
PARAPHRASE = {
    ('paraphrase_qqp', 'paraphrase_mrpc'): ((73.1, 81.2), (76.3, 84.3)),
    ('paraphrase_mrpc', 'paraphrase_qqp'): ((74.9, 70.9), (75.4, 69.7)),
}


def scale(series: str, size: str) -> float | None:
  if series in SCALE and size in SIZES:
    return SCALE[series][SIZES.index(size)]
  return None
