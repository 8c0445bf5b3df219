"""Soft prompts and their initialisers."""

from t5prompt.prompts.initializers import INIT_NAMES, make_initializer
from t5prompt.prompts.soft_prompt import PROMPT_AXES, SoftPrompt, uniform_init
