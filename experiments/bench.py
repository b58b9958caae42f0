"""Performance against the limit and the alternatives, as ratios measured in
one run on this machine (absolute times are context only).

    python -m experiments.bench                      # everything (~15 min)
    python -m experiments.bench --sections=flops,torch --steps=10

Sections (--sections, comma-separated; default all):
  flops     our train step's achieved FLOP/s over a large float32 matmul
            timed in the same run (the machine's ceiling), CIFAR ResNet-20
            (width 16, batch 128) and the Tiny Shakespeare LM (batch 64);
  flax      our step against a minimal hand-written Flax + optax step, same
            model, optimizer and batch (goal: at most 5% overhead);
  torch     ResNet-20, ResNet-8 and the small CNN in PyTorch on CPU (eager;
            channels-last and contiguous, the better one; in a process of
            its own), same batch and optimizer, against our step on the
            devices its config gets by default (distill/host_devices.py),
            on one, on all, and before the oneDNN kernels;
  breakdown the ResNet-20 step's kernels timed alone, XLA's and oneDNN's:
            each convolution shape's forward, input-gradient and
            weight-gradient kernels and each batch norm + ReLU's forward
            + backward (XLA's, and the library's fused kernel), times their
            counts in the
            network, with their GFLOP/s (isolated kernels do not add up to
            the fused step; the column compares kernel kinds);
  profile   where the fused ResNet-20 step spends its time, from a
            jax.profiler trace of XLA:CPU's kernels (thunks) grouped by
            kind, on one device and on the default CPU devices: thread
            milliseconds per step (kernels of several devices overlap, so a
            kind can exceed the step's wall time);
  devices   steady-state examples/s of the ResNet-20 step on 1, 2, 4, 8 and
            16 CPU devices (same global batch; distill/host_devices.py picks
            the default count from these);
  malloc    the ResNet-20 step on one device with glibc's default malloc,
            with huge pages, and with huge pages and one heap kept mapped
            (the default; distill/host_memory.py), each in a process of
            its own: step time, minor page faults and kernel (system) CPU
            seconds per step, and PyTorch's step under each;
  compile   compile time of the train step per config;
  input     the input pipeline before grain and now, with 0, 1 and 2
            workers, on CIFAR in memory, CIFAR JPEGs from array_record,
            ImageNet-sized JPEGs with inception crops and LM tokens:
            examples/s, per host core, and as a share of one accelerator's
            consumption (experiments/bench_input.py names the figures);
  methods   the distillation-loss overhead and teacher-cache speed-up
            (experiments/bench_methods.py, its output as is);
  generate  decoding with the KV cache against recomputing the window;
  import    a Hugging Face checkpoint of Llama-3.2-1B's shape (random bf16
            weights, written first) imported onto 8 simulated devices with
            FSDP: seconds against a plain read, peak host memory
            (experiments/bench_import.py, its output as is; it also writes
            experiments/results/bench_import.md).
Timings are the best of interleaved rounds (`--rounds`), so that load from
elsewhere hits both sides of a ratio alike. Writes
experiments/results/bench.{md,json} (bench_<sections>.{md,json} for a
subset, e.g. bench_input.md).
"""
import contextlib
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

SECTIONS = ('flops', 'flax', 'torch', 'breakdown', 'profile', 'devices',
            'malloc', 'compile', 'input', 'methods', 'generate', 'import')
# Sections whose script writes its own results file (of the name a run of
# that section alone would write here)
WRITES_OWN = {'import'}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SECTIONS = flags.DEFINE_list('sections', list(SECTIONS), 'Which sections.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per round.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Interleaved timing rounds.')
_OUT = flags.DEFINE_string('out', RESULTS, 'Where bench.{md,json} go.')
_CHILD = flags.DEFINE_string('child', '', 'Internal: one measurement in a '
                             'subprocess (devices, ours, torch, malloc).')


def _best_time(fn, steps, rounds):
  """Best seconds per call of `fn()` (blocking) over rounds of `steps`,
  after WARMUP_STEPS calls (compile, warm up)."""
  for _ in range(WARMUP_STEPS):
    _block(fn())
  best = float('inf')
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(steps):
      out = fn()
    _block(out)
    best = min(best, (time.perf_counter() - start) / steps)
  return best


def _block(x):
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(x)


def interleaved(fns, steps, rounds):
  """{name: best seconds per call}; the calls alternate between names."""
  for fn in fns.values():
    _block(fn())
    _block(fn())
  best = {k: float('inf') for k in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      start = time.perf_counter()
      for _ in range(steps):
        out = fn()
      _block(out)
      best[name] = min(best[name], (time.perf_counter() - start) / steps)
  return best


# --- models and steps -------------------------------------------------------


def resnet_config(batch=128):
  from configs import cifar10_teacher  # pylint: disable=g-import-not-at-top
  c = cifar10_teacher.get_config('depth=20')
  c.batch_size = batch
  c.eval_batch_size = batch
  c.progress = False
  return c


def lm_config():
  from configs import shakespeare_lm  # pylint: disable=g-import-not-at-top
  c = shakespeare_lm.get_config()
  c.progress = False
  return c


class OurStep:
  """The framework's jitted train step on one fixed batch."""

  def __init__(self, config, devices=None):
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from distill import sharding, train  # pylint: disable=g-import-not-at-top
    from distill.data import synthetic  # pylint: disable=g-import-not-at-top
    self.config = config
    data = synthetic.data_like(config)
    self.trainer = train.Trainer(config, '/nonexistent', data=data,
                                 devices=devices)
    raw = self.trainer.train_part.get(np.arange(config.batch_size))
    self.host_batch = self.trainer.inputs.host_train(
        raw, np.random.default_rng(0))
    self.batch = sharding.put_batch(self.host_batch,
                                    self.trainer.batch_sharding)
    self.state = self.trainer.state
    self._jax = jax

  def __call__(self):
    with self._jax.set_mesh(self.trainer.mesh):
      self.state, metrics = self.trainer.train_step(self.state, self.batch)
    return metrics

  def flops(self):
    """Model FLOPs of one step (distill/flops.py: 3 x the forward's matmuls
    and convolutions, oneDNN's calls included). XLA's cost analysis cannot
    see inside custom calls, so it would miss the oneDNN convolutions."""
    from distill import flops  # pylint: disable=g-import-not-at-top
    return flops.model_flops_per_step(self.trainer)


class PlainFlaxStep:
  """The minimal step a user would write: the same Flax model, the same optax
  optimizer, softmax cross-entropy, value_and_grad, apply_updates."""

  def __init__(self, ours):
    import jax  # pylint: disable=g-import-not-at-top
    import optax  # pylint: disable=g-import-not-at-top
    t = ours.trainer
    model, tx = t.model, t.tx
    batch = ours.host_batch
    self.x = t.inputs.device(jax.numpy.asarray(batch['inputs']))
    self.y = jax.numpy.asarray(batch['label'] if 'label' in batch
                               else batch['targets'])
    params = jax.tree.map(lambda a: a.copy(), t.state.params)
    stats = jax.tree.map(lambda a: a.copy(), t.state.model_state)
    self.carry = (params, stats, tx.init(params), jax.random.PRNGKey(0))

    def loss_fn(params, stats, x, y, rng):
      logits, new = model.apply({'params': params, **stats}, x, train=True,
                                mutable=list(stats), rngs={'dropout': rng})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, new

    def step(carry, x, y):
      params, stats, opt_state, rng = carry
      rng, sub = jax.random.split(rng)
      (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          params, stats, x, y, sub)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), new, opt_state,
              rng), loss

    self.step = jax.jit(step, donate_argnums=0)

  def __call__(self):
    self.carry, loss = self.step(self.carry, self.x, self.y)
    return loss


def matmul_ceiling(n=2048, steps=10, rounds=3):
  """GFLOP/s of an n x n float32 matmul (jitted)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  mm = jax.jit(jnp.matmul)
  seconds = _best_time(lambda: mm(a, b), steps, rounds)
  return 2 * n ** 3 / seconds / 1e9


# --- sections ---------------------------------------------------------------


def section_flops(steps, rounds):
  rows = []
  ceiling = matmul_ceiling(steps=steps, rounds=rounds)
  for name, config in (('CIFAR ResNet-20, batch 128', resnet_config()),
                       ('Shakespeare LM 4x128, batch 64', lm_config())):
    ours = OurStep(config)
    flops = ours.flops()
    seconds = _best_time(ours, steps, rounds)
    ceiling = max(ceiling, matmul_ceiling(steps=steps, rounds=1))
    rows.append(dict(model=name, gflop_per_step=flops / 1e9,
                     step_ms=1000 * seconds,
                     achieved_gflops=flops / seconds / 1e9))
  for r in rows:
    r['ceiling_gflops'] = ceiling
    r['ratio'] = r['achieved_gflops'] / ceiling
  return rows


def section_flax(steps, rounds):
  import jax  # pylint: disable=g-import-not-at-top
  rows = []
  for name, config in (('CIFAR ResNet-20, batch 128', resnet_config()),
                       ('Shakespeare LM 4x128, batch 64', lm_config())):
    # Both on one device: the plain step runs on one, and ours would
    # otherwise split its batch over the devices its config gets.
    ours = OurStep(config, devices=jax.devices()[:1])
    plain = PlainFlaxStep(ours)
    # both orders of alternation: the first function of a pair was
    # systematically slower on this machine
    a = interleaved({'ours': ours, 'plain': plain}, steps, rounds)
    b = interleaved({'plain': plain, 'ours': ours}, steps, rounds)
    best = {k: min(a[k], b[k]) for k in a}
    rows.append(dict(model=name, ours_ms=1000 * best['ours'],
                     plain_ms=1000 * best['plain'],
                     overhead=best['ours'] / best['plain'] - 1))
  return rows


def torch_resnet(torch, channels_last, blocks=3):
  """He et al.'s CIFAR ResNet (16-32-64, option-B 1x1 projections, `blocks`
  per stage: 3 is ResNet-20, 1 ResNet-8), the architecture of
  models/resnet.py at depth 6 * blocks + 2."""
  nn = torch.nn

  class Block(nn.Module):

    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5)
      self.proj = None
      if stride != 1 or cin != cout:
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                  nn.BatchNorm2d(cout))

    def forward(self, x):
      y = torch.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      return torch.relu(y + (x if self.proj is None else self.proj(x)))

  layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
            nn.ReLU()]
  cin = 16
  for stage, w in enumerate((16, 32, 64)):
    for b in range(blocks):
      layers.append(Block(cin, w, 2 if stage and not b else 1))
      cin = w
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
  return _layout(torch, nn.Sequential(*layers), channels_last)


def torch_small_cnn(torch, channels_last, widths=(16, 32, 64)):
  """models/cnn.py's SmallCNN: conv3-BN-ReLU + 2x max-pool per width, global
  average pool, linear head."""
  nn = torch.nn
  layers, cin = [], 3
  for w in widths:
    layers += [nn.Conv2d(cin, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w),
               nn.ReLU(), nn.MaxPool2d(2)]
    cin = w
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
  return _layout(torch, nn.Sequential(*layers), channels_last)


def _layout(torch, model, channels_last):
  return model.to(memory_format=torch.channels_last) if channels_last else (
      model)


def small_cnn_config(batch=128):
  c = resnet_config(batch)
  c.model_name = 'cnn'
  c.model = ml_collections_dict(widths=(16, 32, 64))
  return c


def ml_collections_dict(**kw):
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(kw)


# (name, our config, the PyTorch model) compared by the torch section.
TORCH_MODELS = (
    ('CIFAR ResNet-20', lambda: resnet_config(),
     lambda torch, cl: torch_resnet(torch, cl, 3)),
    ('CIFAR ResNet-8', lambda: _depth(resnet_config(), 8),
     lambda torch, cl: torch_resnet(torch, cl, 1)),
    ('small CNN 16-32-64', small_cnn_config, torch_small_cnn),
)


def _depth(c, depth):
  c.model.depth = depth
  return c


def torch_step_seconds(steps, rounds, batch=128, build=None):
  """{'channels_last': s, 'contiguous': s} per PyTorch train step of the
  model `build(torch, channels_last)` (default ResNet-20)."""
  import torch  # pylint: disable=g-import-not-at-top
  build = build or (lambda t, cl: torch_resnet(t, cl, 3))
  torch.manual_seed(0)
  out = {}
  for layout in ('channels_last', 'contiguous'):
    model = build(torch, layout == 'channels_last')
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                          nesterov=True, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32)
    if layout == 'channels_last':
      x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(model=model, opt=opt, x=x, y=y, loss_fn=loss_fn):
      opt.zero_grad(set_to_none=True)
      loss = loss_fn(model(x), y)
      loss.backward()
      opt.step()
      return loss

    for _ in range(WARMUP_STEPS):
      step()
    best = float('inf')
    for _ in range(rounds):
      start = time.perf_counter()
      for _ in range(steps):
        step()
      best = min(best, (time.perf_counter() - start) / steps)
    out[layout] = best
  return out


def _torch_child(index, steps, rounds):
  """PyTorch's step seconds of TORCH_MODELS[index], in a process of its
  own."""
  _, _, build = TORCH_MODELS[index]
  return torch_step_seconds(steps, rounds, build=build)


# Steps run before a fresh process's timing: the first steps after compiling
# run at half speed (each XLA worker thread builds its oneDNN primitives
# and OpenMP team on first use: 0.58-0.63 s against 0.27 s steady for the
# ResNet-20 step, measured by rounds 1 vs 3 of 5 steps).
WARMUP_STEPS = 10


def _ours_child(spec, steps, rounds):
  """Our step's seconds for TORCH_MODELS[index] on `devices` CPU devices
  (0: the default for its config), conv `conv` (spec 'index,devices,conv'),
  in a process of its own."""
  import jax  # pylint: disable=g-import-not-at-top
  from distill import host_devices  # pylint: disable=g-import-not-at-top
  index, devices, conv = spec.split(',')
  config = TORCH_MODELS[int(index)][1]()
  config.model.conv = conv
  devices = int(devices) or host_devices.auto_count(config=config)
  jax.config.update('jax_num_cpu_devices', devices)
  ours = OurStep(config)
  return dict(seconds=_best_time(ours, steps, rounds),   # warms up first
              devices=ours.trainer.mesh.size)


def _child_malloc(_, steps, rounds):
  """Step seconds, minor page faults and system seconds per step of the
  ResNet-20 step on one device, under this process's malloc."""
  import resource  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_num_cpu_devices', 1)
  ours = OurStep(resnet_config())
  seconds = _best_time(ours, steps, rounds)
  before = resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(steps):
    _block(ours())
  after = resource.getrusage(resource.RUSAGE_SELF)
  return dict(step_ms=1000 * seconds,
              minor_faults_per_step=(after.ru_minflt - before.ru_minflt)
              / steps,
              system_s_per_step=(after.ru_stime - before.ru_stime) / steps,
              user_s_per_step=(after.ru_utime - before.ru_utime) / steps)


def section_malloc(steps, rounds):
  from distill import host_memory  # pylint: disable=g-import-not-at-top
  rows = []
  plain = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  off = {host_memory.ENV: '0'}      # the children keep what they are given
  for label, env in (
      ('glibc default', dict(plain, **off)),
      (host_memory.TUNABLE, dict(host_memory.environment(
          plain, only=[host_memory.TUNABLE]), **off)),
      (':'.join(host_memory.tunables()) + ' (the default)',
       host_memory.environment(plain))):
    proc = subprocess.run(
        [sys.executable, '-m', 'experiments.bench', '--child=malloc:0',
         f'--steps={steps}', f'--rounds={rounds}'], cwd=REPO,
        capture_output=True, text=True, check=False,
        env=dict(env, JAX_PLATFORMS='cpu'))
    if proc.returncode:
      raise RuntimeError(proc.stderr[-2000:])
    row = dict(malloc=label,
               **json.loads(proc.stdout.strip().splitlines()[-1]))
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      rows.append(row)
      continue
    proc = subprocess.run(               # PyTorch's ResNet-20 under it too
        [sys.executable, '-m', 'experiments.bench', '--child=torch:0',
         f'--steps={steps}', f'--rounds={rounds}'], cwd=REPO,
        capture_output=True, text=True, check=False, env=env)
    if proc.returncode:
      raise RuntimeError(proc.stderr[-2000:])
    torch_s = json.loads(proc.stdout.strip().splitlines()[-1])
    row['torch_channels_last_ms'] = 1000 * torch_s['channels_last']
    rows.append(row)
  return rows


def _child(kind, spec, steps, rounds):
  """One measurement in a fresh process: {'seconds': ...} or PyTorch's."""
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.bench', f'--child={kind}:{spec}',
       f'--steps={steps}', f'--rounds={rounds}'], cwd=REPO, capture_output=True,
      text=True, check=False, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  if proc.returncode:
    raise RuntimeError(proc.stderr[-2000:])
  return json.loads(proc.stdout.strip().splitlines()[-1])


def section_torch(steps, rounds):
  """Our step on the devices a run of that config gets by default
  (host_devices.auto_count), on one device and on every default CPU
  device, and as it was before the oneDNN kernels (XLA's convolution and
  batch norm on every device), against PyTorch's, per model. Every
  measurement runs in a process of its own (two frameworks in one process
  slow each other's thread pools), rounds alternate them, and each keeps
  its best; each process times `rounds` rounds after a warm-up, and the
  processes alternate twice. Both run with the same malloc
  (distill/host_memory.py)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return [dict(note='PyTorch is not installed: pip install torch (on this '
                 'machine: pip install torch==2.13.0)')]
  from distill import host_devices  # pylint: disable=g-import-not-at-top
  everything = host_devices.auto_count()
  rows = []
  for index, (name, config_fn, _) in enumerate(TORCH_MODELS):
    auto = host_devices.auto_count(config=config_fn())
    ours = {'one': f'{index},1,auto', 'all': f'{index},{everything},auto',
            'xla': f'{index},{everything},xla'}
    best = {k: float('inf') for k in list(ours) + ['channels_last',
                                                  'contiguous']}
    for _ in range(2):
      for key, spec in ours.items():
        best[key] = min(best[key],
                        _child('ours', spec, steps, rounds)['seconds'])
      for key, seconds in _child('torch', index, steps, rounds).items():
        best[key] = min(best[key], seconds)
    mine = best['one'] if auto == 1 else best['all']
    torch_best = min(best['channels_last'], best['contiguous'])
    rows.append({
        'model': f'{name}, batch 128', 'torch_version': torch.__version__,
        'torch_threads': torch.get_num_threads(),
        'malloc': os.environ.get('GLIBC_TUNABLES', 'default'),
        'default_devices': auto, 'conv': _conv_in_use(),
        'ours_ms': 1000 * mine,
        'ours_one_device_ms': 1000 * best['one'],
        f'ours_{everything}_devices_ms': 1000 * best['all'],
        f'before_kernels_{everything}_devices_ms': 1000 * best['xla'],
        'torch_channels_last_ms': 1000 * best['channels_last'],
        'torch_contiguous_ms': 1000 * best['contiguous'],
        'ours_over_torch': mine / torch_best,
        'before_over_torch': best['xla'] / torch_best})
  return rows


def _conv_in_use():
  """What model.conv=auto runs here (threads per call: the cores over the
  devices)."""
  from models.kernels import onednn  # pylint: disable=g-import-not-at-top
  return onednn.describe()


# ResNet-20 at batch 128: (spatial size in, channels in, out, kernel, stride,
# how many in the network)
RESNET20_CONVS = ((32, 3, 16, 3, 1, 1), (32, 16, 16, 3, 1, 6),
                  (32, 16, 32, 3, 2, 1), (32, 16, 32, 1, 2, 1),
                  (16, 32, 32, 3, 1, 5), (16, 32, 64, 3, 2, 1),
                  (16, 32, 64, 1, 2, 1), (8, 64, 64, 3, 1, 5))
# batch norms by output (spatial size, channels): count
RESNET20_NORMS = ((32, 16, 7), (16, 32, 7), (8, 64, 7))


# XLA:CPU kernel (thunk) names, by prefix, grouped into what they do.
PROFILE_KINDS = (
    ('YNNPACK fusions (XLA convolutions, dots)', ('ynn_fusion',
                                                  'xnn_fusion')),
    ('kernel library calls (oneDNN convolutions, fused batch norms; FFI)',
     ('ffi_call',)),
    ('convolutions (Eigen)', ('convolution', 'conv_general_dilated')),
    ('layout transposes (+ fused recomputation)', ('transpose',)),
    ('reductions (batch-norm statistics, pooling)',
     ('wrapped_reduce', 'reduce')),
    ('cross-device all-reduce and waiting',
     ('all-reduce', 'Rendezvous', 'Wait:')),
)
_NOT_KERNELS = ('Thunk', '$', 'Pjit', 'Common', 'PjRt', 'Execute')


def profile_kinds(step, reps=3):
  """{kind: thread ms per step} from a jax.profiler trace of `step()`."""
  import collections  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  for _ in range(2):
    _block(step())
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      for _ in range(reps):
        _block(step())
    path = glob.glob(os.path.join(d, '**', '*.trace.json.gz'),
                     recursive=True)[0]
    with gzip.open(path) as f:
      events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  out = collections.Counter()
  for e in events:
    name = e.get('name', '')
    if e.get('ph') != 'X' or name.startswith(_NOT_KERNELS):
      continue
    kind = next((k for k, prefixes in PROFILE_KINDS
                 if name.startswith(prefixes)), 'other (elementwise fusions)')
    out[kind] += e['dur'] / 1000 / reps
  return out


def section_profile(steps, rounds):
  import jax  # pylint: disable=g-import-not-at-top
  del rounds
  rows = []
  for label, devices, conv in (
      ('1 device, XLA convolution', jax.devices()[:1], 'xla'),
      ('1 device', jax.devices()[:1], 'auto'),
      (f'{jax.device_count()} devices, XLA convolution', None, 'xla'),
      (f'{jax.device_count()} devices', None, 'auto')):
    config = resnet_config()
    config.model.conv = conv
    ours = OurStep(config, devices=devices)
    wall = _best_time(ours, steps, 1)
    kinds = profile_kinds(ours)
    rows.append(dict({'devices': label, 'step ms (wall)': 1000 * wall},
                     **{k: kinds.get(k, 0.0) for k, _ in PROFILE_KINDS},
                     **{'other (elementwise fusions)':
                        kinds.get('other (elementwise fusions)', 0.0)}))
  return rows


@contextlib.contextmanager
def _onednn_layout(layout):
  """DISTILL_ONEDNN_LAYOUT=`layout` inside (None: as it is)."""
  before = os.environ.get('DISTILL_ONEDNN_LAYOUT')
  if layout:
    os.environ['DISTILL_ONEDNN_LAYOUT'] = layout
  try:
    yield
  finally:
    if before is None:
      os.environ.pop('DISTILL_ONEDNN_LAYOUT', None)
    else:
      os.environ['DISTILL_ONEDNN_LAYOUT'] = before


def section_breakdown(steps, rounds, batch=128):
  """Seconds per step spent in each kind of kernel, timed in isolation."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  key = jax.random.PRNGKey(0)
  from models.kernels import onednn  # pylint: disable=g-import-not-at-top
  kernels = [('conv forward', None), ('conv input gradient', None),
             ('conv weight gradient', None)]
  if onednn.available():      # model.conv=auto on one device: the last three
    for layout, label in (('nhwc', 'oneDNN direct'),
                          ('auto', 'oneDNN, Winograd where faster')):
      kernels += [(f'conv forward ({label})', layout),
                  (f'conv input gradient ({label})', layout),
                  (f'conv weight gradient ({label})', layout)]
  totals = {k: 0.0 for k, _ in kernels}
  totals['batch norm + ReLU fwd + bwd'] = 0.0
  if onednn.available():
    totals['batch norm + ReLU fwd + bwd (fused kernel)'] = 0.0
  flops = {k: 0.0 for k in totals}
  for h, cin, cout, k, s, count in RESNET20_CONVS:
    x = jax.random.normal(key, (batch, h, h, cin))
    w = jax.random.normal(key, (k, k, cin, cout))
    g = None
    for name, layout in kernels:
      impl = (onednn.conv_general_dilated if layout
              else lax.conv_general_dilated)
      conv = lambda x, w, s=s, impl=impl: impl(  # noqa: E731
          x, w, (s, s), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      g = jax.random.normal(key, conv(x, w).shape) if g is None else g
      if name.startswith('conv forward'):
        fn, args = jax.jit(conv), (x, w)
      elif name.startswith('conv input'):    # only the input's cotangent
        fn = jax.jit(lambda x, w, g, c=conv: jax.vjp(
            lambda x_: c(x_, w), x)[1](g)[0])
        args = (x, w, g)
      else:
        fn = jax.jit(lambda x, w, g, c=conv: jax.vjp(
            lambda w_: c(x, w_), w)[1](g)[0])
        args = (x, w, g)
      with _onednn_layout(layout):     # read when fn is traced
        totals[name] += count * _best_time(lambda fn=fn, a=args: fn(*a),
                                           steps, rounds)
      flops[name] += count * 2 * g.size * cin * k * k

  def norm(x, scale):
    mean = x.mean((0, 1, 2))
    var = ((x - mean) ** 2).mean((0, 1, 2))
    return jax.nn.relu((x - mean) * lax.rsqrt(var + 1e-5) * scale).sum()

  def fused_norm(x, scale):
    return onednn.batch_norm_train(x, scale, jnp.zeros_like(scale), 1e-5,
                                   relu=True)[0].sum()

  norms = [('batch norm + ReLU fwd + bwd', norm)]
  if onednn.available():
    norms.append(('batch norm + ReLU fwd + bwd (fused kernel)', fused_norm))
  for name, fn in norms:
    bn = jax.jit(jax.grad(fn, argnums=(0, 1)))
    for h, c, count in RESNET20_NORMS:
      x = jax.random.normal(key, (batch, h, h, c))
      totals[name] += count * _best_time(
          lambda x=x, c=c, bn=bn: bn(x, jnp.ones(c)), steps, rounds)
  ours = OurStep(resnet_config(batch), devices=jax.devices()[:1])
  whole = _best_time(ours, steps, rounds)
  rows = [dict(part=k, ms=1000 * v, times_whole_step=v / whole,
               gflops=(flops[k] / v / 1e9) if flops[k] else float('nan'))
          for k, v in totals.items()]
  # Kernels timed alone do not add up to the fused step (XLA schedules and
  # lays them out differently inside it), so no "rest" is derived.
  rows.append(dict(part='whole train step, one device (for scale)',
                   ms=1000 * whole,
                   times_whole_step=1.0, gflops=ours.flops() / whole / 1e9))
  return rows


def _child_devices(devices, steps, rounds):
  """Examples/s of the ResNet-20 step on `devices` simulated devices."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_num_cpu_devices', devices)
  config = resnet_config()
  config.mesh.data = -1
  ours = OurStep(config)
  seconds = _best_time(ours, steps, rounds)
  return dict(devices=jax.device_count(),
              examples_per_s=config.batch_size / seconds,
              step_ms=1000 * seconds)


def section_devices(steps, rounds):
  rows = []
  for n in (1, 2, 4, 8, 16):
    proc = subprocess.run(
        [sys.executable, '-m', 'experiments.bench', f'--child=devices:{n}',
         f'--steps={steps}', f'--rounds={rounds}'], cwd=REPO,
        capture_output=True, text=True, check=False,
        env=dict(os.environ, JAX_PLATFORMS='cpu'))
    if proc.returncode:
      raise RuntimeError(proc.stderr[-2000:])
    rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
  for r in rows:
    r['relative'] = r['examples_per_s'] / rows[0]['examples_per_s']
  return rows


COMPILE_CONFIGS = (
    'configs/digits_teacher.py', 'configs/cifar10_teacher.py:depth=20',
    'configs/cifar10_distill.py:method=slam', 'configs/shakespeare_lm.py',
    'configs/guide_lm.py:method=vanilla')


def section_compile(steps, rounds):
  del steps, rounds
  from launch import compile_check  # pylint: disable=g-import-not-at-top
  from distill import config_lib  # pylint: disable=g-import-not-at-top
  rows = []
  for spec in COMPILE_CONFIGS:
    config = config_lib.load_file(spec)
    r = compile_check.check(config)
    rows.append(dict(config=spec, stage=r['stage'],
                     compile_s=r['compile_seconds']))
  return rows


def section_input(steps, rounds):
  """Old and new input pipelines side by side (experiments/bench_input.py)."""
  del steps
  from experiments import bench_input  # pylint: disable=g-import-not-at-top
  return bench_input.run(rounds=max(1, rounds - 1))


def section_methods(steps, rounds):
  """bench_methods' two sections, into their own files (a table lives
  once); bench.md names them."""
  files = {'--classification_out': 'bench_methods_classification.md',
           '--out': 'bench_methods_lm.md'}
  results = os.path.join(REPO, 'experiments', 'results')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.bench_methods', f'--steps={steps}',
       f'--rounds={rounds}'] + [f'{flag}={os.path.join(results, name)}'
                                for flag, name in files.items()],
      cwd=REPO, capture_output=True, text=True, check=False,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  if proc.returncode:
    raise RuntimeError(proc.stderr[-2000:])
  return [dict(note='Each loss\'s step time against CE: ' + ', '.join(
      f'[`{name}`]({name})' for name in files.values()) +
                 ' (`python -m experiments.bench_methods`).')]


def section_import(steps, rounds):
  del steps, rounds
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.bench_import'], cwd=REPO,
      capture_output=True, text=True, check=False,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  if proc.returncode:
    raise RuntimeError(proc.stderr[-2000:])
  return [dict(output=proc.stdout.strip())]


def section_generate(steps, rounds, new_tokens=256):
  """Decoding with the KV cache against recomputing the window for each
  new token (distill/generate.py): tokens/s at `new_tokens` new tokens
  after 32-token prompts, batch 8, a CPU-scale LM (shakespeare_lm's 4
  layers, width 128), compile excluded (each timed after a warm-up)."""
  del steps
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import models  # pylint: disable=g-import-not-at-top
  from distill import generate  # pylint: disable=g-import-not-at-top
  model = models.build('transformer_lm', 96, num_layers=4, width=128,
                       num_heads=4, mlp_dim=512, max_len=512,
                       positions='rope', attention='xla')
  params = model.init(jax.random.PRNGKey(0),
                      jnp.zeros((1, 8), jnp.int32))['params']
  prompts = [list(range(1, 33))] * 8
  times = {True: [], False: []}
  for cache in (True, False):
    generate.generate(model, params, prompts, new_tokens, cache=cache)
  for _ in range(max(1, rounds - 1)):
    for cache in (True, False):
      t0 = time.time()
      generate.generate(model, params, prompts, new_tokens, cache=cache)
      times[cache].append(time.time() - t0)
  best = {c: min(t) for c, t in times.items()}
  n = new_tokens * len(prompts)
  return [dict(new_tokens=new_tokens, batch=len(prompts),
               cached_tokens_per_s=n / best[True],
               uncached_tokens_per_s=n / best[False],
               cache_speedup=best[False] / best[True])]


def markdown(results, seconds):
  out = ['### Benchmarks (`python -m experiments.bench`, '
         f'{seconds / 60:.1f} min on this machine)', '']
  for name, rows in results.items():
    out.append(f'**{name}**')
    out.append('')
    if rows and 'output' in rows[0]:
      out += ['```', rows[0]['output'], '```', '']
      continue
    if rows and 'note' in rows[0]:
      out += [rows[0]['note'], '']
      continue
    keys = list(rows[0])
    out.append('| ' + ' | '.join(keys) + ' |')
    out.append('|---' * len(keys) + '|')
    for r in rows:
      out.append('| ' + ' | '.join(
          f'{v:.3g}' if isinstance(v, float) else str(v)
          for v in r.values()) + ' |')
    out.append('')
  return '\n'.join(out)


def main(argv):
  del argv
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  if _CHILD.value:
    kind, n = _CHILD.value.split(':')
    if kind in ('ours', 'torch'):
      from distill import host_memory  # pylint: disable=g-import-not-at-top
      host_memory.use_huge_pages()    # as the parent (inherited), else now
    child = {'devices': _child_devices, 'torch': _torch_child,
             'ours': _ours_child, 'malloc': _child_malloc}[kind]
    print(json.dumps(child(n if kind == 'ours' else int(n), _STEPS.value,
                           _ROUNDS.value)))
    return
  from distill import host_devices  # pylint: disable=g-import-not-at-top
  from distill import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.use_huge_pages()  # as launch.main and the experiments run
  host_devices.configure()      # the default CPU path
  unknown = sorted(set(_SECTIONS.value) - set(SECTIONS))
  if unknown:
    raise app.UsageError(f'unknown section {unknown[0]!r}; valid choices: '
                         f'{", ".join(SECTIONS)}')
  start = time.time()
  results = {}
  for name in SECTIONS:
    if name not in _SECTIONS.value:
      continue
    t0 = time.time()
    results[name] = globals()[f'section_{name}'](_STEPS.value, _ROUNDS.value)
    print(f'-- {name} ({time.time() - t0:.0f} s)', flush=True)
    print(json.dumps(results[name], indent=1), flush=True)
  md = markdown(results, time.time() - start)
  print(md)
  if set(_SECTIONS.value) <= WRITES_OWN:   # bench_import.md is its own
    return
  os.makedirs(_OUT.value, exist_ok=True)
  suffix = ('' if set(_SECTIONS.value) == set(SECTIONS) else
            '_' + '_'.join(s for s in SECTIONS if s in _SECTIONS.value))
  with open(os.path.join(_OUT.value, f'bench{suffix}.md'), 'w') as f:
    f.write(md)
  with open(os.path.join(_OUT.value, f'bench{suffix}.json'), 'w') as f:
    json.dump(results, f, indent=1)


if __name__ == '__main__':
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  app.run(main)
