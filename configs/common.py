"""Shared config pieces: the base config and big_vision-style arguments.

    config = common.base_config()
    arg = common.parse_arg(arg, labeled=5000, runlocal=False)

`parse_arg('labeled=5000,runlocal')` gives a ConfigDict with `labeled=5000`
and `runlocal=True` (a bare word is a True flag); values are typed by the
defaults given. Unknown argument names are an error listing the valid ones.
"""
import ml_collections

from core import defaults as core_defaults
from core.errors import ConfigError, check_choice


def _autotype(value, default):
  if isinstance(default, bool):
    if value.lower() in ('', 'true', '1', 'yes'):
      return True
    if value.lower() in ('false', '0', 'no'):
      return False
    raise ConfigError(f'expected a boolean, got {value!r}')
  if isinstance(default, int):
    return int(value)
  if isinstance(default, float):
    return float(value)
  return value


def parse_arg(arg, **defaults):
  """Parses 'a=1,b,c=x' into a ConfigDict typed by `defaults`."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    key = key.strip()
    if key not in defaults:
      raise ConfigError(f'unknown config argument {key!r}; valid choices: '
                        f'{", ".join(sorted(defaults))}')
    out[key] = _autotype(value.strip(), defaults[key]) if '=' in item else True
  return out


def base_config():
  """Every key the train loop reads, with its default. Configs override."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name='digits',
      data_dir='',           # TFDS data dir ('' = $TFDS_DATA_DIR or ~/...)
      download=False,        # TFDS catalog sets: download when not prepared
      manual_dir='',         # local archive/text for cifar10_jpeg, shakespeare
      in_memory=True,        # decode the needed splits once into RAM
      num_samples=5000,      # mnist1d generator size
      seq_len=128,           # language models: tokens per window
      tokenizer='char',      # language models: char | spm (SentencePiece)
      vocab_size=0,          # spm vocabulary (0: the tokenizer's own)
      # Carving of the training split (distill.data.splits.carve).
      labeled=-1,
      validation=0,
      unlabeled=0,
      carve='random',
      carve_seed=0,
      train_on='labeled',    # which part the model trains on
      augment='',            # '', 'flip', 'crop_flip', 'inception_crop'
      image_size=0,          # >0: resize variable-size images (ImageNet)
      test_split='test',     # the held-out split (ImageNet: 'validation')
      prefetch=2,            # host batches read ahead (per worker)
      workers=0,             # input worker processes (grain); 0: a thread
      device_prefetch=2,     # batches placed on the devices ahead of the step
      # Out-of-distribution unlabeled data: another dataset's train images
      # (resized) replace the unlabeled part; set data.unlabeled=0.
      # Or `folder`: a folder or glob of your own images without labels.
      unlabeled_from=ml_collections.ConfigDict(dict(
          name='', manual_dir='', size=-1, folder='')),
      test_dir='',           # image_folder: test images ('' : <dir>/test)
      skip_bad_images=False,  # image_folder: skip (and count) unreadable
                              # files instead of failing on the first
  ))

  c.model_name = 'mlp'
  c.model = ml_collections.ConfigDict()     # kwargs of the model class
  c.model_dtype = 'float32'                 # compute dtype: float32|bfloat16

  c.method = 'supervised'
  c.method_kw = core_defaults.method_kw()  # options of every method
  # LMs: the loss over the sequence in chunks of this many positions, each
  # chunk's logits computed (and recomputed in the backward pass) inside
  # the loop, so no model's float32 logits for the whole batch are held at
  # once (distill/chunked.py); 0: off, the whole batch's logits.
  c.loss_chunk_len = 0
  # Start from another run's checkpoint: 'WORKDIR[:STEP]' (default its
  # newest). init_from_state: params (its parameters and model state, a fresh
  # optimizer at step 0: fine-tuning) | all (its whole train state: continue
  # it with changed settings, e.g. a lower lr after a divergence).
  c.init_from = ''
  c.init_from_state = 'params'
  # Initialisation from a trained teacher (LMs): method '' (the model's own
  # init) or 'guide' (distill/guide.py: PCA of the teacher's embeddings, first
  # block folded and selected). `teacher`: the teacher's workdir ('' inside a
  # distillation config: its teacher).
  # Or method 'pretrained': a resnet_imagenet from a torchvision, timm or
  # Hugging Face checkpoint `weights` (.safetensors; .pth with torch), its
  # head if the class count fits (`head`: auto | new | pretrained);
  # `pretrained_on`: the dataset those weights were trained on, as declared
  # ('' unknown): recorded in inputs.json, never checked.
  c.init = ml_collections.ConfigDict(dict(
      method='', teacher='', preserve_logit_scale=True, weights='',
      head='auto', pretrained_on=''))

  c.batch_size = 128
  c.eval_batch_size = 500
  # Durations: set either *_steps or *_epochs (epochs of the training part).
  c.total_steps = -1
  c.total_epochs = -1.0
  c.optimizer = ml_collections.ConfigDict(dict(
      name='sgd', lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
      b1=0.9, b2=0.999, grad_clip=0.0, frozen=''))
  c.schedule = ml_collections.ConfigDict(dict(
      name='cosine', warmup_steps=-1, warmup_epochs=-1.0, end_lr_factor=0.0))

  # Devices per slice on each axis (one may be -1: the rest); dcn_*: how many
  # slices each axis spans (multi-slice; distill/sharding.py: make_mesh).
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1,
                                          dcn_data=1, dcn_fsdp=1, dcn_model=1))

  # CPU runs: JAX CPU devices the process starts with, for data parallelism
  # over the cores (0: auto, distill/host_devices.py); ignored elsewhere.
  c.cpu_devices = 0

  c.log_every_steps = 50
  c.eval_every_steps = -1
  c.eval_every_epochs = -1.0
  c.eval_splits = 'validation,test'   # parts and splits to evaluate on
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 2
  c.tensorboard = True
  c.progress = True                   # print a progress line when logging
  # A jax.profiler trace of steps first+1 .. first+count into
  # <workdir>/profile; count 0: none.
  c.profile_steps = (0, 0)
  # Persistent XLA compilation cache (e.g. gs://bucket/jax_cache): a rerun or
  # a resumed run skips compiling its steps again. '' = off.
  c.compilation_cache_dir = ''
  return c


def override(config, overrides):
  """Sets dotted keys: override(c, {'optimizer.lr': 0.1}). Returns config.
  A method's fit option spelled where it was before it moved to method_kw
  (`distill.alpha_floor`, core/defaults.py: MOVED_TO_METHOD_KW; the tables'
  row names keep that spelling) sets `method_kw.alpha_floor`."""
  for key, value in overrides.items():
    key = core_defaults.moved_key(key)
    node = config
    *path, last = key.split('.')
    for part in path:
      node = node[part]
    node[last] = value
  return config


def set_residual(model, residual='standard', rank=16, a_init='xavier'):
  """The residual connection of a ResNet or Transformer `model` config:
  'standard' or a LAuReL variant (models/laurel.py), with every LAuReL option
  present so that any can be set from the command line, e.g.
  `--config.model.residual=laurel_rw_lr --config.model.residual_kw.rank=32`.
  """
  model.residual = residual
  model.residual_kw = ml_collections.ConfigDict(dict(
      rank=rank,            # LR / low-rank PA: r
      pa_k=3,               # PA: activations mixed, x_i included
      rw_mode='sigmoid',    # RW: sigmoid (starts at 1, 1) | softmax (0.5, 0.5)
      rw_vector=False,      # RW: per-channel alpha, beta instead of scalars
      a_init=a_init,        # LR: xavier (ResNets) | colorth (LLMs)
      pa_h='identity',      # PA alone: identity | lowrank
  ))
  return model


def set_memory(model, remat='none', attention=None):
  """What a ResNet or Transformer `model` config trades for memory, present
  so the command line can set it: `model.remat` (none | full | dots |
  dots_no_batch, models/layers.py) and, for Transformers, `model.attention`
  (auto | xla | cudnn | pallas | flash, models/attention.py) and
  `model.head_matmul` (auto | rows | plain, models/transformer.py)."""
  model.remat = remat
  if attention is not None:
    model.attention = attention
    model.head_matmul = 'auto'
  return model


# The Transformer LM's family fields at this project's defaults
# (models/transformer.py: FAMILY; tests/test_model_families.py checks they
# agree), and the presets of pretrained families (docs/pretrained-lm.md).
LM_FAMILY_DEFAULTS = dict(
    num_kv_heads=0, head_dim=0, mlp='gelu', qkv_bias=False, qk_norm=False,
    norm_eps=1e-6, norm_plus_one=False, post_norms=False, embed_scale=False,
    rope_theta=10000.0, rope_scaling='', rope_factor=8.0,
    rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
    rope_original_max_len=8192, query_pre_attn_scalar=0.0, attn_softcap=0.0,
    logit_softcap=0.0, sliding_window=0)
LM_FAMILIES = {
    '': None,                      # no family keys in the config
    'plain': {},                   # every key, at this project's LM's values
    'llama': dict(positions='rope', mlp='swiglu', rope_theta=500000.0),
    'qwen3': dict(positions='rope', mlp='swiglu', qk_norm=True,
                  rope_theta=1000000.0),
    'gemma2': dict(positions='rope', mlp='geglu', norm_plus_one=True,
                   post_norms=True, embed_scale=True, attn_softcap=50.0,
                   logit_softcap=30.0, sliding_window=32,
                   tie_embeddings=True),
}


def set_family(model, family=''):
  """A Transformer LM `model` config's family fields, present so the
  command line can set them (`--config.model.num_kv_heads=2`): '' adds
  none (the config as before them); 'plain' every one at this project's
  LM's values; a pretrained family's name its conventions, and one K/V
  head per two query heads where the heads pair up."""
  check_choice('model family', family, LM_FAMILIES)
  if LM_FAMILIES[family] is None:
    return model
  for k, v in dict(LM_FAMILY_DEFAULTS, **LM_FAMILIES[family]).items():
    model[k] = v
  if family != 'plain' and model.num_heads % 2 == 0:
    model.num_kv_heads = model.num_heads // 2
  return model


def set_conv(model, conv='auto'):
  """A convolutional `model` config's `model.conv` (auto | xla | onednn,
  models/layers.py), present so the command line can set it: `auto` takes
  oneDNN's weight gradient on CPU where it is built, XLA's convolution
  elsewhere; `xla` reproduces runs made before the oneDNN kernel."""
  model.conv = conv
  return model


def unlabeled_student(arg, dataset, teacher):
  """The shared part of a distillation config: a student on the unlabeled
  part of `dataset`, carved by `arg.seed` like its `teacher` config.

  `arg` has method, labeled, validation, seed and teacher (a trained
  teacher's workdir, or '' to train `teacher` first).
  """
  c = base_config()
  c.seed = arg.seed
  c.data.name = dataset
  c.data.labeled = arg.labeled
  c.data.validation = arg.validation
  c.data.unlabeled = -1
  c.data.carve_seed = arg.seed
  c.data.train_on = 'unlabeled'
  c.method = arg.method
  teacher.seed = arg.seed
  teacher.data.labeled = arg.labeled
  teacher.data.validation = arg.validation
  teacher.data.unlabeled = -1
  teacher.data.carve_seed = arg.seed
  if arg.labeled > 0:              # no batch larger than the labeled part
    teacher.batch_size = min(teacher.batch_size, arg.labeled)
  c.teacher = dict(workdir=arg.teacher, config=teacher)
  c.distill = core_defaults.distill()
  return c
