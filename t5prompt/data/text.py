"""The shipped unlabelled English text the miniature pre-trains on, as documents.

Three sources under the data directory (see its MANIFEST, sections 3 and 7):
  * WikiText-2 raw, validation and test splits (`text/wikitext-2-raw/`): one document per
    article (` = Title = ` headings), WikiText's ` @-@ ` style markers undone;
  * NLTK's Project Gutenberg selection (`text/gutenberg_nltk/gutenberg.zip`): 15 books, cut
    into ~5,000-character documents at paragraph breaks;
  * the contexts (passages, plots) of the MRQA out-of-domain dev files DROP, DuoRC and
    RelationExtraction, without their questions and answers.
None of it is a dev or test set the demos evaluate on (SuperGLUE, GLUE). Documents are split
into `train` and `validation` (held out, for the pre-training loss and encoder reliance) by a
stable hash of their text, so the split never depends on the order they are read in.
"""

import functools
import hashlib
import json
import re
import zipfile
from pathlib import Path

from t5prompt.data.sources import DataNotFoundError, data_dir

WIKITEXT = ('text/wikitext-2-raw/wiki.valid.raw', 'text/wikitext-2-raw/wiki.test.raw')
GUTENBERG = 'text/gutenberg_nltk/gutenberg.zip'
MRQA_CONTEXTS = ('mrqa/out_of_domain_dev/DROP.jsonl', 'mrqa/out_of_domain_dev/DuoRC.jsonl',
                 'mrqa/out_of_domain_dev/RelationExtraction.jsonl')
# DROP's passages are Wikipedia's, DuoRC's are film plots, RelationExtraction's WikiReading's.
MRQA_GENRES = {'DROP': 'wikipedia', 'DuoRC': 'film', 'RelationExtraction': 'wikipedia'}
GENRES = ('wikipedia', 'book', 'film')
SPLITS = ('train', 'validation')
VALIDATION_SHARE = 0.02  # of documents, by hash
GUTENBERG_DOCUMENT_CHARS = 5000
HOW_TO_GET = ('The miniature pre-trains on WikiText-2 raw (valid/test), NLTK\'s Gutenberg '
              'selection (gutenberg.zip) and the MRQA out-of-domain dev files, laid out as in '
              'shared/data (see its MANIFEST); point T5PROMPT_DATA_DIR at such a folder.')


def files() -> list[str]:
  return [*WIKITEXT, GUTENBERG, *MRQA_CONTEXTS]


def _require(relative: str) -> Path:
  path = data_dir() / relative
  if not path.is_file():
    raise DataNotFoundError(f'Pre-training text {relative} not found at {path}. {HOW_TO_GET}')
  return path


def _wikitext(path: Path) -> list[str]:
  text = path.read_text(encoding='utf-8')  # universal newlines: the shipped CRLF reads as LF
  documents = []
  for article in re.split(r'\n (?== [^=].* = \n)', text):
    article = re.sub(r' @(.)@ ', r'\1', article)  # 1 @,@ 000 -> 1,000; well @-@ known
    lines = [line.strip() for line in article.split('\n')]
    body = '\n'.join(line for line in lines if line and not line.startswith('='))
    if len(body) > 200:
      documents.append(body)
  return documents


def _gutenberg(path: Path) -> list[str]:
  documents = []
  with zipfile.ZipFile(path) as archive:
    for name in sorted(archive.namelist()):
      if not name.endswith('.txt'):
        continue
      raw = archive.read(name)
      try:
        text = raw.decode('utf-8')
      except UnicodeDecodeError:  # two books hold Latin-1 bytes (as NLTK reads them)
        text = raw.decode('latin-1')
      paragraphs = [p.replace('\n', ' ').strip() for p in text.replace('\r\n', '\n').split('\n\n')]
      current = ''
      for paragraph in filter(None, paragraphs):
        current = f'{current}\n{paragraph}' if current else paragraph
        if len(current) > GUTENBERG_DOCUMENT_CHARS:
          documents.append(current)
          current = ''
      if current:
        documents.append(current)
  return documents


def _mrqa_contexts(path: Path) -> list[str]:
  with open(path, encoding='utf-8') as lines:
    next(lines)  # the MRQA header
    return list(dict.fromkeys(json.loads(line)['context'] for line in lines if line.strip()))


def _split_of(document: str) -> str:
  digest = int(hashlib.sha256(document.encode()).hexdigest()[:8], 16)
  return 'validation' if digest < VALIDATION_SHARE * 16 ** 8 else 'train'


@functools.cache
def _all_documents(root: str) -> tuple[tuple[str, str, str], ...]:
  """(split, genre, text) of every document; the genre is what the text is (PPT's
  single-sentence pseudo-label)."""
  del root  # the cache key: the data directory the files were read from
  documents = []
  for relative in WIKITEXT:
    documents += [('wikipedia', text) for text in _wikitext(_require(relative))]
  documents += [('book', text) for text in _gutenberg(_require(GUTENBERG))]
  for relative in MRQA_CONTEXTS:
    documents += [(MRQA_GENRES[Path(relative).stem], text)
                  for text in _mrqa_contexts(_require(relative))]
  return tuple((_split_of(text), genre, text) for genre, text in documents)


def documents(split: str, with_genre: bool = False) -> list:
  """The documents of a split, in a fixed order (with `with_genre`, (genre, text) pairs)."""
  if split not in SPLITS:
    raise DataNotFoundError(f'Unknown split {split!r} of the pre-training text; it has '
                            f'{", ".join(SPLITS)}.')
  return [(genre, text) if with_genre else text
          for which, genre, text in _all_documents(str(data_dir())) if which == split]


class TextSource:
  """The pre-training text as a task source (`data list` shows where it comes from)."""
  splits = SPLITS

  def locate(self, split: str) -> str:
    if split not in SPLITS:
      raise DataNotFoundError(f'Unknown split {split!r}; the pre-training text has '
                              f'{", ".join(SPLITS)}.')
    return ', '.join(str(_require(relative)) for relative in files()) + f' ({split} documents)'

  def rows(self, split: str) -> list[dict]:
    return [{'text': text} for text in documents(split)]

  def fingerprint(self) -> list:
    """What identifies the text read: each file's name, size and modification time."""
    return [(relative, _require(relative).stat().st_size, _require(relative).stat().st_mtime)
            for relative in files()]
