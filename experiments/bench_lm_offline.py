"""Offline vs online LM distillation at CPU scale: the sparse cache's bytes
per token and the student's step time with each (configs/guide_lm.py, the
runlocal models, a synthetic corpus; one shared teacher).

    python -m experiments.bench_lm_offline [--steps=30] [--k=8]

Prints one line per variant: median step seconds over the steps after the
first (compilation), and the cache's bytes per token; no file is written
outside a temporary folder.
"""
import argparse
import json
import os
import tempfile

import numpy as np

from configs import guide_lm
from distill import lm_cache
from distill import run


def _median_step(workdir):
  with open(os.path.join(workdir, 'student', 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return float(np.median([r['step_seconds'] for r in rows
                          if 'step_seconds' in r]))


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--steps', type=int, default=30)
  p.add_argument('--k', type=int, default=8)
  p.add_argument('--method', default='forward_kl')
  a = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    text = os.path.join(tmp, 'corpus.txt')
    rng = np.random.default_rng(0)
    with open(text, 'w') as f:
      f.write(' '.join(rng.choice(['the cat sat', 'on a mat', 'a dog ran',
                                   'to the sea']) for _ in range(5000)))
    teacher = ''
    for name, extra, kw in (
        ('online', '', {'teacher_top_k': a.k}),
        ('offline f32', f',offline_topk={a.k}', {}),
        ('offline bf16', f',offline_topk={a.k},cache_dtype=bfloat16', {})):
      c = guide_lm.get_config(f'method={a.method},text={text},runlocal'
                              + extra)
      c.total_steps = a.steps
      c.log_every_steps = 1
      c.method_kw.update(kw)
      c.teacher.workdir = teacher
      w = os.path.join(tmp, name.replace(' ', '_'))
      run.execute(c, w)
      teacher = teacher or os.path.join(w, 'teacher')
      dtype = c.distill.get('cache_dtype', 'float32')
      bpt = (lm_cache.bytes_per_token(a.k, dtype) if 'offline' in name
             else 0)
      print(f'RESULT {name}: {_median_step(w) * 1e3:.1f} ms/step, cache '
            f'{bpt} bytes/token', flush=True)


if __name__ == '__main__':
  main()
