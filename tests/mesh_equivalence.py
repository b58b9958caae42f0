"""Run by test_sharding.py in a fresh process with 8 CPU devices:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python tests/mesh_equivalence.py OUT.json

Trains the same small CNN (with BatchNorm) for a few steps on a 1-device
mesh, an 8-way data-parallel mesh and an 8-way FSDP mesh, and writes the
per-step losses and the parameter bytes held per device.
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
  with open(out, 'w') as f:
    json.dump(results, f)


if __name__ == '__main__':
  main(sys.argv[1])
