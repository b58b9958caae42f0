"""Our ResNet-20 train step, the same step function jitted without the
mesh's shardings, and the hand-written Flax + optax step, interleaved in
both orders (best of 4 rounds of 10 steps each).

    python -m experiments.bench_step_overhead
"""
import os

import jax

from experiments import bench


def main():
  ours = bench.OurStep(bench.resnet_config())
  plain = bench.PlainFlaxStep(ours)
  raw = jax.jit(ours.trainer.step_function, donate_argnums=0)
  state = [jax.tree.map(lambda a: a.copy(), ours.trainer.state)]

  def raw_call():
    state[0], metrics = raw(state[0], ours.batch)
    return metrics

  for order in (('plain', 'ours', 'raw_jit'), ('ours', 'raw_jit', 'plain')):
    fns = {'plain': plain, 'ours': ours, 'raw_jit': raw_call}
    best = bench.interleaved({k: fns[k] for k in order}, 10, 4)
    print(f'{order[0]} first: ' + ', '.join(
        f'{k} {1000 * v:.0f} ms ({v / best["plain"]:.3f}x plain)'
        for k, v in best.items()))


if __name__ == '__main__':
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  main()
