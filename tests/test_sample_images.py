"""launch.sample_images: a config's examples as PNG files named by their
true class, read back as the dataset holds them."""
import os

import numpy as np
import pytest
from PIL import Image

from configs import digits_distill
from core.errors import ConfigError
from distill.data import loading
from launch import sample_images


def test_examples_are_written_as_the_dataset_holds_them(tmp_path):
  config = digits_distill.get_config()
  paths = sample_images.write(config, 'test', 3, str(tmp_path / 'png'))
  part = loading.load_data(config.data).parts['test']
  batch = part.get(np.arange(3))
  assert [os.path.basename(p) for p in paths] == [
      f'test_{i}_{y}.png' for i, y in enumerate(batch['label'])]
  for path, image in zip(paths, batch['image']):
    np.testing.assert_array_equal(np.asarray(Image.open(path)),
                                  image[..., 0])


def test_bad_inputs_are_one_line(tmp_path):
  config = digits_distill.get_config()
  with pytest.raises(ConfigError, match="valid choices"):
    sample_images.write(config, 'tset', 3, str(tmp_path / 'a'))
  (tmp_path / 'full').mkdir()
  (tmp_path / 'full' / 'x.txt').write_text('keep')
  with pytest.raises(ConfigError, match='holds files'):
    sample_images.write(config, 'test', 3, str(tmp_path / 'full'))
  assert os.listdir(tmp_path / 'full') == ['x.txt']
