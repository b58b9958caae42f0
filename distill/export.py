"""A trained model's inference parameters, exported and loaded back without
its workdir.

    summary = export.export('/tmp/digits_slam', '/tmp/digits_slam_export')
    model, variables, config = export.load_exported('/tmp/digits_slam_export')
    logits = model.apply(variables, export.preprocess(images, config),
                         train=False)

An export folder (`--format=params`, the default; hf and reference:
docs/export.md) holds
- `model-00001-of-0000N.safetensors`: the model's variables (parameters and
  model state such as batch-norm statistics; no optimizer state), one shard
  per at most `max_shard_bytes`, keys the '/'-joined flax paths
  (`params/Dense_0/kernel`, `batch_stats/bn/mean`);
- `model.safetensors.index.json`: which shard holds each key (always
  written, one shard or several);
- `export.json`: the format and its version, the architecture (`model_name`,
  the model options `model`, `num_classes`, compute `dtype`, `param_dtype`),
  the preprocessing (an image's shape, resizing, normalisation, class names;
  or, for a language model, `tokenizer.json`, copied from the run) and the
  run it came from (`source`);
- `tokenizer.json` for a language model.

Tensors are written one at a time, each gathered from its (possibly
sharded) arrays alone, into a temporary folder renamed to `--out` at the
end: an interrupted export leaves no `--out`, and an `--out` that exists
with other content is refused, never overwritten.
"""
import contextlib
import json
import os
import shutil
import uuid

import jax
import numpy as np

from core.errors import ConfigError, UnreadableFile, check_choice
from core.errors import from_os_error
from distill import checkpoint as ckpt_lib
from distill import files

FORMAT = 'params'
VERSION = 1
# Formats and whether they are built; the others give one line naming
# FORMAT.
FORMATS = {'params': True, 'hf': True, 'reference': True}
REFERENCE_FILE = 'model.safetensors'
REFERENCE_CONFIG = 'config.json'
DTYPES = {'f32': 'float32', 'bf16': 'bfloat16'}
WHICH = ('student', 'teacher')
EXPORT_FILE = 'export.json'
INDEX_FILE = 'model.safetensors.index.json'
TOKENIZER_FILE = 'tokenizer.json'
DEFAULT_SHARD_BYTES = 2 * 1024 ** 3
CROP_FRACTION = 0.875        # distill/data/pipeline.py: center_crop

# numpy dtype name -> safetensors dtype code.
_CODES = {'float64': 'F64', 'float32': 'F32', 'float16': 'F16',
          'bfloat16': 'BF16', 'int64': 'I64', 'int32': 'I32', 'int16': 'I16',
          'int8': 'I8', 'uint64': 'U64', 'uint32': 'U32', 'uint16': 'U16',
          'uint8': 'U8', 'bool': 'BOOL'}


def check_format(fmt):
  """Refuses a format that is unknown or not built yet (one line)."""
  check_choice('--format', fmt, FORMATS)
  if not FORMATS[fmt]:
    raise ConfigError(f'--format={fmt} is not built yet; the formats built '
                      f'are {", ".join(f for f, b in FORMATS.items() if b)}')


# --- which run ---------------------------------------------------------------
def _finished(run, what):
  """Refuses a run with no final metrics or no checkpoint (unfinished)."""
  final = os.path.join(run, 'final_metrics.json')
  if not files.exists(final) or not ckpt_lib.steps_of(run):
    missing = final if not files.exists(final) else os.path.join(
        run, ckpt_lib.CHECKPOINT_DIR)
    raise ConfigError(f'no finished run for {what} at {run}: {missing} is '
                      'missing; finish that run (rerun its command) or give '
                      'the workdir of a finished one')


def _student_dir(workdir, config):
  """The deployed student of a distillation workdir: the last active round,
  the fine-tuned student (distill.finetune_per_class) or `student`."""
  if 'active' in config:
    rounds = sorted((int(n[5:]), n) for n in files.listdir(workdir)
                    if n.startswith('round') and n[5:].isdigit())
    return os.path.join(workdir, rounds[-1][1] if rounds else 'round0')
  distill = config.get('distill') or {}
  if distill.get('finetune_per_class') and not distill.get('online'):
    return os.path.join(workdir, 'finetuned')
  return os.path.join(workdir, 'student')


def run_of(workdir, which='student'):
  """The folder of the finished run `--which` names in `workdir`: for a
  distillation workdir (a config with a `teacher` block) its student or its
  teacher; for a single run, the run itself (`student`). One line for a
  workdir with no finished run."""
  check_choice('--which', which, WHICH)
  workdir = files.abspath(workdir)
  if not files.isdir(workdir):
    raise ConfigError(f'no trained run at {workdir}: no such directory')
  config = ckpt_lib.read_config(workdir)
  if 'teacher' not in config:
    if which == 'teacher':
      raise ConfigError(f'{workdir} holds a single run (its config has no '
                        'teacher block); give --which=student to export it')
    _finished(workdir, 'the run')
    return workdir
  if which == 'teacher':
    run = files.abspath(config.teacher.workdir or os.path.join(
        workdir, 'teacher'))
    _finished(run, 'the teacher')
    return run
  summary = os.path.join(workdir, 'summary.json')
  if not files.exists(summary):
    raise ConfigError(f'no finished run for the student at {workdir}: '
                      f'{summary} is missing (the distillation has not '
                      'finished); finish it (rerun its command), or give '
                      '--which=teacher for its teacher')
  run = _student_dir(workdir, config)
  _finished(run, 'the student')
  return run


# --- what the model is -------------------------------------------------------
def describe(config, run):
  """The export config of the run in `run` (config: its resolved config):
  architecture and preprocessing, without parameters."""
  from distill.data import datasets  # pylint: disable=g-import-not-at-top
  from distill.data import tokenizers  # pylint: disable=g-import-not-at-top
  data = config.data
  spec = datasets.spec(data)
  out = {'format': FORMAT, 'version': VERSION,
         'model_name': config.model_name, 'model': config.model.to_dict(),
         'dtype': config.get('model_dtype') or 'float32',
         'dataset': data.name}
  if spec.task == 'lm':
    path = os.path.join(run, TOKENIZER_FILE)
    if not files.exists(path):
      raise ConfigError(f'the language model at {run} has no {path}; rerun '
                        'it with this version to write its tokenizer')
    tokenizer = tokenizers.from_json(files.read_json(path, kind=dict))
    out['num_classes'] = tokenizer.vocab_size
    out['preprocessing'] = {'task': 'lm', 'tokenizer': TOKENIZER_FILE,
                            'seq_len': data.get('seq_len') or 0}
    return out
  out['num_classes'] = datasets.num_classes(data)
  pre = {'task': spec.task, 'input': spec.input_key,
         'input_shape': list(datasets.input_shape(data)),
         'mean': None if spec.mean is None else list(spec.mean),
         'std': None if spec.std is None else list(spec.std),
         'class_names': datasets.class_names(data)}
  if spec.input_key == 'image':
    pre['resize'] = 'center_crop' if data.get('image_size') else 'exact'
    if pre['resize'] == 'center_crop':
      pre['crop_fraction'] = CROP_FRACTION
  out['preprocessing'] = pre
  return out


def build(export_config):
  """The flax model an export config describes."""
  import models  # pylint: disable=g-import-not-at-top
  return models.build(export_config['model_name'],
                      export_config['num_classes'], export_config['dtype'],
                      **export_config['model'])


def preprocess(inputs, export_config):
  """Model inputs from raw ones (uint8 images (N, H, W, C) as the dataset
  holds them): the normalisation the run trained with
  (distill/data/augment.py: model_inputs, the same code)."""
  from distill.data import augment  # pylint: disable=g-import-not-at-top
  from distill.data import datasets  # pylint: disable=g-import-not-at-top
  pre = export_config['preprocessing']
  if pre['task'] == 'lm':
    return inputs
  spec = datasets.DatasetSpec(pre['input'], pre['task'], mean=pre['mean'],
                              std=pre['std'])
  return augment.model_inputs(spec)(inputs)


# --- writing -----------------------------------------------------------------
def _target_dtype(leaf, dtype):
  kind = np.dtype(leaf.dtype)
  if np.issubdtype(kind, np.floating) or kind.name == 'bfloat16':
    return np.dtype(jax.numpy.dtype(DTYPES[dtype]))
  return kind


def _entries(variables, dtype):
  """(key, leaf, dtype to write) per tensor, in the tree's order."""
  out = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
    key = ckpt_lib.path_name(path)
    target = _target_dtype(leaf, dtype)
    if target.name not in _CODES:
      raise ConfigError(f'tensor {key} has dtype {target.name}, which '
                        f'safetensors cannot hold; valid: {", ".join(_CODES)}')
    out.append((key, leaf, target))
  return out


def _nbytes(leaf, target):
  return int(np.prod(leaf.shape, dtype=np.int64)) * target.itemsize


def _shards(entries, max_bytes):
  """Entries grouped in order, each group at most `max_bytes` (a larger
  tensor alone)."""
  groups, size = [[]], 0
  for e in entries:
    n = _nbytes(e[1], e[2])
    if groups[-1] and size + n > max_bytes:
      groups.append([])
      size = 0
    groups[-1].append(e)
    size += n
  return [g for g in groups if g]


def _write_shard(path, entries, metadata):
  """One safetensors file, written tensor by tensor: the header (from the
  shapes and dtypes alone), then each tensor gathered (jax.device_get of
  that leaf only), cast and appended."""
  header, offset = {}, 0
  for key, leaf, target in entries:
    n = _nbytes(leaf, target)
    header[key] = {'dtype': _CODES[target.name], 'shape': list(leaf.shape),
                   'data_offsets': [offset, offset + n]}
    offset += n
  header['__metadata__'] = metadata
  text = json.dumps(header, separators=(',', ':')).encode('utf-8')
  text += b' ' * (-len(text) % 8)
  with open(path, 'wb') as f:
    f.write(len(text).to_bytes(8, 'little'))
    f.write(text)
    for key, leaf, target in entries:
      array = np.ascontiguousarray(np.asarray(jax.device_get(leaf)).astype(
          target, copy=False))
      f.write(array.reshape(-1).view(np.uint8).data)
      del array
    f.flush()
    os.fsync(f.fileno())


def _same_export(out, export_config):
  """What `out` holds: None if nothing (absent or an empty folder), 'same'
  for an export of the same run with the same options, else a phrase
  naming its content."""
  if not os.path.exists(out):
    return None
  if not os.path.isdir(out):
    return 'a file'
  names = sorted(os.listdir(out))
  if not names:
    return None
  path = os.path.join(out, EXPORT_FILE)
  if not os.path.isfile(path):
    shown = ', '.join(names[:3]) + (', ...' if len(names) > 3 else '')
    return f'other files ({shown})'
  try:
    old = files.read_json(path, kind=dict)
  except UnreadableFile:
    return f'an unreadable {EXPORT_FILE}'
  keys = ('format', 'version', 'source', 'param_dtype')
  if all(old.get(k) == export_config[k] for k in keys):
    return 'same'
  src = old.get('source') or {}
  return (f'an export of another run or options ({src.get("run", "?")} step '
          f'{src.get("step", "?")}, {old.get("format", "?")} '
          f'{old.get("param_dtype", "?")})')


def export(workdir, out, which='student', dtype='f32', fmt=FORMAT,
           max_shard_bytes=DEFAULT_SHARD_BYTES):
  """Writes the inference parameters of `workdir`'s `which` model to the
  folder `out` (module docstring); returns its export config. An `out` that
  holds the same export is left as it is."""
  check_format(fmt)
  check_choice('--dtype', dtype, DTYPES)
  if max_shard_bytes <= 0:
    raise ConfigError(f'the shard size must be positive, got '
                      f'{max_shard_bytes} bytes')
  if not files.is_local(out):
    raise ConfigError(f'--out={out}: exports are written to a local folder; '
                      'copy it to Cloud Storage afterwards')
  out = os.path.abspath(out)
  run = run_of(workdir, which)
  if os.path.exists(out) and not os.path.isdir(out):
    raise ConfigError(f'--out={out} is a file; give a new folder (nothing '
                      'was written)')
  config, variables, step = ckpt_lib.load_trained(run)
  export_config = describe(config, run)
  export_config['param_dtype'] = DTYPES[dtype]
  export_config['source'] = {'workdir': files.abspath(workdir),
                             'which': which, 'run': run, 'step': step}
  export_config['format'] = fmt
  held = _same_export(out, export_config)
  if held == 'same':
    print(f'{out} already holds this export (step {step}); nothing written.',
          flush=True)
    return files.read_json(os.path.join(out, EXPORT_FILE), kind=dict)
  if held is not None:
    raise ConfigError(f'--out={out} exists and holds {held}; give a new '
                      'folder or an empty one (nothing was written)')
  parent = os.path.dirname(out)
  try:
    os.makedirs(parent, exist_ok=True)
  except OSError as e:
    raise from_os_error(e, f'creating {parent}') from e
  if fmt == 'hf':
    return _export_hf(config, variables, export_config, run, out, dtype)
  if fmt == 'reference':
    check_reference(config.model_name, config.model.to_dict())
    return write_reference(variables, export_config, out, dtype)
  entries = _entries(variables, dtype)
  shards = _shards(entries, max_shard_bytes)
  with _staged(out) as tmp:
    weight_map, names = {}, []
    for i, group in enumerate(shards):
      name = f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors'
      _write_shard(os.path.join(tmp, name), group,
                   {'format': 'flax', 'distill_export': str(VERSION)})
      weight_map.update({key: name for key, _, _ in group})
      names.append(name)
    total = sum(_nbytes(leaf, t) for _, leaf, t in entries)
    files.write_json(os.path.join(tmp, INDEX_FILE), {
        'metadata': {'total_size': total}, 'weight_map': weight_map},
                     everywhere=True)
    if export_config['preprocessing']['task'] == 'lm':
      files.write_bytes(os.path.join(tmp, TOKENIZER_FILE), files.read_bytes(
          os.path.join(run, TOKENIZER_FILE)), everywhere=True)
    export_config['files'] = {'index': INDEX_FILE, 'shards': names,
                              'tensors': len(entries), 'bytes': total}
    files.write_json(os.path.join(tmp, EXPORT_FILE), export_config,
                     everywhere=True)
  return export_config


@contextlib.contextmanager
def _staged(out):
  """A new folder beside `out` to write into, renamed to `out` (absent or
  empty) when the block ends, removed in every case."""
  tmp = f'{out}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}'
  try:
    os.makedirs(tmp)
    yield tmp
    if os.path.isdir(out):
      os.rmdir(out)            # empty (checked by the caller)
    os.replace(tmp, out)
  except OSError as e:
    raise from_os_error(e, f'exporting to {out}') from e
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _export_hf(config, variables, export_config, run, out, dtype):
  """--format=hf: a language model of a Hugging Face family as a folder
  `transformers` loads (config.json, model.safetensors; distill/
  hf_checkpoint.py: save_hf_lm) with its tokenizer (tokenizer.json of a
  Hugging Face tokenizer, tokenizer.model of a SentencePiece one) and
  export.json (where it came from)."""
  from distill import hf_checkpoint  # pylint: disable=g-import-not-at-top
  from distill.data import tokenizers  # pylint: disable=g-import-not-at-top
  if config.model_name != 'transformer_lm':
    raise ConfigError(f'--format=hf holds language models; this run is a '
                      f'{config.model_name}: use --format={FORMAT}')
  model = build(export_config)
  from models import hf_layout  # pylint: disable=g-import-not-at-top
  hf_layout.family_of({f: getattr(model, f)
                       for f in model.__dataclass_fields__})  # one line
  tokenizer = tokenizers.from_json(files.read_json(
      os.path.join(run, TOKENIZER_FILE), kind=dict))
  with _staged(out) as tmp:
    hf_checkpoint.save_hf_lm(model, variables['params'], tmp,
                             DTYPES[dtype])
    if tokenizer.kind == 'hf':
      files.write_text(os.path.join(tmp, 'tokenizer.json'), tokenizer.text)
      export_config['tokenizer'] = 'tokenizer.json'
    elif tokenizer.kind == 'spm':
      files.write_bytes(os.path.join(tmp, 'tokenizer.model'),
                        tokenizer.model_bytes)
      export_config['tokenizer'] = 'tokenizer.model'
    else:
      export_config['tokenizer'] = None
      print(f'note: the run\'s {tokenizer.kind!r} tokenizer has no Hugging '
            'Face form; the folder holds the model only', flush=True)
    names = sorted(n for n in os.listdir(tmp) if n.endswith('.safetensors'))
    export_config['files'] = {
        'shards': names, 'tensors': len(jax.tree.leaves(
            variables['params'])),
        'bytes': sum(os.path.getsize(os.path.join(tmp, n)) for n in names)}
    files.write_json(os.path.join(tmp, EXPORT_FILE), export_config)
  return export_config


def check_reference(model_name, model):
  """One line unless the model (`model_name`, its options `model`) has a
  torchvision equivalent: an ImageNet ResNet with standard residuals."""
  from models import resnet  # pylint: disable=g-import-not-at-top
  if model_name != 'resnet_imagenet':
    raise ConfigError(f'--format=reference holds the ImageNet ResNets '
                      f'(model_name=resnet_imagenet, torchvision\'s layout); '
                      f'this run is a {model_name}, which has no reference '
                      f'equivalent: use --format={FORMAT}')
  residual = model.get('residual', 'standard')
  if residual != 'standard':
    raise ConfigError(f'--format=reference: model.residual={residual} has no '
                      'torchvision equivalent (standard residuals only); use '
                      f'--format={FORMAT}')
  depth = model.get('depth', 50)
  if depth not in resnet.IMAGENET_DEPTHS:
    raise ConfigError(f'--format=reference: model.depth={depth} is not a '
                      'torchvision ResNet; valid choices: 18, 34, 50, 101, '
                      f'152; use --format={FORMAT}')


def write_reference(variables, export_config, out, dtype='f32'):
  """--format=reference: `out` holds model.safetensors (torchvision's
  resnet state dict: `torchvision.models.resnetN(num_classes=...)
  .load_state_dict(strict=True)` reads it at width 1; timm's resnet too),
  config.json (architecture, num_classes, preprocessing; for a width other
  than 1 the stage widths, as Hugging Face's ResNetConfig.hidden_sizes) and
  export.json (where it came from)."""
  from safetensors import numpy as st  # pylint: disable=g-import-not-at-top
  from models import resnet  # pylint: disable=g-import-not-at-top
  from models import resnet_weights  # pylint: disable=g-import-not-at-top
  model = export_config['model']
  depth, width = model.get('depth', 50), float(model.get('width', 1.0))
  kind, blocks = resnet.IMAGENET_DEPTHS[depth]
  state = resnet_weights.to_state_dict(
      {c: jax.device_get(variables[c]) for c in ('params', 'batch_stats')})
  target = DTYPES[dtype]
  state = {k: (v if v.dtype == np.int64 else
               np.asarray(jax.numpy.asarray(v).astype(target)))
           for k, v in state.items()}
  reference = {
      'architecture': f'resnet{depth}',
      'layout': 'torchvision',
      'num_classes': export_config['num_classes'],
      'width': width, 'block': kind, 'depths': list(blocks),
      'hidden_sizes': [max(1, int(round(w * width)))
                       * (4 if kind == 'bottleneck' else 1)
                       for w in (64, 128, 256, 512)],
      'preprocessing': export_config['preprocessing'],
      'dtype': target}
  with _staged(out) as tmp:
    st.save_file(state, os.path.join(tmp, REFERENCE_FILE),
                 metadata={'format': 'pt'})
    files.write_json(os.path.join(tmp, REFERENCE_CONFIG), reference)
    export_config['reference'] = reference
    export_config['files'] = {'shards': [REFERENCE_FILE],
                              'tensors': len(state),
                              'bytes': os.path.getsize(
                                  os.path.join(tmp, REFERENCE_FILE))}
    files.write_json(os.path.join(tmp, EXPORT_FILE), export_config)
  return export_config


# --- reading -----------------------------------------------------------------
def read_export_config(folder):
  """The export config of an export folder, checked: one line for a folder
  that is not an export, or one of another format or version."""
  path = os.path.join(folder, EXPORT_FILE)
  if not os.path.isfile(path):
    raise ConfigError(f'{folder} is not a model export: {path} is missing '
                      '(python -m launch.export writes one)')
  config = files.read_json(path, kind=dict, fix='export the model again '
                           'with python -m launch.export')
  fmt, version = config.get('format'), config.get('version')
  if fmt != FORMAT or version != VERSION:
    raise ConfigError(f'{folder} holds a {fmt!r} export of version '
                      f'{version!r}; this version reads format {FORMAT!r} '
                      f'version {VERSION}: export the model again with '
                      f'python -m launch.export --format={FORMAT}')
  return config


def _nest(flat):
  tree = {}
  for key, value in flat.items():
    node = tree
    *path, last = key.split('/')
    for part in path:
      node = node.setdefault(part, {})
    node[last] = value
  return tree


def load_exported(folder):
  """(model, variables, export_config) of an export folder: the flax model
  rebuilt from export.json and its variables (numpy arrays, in the export's
  dtype) from the safetensors shards; no workdir needed."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  folder = os.path.abspath(folder)
  config = read_export_config(folder)
  model = build(config)
  index_path = os.path.join(folder, INDEX_FILE)
  fix = 'export the model again with python -m launch.export'
  index = files.read_json(index_path, kind=dict, fix=fix)
  by_shard = {}
  for key, name in index.get('weight_map', {}).items():
    by_shard.setdefault(name, []).append(key)
  flat = {}
  for name, keys in sorted(by_shard.items()):
    path = os.path.join(folder, name)
    try:
      with safe_open(path, framework='numpy') as f:
        for key in keys:
          flat[key] = f.get_tensor(key)
    except Exception as e:  # pylint: disable=broad-except
      from core.errors import unreadable  # pylint: disable=g-import-not-at-top
      raise unreadable(path, e, fix) from e
  if not flat:
    raise UnreadableFile(f'{index_path} names no tensors; {fix}')
  return model, _nest(flat), config


def load_model(path, which='student'):
  """(model, variables, export_config) of a workdir (its finished `which`
  run, from its newest checkpoint) or of an export folder."""
  if os.path.isfile(os.path.join(path, EXPORT_FILE)):
    return load_exported(path)
  if not files.isfile(os.path.join(path, 'config.json')):
    raise ConfigError(f'--model={path} is neither an export folder (no '
                      f'{EXPORT_FILE}) nor a workdir (no config.json)')
  run = run_of(path, which)
  config, variables, step = ckpt_lib.load_trained(run)
  export_config = describe(config, run)
  export_config['param_dtype'] = 'float32'
  export_config['source'] = {'workdir': files.abspath(path), 'which': which,
                             'run': run, 'step': step}
  return build(export_config), variables, export_config
