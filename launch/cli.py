"""What every entry point shares: a known fault is one line on stderr and
its exit status (core/errors.py: 1 environment, 2 user input, 3 diverged).

    try:
      ...
    except BaseException as e:  # pylint: disable=broad-except
      cli.fail(e, debug=_DEBUG.value)

Flag-free, so entry points with flags of their own (launch/main.py,
launch/export.py, launch/predict.py, launch/generate.py) import it without
clashing; `run_main(main, required)` parses their flags (a bad flag is one
line, exit 2) and runs `main`.
"""
import os
import sys
import traceback

from absl import app


def quiet_library_reports():
  """A fault is reported once, as one line: library logs (TFDS, orbax) and
  the tracebacks that background threads and C++ callbacks print for the
  same fault are hidden (--debug shows them)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.FATAL)
  threading.excepthook = lambda args: None
  sys.unraisablehook = lambda unraisable: None
  sys.excepthook = lambda *exc_info: None


def describe(error):
  """(exit status, one line) for a known fault, else (None, None)."""
  from core import errors  # pylint: disable=g-import-not-at-top
  if isinstance(error, errors.Diverged):
    return error.exit_code, f'diverged: {error}'
  if isinstance(error, (errors.ConfigError, errors.EnvironmentFault)):
    return error.exit_code, f'error: {errors.one_line(error, 1000)}'
  if isinstance(error, app.UsageError):
    return 2, f'error: {error}'
  if errors.errno_of(error) is not None:
    fault = errors.from_os_error(error)
    return fault.exit_code, f'error: {fault}'
  return None, None


def fail(error, debug=False):
  """Ends the process for `error`: one line on stderr and its exit status
  (1 environment, 2 user input, 3 diverged), the traceback only with
  --debug (`debug`); an unknown error (a bug) keeps its traceback."""
  if isinstance(error, SystemExit):
    raise error
  if isinstance(error, KeyboardInterrupt):
    code, line = 130, 'interrupted'
  else:
    code, line = describe(error)
  if code is None:                 # not a known fault: a bug, with its trace
    traceback.print_exception(error)
    code, line = 1, f'error: internal error {type(error).__name__} (the ' \
        'traceback above); please report it'
  elif debug:
    traceback.print_exception(error)
  print(line, file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  # Skip interpreter teardown: background checkpoint threads would print
  # their own tracebacks for a fault already reported here.
  os._exit(code)


def run_main(main, required=()):
  """absl's app.run of `main` with the `required` flags, a flag error one
  line on stderr and exit status 2."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.mark_flags_as_required(list(required))
  try:
    remaining = flags.FLAGS(sys.argv)
  except flags.Error as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  app.run(main, flags_parser=lambda _: remaining)
