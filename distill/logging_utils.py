"""Metric writers (JSONL, optional TensorBoard) and small formatting helpers."""
import json
import os
import time

from distill import files


def format_duration(seconds):
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


class MetricWriter:
  """Appends `{"step": s, "time": t, **metrics}` lines to workdir/metrics.jsonl.

  Also writes TensorBoard scalars when tensorboardX is installed and asked for.
  Only the main process writes (`enabled`). `records` counts the lines in
  the file; a checkpoint stores it, and a resumed run passes it back as
  `keep_records`, so the lines written after that checkpoint (which the
  resumed run writes again) are dropped: every step is in the file once.
  `keep_records=None` (a checkpoint that did not store it) keeps the lines up
  to `resumed_step`.
  """

  def __init__(self, workdir, tensorboard=False, enabled=True,
               keep_records=0, resumed_step=0):
    self.enabled = enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.records = 0
    self._tb = None
    if not enabled:
      return
    self._keep(keep_records, resumed_step)
    if tensorboard and not files.is_local(workdir):
      print('TensorBoard events are written for local workdirs only; '
            f'{workdir} gets metrics.jsonl', flush=True)
    elif tensorboard:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
      except ImportError:
        self._tb = None

  def _keep(self, keep_records, resumed_step):
    if not files.exists(self.path):
      return
    lines = [line + '\n' for line in files.read_text(self.path).splitlines()
             if line.strip()]
    if keep_records is None:
      kept = []
      for line in lines:
        try:
          if json.loads(line)['step'] <= resumed_step:
            kept.append(line)
        except (ValueError, KeyError):
          break
    else:
      kept = lines[:keep_records]
    if len(kept) != len(lines):
      files.write_text(self.path, ''.join(kept))
    self.records = len(kept)

  def write(self, step, metrics):
    if not self.enabled or not metrics:
      return
    record = {'step': int(step), 'time': time.time(), **metrics}
    files.append_text(self.path, json.dumps(record) + '\n')
    self.records += 1
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
  return [json.loads(line) for line in files.read_text(path).splitlines()
          if line.strip()]
