"""The one harness that runs any table: `experiments/tables/<name>.py`, or a
table file anywhere (the command line is experiments/run.py).

    python -m experiments.run --table=digits
    python -m experiments.run --table=cifar10 --report_only   # while it runs
    python -m experiments.run --table=path/to/my_table.py
    python -m experiments.run --list

A table is data (experiments/tables/__init__.py): its `kind` picks the
experiment module that trains its cells and writes its report (KINDS), the
rest of it is that module's grid. Finished cells are skipped, so a table
resumes where it stopped and tables sharing `cells` share their runs.
Results go to `experiments/results/<name>.{md,json,png}` (`--results`);
the distill and laurel kinds also keep every finished cell in
`<results>/cells/<cells>.json` (experiments/records.py): committed, it lets
a checkout without the runs (the next session's machine) report them and
train only what is missing.
"""
import importlib
import os
import sys

from absl import flags
from absl import logging

from core.errors import ConfigError, Diverged, EnvironmentFault, one_line
from distill import config_lib
from experiments import tables

KINDS = {
    'distill': 'experiments.unlabeled_distillation',  # methods x labeled sizes
    'active': 'experiments.active_distillation',      # strategies x rounds
    'laurel': 'experiments.laurel',                   # residual variants
    'guide': 'experiments.guide',                     # init / KD regimes
    'theory': 'experiments.theory',                   # synthetic regimes
}
FLAGS = flags.FLAGS
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')

_TABLE = flags.DEFINE_string('table', 'quickstart',
                             'A table name (experiments/tables/) or a path '
                             'to a table file.')
_LIST = flags.DEFINE_bool('list', False, 'List the tables and exit.')
_WORKDIR = flags.DEFINE_string('workdir', '', "Where the runs live "
                               "(resumable); default: the kind's own.")
_RESULTS = flags.DEFINE_string('results', '', 'Where the table, JSON and '
                               'plot go (default: experiments/results).')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', '../shared/datasets',
                                  'Folder of the shared datasets.')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'Only tabulate the '
                                 'cells already finished; trains nothing.')


def write_results(results, name, md, cells, plot=None):
  """A table's report: `<results>/<name>.md` (printed too), `.json` (every
  cell) and, with `plot(path)`, `.png`."""
  import json  # pylint: disable=g-import-not-at-top
  os.makedirs(results, exist_ok=True)
  with open(os.path.join(results, f'{name}.md'), 'w') as f:
    f.write(md)
  with open(os.path.join(results, f'{name}.json'), 'w') as f:
    json.dump(cells, f, indent=1, sort_keys=True)
  if plot is not None:
    plot(os.path.join(results, f'{name}.png'))
  print(md)


def config_getter(path):
  """get_config of the config file at `path` (relative to the working
  directory or the repository root), read as --config reads it
  (`config_lib.load_file`)."""
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), path)
  return lambda arg=None: config_lib.load_file(
      f'{path}:{arg}' if arg else path)


def kind_module(spec):
  """The experiment module of a loaded table's kind."""
  return importlib.import_module(KINDS[spec['kind']])


def run(table, workdir='', results='', manual_dir='../shared/datasets',
        report_only=False):
  """Runs (or reports) `table`, a name or a path; returns the kind's cells."""
  name, spec = tables.load(table)
  module = kind_module(spec)
  return module.run_table(
      name, spec, workdir or module.WORKDIR, results or RESULTS,
      manual_dir=manual_dir, report_only=report_only)


def setup(table=None):
  """Huge-page malloc (re-executes once), CPU devices for `table`'s config
  (host_devices.auto_count; a kind whose tables name no config file gives
  one from its module's `device_config(spec)`), quiet logs (before JAX
  starts)."""
  from distill import host_devices  # pylint: disable=g-import-not-at-top
  from distill import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.use_huge_pages()
  config = None
  if table:
    try:
      spec = tables.load(table)[1]
      config = (config_getter(spec['config'])() if 'config' in spec else
                getattr(kind_module(spec), 'device_config',
                        lambda spec: None)(spec))
    except Exception:  # pylint: disable=broad-except
      config = None        # a bad config says so when its cell loads it
  host_devices.configure(config=config)
  logging.set_verbosity(logging.WARNING)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()


def from_flags(default, prefix='', workdir='', results=''):
  """What an experiment module's own command line runs: table `--table`
  (`default` when not given), named `prefix` + it unless it is a path or
  already prefixed, in `--workdir` (else `workdir`), results to
  `--results` (else `results`, else experiments/results). A bad table is
  one line."""
  table = _TABLE.value if FLAGS['table'].present else default
  if prefix and not table.endswith('.py') and not table.startswith(
      tuple(prefix.split('|'))):
    table = prefix.split('|')[0] + table
  try:
    tables.load(table)
  except ConfigError as e:
    sys.exit(f'error: {e}')
  setup(table)
  return _reported(run, table, _WORKDIR.value or workdir,
                   _RESULTS.value or results, _MANUAL_DIR.value,
                   _REPORT_ONLY.value)


def _reported(fn, *args):
  """`fn(*args)`; a known fault (bad input, an unreadable file) ends the
  process with its one line and exit status, as launch.main does."""
  try:
    return fn(*args)
  except (ConfigError, EnvironmentFault, Diverged) as e:
    prefix = 'diverged' if isinstance(e, Diverged) else 'error'
    print(f'{prefix}: {one_line(e, 1000)}', file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(e.exit_code)   # pylint: disable=protected-access


def main(argv):
  del argv
  if _LIST.value:
    for n in tables.names():
      print(f'{n:28s} {tables.load(n)[1]["kind"]}')
    return
  try:
    tables.load(_TABLE.value)
  except ConfigError as e:
    sys.exit(f'error: {e}')
  setup(_TABLE.value)
  _reported(run, _TABLE.value, _WORKDIR.value, _RESULTS.value,
            _MANUAL_DIR.value, _REPORT_ONLY.value)

