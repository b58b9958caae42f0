"""Metric writers (JSONL, optional TensorBoard) and small formatting helpers."""
import json
import os
import time


def format_duration(seconds):
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


class MetricWriter:
  """Appends `{"step": s, "time": t, **metrics}` lines to workdir/metrics.jsonl.

  Also writes TensorBoard scalars when tensorboardX is installed and asked for.
  Only the main process writes (`enabled`).
  """

  def __init__(self, workdir, tensorboard=False, enabled=True):
    self.enabled = enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if enabled and tensorboard:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
      except ImportError:
        self._tb = None

  def write(self, step, metrics):
    if not self.enabled or not metrics:
      return
    record = {'step': int(step), 'time': time.time(), **metrics}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    if self._tb is not None:
      for k, v in metrics.items():
        if isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, step)

  def close(self):
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir):
  """All records of workdir/metrics.jsonl, in order."""
  path = os.path.join(workdir, 'metrics.jsonl')
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
