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
"""
import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from distill.errors import ConfigError

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


def make_mesh(mesh_cfg, devices=None):
  """A Mesh over `devices` (default: all) with axes sized by `mesh_cfg`."""
  devices = jax.devices() if devices is None else devices
  unknown = sorted(set(mesh_cfg) - set(MESH_AXES))
  if unknown:
    raise ConfigError(f'unknown mesh axis {unknown[0]!r}; valid choices: '
                      f'{", ".join(MESH_AXES)}')
  sizes = [int(mesh_cfg.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ConfigError('config.mesh: at most one axis may be -1, got '
                      f'{dict(zip(MESH_AXES, sizes))}')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if known <= 0 or len(devices) % known:
      raise ConfigError(f'config.mesh {dict(zip(MESH_AXES, sizes))} does not '
                        f'divide the {len(devices)} devices')
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices) or min(sizes) < 1:
    raise ConfigError(f'config.mesh {dict(zip(MESH_AXES, sizes))} needs '
                      f'{math.prod(sizes)} devices, but there are '
                      f'{len(devices)}; set one axis to -1 to use the rest')
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


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
