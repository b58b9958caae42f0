"""Tokenizers for language-model data: characters, SentencePiece, or a
pretrained model's (a Hugging Face tokenizer folder).

    tok = tokenizers.train('spm', text_chunks, vocab_size=8000)
    ids = tok.encode('To be, or not to be')        # int32 numpy array
    tok.decode(ids) == 'To be, or not to be'
    tokenizers.from_json(tok.to_json())             # what prepared data and
                                                    # a workdir store

`char`: one id per character of a fixed alphabet (the sorted characters of
the text it was built from). `spm`: a SentencePiece unigram model trained
offline on the training text, normalisation off, whitespace and newlines
kept, and bytes for what it never saw, so `decode(encode(text)) == text` for
any text. `hf:PATH`: the tokenizer of a Hugging Face model folder, its
`tokenizer.json` (read with the `tokenizers` library: pip install
tokenizers) or else its `tokenizer.model` (SentencePiece), used as it is
(no special tokens added), so the data shares a pretrained teacher's
vocabulary. A tokenizer is stored whole (the alphabet, or the model's bytes),
so a checkpoint is always read with the vocabulary it was trained with.
"""
import base64
import hashlib
import io
import json
import re

import os

import numpy as np

from core.errors import ConfigError, check_choice

TOKENIZERS = ('char', 'spm')
HF_PREFIX = 'hf:'
HF_FILES = ('tokenizer.json', 'tokenizer.model')


class Char:
  """Characters of a fixed alphabet; an unseen character is an error."""
  kind = 'char'

  def __init__(self, alphabet):
    self.alphabet = ''.join(alphabet)
    self._ids = {c: i for i, c in enumerate(self.alphabet)}

  @property
  def vocab_size(self):
    return len(self.alphabet)

  def encode(self, text):
    try:
      return np.fromiter((self._ids[c] for c in text), np.int32, len(text))
    except KeyError as e:
      raise ValueError(f'character {e.args[0]!r} is not in this char '
                       "tokenizer's alphabet") from None

  def decode(self, ids):
    return ''.join(self.alphabet[int(i)] for i in ids)

  def to_json(self):
    return {'kind': 'char', 'alphabet': self.alphabet}


class SentencePiece:
  """A SentencePiece model (its serialized bytes)."""
  kind = 'spm'

  def __init__(self, model_bytes):
    import sentencepiece  # pylint: disable=g-import-not-at-top
    self.model_bytes = bytes(model_bytes)
    self._sp = sentencepiece.SentencePieceProcessor(
        model_proto=self.model_bytes)

  @property
  def vocab_size(self):
    return self._sp.vocab_size()

  def encode(self, text):
    return np.asarray(self._sp.encode(text), np.int32)

  def decode(self, ids):
    return self._sp.decode([int(i) for i in ids])

  def to_json(self):
    return {'kind': 'spm',
            'model': base64.b64encode(self.model_bytes).decode('ascii')}


class HuggingFace:
  """A `tokenizers` library tokenizer (the text of its tokenizer.json)."""
  kind = 'hf'

  def __init__(self, text):
    try:
      import tokenizers  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ConfigError('a Hugging Face tokenizer.json needs the tokenizers '
                        'library: pip install tokenizers') from None
    self.text = text
    self._tok = tokenizers.Tokenizer.from_str(text)

  @property
  def vocab_size(self):
    return self._tok.get_vocab_size(with_added_tokens=True)

  def encode(self, text):
    return np.asarray(self._tok.encode(text, add_special_tokens=False).ids,
                      np.int32)

  def decode(self, ids):
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def to_json(self):
    return {'kind': 'hf', 'tokenizer': self.text}


def _hf_file(kind):
  """The tokenizer file of `hf:PATH` (a one-line error without one)."""
  folder = kind[len(HF_PREFIX):]
  for name in HF_FILES:
    if os.path.isfile(os.path.join(folder, name)):
      return os.path.join(folder, name)
  raise ConfigError(f'data.tokenizer={kind!r}: no {" or ".join(HF_FILES)} '
                    f'in {folder}')


def check(kind):
  """One-line ConfigError unless `kind` is a tokenizer name or `hf:PATH`."""
  if kind.startswith(HF_PREFIX):
    _hf_file(kind)
    return kind
  return check_choice('data.tokenizer', kind, TOKENIZERS + ('hf:PATH',))


def key(kind):
  """`kind` as a name part: `hf-` and its file's hash for `hf:PATH`."""
  if not kind.startswith(HF_PREFIX):
    return kind
  with open(_hf_file(kind), 'rb') as f:
    return 'hf-' + hashlib.sha256(f.read()).hexdigest()[:12]


def load_hf(kind):
  """The tokenizer of a Hugging Face folder, `kind` = 'hf:PATH'."""
  path = _hf_file(kind)
  if path.endswith('.json'):
    with open(path, encoding='utf-8') as f:
      return HuggingFace(f.read())
  with open(path, 'rb') as f:
    return SentencePiece(f.read())


def from_json(obj):
  """The tokenizer `to_json()` wrote."""
  if obj['kind'] == 'char':
    return Char(obj['alphabet'])
  if obj['kind'] == 'hf':
    return HuggingFace(obj['tokenizer'])
  return SentencePiece(base64.b64decode(obj['model']))


def digest(tokenizer):
  """A short hash that identifies a tokenizer's vocabulary."""
  return hashlib.sha256(json.dumps(tokenizer.to_json(), sort_keys=True)
                        .encode()).hexdigest()[:16]


def train(kind, chunks, vocab_size=0):
  """A tokenizer built from text `chunks` (strings): `char` over their
  characters; `spm` a SentencePiece model of `vocab_size` pieces (a
  one-line error when the text is too small for it); `hf:PATH` the
  folder's own, untrained."""
  if kind.startswith(HF_PREFIX):
    return load_hf(kind)
  check_choice('data.tokenizer', kind, TOKENIZERS)
  chunks = list(chunks)
  if kind == 'char':
    return Char(sorted(set().union(*map(set, chunks))))
  if vocab_size <= 0:
    raise ConfigError('data.tokenizer=spm needs data.vocab_size > 0 (e.g. '
                      '8000)')
  import sentencepiece  # pylint: disable=g-import-not-at-top
  model = io.BytesIO()
  try:
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(chunks), model_writer=model,
        vocab_size=vocab_size, model_type='unigram', character_coverage=1.0,
        byte_fallback=True, normalization_rule_name='identity',
        remove_extra_whitespaces=False, add_dummy_prefix=False,
        split_by_whitespace=True, user_defined_symbols=['\n'],
        max_sentence_length=1 << 16, num_threads=2, minloglevel=2)
  except RuntimeError as e:
    least = re.search(r'smaller than required_chars\. \d+ vs (\d+)', str(e))
    if least:    # 256 byte pieces (for unseen text) and every character
      raise ConfigError(f'data.vocab_size={vocab_size} is too small for '
                        'SentencePiece with byte fallback on this text; at '
                        f'least {least.group(1)}') from e
    most = re.search(r'<= (\d+)', str(e))
    raise ConfigError(
        f'data.vocab_size={vocab_size} is too large for this text'
        + (f'; at most {most.group(1)}' if most else f' ({e})')) from e
  return SentencePiece(model.getvalue())


def chunks_of(text, size=4096):
  """`text` in pieces of `size` characters (SentencePiece trains on
  'sentences' of bounded length)."""
  return [text[i:i + size] for i in range(0, len(text), size)]
