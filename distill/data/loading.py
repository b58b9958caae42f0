"""A config's data: the dataset's splits, carved into parts.

    data = loading.load_data(config.data)
    data.parts['labeled'], data.parts['unlabeled'], data.parts['test']

The train split is carved into `labeled`, `validation` and `unlabeled`
parts (distill/data/splits.py); `test` is the held-out split, never carved.
With `data.unlabeled_from`, another dataset's images replace the unlabeled
part (Menghani and Ravi 2019).
"""
import dataclasses
from typing import Any

import numpy as np

from core.errors import ConfigError
from distill.data import datasets
from distill.data import splits


@dataclasses.dataclass
class Data:
  """The dataset's parts: 'labeled', 'validation', 'unlabeled' and 'test'.
  `source`: what the data was prepared from (a run's identity records it);
  `tokenizer`: a language model's vocabulary (stored in the workdir)."""
  spec: datasets.DatasetSpec
  parts: dict
  num_classes: int
  source: dict = dataclasses.field(default_factory=dict)
  tokenizer: Any = None


def load_data(data_cfg):
  """Loads the train/test splits and carves the train split into parts."""
  spec = datasets.spec(data_cfg)
  # in_memory: each split is decoded once per process and shared by every
  # run in it; otherwise parts read (and decode) examples batch by batch.
  load = (datasets.load_split_in_memory if data_cfg.in_memory
          else datasets.load_split)
  train = load(data_cfg, 'train')
  test = load(data_cfg, data_cfg.get('test_split', 'test'))
  carved = splits.carve(len(train), data_cfg.labeled, data_cfg.validation,
                        data_cfg.unlabeled, data_cfg.carve_seed,
                        data_cfg.carve)
  parts = {k: datasets.Subset(train, v) for k, v in carved.items()}
  parts['test'] = datasets.Subset(test)
  ood = data_cfg.get('unlabeled_from')
  if datasets.has_unlabeled_from(data_cfg):
    parts['unlabeled'] = _out_of_distribution(data_cfg, ood, load, parts)
  return Data(spec, parts, datasets.num_classes(data_cfg),
              datasets.source_record(data_cfg), datasets.tokenizer(data_cfg))


def _out_of_distribution(data_cfg, ood, load, parts):
  """The unlabeled part taken from another dataset's train split (Menghani
  and Ravi 2019): `size` seeded examples (-1: all), resized to this
  dataset's input shape."""
  if data_cfg.unlabeled != 0:
    raise ConfigError('data.unlabeled_from replaces the unlabeled part: set '
                      f'data.unlabeled=0 (got {data_cfg.unlabeled})')
  ood_cfg = datasets.ood_config(data_cfg)
  if datasets.spec(ood_cfg).input_key != 'image':
    raise ConfigError(f'data.unlabeled_from.name={ood.get("name")!r} has no '
                      'images')
  source = load(ood_cfg, 'train')
  idx = (np.arange(len(source)) if ood.size < 0 else
         splits.carve(len(source), labeled=ood.size, validation=0,
                      unlabeled=-1, seed=data_cfg.carve_seed)['labeled'])
  shape = parts['labeled'].get(np.arange(1))['image'].shape[1:]
  return datasets.OutOfDistribution(datasets.Subset(source, idx), shape)


