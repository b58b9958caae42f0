"""Watching a run: the loss checked finite, metrics of a logging window
reduced, step time / throughput / MFU, the progress line, a profiler
window. Used by the train loop (distill/train.py)."""
import contextlib
import os
import time

import jax
import numpy as np

from core.errors import Diverged
from distill import flops
from distill.logging_utils import format_duration


def check_finite(pending, step, checkpointer):
  """Raises Diverged naming the first step of `pending` (the steps up to
  `step`) whose loss is not finite; nothing is saved after it."""
  losses = np.array([float(m['loss'][0]) for m in jax.device_get(pending)])
  bad = np.flatnonzero(~np.isfinite(losses))
  if len(bad):
    first = step - len(losses) + 1 + int(bad[0])
    kept = checkpointer.latest_step()
    raise Diverged(f'loss is {losses[bad[0]]} at step {first}; stopped '
                   'without saving'
                   + (f', the last good checkpoint (step {kept}) is kept in '
                      f'{checkpointer.directory}' if kept is not None
                      else ' (no checkpoint yet)'))


def reduce_window(pending):
  """The window's mean of each metric; one counted over no example (accuracy
  on examples without labels) is left out, not reported as 0."""
  sums = jax.device_get(pending)
  out = {}
  for k in sums[0]:
    s = sum(float(m[k][0]) for m in sums)
    c = sum(float(m[k][1]) for m in sums)
    if c > 0:
      out[f'train/{k}'] = s / c
  return out


def progress_line(step, total, logs):
  """The progress line of a logging window (rates once a step after the
  compiled first one has run)."""
  line = (f'step {step}/{total} ({100 * step / total:.1f}%) '
          f'loss {logs.get("train/loss", float("nan")):.4f}')
  if 'train/accuracy' in logs:     # absent where the data has no labels
    line += f' acc {logs["train/accuracy"]:.4f}'
  elif 'train/teacher_agreement' in logs:
    line += f' agree {logs["train/teacher_agreement"]:.4f} (no labels)'
  if 'step_seconds' not in logs:
    return line + f' | compiled in {logs.get("compile_seconds", 0.0):.1f} s'
  eta = logs['step_seconds'] * (total - step)
  mfu = f' | MFU {100 * logs["mfu"]:.1f}%' if 'mfu' in logs else ''
  return (line + f' | {logs["examples_per_sec"]:.0f} ex/s | '
          f'{1000 * logs["step_seconds"]:.1f} ms/step{mfu} | '
          f'ETA {format_duration(eta)}')


class Speed:
  """Step time, throughput per device and MFU of each logging window.

  The first step of a run (compilation) is timed apart (`compile_seconds`).
  MFU is the analytic model FLOPs per step (distill/flops.py) over the step
  time and the devices' peak FLOP/s (a chip's datasheet peak, or this CPU
  host's measured matmul ceiling).
  """

  def __init__(self, trainer):
    self.trainer = trainer
    self.devices = trainer.mesh.size
    self.batch = trainer.config.batch_size
    shape = trainer.batch_shapes()['inputs'].shape
    self.tokens = (self.batch * shape[1]
                   if trainer.config.model_name == 'transformer_lm' else None)
    self.start, self.steps, self.compile = time.time(), 0, None
    self._flops = self._peak = None

  def stepped(self, first, metrics):
    if first:                      # wait for the compiled first step
      jax.block_until_ready(metrics)
      self.compile = time.time() - self.start
      self.start, self.steps = time.time(), 0
    else:
      self.steps += 1

  @contextlib.contextmanager
  def paused(self):
    t0 = time.time()
    yield
    self.start += time.time() - t0

  def window(self):
    """Timing logs of the steps since the last window (metrics are on the
    host by now, so the steps have finished)."""
    seconds = time.time() - self.start
    if not self.steps:             # only the compiled first step: no rates
      out = {'seconds': seconds + (self.compile or 0.0)}
      if self.compile is not None:
        out['compile_seconds'] = self.compile
      self.start, self.compile = time.time(), None
      return out
    steps = self.steps
    out = {'seconds': seconds + (self.compile or 0.0),
           'step_seconds': seconds / steps,
           'examples_per_sec': steps * self.batch / seconds}
    out['examples_per_sec_per_device'] = out['examples_per_sec'] / self.devices
    if self.tokens:
      out['tokens_per_sec_per_device'] = (steps * self.tokens / seconds
                                          / self.devices)
    if self.compile is not None:
      out['compile_seconds'] = self.compile
    if self._flops is None:
      self._flops = flops.model_flops_per_step(self.trainer)
      self._peak = flops.peak_total(self.trainer.mesh.devices.flat)
    out['model_flops_per_step'] = self._flops
    if self._peak:
      out['mfu'] = self._flops / out['step_seconds'] / self._peak
    self.start, self.steps, self.compile = time.time(), 0, None
    return out


class Profile:
  """A jax.profiler trace of steps first+1 .. first+count
  (`config.profile_steps = (first, count)`; count 0: none) in
  `<workdir>/profile` (TensorBoard's profile plugin reads it)."""

  def __init__(self, steps, workdir):
    self.first, self.count = (int(s) for s in steps)
    self.directory = os.path.join(workdir, 'profile')
    self.active = False

  def before(self, step):
    if self.count and step == self.first:
      jax.profiler.start_trace(self.directory)
      self.active = True

  def after(self, step, state):
    if self.active and step == self.first + self.count:
      self.close(state)
      print(f'profile of steps {self.first + 1}-{step} in {self.directory}',
            flush=True)

  def close(self, state=None):
    if self.active:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False
