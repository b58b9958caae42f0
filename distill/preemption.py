"""Preemption: whether to save and stop at a step after SIGTERM."""
import signal

import jax
import numpy as np


class Preemption:
  """Whether to save and stop at a step, after SIGTERM (a preemption notice).

  One process: a SIGTERM handler sets a flag. Several (`jax.distributed`):
  JAX's preemption service catches SIGTERM on any process and every process
  reaches the same sync step (`reached_preemption_sync_point`), with no
  collective per step; where that service is off, the processes agree by an
  all-gather of their flags each step.
  """

  def __init__(self):
    self._set = False
    self._previous = None
    self._service = jax.process_count() > 1
    if self._service:
      return
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handler)
    except ValueError:  # not the main thread
      pass

  def _handler(self, signum, frame):
    del signum, frame
    self._set = True

  def reached(self, step):
    if jax.process_count() == 1:
      return self._set
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    if self._service:
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:          # the preemption service is not running
        self._service = False
        self._previous = signal.signal(signal.SIGTERM, self._handler)
    return bool(np.any(multihost_utils.process_allgather(
        np.array([self._set]))))

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
