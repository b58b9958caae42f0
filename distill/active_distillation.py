"""Active distillation, round by round, under a budget of teacher queries.

    python -m launch.main --config=configs/active_distill.py:strategy=rad \
        --workdir=/tmp/distill/active_rad

A config with a `teacher` block and an `active` block runs:
1. the teacher (trained on the labeled part, or loaded), as in
   `distill/distillation.py`;
2. the teacher on the validation part (queries counted): its accuracy gives
   m, the expected number of pool points it mislabels (RAD's adversary);
3. an initial set of `active.initial` random pool points, queried;
4. for each round: a student trains on the points queried so far (their
   teacher outputs; from scratch, or from the previous round's student with
   `active.warm_start`); one sharded pass of the student over the pool gives
   the inputs of the strategy (`distill/active.py`: probabilities, and
   features for k-center); the strategy picks `active.per_round` points;
   only those are sent to the teacher. Rounds continue until
   `active.budget` queries were made, and a last student trains on them.

The teacher is only ever run on the validation part and on selected pool
points: `ledger.npz` holds every queried pool position with its logits and
the count of teacher forward passes. `rounds.json` (written atomically after
each round) holds the selections and each round's student test accuracy,
number of queries, and the share of queried points the teacher labels
wrongly (from the pool's true labels, read for this diagnostic only). A
killed run resumes at its last finished round with the same selections.
"""
import os

import numpy as np

from core import defaults
from core.errors import ConfigError, check_choice
from distill import active
from distill import config_lib
from distill import distillation
from distill import files
from distill import predict
from distill import sharding
from distill import train
from distill import workdir as workdir_lib
from distill.data import datasets
from distill.data import loading
from distill.data import pipeline
import models


def active_defaults():
  """The `config.active` block (core/defaults.py)."""
  return defaults.active()


def _reuse_round0(other, s_dir):
  """Copies `other`'s finished round-0 student into `s_dir` (its manifest
  check then refuses it if the configs differ)."""
  src = os.path.join(other, 'round0')
  if files.exists(s_dir):
    return
  if not files.exists(os.path.join(src, 'final_metrics.json')):
    raise ConfigError(f'active.round0_from={other}: no finished round-0 '
                      f'student in {src}')
  tmp = s_dir + '.tmp'
  files.rmtree(tmp)
  files.copytree(src, tmp, ignore=(workdir_lib.LOCK,))
  files.remove(os.path.join(tmp, 'final_metrics.json'))  # re-evaluated here
  files.rename(tmp, s_dir)


class Ledger:
  """Teacher outputs of the pool points queried so far, on disk; the only
  way this pipeline runs the teacher on the pool."""

  def __init__(self, path, teacher_fn):
    self.path = path
    self.teacher_fn = teacher_fn
    self.positions = np.zeros(0, np.int64)
    self.logits = None
    self.forward_passes = 0
    if files.exists(path):
      f = files.read_npz(path)
      self.positions = f['positions']
      self.logits = f['logits']
      self.forward_passes = int(f['forward_passes'])

  def query(self, positions):
    positions = np.asarray(positions, np.int64)
    new = np.setdiff1d(positions, self.positions)
    if len(new):
      out = self.teacher_fn(new)
      self.forward_passes += len(new)
      self.positions = np.concatenate([self.positions, new])
      self.logits = out if self.logits is None else np.concatenate(
          [self.logits, out])
      files.write_npz(self.path, positions=self.positions,
                      logits=self.logits, forward_passes=self.forward_passes)
    return self.lookup(positions)

  def lookup(self, positions):
    where = {int(p): i for i, p in enumerate(self.positions)}
    missing = [int(p) for p in positions if int(p) not in where]
    if missing:
      raise KeyError(f'pool positions never queried: {missing[:5]}')
    return self.logits[[where[int(p)] for p in positions]]


M_OVER = ('pool', 'round', 'remaining')


def _check(config, pool_size):
  a = config.active
  check_choice('active.strategy', a.strategy, active.STRATEGIES)
  check_choice('active.m_over', a.m_over, M_OVER)
  for name in ('budget', 'per_round'):
    if a[name] <= 0:
      raise ConfigError(f'active.{name}={a[name]} must be positive')
  if not 0 < a.initial <= a.budget:
    raise ConfigError(f'active.initial={a.initial} must be in [1, '
                      f'active.budget={a.budget}] (the first student needs '
                      'queried points)')
  if a.budget > pool_size:
    raise ConfigError(f'active.budget={a.budget} exceeds the pool of '
                      f'{pool_size} unlabeled examples')


def check(config, workdir=None):
  """Validates the teacher, the active block and the round students before
  any training, labeling or directory creation."""
  distillation.check_method(config)
  sizes = datasets.part_sizes(config.data)
  _check(config, sizes['unlabeled'])
  if not config.teacher.workdir:
    t = config.teacher.config
    config_lib.validate_stage(t, datasets.part_sizes(t.data)[t.data.train_on],
                              t.data.train_on, 'teacher.config: ')
  config_lib.validate_stage(student_config(config), config.active.initial,
                            'the initial queried points')
  distillation.check_teacher(config)
  other = config.active.round0_from
  if other and workdir is not None and not files.exists(
      os.path.join(workdir, 'round0')) and not files.exists(
          os.path.join(other, 'round0', 'final_metrics.json')):
    raise ConfigError(f'active.round0_from={other}: no finished round-0 '
                      f'student in {os.path.join(other, "round0")}')


def student_config(config):
  """The config of every round's student (the same for every strategy)."""
  s_config = distillation.student_config(config)
  with s_config.unlocked():
    del s_config['active']
  return s_config


def run(config, workdir):
  """The active loop; returns (and writes) `rounds.json`'s content."""
  check(config, workdir)
  with workdir_lib.claim(workdir, config, distillation.input_runs(config)):
    return _run(config, workdir)


def _run(config, workdir):
  data = loading.load_data(config.data)
  pool = data.parts['unlabeled']
  a = config.active
  teacher = distillation.teacher_stage(config, workdir, data)
  if teacher is None:
    return {'preempted': True}
  t_config, t_vars, _, _ = teacher
  t_model = models.build(t_config.model_name, data.num_classes,
                         t_config.model_dtype, **t_config.model.to_dict())
  mesh = sharding.stage_mesh(config)
  inputs = pipeline.Inputs(data.spec, image_size=config.data.image_size)
  batch = config.distill.predict_batch_size

  def teacher_on(part):
    return predict.logits(t_model, t_vars, part, inputs, mesh, batch)

  ledger = Ledger(os.path.join(workdir, 'ledger.npz'),
                  lambda pos: teacher_on(datasets.Subset(pool, pos)))
  rounds_path = os.path.join(workdir, 'rounds.json')
  state = {'rounds': []}
  if files.exists(rounds_path):
    state = files.read_json(rounds_path)
  val_labels = distillation.labels_of(data.parts['validation'])
  val_path = os.path.join(workdir, 'validation_logits.npy')
  if files.exists(val_path):
    val_logits = files.read_npy(val_path)
  else:
    val_logits = teacher_on(data.parts['validation'])
    files.write_npy(val_path, val_logits)
    state['validation_forward_passes'] = len(val_labels)
  state['teacher_val_accuracy'] = float(np.mean(
      val_logits.argmax(-1) == val_labels))
  def expected_errors(b, remaining):
    """RAD's m: active.m when set (0: no adversary), else the teacher's
    validation error rate times the pool, this round's queries b, or the
    points not yet queried (active.m_over; the spec's m is a
    reconstruction, docs/methods/rad.md)."""
    if a.m >= 0:
      return a.m
    over = {'pool': len(pool), 'round': b, 'remaining': remaining}
    return active.expected_errors(state['teacher_val_accuracy'],
                                  over[a.m_over])
  state['m'] = expected_errors(a.per_round, len(pool) - a.initial)
  pool_labels = distillation.labels_of(pool)            # diagnostics only
  rng0 = np.random.default_rng([config.seed, 0])
  if 'initial' not in state:
    state['initial'] = (np.sort(rng0.choice(len(pool), a.initial,
                                            replace=False)).tolist()
                        if a.initial else [])
    ledger.query(state['initial'])
    files.write_json(rounds_path, state)
  selected = list(state['initial'])
  for r in state['rounds']:
    selected += r['chosen']
  n_rounds = -(-(a.budget - a.initial) // a.per_round)
  previous = None
  for r in range(n_rounds + 1):
    done = r < len(state['rounds'])
    if done and r < n_rounds:
      previous = os.path.join(workdir, f'round{r}')
      continue
    s_dir = os.path.join(workdir, f'round{r}')
    queried = np.asarray(sorted(set(selected)), np.int64)
    targets = {'logits': ledger.lookup(queried)}
    fitted, _ = distillation.fit_state(
        config, distillation.probabilities(val_logits), val_labels,
        distillation.probabilities(targets['logits']))
    targets.update(fitted)          # weighted: weights; slam: alpha, k
    s_config = student_config(config)
    if a.warm_start and previous:
      s_config.init_from = previous
    if r == 0 and a.round0_from:
      _reuse_round0(a.round0_from, s_dir)
    print(f'== round {r}: student on {len(queried)} queried points '
          f'({config.method})', flush=True)
    trainer = train.Trainer(s_config, s_dir, data=data,
                            train_part=datasets.WithTargets(
                                datasets.Subset(pool, queried), targets),
                            validated=True)
    final = trainer.run()
    if final.get('preempted'):
      return final
    wrong = _wrong_share(targets['logits'], pool_labels[queried])
    record = {'round': r, 'queries': int(len(queried)),
              'test_accuracy': final.get('test/accuracy'),
              'teacher_wrong_share': wrong,
              'forward_passes': ledger.forward_passes}
    if r == n_rounds:
      state['final'] = record
      files.write_json(rounds_path, state)
      break
    rest = np.setdiff1d(np.arange(len(pool)), queried)
    variables = {'params': trainer.state.params, **trainer.state.model_state}
    probs_logits, feats = predict.logits(
        trainer.model, variables, datasets.Subset(pool, rest), inputs,
        mesh, batch, features=True)
    labeled_feats = None
    if a.strategy == 'kcenter':
      _, labeled_feats = predict.logits(
          trainer.model, variables, datasets.Subset(pool, queried),
          inputs, mesh, batch, features=True)
    b = min(a.per_round, a.budget - len(queried))
    rng = np.random.default_rng([config.seed, r + 1])
    probs = distillation.probabilities(probs_logits)
    chosen = rest[active.select(a.strategy, b, rng, probs=probs,
                                embeddings=feats,
                                labeled_embeddings=labeled_feats,
                                m=expected_errors(b, len(rest)))]
    chosen_logits = ledger.query(chosen)
    gain = 1.0 - active.margins(probs)     # RAD's informativeness g(x)
    record.update(chosen=[int(i) for i in chosen],
                  chosen_teacher_wrong_share=_wrong_share(
                      chosen_logits, pool_labels[chosen]),
                  chosen_mean_gain=float(np.mean(gain[np.searchsorted(
                      rest, chosen)])),
                  pool_mean_gain=float(np.mean(gain)))
    state['rounds'].append(record)
    files.write_json(rounds_path, state)
    selected += record['chosen']
    previous = s_dir
  state['forward_passes'] = ledger.forward_passes
  files.write_json(rounds_path, state)
  return summary(state)


def _wrong_share(logits, labels):
  """The share of labeled points the teacher gets wrong; None where no
  point has a label (-1: out-of-distribution), rather than a made-up 0 or
  1."""
  known = labels >= 0
  if not known.any():
    return None
  return float(np.mean(logits[known].argmax(-1) != labels[known]))


def summary(state):
  """rounds.json without the selections: one line per round."""
  keep = ('queries', 'test_accuracy', 'teacher_wrong_share',
          'chosen_teacher_wrong_share', 'chosen_mean_gain', 'pool_mean_gain')
  out = {k: state[k] for k in ('m', 'teacher_val_accuracy', 'forward_passes',
                               'validation_forward_passes') if k in state}
  for r in state['rounds'] + [state['final']]:
    out.update({f'round{r["round"]}/{k}': r[k] for k in keep if k in r})
  return out
