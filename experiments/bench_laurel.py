"""Benchmark: each LAuReL variant's train-step time, peak memory and
parameters relative to the plain residual, on the same model, batch and
machine (one run; absolute figures printed only as context).

    python -m experiments.bench_laurel                      # ResNet and LM
    python -m experiments.bench_laurel --model=lm --rounds=5

Models: the CIFAR ResNet-8 (width 0.5, r=2) and the 6-layer character LM
(width 64, r=8) of the LAuReL tables (experiments/laurel.py), on synthetic
inputs of the real shapes. Step time is the best of `rounds` rounds,
interleaved across variants so that machine drift affects all alike; peak
memory is XLA's compiled estimate for the jitted train step (arguments +
outputs + temporaries - donated aliases).
"""
import sys

import jax
from absl import app
from absl import flags

from experiments import costs

_MODEL = flags.DEFINE_enum('model', 'both', ['both', 'resnet', 'lm'],
                           'Which model family to benchmark.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per round.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Interleaved timing rounds.')

VARIANTS = ('standard', 'laurel_rw', 'laurel_lr', 'laurel_pa', 'laurel_rw_lr',
            'laurel_rw_pa', 'laurel_lr_pa', 'laurel_rw_lr_pa')


def _family(name):
  from experiments import laurel  # pylint: disable=g-import-not-at-top
  from experiments import tables  # pylint: disable=g-import-not-at-top
  _, table = tables.load('laurel_cifar10' if name == 'resnet'
                         else 'laurel_shakespeare')
  base = laurel.base_config(table)
  configs = {v: laurel.row_config(base, table, {'model.residual': v})
             for v in VARIANTS}
  return base, configs


def main(argv):
  del argv
  for name in ('resnet', 'lm'):
    if _MODEL.value not in ('both', name):
      continue
    base, configs = _family(name)
    data = costs.synthetic_data(base)
    table = costs.relative(costs.measure(configs, data, _STEPS.value,
                                         _ROUNDS.value), 'standard')
    shape = {k: v for k, v in base.model.items()
             if k not in ('residual', 'residual_kw')}
    print(f'\n{name}: {base.model_name} {shape}, rank '
          f'{base.model.residual_kw.rank}, batch {base.batch_size}; '
          f'{_ROUNDS.value} rounds x {_STEPS.value} steps, '
          f'{jax.device_count()} {jax.devices()[0].platform} device(s)')
    print(f'{"variant":18s} {"params":>8s} {"added %":>8s} {"step ms":>8s} '
          f'{"step x":>7s} {"peak MB":>8s} {"mem x":>6s}')
    for v, c in table.items():
      mem = c['peak_bytes'] / 2**20 if c['peak_bytes'] else float('nan')
      print(f'{v:18s} {c["params"]:8d} {c["params_added_pct"]:8.2f} '
            f'{1000 * c["step_s"]:8.1f} {c["step_rel"]:7.3f} {mem:8.1f} '
            f'{c["mem_rel"] or float("nan"):6.3f}')


if __name__ == '__main__':
  sys.exit(app.run(main))
