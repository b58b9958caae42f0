"""Hugging Face model folders (config.json and *.safetensors) as this
project's TransformerLM and parameters, and back.

    model, params = hf_checkpoint.load_hf_lm('/models/Llama-3.2-1B', mesh)
    logits = model.apply({'params': params}, tokens)
    hf_checkpoint.save_hf_lm(model, params, '/tmp/my_lm')   # the inverse

Families: llama, qwen2, qwen3, gemma2 (`models/hf_layout.py` maps their
fields and tensor names). Each tensor is read alone (safetensors' numpy
`safe_open`, bf16 or f32, one or many files with their index), laid out
for flax and placed straight onto its NamedSharding when a mesh is given:
the host holds about one tensor at a time (a scanned model's stacked
parameter: one layer's tensor per shard read), never the whole model.
torch and transformers are never imported.
"""
import glob
import hashlib
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from core.errors import ConfigError
from distill import sharding as sharding_lib
from distill import files
import models
from models import hf_layout

CONFIG = 'config.json'
INDEX = 'model.safetensors.index.json'


def _safetensors():
  try:
    import safetensors  # pylint: disable=g-import-not-at-top
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError('reading Hugging Face checkpoints needs the '
                      'safetensors package: pip install safetensors') from e
  del safetensors
  return safe_open


def read_config(path):
  """The config.json dict of a local Hugging Face model folder."""
  if not files.is_local(path):
    raise ConfigError(f'Hugging Face model folder {path} must be a local '
                      'folder')
  config = os.path.join(path, CONFIG)
  if not os.path.isfile(config):
    raise ConfigError(f'no Hugging Face model at {path}: {config} is '
                      'missing')
  with open(config) as f:
    return json.load(f)


def weight_files(path):
  """{tensor name: file} of the folder's safetensors (the index's map, or
  every *.safetensors file's keys)."""
  safe_open = _safetensors()
  index = os.path.join(path, INDEX)
  if os.path.isfile(index):
    with open(index) as f:
      return {k: os.path.join(path, v)
              for k, v in json.load(f)['weight_map'].items()}
  names = sorted(glob.glob(os.path.join(path, '*.safetensors')))
  if not names:
    raise ConfigError(f'no *.safetensors in {path} (.bin and .pth weights '
                      'are not read; convert them with save_pretrained('
                      'safe_serialization=True))')
  out = {}
  for name in names:
    with safe_open(name, framework='np') as f:
      out.update({k: name for k in f.keys()})
  return out


def file_hashes(path):
  """{file name: sha256} of config.json and the safetensors files (what an
  imported teacher's identity records)."""
  out = {}
  for name in sorted([CONFIG, INDEX] + [os.path.basename(p) for p in glob.glob(
      os.path.join(path, '*.safetensors'))]):
    full = os.path.join(path, name)
    if os.path.isfile(full):
      digest = hashlib.sha256()
      with open(full, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 24), b''):
          digest.update(chunk)
      out[name] = digest.hexdigest()
  return out


HF_PREFIX = 'hf:'


def hf_ref(ref):
  """The folder of a teacher reference 'hf:PATH' (GUIDE's init.teacher of
  an imported model), else ''."""
  return ref[len(HF_PREFIX):] if ref.startswith(HF_PREFIX) else ''


def identity(path):
  """What identifies an imported model (a run's inputs.json): its folder,
  config.json and the hashes of its files."""
  return {'hf': os.path.abspath(path), 'config': read_config(path),
          'files': file_hashes(path)}


def build(path, dtype='float32', **overrides):
  """(model, config.json dict, model kwargs) of a folder; `overrides` set
  model fields the checkpoint does not fix (attention, scan_layers, remat,
  max_len)."""
  cfg = read_config(path)
  kw, vocab = hf_layout.model_kwargs(cfg)
  kw.update(overrides)
  return models.build('transformer_lm', vocab, dtype=dtype, **kw), cfg, kw


class _Reader:
  """Reads tensors by name, one at a time, keeping the last one (several
  shards of one parameter read it once)."""

  def __init__(self, where):
    self.where, self.safe_open = where, _safetensors()
    self.handles, self.last = {}, (None, None)

  def __call__(self, name):
    if self.last[0] == name:
      return self.last[1]
    if name not in self.where:
      raise ConfigError(f'the checkpoint has no tensor {name}')
    file = self.where[name]
    if file not in self.handles:
      self.handles[file] = self.safe_open(file, framework='np')
    self.last = (name, self.handles[file].get_tensor(name))
    return self.last[1]


def _param_sources(kw, scanned):
  """{flax param path: [(tensor name, kind)], one per layer when scanned}."""
  out = {}
  for path, layer, name, kind in hf_layout.tensors(kw):
    if layer is None:
      out[path] = [(name, kind)]
    elif scanned:
      out.setdefault(('blocks', 'block') + path, []).append((name, kind))
    else:
      out[(f'block{layer}',) + path] = [(name, kind)]
  return out


def load_hf_lm(path, mesh=None, dtype='float32', param_dtype='float32',
               **overrides):
  """(model, params) of a local Hugging Face model folder.

  `dtype`: the model's compute dtype; `param_dtype`: the parameters'
  (float32 or bfloat16, whatever the files hold); `mesh`: parameters
  placed on it by the project's logical-axis rules (distill/sharding.py),
  else on the default device; `overrides`: model fields the checkpoint does
  not fix (attention, scan_layers, remat, max_len).
  """
  model, _, kw = build(path, dtype, **overrides)
  reader = _Reader(weight_files(path))
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, 1), jnp.int32))['params']
  if mesh is not None:
    shardings = sharding_lib.shardings_from_boxed(abstract, mesh)
  else:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract,
                             is_leaf=lambda x: hasattr(x, 'names'))
  abstract = jax.tree.map(lambda x: getattr(x, 'value', x), abstract,
                          is_leaf=lambda x: hasattr(x, 'names'))
  sources = _param_sources(kw, model.scan_layers)
  target = np.dtype(jnp.dtype(param_dtype))
  used = set()

  def load(key_path, leaf, sharding):
    key = tuple(str(getattr(k, 'key', k)) for k in key_path)
    if key not in sources:
      raise ConfigError(f'parameter {"/".join(key)} has no Hugging Face '
                        'tensor')
    srcs = sources[key]
    used.update(name for name, _ in srcs)
    stacked = key[0] == 'blocks'
    shape = leaf.shape[1:] if stacked else leaf.shape

    def one(name, kind, index):
      array = hf_layout.to_flax(kind, reader(name), shape)
      return np.asarray(array[index], target)

    def shard(index):
      if not stacked:
        return one(*srcs[0], index)
      layers = range(len(srcs))[index[0]]
      return np.stack([one(*srcs[i], index[1:]) for i in layers])

    return jax.make_array_from_callback(leaf.shape, sharding, shard)

  params = jax.tree_util.tree_map_with_path(load, abstract, shardings)
  unused = sorted(n for n in set(reader.where) - used
                  if not n.endswith(hf_layout.IGNORED_SUFFIXES)
                  and not (n == 'lm_head.weight' and kw['tie_embeddings']))
  if unused:
    raise ConfigError(f'tensor {unused[0]} of {path} is not read by the '
                      f'{hf_layout.family_of(kw)} model built from its '
                      f'config ({len(unused)} such tensors)')
  return model, params


def save_hf_lm(model, params, path, dtype='float32'):
  """Writes a TransformerLM of a supported family (`hf_layout.family_of`)
  as a Hugging Face folder: config.json and model.safetensors (`dtype`
  float32 or bfloat16). Gathers each parameter to the host in turn."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  kw = {f: getattr(model, f) for f in model.__dataclass_fields__
        if f not in ('parent', 'name', 'dtype', 'num_classes')}
  cfg = hf_layout.hf_config(kw, model.num_classes)
  cfg['dtype'] = dtype
  target = np.dtype(jnp.dtype(dtype))
  params = nn.meta.unbox(params)
  flat = {tuple(str(getattr(k, 'key', k)) for k in p): v
          for p, v in jax.tree_util.tree_leaves_with_path(params)}
  out = {}
  for key, srcs in _param_sources(kw, model.scan_layers).items():
    value = np.asarray(jax.device_get(flat.pop(key)), np.float32)
    for i, (name, kind) in enumerate(srcs):
      layer = value[i] if key[0] == 'blocks' else value
      out[name] = np.ascontiguousarray(hf_layout.to_hf(kind, layer),
                                       target)
  if flat:
    raise ConfigError(f'parameter {"/".join(sorted(flat)[0])} has no '
                      'Hugging Face tensor')
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, CONFIG), 'w') as f:
    json.dump(cfg, f, indent=2)
  save_file(out, os.path.join(path, 'model.safetensors'),
            metadata={'format': 'pt'})
