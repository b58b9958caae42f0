"""Text corpora for language models: tokenizers, the `text` dataset of any
file or folder (prepared per source), TFDS text catalogs, and an LM trained
on a file the test writes."""
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import common, shakespeare_lm
from core.errors import ConfigError
from distill import train
from distill.data import builders, datasets, loading, tokenizers

def _words(n=800, seed=123):
  """A seeded vocabulary of word-like strings (every letter appears)."""
  rng = np.random.default_rng(seed)
  letters = list('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ')
  return [''.join(rng.choice(letters, rng.integers(2, 9))) for _ in range(n)
          ] + ['Ça', 'va.', 'there?'] + letters


WORDS = _words()


def corpus(path, n=6000, seed=0):
  words = np.random.default_rng(seed).choice(WORDS, n)
  lines = [' '.join(words[i:i + 12]) for i in range(0, n, 12)]
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines))
  return path


def text_cfg(path, tmp_path, **kw):
  c = common.base_config().data
  c.update(dict(name='text', manual_dir=str(path),
                data_dir=str(tmp_path / 'tfds'), seq_len=32, **kw))
  return c


@pytest.mark.parametrize('kind,vocab', [('char', 0), ('spm', 400)])
def test_tokenizers_round_trip_and_serialize(kind, vocab, tmp_path):
  text = open(corpus(tmp_path / 'corpus.txt'), encoding='utf-8').read()
  tok = tokenizers.train(kind, tokenizers.chunks_of(text), vocab)
  again = tokenizers.from_json(tok.to_json())
  sample = text[:500] + '\n\ttab  two'
  ids = tok.encode(sample if kind == 'spm' else sample.replace('\t', ' '))
  assert ids.dtype == np.int32 and ids.max() < tok.vocab_size
  assert again.decode(ids) == tok.decode(ids)
  assert tok.decode(ids) == (sample if kind == 'spm'
                             else sample.replace('\t', ' '))
  if kind == 'spm':                   # bytes for what it never saw
    assert tok.decode(tok.encode('never seen: ✓ ü')) == 'never seen: ✓ ü'
  assert tokenizers.digest(again) == tokenizers.digest(tok)


def test_spm_vocabulary_that_cannot_fit_the_text_is_one_line(tmp_path):
  text = open(corpus(tmp_path / 'c.txt'), encoding='utf-8').read()
  with pytest.raises(ConfigError, match=r'data.vocab_size=100000 is too '
                     r'large for this text; at most \d+'):
    tokenizers.train('spm', tokenizers.chunks_of(text), 100000)
  with pytest.raises(ConfigError, match=r'data.vocab_size=60 is too small '
                     r'for SentencePiece with byte fallback on this text; at '
                     r'least \d+'):
    tokenizers.train('spm', tokenizers.chunks_of(text), 60)


@pytest.mark.parametrize('kind,vocab', [('char', 0), ('spm', 400)])
def test_text_dataset_from_a_file(tmp_path, kind, vocab):
  path = corpus(tmp_path / 'corpus.txt')
  cfg = text_cfg(path, tmp_path, tokenizer=kind, vocab_size=vocab)
  train_split = datasets.load_split(cfg, 'train')
  test_split = datasets.load_split(cfg, 'test')
  batch = train_split.get(np.arange(3))
  assert batch['tokens'].shape == (3, 33)
  assert list(batch['id']) == [0, 1, 2]
  assert test_split.get(np.arange(1))['id'][0] == 1 << 32
  tok = datasets.tokenizer(cfg)
  assert datasets.num_classes(cfg) == tok.vocab_size
  text = open(path, encoding='utf-8').read()
  # windows are consecutive, non-overlapping slices of the train text's ids
  ids = tok.encode(text[:int(0.9 * len(text))])
  np.testing.assert_array_equal(batch['tokens'].reshape(-1), ids[:3 * 33])
  assert len(train_split) == len(ids) // 33


def test_a_folder_of_files_is_one_text(tmp_path):
  folder = tmp_path / 'books'
  folder.mkdir()
  for i in range(3):
    corpus(folder / f'part{i}.txt', n=2000, seed=i)
  (folder / '.hidden').write_text('not read')
  cfg = text_cfg(folder, tmp_path)
  data = loading.load_data(cfg)
  assert len(data.source['source']) == 3          # the three parts, hashed
  assert data.tokenizer.vocab_size == datasets.num_classes(cfg)


def test_a_changed_source_is_prepared_apart(tmp_path):
  path = corpus(tmp_path / 'corpus.txt')
  first = builders.text_config(str(path), 32)
  with open(path, 'a') as f:
    f.write(' and more')
  second = builders.text_config(str(path), 32)
  assert first.name != second.name       # its own prepared directory
  cfg = text_cfg(path, tmp_path)
  record = datasets.source_record(cfg)
  assert record['source'][0]['size'] == os.path.getsize(path)
  assert len(record['source'][0]['sha256']) == 64


def test_empty_or_missing_text_is_one_line(tmp_path):
  with pytest.raises(ConfigError, match='holds no file'):
    datasets.load_split(text_cfg(tmp_path, tmp_path), 'train')
  with pytest.raises(ConfigError, match='needs data.manual_dir: the path of '
                     'a UTF-8 text file or folder'):
    datasets.load_split(text_cfg('', tmp_path), 'train')


def test_tfds_text_catalog_with_mock_data(tmp_path):
  """A TFDS text set by name (lm1b here, mocked): documents tokenized into
  padded windows, padding masked, the tokenizer trained once and stored in
  the data dir."""
  cfg = common.base_config().data
  cfg.update(dict(name='lm1b', data_dir=str(tmp_path), seq_len=16,
                  tokenizer='char'))
  with tfds.testing.mock_data(num_examples=20):
    src = datasets.load_split(cfg, 'train')
    batch = src.get(np.arange(4))
    assert batch['tokens'].shape == (4, 17)
    assert batch['token_mask'].shape == (4, 17)
    assert set(np.unique(batch['token_mask'])) <= {0.0, 1.0}
    assert list(batch['id']) == [0, 1, 2, 3]
    assert np.all(batch['tokens'][batch['token_mask'] == 0] == 0)
    stored = os.listdir(tmp_path / 'distill_tokenizers')
    assert stored == ['lm1b-char.json']
    assert datasets.num_classes(cfg) == datasets.tokenizer(cfg).vocab_size


@pytest.mark.slow
def test_an_lm_trains_on_a_file_and_keeps_its_tokenizer(tmp_path):
  path = corpus(tmp_path / 'corpus.txt', n=40000)   # 200+ validation windows
  c = shakespeare_lm.get_config(f'runlocal,text={path},tokenizer=spm,vocab=400')
  c.data.data_dir = str(tmp_path / 'tfds')
  final = train.train(c, str(tmp_path / 'run'))
  assert final['step'] == 2
  with open(tmp_path / 'run' / 'tokenizer.json') as f:
    saved = tokenizers.from_json(json.load(f))
  assert saved.kind == 'spm' and saved.vocab_size == 400
  assert saved.decode(saved.encode('the cat sat')) == 'the cat sat' 
