"""Device mesh from the config, and shardings from logical-axis rules.

The mesh has three named axes, `data`, `fsdp` and `model`, sized by
`config.mesh` (one of them may be -1: "the rest of the devices"). Batches are
split over `data` and `fsdp`; parameters (and optimizer state) over `fsdp`
and `model`, by the rules below applied to the logical names that the models
give their parameters (`models/layers.py`).

A rule maps one logical name to candidate mesh axes, tried in order; a
candidate is skipped when its size is 1, when the parameter already uses it,
or when it does not divide that dimension (which is then replicated). So
small or oddly sized parameters stay replicated instead of failing.

Activations are named by the models too (`models/layers.py: constrain`) and
constrained by ACTIVATION_RULES inside the jitted steps (`activation_rules`):
the batch over (data, fsdp), heads, MLP units and vocabulary over `model`
(tensor parallelism). Without these constraints the parameters' fsdp
sharding spreads into the activations and every device holds the whole
batch's activations.
"""
import math

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from core.errors import ConfigError
from distill import host_devices
from models import layers

MESH_AXES = ('data', 'fsdp', 'model')
BATCH_AXES = ('data', 'fsdp')

LOGICAL_RULES = (
    ('embed', ('fsdp',)),
    ('mlp', ('model', 'fsdp')),
    ('heads', ('model', 'fsdp')),
    ('kv', ()),
    ('vocab', ('model', 'fsdp')),
    ('classes', ()),
    ('conv_out', ('model', 'fsdp')),
    ('conv_in', ('fsdp',)),
)


ACTIVATION_RULES = (
    ('activation_batch', ('data', 'fsdp')),
    ('activation_length', None),
    ('activation_embed', None),
    ('activation_heads', 'model'),
    ('activation_kv', None),
    ('activation_mlp', 'model'),
    ('activation_vocab', 'model'),
    ('activation_height', None),
    ('activation_width', None),
    ('activation_channels', 'model'),
    ('activation_classes', None),
)


def activation_rules():
  """The context under which models' activation constraints apply (enter it
  inside a jitted function, with the mesh set by `jax.set_mesh`)."""
  return layers.activation_rules(ACTIVATION_RULES)


DCN_AXES = tuple(f'dcn_{a}' for a in MESH_AXES)


def make_mesh(mesh_cfg, devices=None):
  """A Mesh over `devices` (default: all) with axes sized by `mesh_cfg`.

  `data`, `fsdp`, `model` size the mesh within a slice (one of them may be
  -1: the rest of the slice's devices); `dcn_data`, `dcn_fsdp`, `dcn_model`
  (default 1) multiply them across slices (multi-slice over the data-centre
  network), each mesh axis being the product. The device order comes from
  `jax.experimental.mesh_utils` (`create_device_mesh`, or
  `create_hybrid_device_mesh` with DCN axes), which follows the TPU
  topology; where the topology is unknown (CPU devices) it is a reshape.
  """
  devices = jax.devices() if devices is None else list(devices)
  unknown = sorted(set(mesh_cfg) - set(MESH_AXES) - set(DCN_AXES))
  if unknown:
    raise ConfigError(f'unknown mesh axis {unknown[0]!r}; valid choices: '
                      f'{", ".join(MESH_AXES + DCN_AXES)}')
  dcn = [int(mesh_cfg.get(a, 1)) for a in DCN_AXES]
  if min(dcn) < 1:
    raise ConfigError(f'config.mesh dcn sizes {dict(zip(DCN_AXES, dcn))} '
                      'must be >= 1')
  slices = math.prod(dcn)
  if len(devices) % slices:
    raise ConfigError(f'config.mesh dcn sizes {dict(zip(DCN_AXES, dcn))} '
                      f'do not divide the {len(devices)} devices into slices')
  per_slice = len(devices) // slices
  sizes = [int(mesh_cfg.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ConfigError('config.mesh: at most one axis may be -1, got '
                      f'{dict(zip(MESH_AXES, sizes))}')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if known <= 0 or per_slice % known:
      raise ConfigError(f'config.mesh {dict(zip(MESH_AXES, sizes))} does not '
                        f'divide the {per_slice} devices of a slice')
    sizes[sizes.index(-1)] = per_slice // known
  if math.prod(sizes) != per_slice or min(sizes) < 1:
    raise ConfigError(f'config.mesh {dict(zip(MESH_AXES, sizes))} needs '
                      f'{math.prod(sizes)} devices per slice, but there are '
                      f'{per_slice}; set one axis to -1 to use the rest')
  shape = [s * d for s, d in zip(sizes, dcn)]
  try:
    if slices > 1:
      grid = mesh_utils.create_hybrid_device_mesh(sizes, dcn, devices)
    else:
      grid = mesh_utils.create_device_mesh(sizes, devices)
  except (ValueError, NotImplementedError, AssertionError, AttributeError):
    grid = np.asarray(devices).reshape(shape)   # topology unknown (CPU)
  return Mesh(grid, MESH_AXES)


def batch_sizes(config):
  """Every batch size a stage splits over the mesh's batch shards."""
  sizes = [config.get('batch_size'), config.get('eval_batch_size')]
  if 'distill' in config:
    sizes.append(config.distill.get('predict_batch_size'))
  return [int(b) for b in sizes if b]


def stage_mesh(config, devices=None):
  """The mesh a stage runs on: `make_mesh(config.mesh, devices)`, except
  that without `devices` given, on one CPU process, a -1 data axis takes
  only as many of the host's CPU devices as divide the stage's batch sizes
  (distill/host_devices.py). Given devices (the compile check's simulated
  pod) are all used."""
  if devices is not None:
    return make_mesh(config.mesh, devices)
  devices = jax.devices()
  m = config.mesh
  if m.get('data', 1) == -1 and all(
      int(m.get(a, 1)) == 1 for a in DCN_AXES):
    fsdp, model = int(m.get('fsdp', 1)), int(m.get('model', 1))
    if fsdp > 0 and model > 0:
      devices = host_devices.usable(devices, batch_sizes(config),
                                    fsdp * model, model)
  return make_mesh(m, devices)


def batch_sharding(mesh):
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_shards(mesh):
  return mesh.shape['data'] * mesh.shape['fsdp']


def _is_box(x):
  return isinstance(x, nn.Partitioned)


def spec_for(shape, names, mesh, rules=LOGICAL_RULES):
  """PartitionSpec of one array from its logical names."""
  rules = dict(rules)
  used, out = set(), []
  for dim, name in zip(shape, names):
    choice = None
    for axis in rules.get(name, ()) if name else ():
      size = mesh.shape[axis]
      if size > 1 and axis not in used and dim % size == 0:
        choice = axis
        break
    if choice:
      used.add(choice)
    out.append(choice)
  return P(*out)


def shardings_from_boxed(abstract_tree, mesh, rules=LOGICAL_RULES):
  """NamedShardings for the *unboxed* version of a tree of nn.Partitioned.

  Leaves without logical names (step counters, BN statistics without
  metadata, optimizer scalars) are replicated.
  """
  def one(x):
    if _is_box(x) and not hasattr(x.value, 'shape'):
      return x.value      # an empty node (optax's MaskedNode): no arrays
    if _is_box(x):
      return NamedSharding(mesh, spec_for(x.value.shape, x.names, mesh, rules))
    return NamedSharding(mesh, P())
  return jax.tree.map(one, abstract_tree, is_leaf=_is_box)


def put_batch(batch, sharding):
  """Global jax.Arrays from this process's numpy batch (multi-host safe)."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def bytes_per_device(tree):
  """Bytes of `tree` stored on each device (max over devices)."""
  per = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      per[shard.device] = per.get(shard.device, 0) + shard.data.nbytes
  return max(per.values()) if per else 0
