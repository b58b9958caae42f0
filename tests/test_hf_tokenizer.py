"""`data.tokenizer='hf:PATH'`: a Hugging Face tokenizer folder's
tokenizer.json (the `tokenizers` library) tokenizes a text corpus as it is,
is stored with the prepared data and keyed by its file's hash; one-line
errors without the file or the library.

    python -m pytest -q tests/test_hf_tokenizer.py
"""
import sys

import numpy as np
import pytest

from core.errors import ConfigError
from distill import config_lib
from distill.data import datasets, tokenizers
from test_text import corpus, text_cfg


def hf_tokenizer_folder(folder, text_path, vocab=300):
  """A byte-level BPE tokenizer.json trained on the corpus, in `folder`."""
  hf = pytest.importorskip('tokenizers')
  tok = hf.Tokenizer(hf.models.BPE())
  tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = hf.decoders.ByteLevel()
  tok.train([str(text_path)], hf.trainers.BpeTrainer(
      vocab_size=vocab, show_progress=False,
      initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet()))
  folder.mkdir()
  tok.save(str(folder / 'tokenizer.json'))
  return folder


def test_text_dataset_with_a_hugging_face_tokenizer(tmp_path):
  path = corpus(tmp_path / 'corpus.txt')
  folder = hf_tokenizer_folder(tmp_path / 'teacher', path)
  cfg = text_cfg(path, tmp_path, tokenizer=f'hf:{folder}')
  config_lib.validate_data(cfg)
  batch = datasets.load_split(cfg, 'train').get(np.arange(3))
  tok = datasets.tokenizer(cfg)
  assert tok.kind == 'hf' and datasets.num_classes(cfg) == tok.vocab_size
  text = open(path, encoding='utf-8').read()
  ids = tok.encode(text[:int(0.9 * len(text))])
  np.testing.assert_array_equal(batch['tokens'].reshape(-1), ids[:3 * 33])
  again = tokenizers.from_json(tok.to_json())
  assert again.decode(again.encode('Ça va, there?')) == 'Ça va, there?'
  assert tokenizers.key(cfg.tokenizer).startswith('hf-')
  assert tokenizers.digest(tok) == tokenizers.digest(again)


def test_a_folder_without_a_tokenizer_is_one_line(tmp_path):
  with pytest.raises(ConfigError, match=r"data.tokenizer='hf:.*nothing': no "
                     'tokenizer.json or tokenizer.model in'):
    tokenizers.check(f'hf:{tmp_path / "nothing"}')
  with pytest.raises(ConfigError, match="unknown data.tokenizer 'bpe'; "
                     'valid choices: char, hf:PATH, spm'):
    tokenizers.check('bpe')


def test_without_the_tokenizers_library_is_one_line(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tokenizers', None)
  with pytest.raises(ConfigError, match='needs the tokenizers library: pip '
                     'install tokenizers'):
    tokenizers.HuggingFace('{}')
