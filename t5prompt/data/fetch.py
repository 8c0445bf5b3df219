"""`t5prompt data fetch [NAME ...]`: the data the tasks and the miniature read, downloaded into
$T5PROMPT_DATA_DIR in the layout the sources expect, when the machine is online.

Every file is a pinned blob of a public GitHub repository (the copies shared/data's MANIFEST
lists, where each source's licence is given), checked against its recorded size and sha256
before it takes its place. A download resumes from its `.part` file after an interruption; a
file that fails its check is deleted and named, never kept. Files already present and correct
are skipped. Full SuperGLUE/GLUE releases beyond these copies: prepare TFDS (`super_glue`,
`glue`, `mrqa`) in $TFDS_DATA_DIR, which the sources read first.
"""

import dataclasses
import hashlib
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from t5prompt import atomic
from t5prompt.data import text
from t5prompt.data.sources import data_dir

GITHUB_RAW = 'https://raw.githubusercontent.com'
CHUNK = 1 << 16


class FetchError(RuntimeError):
  """A download that could not finish (offline, a server error): rerun to resume."""
  user_facing = True


@dataclasses.dataclass(frozen=True)
class Release:
  repo: str
  commit: str
  path: str  # in the repository
  size: int
  sha256: str

  def url(self, base: str = GITHUB_RAW) -> str:
    return f'{base}/{self.repo}/{self.commit}/{urllib.parse.quote(self.path)}'


# (repository, commit) of each pinned source
_P_TUNING = ('THUDM/P-tuning', 'f4225d4d8003868b31ed659dfe9732a351ad42d9')
_FEWGLUE = ('timoschick/fewglue', 'f52d9515de38cad663869c9e25b79107cda1d345')
_FEW_SHOT_LEARNING = ('tonyzhaozh/few-shot-learning', 'e04d8643be91c2cce63f33e07760ff75d5aa3ad0')
_SYNTHETIC_DATA_FOR_ZO = ('Rongite/Synthetic_Data_for_ZO',
                          '1a3914a7232db4d8d459a60cc0086cf0ef22953f')
_JIANT = ('nyu-mll/jiant', '789e1c0aafa03bf12342be176228e25152bc6a50')
_MRQA = ('seanie12/mrqa', '39b77f2ce12621f705b5926c7141aa623122ced8')
_MRQA_SERVING = ('seanie12/mrqa-serving', 'd9ce519f0bb91f70407c69fb5706c3eeb4420769')
_MY_BERT = ('Nstats/my_bert', 'c90ab15add69e04c9317c34fc4bdfeab439a3c8f')
_POWERFULPROMPTFT = ('ZhengxiangShi/PowerfulPromptFT', 'b4ecdea060847115e9909b442ab4eb15bcb2a2c4')
_LLMHUMANMODELING = ('DRAGNLabs/LLMHumanModeling', '379149361c70592030e47c6df842d43f547dfd43')
_NLTK = ('nltk/nltk', '583117dd80c39f604910ead218cab30da18a8d9a')

RELEASES: dict[str, Release] = {
    'superglue/BoolQ/fewglue_32/dev32.jsonl': Release(
        *_P_TUNING, 'FewGLUE_32dev/BoolQ/dev32.jsonl', 21820,
        '0af324b658a72fdd7767aa3c27c1dfafbc03e8e987a148b29e42a72d84b9f9e3'),
    'superglue/BoolQ/fewglue_32/train.jsonl': Release(
        *_FEWGLUE, 'FewGLUE/BoolQ/train.jsonl', 24840,
        '317245ba0842129234a368274701dfc196139aa627eff44aefc827c6888935e1'),
    'superglue/BoolQ/val.jsonl': Release(
        *_P_TUNING, 'FewGLUE_32dev/BoolQ/val.jsonl', 2254565,
        '0c86a5045886e5795fe9052003873f7d94b88ed3028a33007c51d99e44fd66d9'),
    'superglue/CB/test.jsonl': Release(
        *_FEW_SHOT_LEARNING, 'data/cb/test.jsonl', 99881,
        '860679c4ef6f56758f5530bfbcbf2fd7905667184144f3594ace9bb4c435618d'),
    'superglue/CB/train.jsonl': Release(
        *_FEW_SHOT_LEARNING, 'data/cb/train.jsonl', 99499,
        '32017480d3a10508646e3efd64502c639f13d4d15077f278d2fd0992c33a3126'),
    'superglue/CB/val.jsonl': Release(
        *_P_TUNING, 'FewGLUE_32dev/CB/val.jsonl', 24598,
        'c6125587e9601560cb16ea223c33964c5a915568d2af68a81f651b6ef25395ec'),
    'superglue/COPA/fewglue_32/dev32.jsonl': Release(
        *_P_TUNING, 'FewGLUE_32dev/COPA/dev32.jsonl', 5874,
        'eb43b015d061738467f284c60049ef0afcaf707ec8e528ab3c5c4285a5f5618a'),
    'superglue/COPA/fewglue_32/train.jsonl': Release(
        *_FEWGLUE, 'FewGLUE/COPA/train.jsonl', 5818,
        '9955ae6e0ee109c96c00c0957d5873c0cb4ea9aced83b6a15b15258bb64b7dd5'),
    'superglue/COPA/train.jsonl': Release(
        *_SYNTHETIC_DATA_FOR_ZO, 'Data/original/Copa/copa_train.jsonl', 67923,
        'e91ea7690031743f9be932623d0d27234117d415dd92e79f806d6a2aaa28ce0c'),
    'superglue/COPA/val.jsonl': Release(
        *_P_TUNING, 'FewGLUE_32dev/COPA/val.jsonl', 18169,
        'fa61467cc251010178ed72f8ca82a0fceefc4ca9a85f87ec3b6102955e1a1f1a'),
    'superglue/MultiRC/fewglue_32/dev32.jsonl': Release(
        *_P_TUNING, 'FewGLUE_32dev/MultiRC/dev32.jsonl', 65041,
        '3734d2cac8d1e8d13e2f5e13bec727be7576b45453e9fd765e2075e163f9653d'),
    'superglue/MultiRC/fewglue_32/train.jsonl': Release(
        *_FEWGLUE, 'FewGLUE/MultiRC/train.jsonl', 64111,
        'e584db1b55f7da7c1e6a2d0a6b56eb6edcaff26e69393d628390e70c39ccb561'),
    'superglue/MultiRC/val.jsonl': Release(
        *_P_TUNING, 'FewGLUE_32dev/MultiRC/val.jsonl', 550086,
        'd2b480195b15574ac00d52c4479f630bc161a7ab2de77e970fd00652846953ee'),
    'superglue/RTE/test.jsonl': Release(
        *_JIANT, 'data/RTE/test.jsonl', 1056063,
        'fb4025a8b072862f0323423dff1de8980a024bfb8775e09c80ff3cf1c77677b1'),
    'superglue/RTE/train.jsonl': Release(
        *_JIANT, 'data/RTE/train.jsonl', 977550,
        'fdfb03443abe3ec0424b7fc5d1a8863361719bc061338b7a63e56b94d615f201'),
    'superglue/RTE/val.jsonl': Release(
        *_JIANT, 'data/RTE/val.jsonl', 104895,
        'ab990507bf5f35dc176cba7770a72bfa2c50a88ed72b8cc95cfbf9db95ab1af1'),
    'superglue/ReCoRD/fewglue_32/dev32.jsonl': Release(
        *_P_TUNING, 'FewGLUE_32dev/ReCoRD/dev32.jsonl', 60220,
        'c420c9c49ee310d8648e64893c72b8f69b94085d3207c303787c24409c438663'),
    'superglue/ReCoRD/fewglue_32/train.jsonl': Release(
        *_FEWGLUE, 'FewGLUE/ReCoRD/train.jsonl', 62448,
        '22bbee303ffd8e2c29f36d253c14a1c3d072ceab18c31481cea8ba3ea28d89ca'),
    'superglue/WSC/test.jsonl': Release(
        *_JIANT, 'data/WSC/test.jsonl', 42751,
        'e278b00238f9f01764f39a934a6515379016c908b2191ff9174bd74296f28310'),
    'superglue/WSC/train.jsonl': Release(
        *_JIANT, 'data/WSC/train.jsonl', 140984,
        '0ffaa3fd8d21e58a0805962565d1619aa4819bc3d034255777f606f801ae5a42'),
    'superglue/WSC/val.jsonl': Release(
        *_JIANT, 'data/WSC/val.jsonl', 31167,
        'e5c685ea4bdc347354036a28176459f6feeb0b6870375ecfb3d6ddb1f0e28bef'),
    'superglue/WiC/fewglue_32/dev32.jsonl': Release(
        *_P_TUNING, 'FewGLUE_32dev/WiC/dev32.jsonl', 7328,
        '3df4ca565f109be9476caa51884ba13c5f2a33c939898cf80bb53e09fdc73062'),
    'superglue/WiC/fewglue_32/train.jsonl': Release(
        *_FEWGLUE, 'FewGLUE/WiC/train.jsonl', 7477,
        'b82c0c3f79d2f19bdd3c894f90f9deff0ebff787822a99ff6420db733c2a88f0'),
    'superglue/WiC/val.jsonl': Release(
        *_P_TUNING, 'FewGLUE_32dev/WiC/val.jsonl', 146302,
        '9f7207c88beba42cbc139de4c62ce05b23bffc189b3d561594b160e0c3920c0b'),
    'mrqa/in_domain_dev/SQuAD.jsonl.gz': Release(
        *_MRQA, 'generator/SQuAD.jsonl.gz', 3474262,
        '5afa4b088adf297fc29374ddf2d44d974b8837380e2554e62edf258fee5c32ee'),
    'mrqa/out_of_domain_dev/DROP.jsonl': Release(
        *_MRQA_SERVING, 'mrqa-dev-data/DROP.jsonl', 2045601,
        'bd3cf488480cc73abe277205911be56597aa415b6940cc3ebd0b63b41522eb7a'),
    'mrqa/out_of_domain_dev/DuoRC.jsonl': Release(
        *_MRQA_SERVING, 'mrqa-dev-data/DuoRC.jsonl', 3704882,
        'd0ffa1cc32c162ba7b0f191c87d149576e28b8b949a7942f410f3b6c1c575f62'),
    'mrqa/out_of_domain_dev/RelationExtraction.jsonl': Release(
        *_MRQA_SERVING, 'mrqa-dev-data/RelationExtraction.jsonl', 3126064,
        'd3682f43698a8ca099a96719618104f3af579c5829e0d9918a2202bd2b582edb'),
    'glue/MRPC/LICENSE-Microsoft-Shared-Source.htm': Release(
        *_MY_BERT, 'data/MRPC/Microsoft Shared Source License.htm', 9703,
        '2d84356e4c1d0db09fa338ad7100ac56843c4ddd3d152c34130a6069f9f914c0'),
    'glue/MRPC/dev.tsv': Release(
        *_MY_BERT, 'data/MRPC/dev.tsv', 103255,
        '81c8a1a9e1dfe461dd2c1a4f98f43fe18bece44d2bf9e3d0b245b88e5aa5eaf7'),
    'glue/MRPC/dev_ids.tsv': Release(
        *_MY_BERT, 'data/MRPC/dev_ids.tsv', 6222,
        '971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7'),
    'glue/MRPC/test.tsv': Release(
        *_MY_BERT, 'data/MRPC/test.tsv', 435216,
        '4ee428d354c01fa35c2f0f6ab835398abb0bec01f17ed68fbcb6c04265505b0a'),
    'glue/MRPC/train.tsv': Release(
        *_MY_BERT, 'data/MRPC/train.tsv', 919457,
        '122becc469405bc16f9defcb8715d2a4b7ce600e9d9381e6dc42bfdd1494c51d'),
    'glue/QQP/lmbff_k_shot/16-100/dev.tsv': Release(
        *_POWERFULPROMPTFT, 'data/k-shot/QQP/16-100/dev.tsv', 4689,
        '26c4856e359055b7e479da5e985ffb1bf9d98b7058a14eb96c88a225c72114f3'),
    'glue/QQP/lmbff_k_shot/16-100/train.tsv': Release(
        *_POWERFULPROMPTFT, 'data/k-shot/QQP/16-100/train.tsv', 4305,
        '3c17648dad48aa23c49b23555bde761e915c3e9b9ceb5e181d3fb5a6e79156da'),
    'glue/QQP/lmbff_k_shot/16-13/dev.tsv': Release(
        *_POWERFULPROMPTFT, 'data/k-shot/QQP/16-13/dev.tsv', 4524,
        '758535316b5f9608503bcce4ac41d7c0aa57f16a258c24aad9c7ea76ac0728db'),
    'glue/QQP/lmbff_k_shot/16-13/train.tsv': Release(
        *_POWERFULPROMPTFT, 'data/k-shot/QQP/16-13/train.tsv', 4641,
        'b5c18014139edb84e550f818baf8494d078e20b4ffd3a6f791a05c021c22d965'),
    'glue/QQP/lmbff_k_shot/16-21/dev.tsv': Release(
        *_POWERFULPROMPTFT, 'data/k-shot/QQP/16-21/dev.tsv', 4321,
        '79a5cc094336608d65ec752a307519b09ddcadbb0f6222a2cfd9d9a133920c2f'),
    'glue/QQP/lmbff_k_shot/16-21/train.tsv': Release(
        *_POWERFULPROMPTFT, 'data/k-shot/QQP/16-21/train.tsv', 4735,
        'b582ff3657c4d76f12acd067753b50b4b72110a872ddb0c30a344cbb3ce7e790'),
    'glue/QQP/lmbff_k_shot/16-42/dev.tsv': Release(
        *_POWERFULPROMPTFT, 'data/k-shot/QQP/16-42/dev.tsv', 4837,
        '4ce74e40171f5ead17da29e5941e2641e2aa12fa554732f7f0dff1030beaf3d8'),
    'glue/QQP/lmbff_k_shot/16-42/train.tsv': Release(
        *_POWERFULPROMPTFT, 'data/k-shot/QQP/16-42/train.tsv', 4879,
        '9a2c3d015cfdb8765f8d11d3a256610bb72d7af93f17871958f634c0aa1f31e2'),
    'glue/QQP/lmbff_k_shot/16-87/dev.tsv': Release(
        *_POWERFULPROMPTFT, 'data/k-shot/QQP/16-87/dev.tsv', 4800,
        '1c81b45f1f90812cd3d1bc7d099a4eee05d02cd41ac5640a3e713ed29c6c6650'),
    'glue/QQP/lmbff_k_shot/16-87/train.tsv': Release(
        *_POWERFULPROMPTFT, 'data/k-shot/QQP/16-87/train.tsv', 4137,
        'b0bfb93c242ef182c90236bfa2f2ce44fba06326f73245a559f4ae9d824f1f15'),
    'text/wikitext-2-raw/wiki.test.raw': Release(
        *_LLMHUMANMODELING, 'data/wiki.test.raw', 1294948,
        'e4fbb284c0a4dbd0c912e35ad507efa55d0831f54bc761a23363a4b3ff3e3e90'),
    'text/wikitext-2-raw/wiki.valid.raw': Release(
        *_LLMHUMANMODELING, 'data/wiki.valid.raw', 1150606,
        'f117e548b59c18638ecfdc5db1b457927434551c185d7f59c7882cb2110a551a'),
    'text/gutenberg_nltk/gutenberg.zip': Release(
        *_NLTK, 'nltk_data/corpora/gutenberg.zip', 3789737,
        '5c638910fa1ac7a0294623950c5e932b421f2057eeedfbb7e8a200e6c77f0168'),
}

# What `data fetch` gets with no names: what the built-in demo reads (CB, MRPC, the text).
DEMO = ('superglue_cb', 'glue_mrpc', 'pretrain_span_corruption')


def files_for(names: list[str]) -> list[str]:
  """The data files (paths relative to the data directory) that the named tasks read; 'all'
  is every file."""
  from t5prompt.data.tasks import get_task_spec  # pylint: disable=import-outside-toplevel
  if 'all' in names:
    return list(RELEASES)
  wanted = []
  for name in names or DEMO:
    source = get_task_spec(name).source  # an unknown name: the nearest names suggested
    candidates = (text.files() if isinstance(source, text.TextSource)
                  else [path for paths in source.local.values() for path in paths])
    wanted += [path for path in candidates if path in RELEASES]
  return list(dict.fromkeys(wanted))


def _sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as handle:
    for block in iter(lambda: handle.read(CHUNK), b''):
      digest.update(block)
  return digest.hexdigest()


def _download(url: str, part: Path, total: int, progress) -> None:
  """`url` into `part`, continuing from the bytes already there (HTTP Range)."""
  have = part.stat().st_size if part.exists() else 0
  request = urllib.request.Request(url, headers={'Range': f'bytes={have}-'} if have else {})
  with urllib.request.urlopen(request, timeout=60) as response:
    if have and response.status != 206:  # the server sent the whole file: start again
      have = 0
    progress.reset(total)
    progress.update(have)
    with open(part, 'ab' if have else 'wb') as handle:
      for block in iter(lambda: response.read(CHUNK), b''):
        handle.write(block)
        progress.update(len(block))


def fetch(relative_paths: list[str], root: str | os.PathLike | None = None,
          base_url: str = '') -> dict[str, str]:
  """Downloads each file that is missing (or only partly there) from `base_url` (default
  $T5PROMPT_DATA_MIRROR, a mirror laid out as GitHub's raw URLs, else GitHub itself);
  {path: 'present' | 'fetched'}. Raises with the URL and what to do when a file cannot be
  fetched or fails its check."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  root = Path(root) if root is not None else data_dir()
  base_url = base_url or os.environ.get('T5PROMPT_DATA_MIRROR', GITHUB_RAW)
  status = {}
  for relative in relative_paths:
    release, target = RELEASES[relative], root / relative
    if target.exists():
      if target.stat().st_size == release.size and _sha256(target) == release.sha256:
        status[relative] = 'present'
        continue
      raise ValueError(f'{target} is there but is not the published file (size or sha256 '
                       'differ); move it away to fetch the published one, or keep using it.')
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + '.part')
    url = release.url(base_url)
    with tqdm(total=release.size, unit='B', unit_scale=True, desc=relative, file=sys.stderr,
              mininterval=1.0 if sys.stderr.isatty() else 30.0) as progress:
      try:
        _download(url, part, release.size, progress)
      except (urllib.error.URLError, OSError) as error:
        kept = part.stat().st_size if part.exists() else 0
        raise FetchError(f'Could not fetch {url}: {error}. {kept} bytes are kept in {part}; '
                           'rerun `t5prompt data fetch` to resume.') from None
    if part.stat().st_size != release.size or _sha256(part) != release.sha256:
      part.unlink()
      raise ValueError(f'{url} did not match its recorded size {release.size} and sha256 '
                       f'{release.sha256}; the download was deleted. Rerun to try again; if it '
                       'persists the source has changed: report it.')
    os.chmod(part, atomic.new_file_mode())
    os.replace(part, target)
    status[relative] = 'fetched'
  return status
