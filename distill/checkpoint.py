"""Orbax checkpoints: periodic/final saves, keep-N, resume, load by path.

A checkpoint holds the train state (params, model state such as BN
statistics, optimizer state, step, RNG) and a JSON item `extra` with the
input-pipeline position and the progress clock. The teacher of a later stage
is loaded with `load_trained(workdir)`; it is never part of a student's
checkpoint.
"""
import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from distill.errors import ConfigError

CHECKPOINT_DIR = 'checkpoints'


class Checkpointer:
  """Thin wrapper over ocp.CheckpointManager for one workdir."""

  def __init__(self, workdir, keep=2):
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_names=('state', 'extra'))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step, state, extra, force=False):
    saved = self.manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      extra=ocp.args.JsonSave(extra)),
        force=force)
    return saved

  def restore(self, abstract_state, step=None):
    """(state, extra) of `step` (default latest) laid out like the target."""
    step = self.latest_step() if step is None else step
    out = self.manager.restore(
        step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            extra=ocp.args.JsonRestore()))
    return out.state, out.extra

  def restore_latest_good(self, abstract_state):
    """(step, state, extra) of the newest checkpoint that reads back.

    A checkpoint that fails to restore (truncated or corrupted files) is
    moved aside to `checkpoints_unreadable/<step>` (kept for inspection,
    never deleted), the run says so, and the next older one is tried.
    Returns (None, None, None) when no checkpoint is readable.
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        state, extra = self.restore(abstract_state, step)
        return step, state, extra
      except Exception as e:  # pylint: disable=broad-except
        reason = str(e).strip().splitlines()[0][:200] if str(e) else (
            type(e).__name__)
        aside = self._set_aside(step)
        print(f'checkpoint at step {step} is unreadable ({reason}); moved '
              f'it to {aside} and falling back to the previous one.',
              flush=True)
    return None, None, None

  def _set_aside(self, step):
    """Moves an unreadable step out of the manager's sight (main process)."""
    src = os.path.join(self.directory, str(step))
    dst_root = self.directory + '_unreadable'
    dst = os.path.join(dst_root, str(step))
    if jax.process_index() == 0 and os.path.exists(src):
      os.makedirs(dst_root, exist_ok=True)
      n = 1
      while os.path.exists(dst):
        dst, n = os.path.join(dst_root, f'{step}.{n}'), n + 1
      os.replace(src, dst)
    if jax.process_count() > 1:     # every process sees the move first
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
    self.manager.reload()
    return dst

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(state, shardings):
  """ShapeDtypeStructs with shardings: the restore target of a state."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      state, shardings)


def read_config(workdir):
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise ConfigError(f'no trained run at {workdir}: {path} is missing')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_trained(workdir, step=None):
  """Loads a trained model from a run's workdir, e.g. a teacher.

  Returns (config, variables, step): the run's resolved config (to rebuild
  its model with `models.build`), and `{'params': ..., **model_state}` as
  host arrays, ready for `model.apply(variables, x, train=False)`.
  """
  workdir = os.path.abspath(workdir)
  config = read_config(workdir)
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  manager = ocp.CheckpointManager(directory, item_names=('state', 'extra'))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise ConfigError(f'no checkpoint in {directory}')
  restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  state = restored.state
  variables = {'params': state['params'], **state.get('model_state', {})}
  return config, variables, step
