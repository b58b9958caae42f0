"""Tables of kind 'theory': the methods where the papers' theory says their
effect must appear, on synthetic data (seconds to minutes of CPU).

    python -m experiments.run --table=theory_concentrated
    python -m experiments.run --table=theory_spread
    python -m experiments.run --table=theory_rad

The setting (`make_problem`): inputs x ~ N(0, I_d) in `dim` dimensions,
true labels y = argmax(x W*) for a random W* (points with a true logit
margin under `gamma` are left out), so a linear student can represent the
truth. The teacher is not trained: its soft labels are *constructed*, so
where and how often it errs is a parameter of the table.

  errors='concentrated'  the teacher errs only inside a region R of the
        input (`region`: 'halfspace', a random halfspace holding
        `fraction` of the inputs; 'boundary', the `fraction` of inputs
        nearest the true decision boundary), where its top-1 is right with
        probability `accuracy` (the swept value) and otherwise is the true
        runner-up class (argmax of the rest of x W*; `confusion='random'`:
        a random other class), with the true class second. Inside R it is unsure (top-1 probability 0.45-0.6),
        outside confident (0.75-0.95) and right with `accuracy_out`. Its
        mistakes are not the student's own: a linear student cannot
        represent "the runner-up inside R, the argmax elsewhere".
  errors='spread'        no region: every input's teacher top-k holds the
        true class and k - 1 random others; its top-1 is the true class
        with probability `accuracy` and otherwise one of the others, with
        the same unsure profile everywhere, so its margin says nothing
        about where it errs.

Every distillation row trains the same linear student (softmax regression,
Adam, the same steps) with the project's registered loss and fit
(distill/methods.py, distillation.fit_state): the fit sees the teacher's
outputs and the true labels of `validation` inputs, as in the papers.
'clean' trains it on the true labels of the unlabeled inputs (the ceiling),
'teacher' is the teacher's own accuracy. Test accuracy is on `test` fresh
inputs; every row of a seed shares its data, teacher and initialisation,
so rows are compared by paired differences over seeds.

An 'active' table (`rows` of strategies, distill/active.py) runs RAD's
query loop on the same construction: `initial` random pool points, then
`rounds` rounds of `per_round` queries chosen from the current student's
outputs on the pool; each round's student trains from scratch, by vanilla
distillation (`active.method`), on the teacher's labels of the queried
points. It
reports accuracy per round and the share of queried points whose teacher
label is wrong. 'rad' rows take m from the teacher's validation error times
the pool ('rad'), the round's budget ('rad_m_round'), the points not yet
queried ('rad_m_remaining'), or 0 ('rad_m0', margin's top-b).

Cells are kept as they finish in `<workdir>/<cells>/cells.json`, so an
interrupted table resumes; results go to experiments/results/<name>.*.
"""
import functools
import json
import os
import sys
import time

import numpy as np
from absl import app

WORKDIR = 'workdirs/theory'

PROBLEM = dict(dim=16, classes=10, gamma=0.5, unlabeled=10000,
               validation=500, test=5000, errors='concentrated',
               region='halfspace', fraction=0.3, accuracy_out=0.98, k=3,
               confusion='runner_up')
STUDENT = dict(steps=1500, batch=256, lr=0.01)


# --- the synthetic problem ----------------------------------------------------

def make_problem(seed, accuracy, **kw):
  """Inputs, true labels, the teacher's probabilities and whether its
  top-1 is right, for the unlabeled / validation / test parts (a dict of
  part -> dict of arrays), and R's membership ('region')."""
  p = dict(PROBLEM, **kw)
  rng = np.random.default_rng(seed)
  d, c = p['dim'], p['classes']
  w = rng.normal(size=(d, c))
  sizes = {'unlabeled': p['unlabeled'], 'validation': p['validation'],
           'test': p['test']}
  need = sum(sizes.values())
  xs = []
  while sum(len(x) for x in xs) < need:
    x = rng.normal(size=(2 * need, d))
    z = np.sort(x @ w, -1)
    xs.append(x[z[:, -1] - z[:, -2] >= p['gamma']])
  x = np.concatenate(xs)[:need].astype(np.float32)
  z = x @ w
  order = np.argsort(-z, -1)
  y, runner = order[:, 0], order[:, 1]
  if p['errors'] == 'concentrated':
    if p['region'] == 'halfspace':
      u = rng.normal(size=d)
      s = x @ (u / np.linalg.norm(u))
      region = s > np.quantile(s, 1.0 - p['fraction'])
    elif p['region'] == 'boundary':
      margin = z[np.arange(need), y] - z[np.arange(need), runner]
      region = margin < np.quantile(margin, p['fraction'])
    else:
      raise ValueError(f"unknown region {p['region']!r}; valid choices: "
                       'halfspace, boundary')
    if p['confusion'] == 'random':    # a random class other than the truth
      wrong = (y + rng.integers(1, c, need)) % c
    elif p['confusion'] == 'runner_up':
      wrong = runner
    else:
      raise ValueError(f"unknown confusion {p['confusion']!r}; valid "
                       'choices: runner_up, random')
    probs, correct = _concentrated_teacher(rng, y, wrong, region, accuracy,
                                           p['accuracy_out'], c)
  elif p['errors'] == 'spread':
    region = np.ones(need, bool)
    probs, correct = _spread_teacher(rng, y, accuracy, p['k'], c)
  else:
    raise ValueError(f"unknown errors {p['errors']!r}; valid choices: "
                     'concentrated, spread')
  out, start = {}, 0
  for part, n in sizes.items():
    sl = slice(start, start + n)
    out[part] = dict(x=x[sl], y=y[sl].astype(np.int32), probs=probs[sl],
                     correct=correct[sl], region=region[sl])
    start += n
  return out


def _fill(rng, probs, rows, cols_taken, mass):
  """Spreads `mass` (per row) over the columns not in `cols_taken` with a
  Dirichlet(4) (no one column takes much of it, so the ranks set above it
  stay)."""
  n, c = probs.shape
  free = np.ones((n, c), bool)
  for col in cols_taken:
    free[rows, col] = False
  g = rng.gamma(4.0, size=(n, c)) * free
  probs += g / g.sum(-1, keepdims=True) * mass[:, None]


def _concentrated_teacher(rng, y, wrong, region, accuracy, accuracy_out, c):
  n = len(y)
  rows = np.arange(n)
  acc = np.where(region, accuracy, accuracy_out)
  correct = rng.random(n) < acc
  top1 = np.where(correct, y, wrong)
  second = np.where(correct, wrong, y)
  p1 = np.where(region, rng.uniform(0.45, 0.6, n), rng.uniform(0.75, 0.95, n))
  p2 = (1.0 - p1) * np.where(region, rng.uniform(0.5, 0.75, n),
                             rng.uniform(0.4, 0.6, n))
  probs = np.zeros((n, c))
  probs[rows, top1] = p1
  probs[rows, second] = p2
  _fill(rng, probs, rows, (top1, second), 1.0 - p1 - p2)
  return probs.astype(np.float32), np.argmax(probs, -1) == y


def _spread_teacher(rng, y, accuracy, k, c):
  n = len(y)
  rows = np.arange(n)
  others = np.argsort(rng.random((n, c)) + (np.arange(c)[None] == y[:, None]),
                      -1)[:, :k - 1]          # k - 1 random classes, not y
  correct = rng.random(n) < accuracy
  pick = others[rows, rng.integers(0, k - 1, n)]
  top1 = np.where(correct, y, pick)
  p1 = rng.uniform(0.45, 0.6, n)
  rest_in = (1.0 - p1) * rng.uniform(0.8, 0.95, n)
  probs = np.zeros((n, c))
  members = np.concatenate([y[:, None], others], -1)      # the top-k set
  share = rng.gamma(1.0, size=(n, k)) + 0.5
  share[members == top1[:, None]] = 0.0
  share /= share.sum(-1, keepdims=True)
  for j in range(k):
    probs[rows, members[:, j]] += share[:, j] * rest_in
  probs[rows, top1] = p1
  _fill(rng, probs, rows, tuple(members.T), 1.0 - p1 - rest_in)
  return probs.astype(np.float32), np.argmax(probs, -1) == y


# --- the student --------------------------------------------------------------

def _config(row):
  """(method, config with method/method_kw/distill blocks) of a row such as
  'weighted[distill.weight_mode=debiased]'."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  from core import defaults  # pylint: disable=g-import-not-at-top
  from experiments.unlabeled_distillation import parse_method  # pylint: disable=g-import-not-at-top
  name, overrides = parse_method(row)
  config = ml_collections.ConfigDict(dict(
      method=name, method_kw=defaults.method_kw(),
      distill=defaults.distill()))
  common.override(config, overrides)
  return name, config


def train_student(x, seed, method='vanilla', teacher_logits=None, labels=None,
                  state=None, method_kw=None, steps=None, batch=None,
                  lr=None):
  """A linear student (W, b) trained by `method`'s registered loss on `x`
  (teacher targets: `teacher_logits` and the fitted `state`; supervised:
  `labels`) with Adam, from a seeded initialisation and batch order;
  returns a function x -> probabilities."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  steps = steps or STUDENT['steps']
  batch = min(batch or STUDENT['batch'], len(x))
  c = (teacher_logits.shape[-1] if teacher_logits is not None
       else PROBLEM['classes'])
  params = {'w': jax.random.normal(jax.random.PRNGKey(seed),
                                   (x.shape[1], c)) * 0.01,
            'b': jnp.zeros((c,))}
  data = {'x': jnp.asarray(x)}
  if teacher_logits is not None:
    data['teacher'] = {'logits': jnp.asarray(teacher_logits, jnp.float32),
                       **{k: jnp.asarray(v) for k, v in (state or {}).items()}}
  if labels is not None:
    data['label'] = jnp.asarray(labels, jnp.int32)
  rng = np.random.default_rng(seed + 7919)
  idx = np.stack([rng.choice(len(x), batch, replace=False)
                  for _ in range(steps)])
  fit = _trainer(method, tuple(sorted((method_kw or {}).items())),
                 float(lr or STUDENT['lr']))
  params = jax.device_get(fit(params, data, jnp.asarray(idx)))
  return lambda xs: _softmax(np.asarray(xs) @ params['w'] + params['b'])


@functools.lru_cache(maxsize=None)
def _trainer(method, method_kw, lr):
  """The jitted training loop of `method` (compiled once per shape)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from distill import methods  # pylint: disable=g-import-not-at-top
  loss_fn = methods.get(method).loss_fn(dict(method_kw))
  opt = optax.adam(lr)

  @jax.jit
  def fit(params, data, idx):
    def step(carry, ids):
      params, opt_state = carry
      b = jax.tree_util.tree_map(lambda a: a[ids], data)
      b['mask'] = jnp.ones(ids.shape, jnp.float32)
      teacher = b.pop('teacher', None)

      def loss(p):
        return loss_fn(b['x'] @ p['w'] + p['b'], teacher, b)[0]
      grads = jax.grad(loss)(params)
      updates, opt_state = opt.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None
    return jax.lax.scan(step, (params, opt.init(params)), idx)[0][0]
  return fit


def _softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _accuracy(probs, y):
  return float(np.mean(np.argmax(probs, -1) == y))


def distill_cell(problem, seed, row, student=None):
  """One row's numbers on one problem: test accuracy (and, for fitted
  methods, the fit's statistics inside and outside R). `student`: options
  of `train_student` (steps, batch, lr)."""
  student = dict(student or {})
  from distill import distillation  # pylint: disable=g-import-not-at-top
  u, v, t = problem['unlabeled'], problem['validation'], problem['test']
  if row == 'teacher':
    return {'test': _accuracy(t['probs'], t['y']),
            'region_accuracy': float(np.mean(u['correct'][u['region']]))}
  if row == 'clean':
    f = train_student(u['x'], seed, 'supervised', labels=u['y'], **student)
    return {'test': _accuracy(f(t['x']), t['y'])}
  name, config = _config(row)
  state, stats = distillation.fit_state(config, v['probs'], v['y'], u['probs'])
  f = train_student(u['x'], seed, name, np.log(u['probs']), state=state,
                    method_kw=config.method_kw.to_dict(), **student)
  out = {'test': _accuracy(f(t['x']), t['y'])}
  out.update({f'fit/{k}': v for k, v in stats.items()})
  for key in ('weight', 'alpha'):
    if key in state:
      s = np.asarray(state[key])
      out[f'{key}_in_region'] = float(s[u['region']].mean())
      if (~u['region']).any():
        out[f'{key}_outside_region'] = float(s[~u['region']].mean())
  return out


# --- the active query loop ----------------------------------------------------

M_READINGS = {'rad': 'pool', 'rad_m_round': 'round',
              'rad_m_remaining': 'remaining', 'rad_m0': None}


def active_cell(problem, seed, row, initial, per_round, rounds,
                student=None, method='vanilla'):
  """Accuracy after each round and the share of teacher-wrong queries; each
  round's student learns the queried points by `method` (a registered
  distillation loss without a fit: vanilla, hard, ...)."""
  student = dict(student or {})
  from distill import active  # pylint: disable=g-import-not-at-top
  u, v, t = problem['unlabeled'], problem['validation'], problem['test']
  rng = np.random.default_rng(seed + 104729)
  n = len(u['x'])
  queried = np.sort(rng.choice(n, initial, replace=False))
  error = 1.0 - _accuracy(v['probs'], v['y'])
  logits = np.log(u['probs'])
  curve, wrong = [], []
  for r in range(rounds + 1):
    f = train_student(u['x'][queried], seed, method, logits[queried],
                      **student)
    curve.append(_accuracy(f(t['x']), t['y']))
    wrong.append(float(1.0 - u['correct'][queried].mean()))
    if r == rounds:
      break
    pool = np.setdiff1d(np.arange(n), queried)
    probs = f(u['x'][pool])
    strategy = 'rad' if row in M_READINGS else row
    m = 0
    if row in M_READINGS and M_READINGS[row]:
      over = {'pool': n, 'round': per_round,
              'remaining': len(pool)}[M_READINGS[row]]
      m = int(round(error * over))
    chosen = active.select(strategy, per_round, rng, probs=probs, m=m)
    queried = np.sort(np.concatenate([queried, pool[chosen]]))
  return {'test': curve[-1], 'curve': curve, 'queried_wrong': wrong[-1],
          'queried_wrong_curve': wrong,
          'queries': [initial + r * per_round for r in range(rounds + 1)]}


# --- the table ----------------------------------------------------------------

def _key(value, seed, row):
  return f'{value}/{seed}/{row}'


def _load(path):
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return {}


def _save(path, cells):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(cells, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def compute(spec, cells=None, save=None, report_only=False):
  """Every cell of `spec` ({key: numbers}), reusing `cells`; `save(cells)`
  after each new one."""
  cells = dict(cells or {})
  problem_kw = dict(spec.get('problem', {}))
  for value in spec['sweep']:
    for seed in spec['seeds']:
      todo = [r for r in _rows(spec) if _key(value, seed, r) not in cells]
      if not todo or report_only:
        continue
      problem = make_problem(seed, value, **problem_kw)
      for row in todo:
        if spec.get('active'):
          got = active_cell(problem, seed, row, **spec['active'],
                            student=spec.get('student'))
        else:
          got = distill_cell(problem, seed, row, spec.get('student'))
        cells[_key(value, seed, row)] = got
        if save:
          save(cells)
  return cells


def _rows(spec):
  return tuple(spec['rows'])


def paired(cells, value, seeds, row, baseline):
  """Per-seed test-accuracy differences (points) of `row` minus
  `baseline`."""
  out = []
  for s in seeds:
    a, b = cells.get(_key(value, s, row)), cells.get(_key(value, s, baseline))
    if a and b:
      out.append(100 * (a['test'] - b['test']))
  return out


def _mean_std(xs, fmt='{:.2f}'):
  if not xs:
    return '-'
  return fmt.format(np.mean(xs)) + f' ± {np.std(xs):.2f}'


def table_markdown(name, spec, cells):
  values, seeds = spec['sweep'], spec['seeds']
  label = spec.get('sweep_label', 'teacher accuracy in R')
  head = ('| row | ' + ' | '.join(f'{label} {v}' for v in values) + ' |\n'
          '| --- |' + ' --- |' * len(values))
  lines = [f'#### {name}: student test accuracy (%), mean ± std over seeds '
           f'{list(seeds)}', '']
  if spec.get('title'):
    lines += [spec['title'], '']
  lines.append(head)
  for row in _rows(spec):
    vals = [[100 * cells[_key(v, s, row)]['test'] for s in seeds
             if _key(v, s, row) in cells] for v in values]
    lines.append(f'| {row} | ' + ' | '.join(_mean_std(x) for x in vals)
                 + ' |')
  for base in spec.get('baselines', ('vanilla',)):
    lines.append(f'| **paired difference to {base}** | ' +
                 ' | '.join('' for _ in values) + ' |')
    for row in _rows(spec):
      if row == base or row in ('teacher',):
        continue
      diffs = [paired(cells, v, seeds, row, base) for v in values]
      lines.append(f'| {row} − {base} | ' +
                   ' | '.join(_mean_std(d, '{:+.2f}') for d in diffs) + ' |')
  extra, shown = [], set()
  for row in _rows(spec):
    for key, what in (('weight_in_region', 'mean w(x) in R'),
                      ('weight_outside_region', 'mean w(x) outside R'),
                      ('alpha_in_region', 'mean alpha(x) in R'),
                      ('alpha_outside_region', 'mean alpha(x) outside R'),
                      ('fit/k_mean', 'mean k'),
                      ('queried_wrong', "share of queries the teacher "
                                        "labels wrong")):
      vals = [[cells[_key(v, s, row)][key] for s in seeds
               if key in cells.get(_key(v, s, row), {})] for v in values]
      text = ' | '.join(f'{np.mean(x):.3f}' if x else '-' for x in vals)
      if any(vals) and (what, text) not in shown:   # one row per fitted state
        shown.add((what, text))
        extra.append(f'| {row}: {what} | {text} |')
  if extra:
    lines += ['', '| fitted state / queries | ' + ' | '.join(
        str(v) for v in values) + ' |', '| --- |' + ' --- |' * len(values)]
    lines += extra
  done = sum(_key(v, s, r) in cells for v in values for s in seeds
             for r in _rows(spec))
  total = len(values) * len(seeds) * len(_rows(spec))
  lines += ['', f'{done} of {total} cells finished. Command: '
            f'`python -m experiments.run --table={name}`.', '']
  prediction = spec.get('prediction') or _prediction(name)
  if prediction:
    lines += [prediction, '']
  return '\n'.join(lines)


def _prediction(name):
  """The 'Prediction' paragraphs of table `name`'s docstring (its file in
  experiments/tables/), or ''."""
  import ast  # pylint: disable=g-import-not-at-top
  from experiments import tables  # pylint: disable=g-import-not-at-top
  path = os.path.join(tables.FOLDER, f'{name}.py')
  if not os.path.exists(path):
    return ''
  with open(path) as f:
    doc = ast.get_docstring(ast.parse(f.read())) or ''
  start = doc.find('Prediction')
  return doc[start:].strip() if start >= 0 else ''


def plot(name, spec, cells, path):
  from experiments import plotting  # pylint: disable=g-import-not-at-top
  plt = plotting.pyplot()
  if plt is None:
    return
  fig, ax = plt.subplots(figsize=(6, 4))
  for row in _rows(spec):
    means = [np.mean([100 * cells[_key(v, s, row)]['test']
                      for s in spec['seeds'] if _key(v, s, row) in cells]
                     or [np.nan]) for v in spec['sweep']]
    ax.plot(spec['sweep'], means, marker='o', label=row)
  ax.set_xlabel(spec.get('sweep_label', 'teacher accuracy in R'))
  ax.set_ylabel('student test accuracy (%)')
  ax.set_title(name)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def run_table(name, spec, workdir, results, manual_dir=None,
              report_only=False):
  """Computes the missing cells (none with `report_only`) and writes
  `<results>/<name>.{md,json,png}`."""
  del manual_dir
  store = os.path.join(workdir, spec.get('cells', name), 'cells.json')
  start = time.time()
  cells = compute(spec, _load(store), lambda c: _save(store, c), report_only)
  keys = {_key(v, s, r) for v in spec['sweep'] for s in spec['seeds']
          for r in _rows(spec)}
  cells = {k: v for k, v in cells.items() if k in keys}
  from experiments import harness  # pylint: disable=g-import-not-at-top
  harness.write_results(results, name, table_markdown(name, spec, cells),
                        cells, lambda path: plot(name, spec, cells, path))
  print(f'({time.time() - start:.0f} s)')
  return cells


def main(argv):
  del argv
  from experiments import harness  # pylint: disable=g-import-not-at-top
  harness.from_flags('theory_concentrated')


if __name__ == '__main__':
  sys.exit(app.run(main))
