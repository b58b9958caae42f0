"""Tables as data: one file per table, run by one harness.

    python -m experiments.run --table=digits            # a file in this folder
    python -m experiments.run --table=path/to/my_table.py
    python -m experiments.run --list

A table file defines `TABLE`, a dict whose `kind` names the experiment that
trains and reports its cells (experiments/harness.py: KINDS) and whose other
keys say what to run: the config, the grid (labeled sizes, rows, seeds) and
what to report. The table's name is its file's name: it names the results
(`experiments/results/<name>.{md,json,png}`) and, unless `cells` names
another table's, the folder of its runs, so a table that shares `cells`
reuses the runs it has in common and trains only the rest.
"""
import ast
import glob
import os

from core.errors import ConfigError

FOLDER = os.path.dirname(os.path.abspath(__file__))
# The kinds of table, each run by an experiment module (harness.KINDS).
KINDS = ('distill', 'active', 'laurel', 'guide', 'theory')


def names():
  return sorted(os.path.splitext(os.path.basename(p))[0]
                for p in glob.glob(os.path.join(FOLDER, '*.py'))
                if not os.path.basename(p).startswith('_'))


def _literal(node):
  """A literal, where `dict(key=literal, ...)` counts as one too."""
  if (isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'dict'
      and not node.args and all(k.arg for k in node.keywords)):
    return {k.arg: _literal(k.value) for k in node.keywords}
  if isinstance(node, ast.Dict):
    return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
  return ast.literal_eval(node)


def _literal_table(path):
  """The `TABLE = {...}` literal of a table file (data only: the file is
  parsed, not run)."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  for node in tree.body:
    if (isinstance(node, ast.Assign) and len(node.targets) == 1 and
        getattr(node.targets[0], 'id', None) == 'TABLE'):
      try:
        return _literal(node.value)
      except ValueError as e:
        raise ConfigError(f'{path}: TABLE must be a literal (numbers, '
                          f'strings, tuples, lists, dicts, dict(...)): '
                          f'{e}') from None
  raise ConfigError(f'{path} defines no TABLE = {{...}}')


def load(table):
  """(name, spec) of a table name (a file in this folder) or a path."""
  path = table if table.endswith('.py') else os.path.join(FOLDER,
                                                          f'{table}.py')
  if not os.path.exists(path):
    raise ConfigError(f'unknown table {table!r}; valid choices: '
                      f'{", ".join(names())}, or a path to a table file')
  spec = _literal_table(path)
  if not isinstance(spec, dict) or 'kind' not in spec:
    raise ConfigError(f'{path}: TABLE must be a dict with a "kind"; valid '
                      f'kinds: {", ".join(KINDS)}')
  if spec['kind'] not in KINDS:
    raise ConfigError(f'{path}: unknown kind {spec["kind"]!r}; valid '
                      f'choices: {", ".join(KINDS)}')
  return os.path.splitext(os.path.basename(path))[0], spec
