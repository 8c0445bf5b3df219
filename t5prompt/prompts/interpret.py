"""What a soft prompt "says": the nearest vocabulary tokens (cosine) of each prompt position,
as Lester et al. 2021 (section 7) read their prompts."""

import numpy as np


def nearest_token_ids(prompt, embedding, k: int = 5) -> np.ndarray:
  """int [P, k]: per position, the ids of the k embeddings of highest cosine, best first."""
  prompt = np.asarray(prompt, np.float32)
  table = np.asarray(embedding, np.float32)
  prompt = prompt / np.maximum(np.linalg.norm(prompt, axis=-1, keepdims=True), 1e-12)
  table = table / np.maximum(np.linalg.norm(table, axis=-1, keepdims=True), 1e-12)
  scores = prompt @ table.T  # [P, vocab]
  top = np.argpartition(-scores, k - 1, axis=-1)[:, :k]
  order = np.take_along_axis(scores, top, axis=-1).argsort(axis=-1)[:, ::-1]
  return np.take_along_axis(top, order, axis=-1)


def _piece(vocabulary, token_id: int) -> str:
  tokenizer = getattr(vocabulary, 'tokenizer', None)  # seqio's SentencePiece processor
  if tokenizer is not None and token_id < tokenizer.get_piece_size():
    return tokenizer.id_to_piece(token_id)
  return vocabulary.decode([token_id]) or f'<id {token_id}>'


def nearest_tokens(prompt, embedding, vocabulary, k: int = 5) -> list[list[str]]:
  """Per position, the k nearest tokens as SentencePiece pieces (▁ marks a word start). Only
  real vocabulary rows compete (the table's padding rows past vocab_size do not)."""
  ids = nearest_token_ids(prompt, np.asarray(embedding)[:vocabulary.vocab_size], k)
  return [[_piece(vocabulary, int(i)) for i in row] for row in ids]
