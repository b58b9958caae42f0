"""Orbax checkpoints: periodic/final saves, keep-N, resume, load by path.

A checkpoint holds the train state (params, model state such as BN
statistics, optimizer state, step, RNG) and a JSON item `extra` with the
input-pipeline position, the progress clock and the number of metric records
written. The teacher of a later stage is loaded with `load_trained(workdir)`;
it is never part of a student's checkpoint.

Faults: a checkpoint of this run that does not read back is set aside
(`checkpoints_unreadable/`) and the previous one used; another run's
(`load_trained`, `init_from`) is only read, falling back to its previous
step. A save that fills the disk removes its partial temporary folder and
raises an EnvironmentFault naming the path and the free space.
"""
import contextlib
import errno
import logging
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from core.errors import ConfigError, EnvironmentFault, errno_of, no_space
from core.errors import one_line
from distill import files

CHECKPOINT_DIR = 'checkpoints'
_TMP_MARK = '.orbax-checkpoint-tmp'


def _reason(e):
  return one_line(e, 200) or type(e).__name__


class Checkpointer:
  """Thin wrapper over ocp.CheckpointManager for one workdir.

  `read_only=True` for another run's checkpoints: nothing is created,
  cleaned or moved there.
  """

  def __init__(self, workdir, keep=2, read_only=False):
    self.directory = os.path.join(files.abspath(workdir), CHECKPOINT_DIR)
    self.read_only = read_only
    with _quiet_orbax():
      self.manager = ocp.CheckpointManager(
          self.directory, options=_options(read_only, max_to_keep=keep,
                                           create=True),
          item_names=('state', 'extra'))

  def latest_step(self):
    return self.manager.latest_step()

  def all_steps(self):
    return sorted(self.manager.all_steps())

  def save(self, step, state, extra, force=False):
    try:
      return self.manager.save(
          step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                        extra=ocp.args.JsonSave(extra)),
          force=force)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_failed(e) from e

  def _save_failed(self, e):
    """The one-line fault of a failed save, its partial folders removed."""
    self.remove_partial()
    code = errno_of(e)
    if code == errno.ENOSPC:
      return EnvironmentFault(no_space(self.directory))
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
      return EnvironmentFault(f'cannot write checkpoints in {self.directory}: '
                              f'{os.strerror(code).lower()}')
    return EnvironmentFault(f'saving a checkpoint in {self.directory} failed: '
                            f'{_reason(e)}')

  def remove_partial(self):
    """Deletes the temporary folders of saves that did not finish."""
    if self.read_only or not files.is_main():
      return
    for name in files.listdir(self.directory):
      if _TMP_MARK in name:
        files.rmtree(os.path.join(self.directory, name))

  def restore(self, abstract_state, step=None):
    """(state, extra) of `step` (default latest) laid out like the target."""
    step = self.latest_step() if step is None else step
    out = self.manager.restore(
        step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            extra=ocp.args.JsonRestore()))
    return out.state, out.extra

  def restore_latest_good(self, abstract_state, max_step=None):
    """(step, state, extra) of the newest checkpoint (at most `max_step`)
    that reads back, else (None, None, None).

    In this run's own workdir an unreadable checkpoint is moved aside to
    `checkpoints_unreadable/<step>` (kept for inspection) and the next older
    one is tried; in another run's (`read_only`) it is only skipped.
    """
    steps = [s for s in self.all_steps() if max_step is None or s <= max_step]
    for step in reversed(steps):
      try:
        state, extra = self.restore(abstract_state, step)
        return step, state, extra
      except Exception as e:  # pylint: disable=broad-except
        self._unreadable(step, e)
    return None, None, None

  def _unreadable(self, step, e):
    if self.read_only:
      print(f'checkpoint at step {step} in {self.directory} is unreadable '
            f'({_reason(e)}); trying the previous one.', flush=True)
      return
    aside = self._set_aside(step)
    print(f'checkpoint at step {step} is unreadable ({_reason(e)}); moved '
          f'it to {aside} and falling back to the previous one.', flush=True)

  def _set_aside(self, step):
    """Moves an unreadable step out of the manager's sight (main process)."""
    src = os.path.join(self.directory, str(step))
    dst_root = self.directory + '_unreadable'
    dst = os.path.join(dst_root, str(step))
    if files.is_main() and files.exists(src):
      files.makedirs(dst_root)
      n = 1
      while files.exists(dst):
        dst, n = os.path.join(dst_root, f'{step}.{n}'), n + 1
      files.rename(src, dst)
    if jax.process_count() > 1:     # every process sees the move first
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
    self.manager.reload()
    return dst

  def wait(self):
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_failed(e) from e

  def close(self):
    try:
      self.wait()
    finally:
      self.manager.close()


def abstract_like(state, shardings):
  """ShapeDtypeStructs with shardings: the restore target of a state."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      state, shardings)


def read_config(workdir):
  path = os.path.join(workdir, 'config.json')
  if not files.isfile(path):
    raise ConfigError(f'no trained run at {workdir}: {path} is missing')
  return ml_collections.ConfigDict(files.read_json(
      path, kind=dict, fix=f'it holds the config of the run in {workdir}: '
      'restore it from a copy of that workdir, or retrain that run'))


def parse_run_ref(ref):
  """'WORKDIR[:STEP]' -> (workdir, step or None); gs:// paths keep their
  colon."""
  head, sep, tail = ref.rpartition(':')
  if sep and tail.isdigit() and head:
    return head, int(tail)
  return ref, None


def steps_of(workdir):
  """The checkpoint steps a run's workdir holds (sorted), read-only."""
  directory = os.path.join(files.abspath(workdir), CHECKPOINT_DIR)
  return sorted(int(s) for s in files.listdir(directory) if s.isdigit())


def run_identity(workdir, step=None):
  """What identifies another run this one reads: its path, its config and
  the checkpoint step used (default: its newest)."""
  workdir = files.abspath(workdir)
  config = read_config(workdir).to_dict()
  steps = steps_of(workdir)
  if step is None and steps:
    step = steps[-1]
  return {'workdir': workdir, 'step': step, 'config': config}


def _options(read_only, **kw):
  if read_only:      # orbax warns unless these agree with read_only
    kw.update(read_only=True, create=False, save_interval_steps=0)
  return ocp.CheckpointManagerOptions(**kw)


@contextlib.contextmanager
def _quiet_orbax():
  """Orbax logs a warning whenever it opens a directory read-only."""
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(max(logger.getEffectiveLevel(), logging.ERROR))
  try:
    yield
  finally:
    logger.setLevel(level)


def _read_only_manager(directory):
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  registry.add('state', ocp.args.StandardRestore, ocp.StandardCheckpointHandler)
  registry.add('extra', ocp.args.JsonRestore, ocp.JsonCheckpointHandler)
  with _quiet_orbax():
    return ocp.CheckpointManager(directory, options=_options(True),
                                 handler_registry=registry)


def path_name(path):
  """'params/block0/dense/kernel' for a jax tree path."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(
      k, 'idx', k)))) for k in path)


def _restore_anywhere(manager, step):
  """The state saved at `step`, laid out as it was saved; where that
  topology is not this one's (a teacher saved on 8 CPU devices, read by a
  one-device process), on this process's first device instead, the target
  taken from the checkpoint's metadata. The first error is raised if both
  fail."""
  try:
    return manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))
  except Exception as first:  # pylint: disable=broad-except
    tree = manager.item_metadata(step)['state']
    tree = getattr(tree, 'tree', tree)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(
        tuple(leaf.shape), leaf.dtype, sharding=device), tree)
    try:
      return manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))
    except Exception:  # pylint: disable=broad-except
      raise first from None


def saved_shapes(workdir, step=None):
  """{path: shape} of the train state a run saved at `step` (default its
  newest), from the checkpoint's metadata alone."""
  steps = steps_of(workdir)
  step = steps[-1] if step is None and steps else step
  directory = os.path.join(files.abspath(workdir), CHECKPOINT_DIR)
  if step not in steps:
    raise ConfigError(f'no checkpoint at step {step} in {directory}')
  manager = _read_only_manager(directory)
  try:
    tree = manager.item_metadata(step)['state']
  except Exception as e:  # pylint: disable=broad-except
    raise EnvironmentFault(f'checkpoint at step {step} in {directory} is '
                           f'unreadable ({_reason(e)})') from e
  finally:
    manager.close()
  tree = getattr(tree, 'tree', tree)
  return {path_name(p): tuple(leaf.shape)
          for p, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def load_trained(workdir, step=None):
  """Loads a trained model from a run's workdir, e.g. a teacher.

  Returns (config, variables, step): the run's resolved config (to rebuild
  its model with `models.build`), and `{'params': ..., **model_state}` as
  host arrays, ready for `model.apply(variables, x, train=False)`. Without
  `step`, the newest checkpoint that reads back (an unreadable newer one is
  skipped, with a message; nothing in that workdir changes).
  """
  workdir = files.abspath(workdir)
  config = read_config(workdir)
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  steps = steps_of(workdir)
  if step is not None:
    steps = [s for s in steps if s == step]
  if not steps:
    raise ConfigError(f'no checkpoint{"" if step is None else f" at step {step}"}'
                      f' in {directory}')
  manager = _read_only_manager(directory)
  try:
    for s in reversed(steps):
      try:
        restored = _restore_anywhere(manager, s)
      except Exception as e:  # pylint: disable=broad-except
        print(f'checkpoint at step {s} in {directory} is unreadable '
              f'({_reason(e)})' + ('; trying the previous one.'
                                   if s != steps[0] else '.'), flush=True)
        continue
      state = restored.state
      variables = {'params': state['params'], **state.get('model_state', {})}
      return config, variables, s
  finally:
    manager.close()
  raise EnvironmentFault(f'no readable checkpoint in {directory} (steps '
                         f'{", ".join(map(str, steps))} all fail to read); '
                         'retrain that run or restore its files')
