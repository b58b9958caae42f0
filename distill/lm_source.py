"""A language model and its tokenizer from wherever it lives: a workdir (its
finished student, or teacher), an export folder (launch/export.py) or a
local Hugging Face model folder (config.json with a `model_type`,
safetensors, tokenizer.json or tokenizer.model).

    model, params, tokenizer = lm_source.load('/tmp/distill/guide_lm')
"""
import json
import os

from core.errors import ConfigError
from distill import export
from distill import files


def _is_hf(path):
  """A Hugging Face folder (launch.export --format=hf writes one too)."""
  config = os.path.join(path, 'config.json')
  if not os.path.isfile(config):
    return False
  try:
    with open(config) as f:
      return 'model_type' in json.load(f)
  except (OSError, ValueError):
    return False


def load(path, which='student'):
  """(model, params, tokenizer) of the language model at `path`."""
  from distill.data import tokenizers  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(path):
    raise ConfigError(f'--model={path}: no such folder (a workdir, an export '
                      'folder or a Hugging Face model folder)')
  if _is_hf(path):
    from distill import hf_checkpoint  # pylint: disable=g-import-not-at-top
    model, params = hf_checkpoint.load_hf_lm(path)
    return model, params, tokenizers.load_hf(tokenizers.HF_PREFIX + path)
  model, variables, config = export.load_model(path, which)
  pre = config.get('preprocessing', {})
  if pre.get('task') != 'lm':
    raise ConfigError(f'--model={path} is a {config["model_name"]} '
                      'classifier, not a language model; label its inputs '
                      'with python -m launch.predict')
  folder = path if os.path.isfile(os.path.join(path, export.EXPORT_FILE)) \
      else config['source']['run']
  tokenizer = tokenizers.from_json(files.read_json(
      os.path.join(folder, pre['tokenizer']), kind=dict))
  return model, variables['params'], tokenizer
