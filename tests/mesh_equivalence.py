"""Run by test_sharding.py in a fresh process with 8 CPU devices:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python tests/mesh_equivalence.py OUT.json

Trains the same small CNN (with BatchNorm) for a few steps on a 1-device
mesh, an 8-way data-parallel mesh and an 8-way FSDP mesh, and writes the
per-step losses and the parameter bytes held per device. Trains a small LM
on 1 device and on data, FSDP and FSDP x model (4 x 2) meshes, with remat
and the attention implementations (LM_RUNS; one LM with every pretrained
family field at once, FAMILY_LM, scanned, on 1 device and on fsdp x model
with remat), and writes its losses; and the
per-device temporaries of an LM step on 1 and 8 devices. Also projects a
teacher LM into a student with GUIDE on the FSDP x model mesh (teacher and
student sharded) and writes the largest difference from the 1-device result,
and the LAuReL LM's output on that mesh against one device.
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from configs import common  # noqa: E402
from distill import sharding, train  # noqa: E402
from distill.logging_utils import read_metrics  # noqa: E402


def config(mesh):
  c = common.base_config()
  c.data.name = 'digits'
  c.data.validation = 64
  c.model_name = 'cnn'
  c.model.widths = (16, 32)
  c.model.dense = 64
  c.batch_size = 32
  c.eval_batch_size = 64
  c.total_steps = 6
  c.log_every_steps = 1
  c.optimizer.lr = 0.05
  c.eval_splits = 'validation'
  c.progress = False
  c.tensorboard = False
  c.mesh.update(mesh)
  return c


def main(out):
  assert jax.device_count() == 8, jax.devices()
  results = {}
  for name, mesh, devices in [
      ('single', dict(data=1, fsdp=1, model=1), jax.devices()[:1]),
      ('data', dict(data=8, fsdp=1, model=1), None),
      ('fsdp', dict(data=1, fsdp=8, model=1), None)]:
    with tempfile.TemporaryDirectory() as workdir:
      trainer = train.Trainer(config(mesh), workdir, devices=devices)
      total = sum(x.nbytes for x in jax.tree.leaves(trainer.state.params))
      per_device = sharding.bytes_per_device(trainer.state.params)
      final = trainer.run()
      losses = [r['train/loss'] for r in read_metrics(workdir)
                if 'train/loss' in r]
      results[name] = dict(losses=losses, param_bytes=total,
                           param_bytes_per_device=per_device,
                           val_accuracy=final['validation/accuracy'],
                           val_loss=final['validation/loss'])
  results['guide'] = guide_on_mesh()
  results['lm'] = lm_on_meshes()
  results['lm_temp_bytes'] = lm_temporaries()
  with open(out, 'w') as f:
    json.dump(results, f)


def lm_config(mesh, remat='none', attention='xla', scan=False, batch=16,
              seq=16, width=32, family=None):
  """A small LM on synthetic tokens (no dataset file needed); `family`:
  model fields added (FAMILY_LM). Scanned runs are not evaluated (their
  train losses are compared; no eval step to compile)."""
  c = common.base_config()
  c.data.name = 'tiny_shakespeare'
  c.data.seq_len = seq
  c.model_name = 'transformer_lm'
  c.model = dict(num_layers=2, width=width, num_heads=4, mlp_dim=2 * width,
                 max_len=seq, scan_layers=scan, remat=remat,
                 attention=attention, **(family or {}))
  c.batch_size = batch
  c.eval_batch_size = 64
  c.total_steps = 6
  c.log_every_steps = 1
  c.optimizer.name = 'adamw'
  c.optimizer.lr = 3e-3
  c.eval_splits = '' if scan else 'validation'
  c.progress = False
  c.tensorboard = False
  c.mesh.update(mesh)
  return c


# Every family field of models/transformer.py at once, each away from its
# default and in reach at this size: grouped-query attention (2 K/V heads of
# 4 query heads, which the model axis splits), a head dim that is not
# width / heads, GeGLU, Q/K/V biases, QK-norm, (1 + gain) norms with post
# norms (Gemma 2), sqrt(width) embeddings, rope with Llama 3's scaling (its
# original length short enough to scale these frequencies), the query
# pre-attention scalar, attention and final-logit soft caps low enough to
# bend, a sliding window of 4 of the 16 positions on layer 0 (layer 1 full),
# tied embeddings.
FAMILY_LM = dict(
    positions='rope', num_kv_heads=2, head_dim=16, mlp='geglu',
    qkv_bias=True, qk_norm=True, norm_eps=1e-5, norm_plus_one=True,
    post_norms=True, embed_scale=True, rope_theta=500000.0,
    rope_scaling='llama3', rope_factor=4.0, rope_original_max_len=8,
    query_pre_attn_scalar=24.0, attn_softcap=5.0, logit_softcap=3.0,
    sliding_window=4, tie_embeddings=True)

LM_RUNS = {   # name: mesh, remat, attention, layers scanned[, family fields]
    'single': (dict(data=1), 'none', 'xla', False),
    'single_remat_flash': (dict(data=1), 'full', 'flash', False),
    'data_remat_flash': (dict(data=8), 'dots_no_batch', 'flash', False),
    'fsdp': (dict(data=1, fsdp=8), 'none', 'xla', False),
    'fsdp_model': (dict(data=1, fsdp=4, model=2), 'none', 'xla', False),
    'single_scan': (dict(data=1), 'none', 'xla', True),
    'fsdp_model_scan_remat_flash': (dict(data=1, fsdp=4, model=2), 'full',
                                    'flash', True),
    'single_family_scan': (dict(data=1), 'none', 'xla', True, FAMILY_LM),
    'fsdp_model_family_scan_remat': (dict(data=1, fsdp=4, model=2), 'full',
                                     'xla', True, FAMILY_LM),
}


def lm_on_meshes():
  from distill.data import synthetic  # pylint: disable=g-import-not-at-top
  out = {}
  for name, (mesh, remat, attention, scan, *family) in LM_RUNS.items():
    c = lm_config(mesh, remat, attention, scan, family=dict(*family))
    devices = jax.devices()[:1] if name.startswith('single') else None
    with tempfile.TemporaryDirectory() as workdir:
      trainer = train.Trainer(c, workdir, devices=devices,
                              data=synthetic.data_like(c, n=256))
      final = trainer.run()
      out[name] = dict(losses=[r['train/loss'] for r in read_metrics(workdir)
                               if 'train/loss' in r],
                       val_loss=final.get('validation/loss'))
  return out


def lm_temporaries():
  """XLA's temporaries per device of one LM train step (global batch 64 x
  256 tokens) on 1 device and on 8 (fsdp): the activations are sharded."""
  from distill.data import synthetic  # pylint: disable=g-import-not-at-top
  out = {}
  for name, mesh, devices in (('1', dict(data=1), jax.devices()[:1]),
                              ('8', dict(data=1, fsdp=8), None)):
    c = lm_config(mesh, batch=64, seq=256, width=64)
    trainer = train.Trainer(c, '/nonexistent', devices=devices,
                            data=synthetic.data_like(c), abstract=True)
    out[name] = trainer.compile_train_step().memory_analysis(
    ).temp_size_in_bytes
  return out


def guide_on_mesh():
  """GUIDE's projection and a LAuReL LM, sharded vs on one device."""
  import functools  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import models  # pylint: disable=g-import-not-at-top
  from distill import guide  # pylint: disable=g-import-not-at-top
  tokens = jnp.zeros((8, 16), jnp.int32)
  mesh = sharding.make_mesh(dict(data=1, fsdp=4, model=2))
  out = {}
  built = {}
  for role, width, heads, mlp, residual in (
      ('teacher', 64, 4, 128, 'standard'),
      ('student', 32, 2, 64, 'laurel_rw_lr_pa')):
    model = models.build('transformer_lm', 16, num_layers=2, width=width,
                         num_heads=heads, mlp_dim=mlp, max_len=16,
                         residual=residual, residual_kw={'rank': 4})
    init = functools.partial(model.init, jax.random.PRNGKey(len(role)),
                             tokens)
    shardings = sharding.shardings_from_boxed(jax.eval_shape(init), mesh)
    host = jax.jit(lambda: nn.meta.unbox(init()))()   # one device
    placed = jax.jit(lambda: nn.meta.unbox(init()),
                     out_shardings=shardings)()
    built[role] = (model, host, placed, shardings)
  (_, t_host, t_placed, _) = built['teacher']
  (s_model, s_host, s_placed, s_shardings) = built['student']
  # Jitted on one device too: op by op, each of the projection's and the
  # model's operations would compile on its own (about 180 programs).
  single = jax.jit(guide.project)(t_host['params'], s_host['params'])
  with jax.set_mesh(mesh):
    sharded = jax.jit(guide.project, out_shardings=s_shardings['params'])(
        t_placed['params'], s_placed['params'])
  out['max_abs_diff'] = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                            for a, b in zip(jax.tree.leaves(single),
                                            jax.tree.leaves(sharded)))
  out['student_sharded_leaves'] = sum(
      len(x.sharding.device_set) > 1 and not x.sharding.is_fully_replicated
      for x in jax.tree.leaves(sharded))
  x = jax.random.randint(jax.random.PRNGKey(3), (8, 16), 0, 16)
  with jax.set_mesh(mesh):
    y_mesh = jax.jit(s_model.apply)({'params': sharded}, x)
  y_one = jax.jit(s_model.apply)({'params': single}, x)
  out['laurel_output_diff'] = float(np.max(np.abs(np.asarray(y_mesh) -
                                                  np.asarray(y_one))))
  return out


if __name__ == '__main__':
  main(sys.argv[1])
