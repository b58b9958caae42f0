"""Importing a Hugging Face checkpoint onto a mesh (distill/hf_checkpoint.py:
load_hf_lm): seconds against a plain read of the same files, and the peak
host memory above the model's own bytes.

    python -m experiments.bench_import                 # Llama-3.2-1B's shape
    python -m experiments.bench_import --shape=tiny    # seconds, for a check

Writes a synthetic checkpoint of the shape (bf16 values, two safetensors
files and their index, in a temporary folder removed at the end), then
measures in fresh processes, each on 8 simulated CPU devices:
- `read`: every tensor read once with the safetensors package (numpy),
  nothing kept;
- `import`: load_hf_lm onto an FSDP mesh of the 8 devices, float32
  parameters (on CPU devices they live in host memory: the model's own
  bytes), and the process's peak resident memory (VmHWM) above its
  baseline minus those bytes: what the import held beyond the model, with
  the goal of at most two of its largest tensors (in float32); anonymous
  memory (sampled RssAnon) and all resident memory (VmHWM, which counts
  the pages of the mapped safetensors files, evictable page cache).
Prints the table and writes experiments/results/bench_import.md.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {
    # Llama-3.2-1B's config.json fields (its public model card)
    'llama-3.2-1b': dict(hidden_size=2048, intermediate_size=8192,
                         num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64,
                         vocab_size=128256, tie_word_embeddings=True),
    'tiny': dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 vocab_size=97, tie_word_embeddings=True),
}
_SHAPE = flags.DEFINE_enum('shape', 'llama-3.2-1b', list(SHAPES),
                           'The checkpoint shape.')
_CHILD = flags.DEFINE_string('child', '', 'Internal: read:DIR or import:DIR.')


def _config(shape):
  return dict(
      model_type='llama', architectures=['LlamaForCausalLM'],
      hidden_act='silu', rms_norm_eps=1e-5, rope_theta=500000.0,
      max_position_embeddings=131072, attention_bias=False, mlp_bias=False,
      rope_scaling=dict(rope_type='llama3', factor=32.0, low_freq_factor=1.0,
                        high_freq_factor=4.0,
                        original_max_position_embeddings=8192),
      torch_dtype='bfloat16', **shape)


def _tensors(shape):
  """{name: shape} of a Llama checkpoint."""
  d, f, v = shape['hidden_size'], shape['intermediate_size'], \
      shape['vocab_size']
  h = shape['head_dim']
  q, kv = shape['num_attention_heads'] * h, shape['num_key_value_heads'] * h
  out = {'model.embed_tokens.weight': (v, d), 'model.norm.weight': (d,)}
  for i in range(shape['num_hidden_layers']):
    p = f'model.layers.{i}.'
    out.update({
        p + 'self_attn.q_proj.weight': (q, d),
        p + 'self_attn.k_proj.weight': (kv, d),
        p + 'self_attn.v_proj.weight': (kv, d),
        p + 'self_attn.o_proj.weight': (d, q),
        p + 'mlp.gate_proj.weight': (f, d), p + 'mlp.up_proj.weight': (f, d),
        p + 'mlp.down_proj.weight': (d, f),
        p + 'input_layernorm.weight': (d,),
        p + 'post_attention_layernorm.weight': (d,)})
  return out


def write_checkpoint(folder, shape):
  """The synthetic checkpoint in `folder` (two files and the index)."""
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  tensors = _tensors(shape)
  names = list(tensors)
  half = len(names) // 2
  weight_map, total = {}, 0
  rng = np.random.default_rng(0)
  block = (rng.standard_normal(1 << 16) * 0.02).astype(ml_dtypes.bfloat16)
  for i, group in enumerate((names[:half], names[half:])):
    file = f'model-{i + 1:05d}-of-00002.safetensors'
    arrays = {}
    for name in group:
      n = int(np.prod(tensors[name]))
      arrays[name] = np.resize(block, n).reshape(tensors[name])
      weight_map[name] = file
      total += 2 * n
    save_file(arrays, os.path.join(folder, file), metadata={'format': 'pt'})
    del arrays
  with open(os.path.join(folder, 'model.safetensors.index.json'), 'w') as f:
    json.dump({'metadata': {'total_size': total}, 'weight_map': weight_map},
              f)
  with open(os.path.join(folder, 'config.json'), 'w') as f:
    json.dump(_config(shape), f)
  largest = max(int(np.prod(s)) for s in tensors.values())
  return sum(int(np.prod(s)) for s in tensors.values()), largest


def _status(field):
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1]) * 1024
  return 0


def _hwm():
  return _status('VmHWM')


class _AnonPeak:
  """The peak of the process's anonymous resident memory (RssAnon, sampled
  every 5 ms): what it holds, without the pages of the files it maps
  (the page cache's, evictable)."""

  def __init__(self):
    import threading  # pylint: disable=g-import-not-at-top
    self.peak, self.done = _status('RssAnon'), False
    self.thread = threading.Thread(target=self._watch, daemon=True)
    self.thread.start()

  def _watch(self):
    while not self.done:
      self.peak = max(self.peak, _status('RssAnon'))
      time.sleep(0.005)

  def stop(self):
    self.done = True
    self.thread.join()
    return max(self.peak, _status('RssAnon'))


def _child(kind, folder):
  import jax  # pylint: disable=g-import-not-at-top
  jax.devices()
  base, anon_base = _hwm(), _status('RssAnon')
  anon = _AnonPeak()
  start = time.time()
  if kind == 'read':
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    with open(os.path.join(folder, 'model.safetensors.index.json')) as f:
      weight_map = json.load(f)['weight_map']
    for file in sorted(set(weight_map.values())):
      with safe_open(os.path.join(folder, file), framework='np') as f:
        for name in f.keys():
          f.get_tensor(name)
    held = 0
  else:
    from distill import hf_checkpoint  # pylint: disable=g-import-not-at-top
    from distill import sharding  # pylint: disable=g-import-not-at-top
    mesh = sharding.make_mesh({'data': 1, 'fsdp': 8, 'model': 1})
    _, params = hf_checkpoint.load_hf_lm(folder, mesh)
    jax.block_until_ready(params)
    held = sum(x.nbytes for x in jax.tree.leaves(params))
  seconds = time.time() - start
  return dict(seconds=seconds, peak_above_baseline=_hwm() - base,
              anon_peak_above_baseline=anon.stop() - anon_base, held=held)


def _run_child(kind, folder):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.bench_import',
       f'--child={kind}:{folder}'], cwd=REPO, env=env, capture_output=True,
      text=True, check=False)
  if proc.returncode:
    raise RuntimeError(proc.stderr[-3000:])
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  if _CHILD.value:
    kind, folder = _CHILD.value.split(':', 1)
    print(json.dumps(_child(kind, folder)))
    return
  shape = SHAPES[_SHAPE.value]
  folder = tempfile.mkdtemp(prefix='bench-import-')
  try:
    t0 = time.time()
    params, largest = write_checkpoint(folder, shape)
    written = time.time() - t0
    read = _run_child('read', folder)
    imported = _run_child('import', folder)
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  gib = 1024 ** 3
  beyond = imported['anon_peak_above_baseline'] - imported['held']
  mapped = imported['peak_above_baseline'] - imported['held']
  rows = [
      ('parameters', f'{params / 1e9:.3f} B'),
      ('checkpoint (bf16) written in', f'{written:.1f} s'),
      ('plain read of every tensor', f'{read["seconds"]:.1f} s'),
      ('load_hf_lm onto 8 devices (FSDP, f32)',
       f'{imported["seconds"]:.1f} s '
       f'({imported["seconds"] / read["seconds"]:.1f}x the read)'),
      ('the model\'s own bytes (f32)', f'{imported["held"] / gib:.2f} GiB'),
      ('peak host memory above them (anonymous: what the import holds)',
       f'{beyond / gib:.2f} GiB ({beyond / (4 * largest):.2f} of its largest '
       f'tensor in f32, goal <= 2)'),
      ('peak resident memory above them, the mapped files\' pages too',
       f'{mapped / gib:.2f} GiB'),
  ]
  md = '\n'.join(
      [f'### Importing a `{_SHAPE.value}`-shaped checkpoint '
       '(`python -m experiments.bench_import`)', '',
       '| what | measured |', '| --- | --- |'] +
      [f'| {a} | {b} |' for a, b in rows]) + '\n'
  print(md)
  if _SHAPE.value != 'tiny':
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, 'bench_import.md'), 'w') as f:
      f.write(md)


if __name__ == '__main__':
  app.run(main)
