"""Preemption and Ctrl-C: whether to save and stop at a step.

SIGTERM (a preemption notice) and SIGINT (Ctrl-C) both make the train loop
save a checkpoint at the step it is at and stop; the entry point then exits
with 143 or 130 (`exit_status`), and the same command resumes from that
step. A second Ctrl-C while the first is being honoured aborts at once
(KeyboardInterrupt: exit 130 without waiting for the save; a partial save is
removed when the run resumes). A process started with Ctrl-C ignored (a
background job) keeps ignoring it.
"""
import signal

import jax
import numpy as np

# Exit status of a run a signal stopped (128 + the signal's number).
EXIT_STATUS = {'SIGTERM': 143, 'SIGINT': 130}
_stopped_by = []       # the signals that stopped a loop in this process


def exit_status():
  """The exit status of a run a signal stopped (143 when none is known)."""
  return EXIT_STATUS[_stopped_by[-1]] if _stopped_by else 143


class Preemption:
  """Whether to save and stop at a step, after SIGTERM or SIGINT.

  One process: a handler sets a flag. Several (`jax.distributed`): JAX's
  preemption service catches SIGTERM on any process and every process
  reaches the same sync step (`reached_preemption_sync_point`), with no
  collective per step; where that service is off, the processes agree by an
  all-gather of their flags each step. Ctrl-C (SIGINT) is handled this way
  by a single process only; with several, it interrupts the process it
  reaches (JAX's service does not carry it to the others).
  """

  def __init__(self):
    self._set = None              # the name of the signal received
    self._previous = {}
    self._service = jax.process_count() > 1
    if not self._service:
      self._install(signal.SIGTERM)
      if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        self._install(signal.SIGINT)

  def _install(self, signum):
    try:
      self._previous[signum] = signal.signal(signum, self._handler)
    except ValueError:  # not the main thread
      pass

  def _handler(self, signum, frame):
    del frame
    if signum == signal.SIGINT:
      if self._set:             # a second Ctrl-C: abort at once
        raise KeyboardInterrupt
      print('Ctrl-C: saving a checkpoint at this step, then exiting (Ctrl-C '
            'again aborts at once).', flush=True)
    self._set = signal.Signals(signum).name

  def reached(self, step):
    if jax.process_count() == 1:
      return self._stop(self._set)
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    if self._service:
      try:
        return self._stop('SIGTERM' if multihost_utils
                          .reached_preemption_sync_point(step) else None)
      except RuntimeError:          # the preemption service is not running
        self._service = False
        self._install(signal.SIGTERM)
    return self._stop('SIGTERM' if np.any(multihost_utils.process_allgather(
        np.array([self._set is not None]))) else None)

  @staticmethod
  def _stop(name):
    if name and (not _stopped_by or _stopped_by[-1] != name):
      _stopped_by.append(name)
    return bool(name)

  @property
  def signal_name(self):
    """The signal that stopped the loop ('SIGTERM' or 'SIGINT')."""
    return self._set or 'SIGTERM'

  def restore(self):
    for signum, previous in self._previous.items():
      if previous is not None:
        signal.signal(signum, previous)
    self._previous = {}
