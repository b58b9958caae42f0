"""Language-model windows over TFDS text catalogs (lm1b, c4, wikipedia, ...).

    source = text.DocumentWindows(documents, tokenizer, seq_len=1024)
    source.get([0, 5])   # {'tokens': (2, 1025) int32, 'token_mask', 'id'}

Example `i` is document `i` of the split, tokenized on the fly (in the
input workers) and cut or padded to `seq_len + 1` tokens; `token_mask` marks
the real tokens, so padding never counts in the loss. Ids are document
indices: stable for a prepared dataset. The tokenizer (`data.tokenizer`:
char, or SentencePiece of `data.vocab_size` pieces) is trained once on the
first documents of the train split (up to TRAIN_CHARACTERS characters) and
stored beside the prepared data, in
`<data_dir>/distill_tokenizers/<name>-<tokenizer><vocab>.json`; every later
run reads it. (Local text files are prepared whole by the `text` builder,
distill/data/builders.py, with packed windows.)
"""
import os

import numpy as np

from distill import files
from distill.data import tokenizers

TRAIN_CHARACTERS = 20_000_000
TOKENIZER_DIR = 'distill_tokenizers'


def text_key(cfg):
  """The feature holding a catalog set's text (`data.text_key`, or 'text')."""
  return cfg.get('text_key') or 'text'


def _as_text(value):
  if isinstance(value, bytes):
    return value.decode('utf-8', errors='replace')
  return str(value)


class DocumentWindows:
  """Documents of a split as padded windows of token ids (see module)."""

  def __init__(self, documents, tokenizer, seq_len, key='text'):
    self.documents = documents
    self.tokenizer = tokenizer
    self.length = seq_len + 1
    self.key = key

  def __len__(self):
    return len(self.documents)

  def get(self, indices):
    indices = np.asarray(indices, np.int64)
    raw = self.documents.get_text(indices, self.key)
    tokens = np.zeros((len(indices), self.length), np.int32)
    mask = np.zeros((len(indices), self.length), np.float32)
    for row, doc in enumerate(raw):
      ids = self.tokenizer.encode(_as_text(doc))[:self.length]
      tokens[row, :len(ids)] = ids
      mask[row, :len(ids)] = 1.0
    return {'tokens': tokens, 'token_mask': mask, 'id': indices}


def catalog_tokenizer(cfg, documents, data_dir):
  """The stored tokenizer of a catalog set, trained and stored on first
  use."""
  kind = cfg.get('tokenizer') or 'char'
  vocab = cfg.get('vocab_size') or 0
  name = cfg.name.replace('/', '_').replace(':', '_')
  path = os.path.join(data_dir, TOKENIZER_DIR,
                      f'{name}-{tokenizers.key(kind)}{vocab or ""}.json')
  if files.exists(path):
    return tokenizers.from_json(files.read_json(path))
  chunks, total = [], 0
  for start in range(0, len(documents), 1000):
    batch = documents.get_text(np.arange(start, min(start + 1000,
                                                    len(documents))),
                               text_key(cfg))
    for doc in batch:
      chunks.append(_as_text(doc))
      total += len(chunks[-1])
    if total >= TRAIN_CHARACTERS:
      break
  tok = tokenizers.train(kind, [c for doc in chunks
                                for c in tokenizers.chunks_of(doc)], vocab)
  files.makedirs(os.path.dirname(path))
  files.write_json(path, tok.to_json(), everywhere=True)
  return tok


def prepared_directory(name, data_dir):
  """`<data_dir>/<name>/<config>/<newest version>` of a prepared catalog set
  (read without its builder code), or None."""
  base = os.path.join(data_dir, *name.split(':')[0].split('/'))
  if ':' in name:
    version = os.path.join(base, name.split(':')[1])
    return version if files.isdir(version) else None
  versions = sorted((v for v in files.listdir(base) if v[:1].isdigit()),
                    key=lambda v: [int(x) for x in v.split('.') if x.isdigit()])
  return os.path.join(base, versions[-1]) if versions else None
