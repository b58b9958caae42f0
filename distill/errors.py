"""Exceptions the entry point turns into one-line messages: bad user input
(configs, flags, paths) and a diverged run."""


class ConfigError(ValueError):
  """A bad config value. Its message is one line naming the valid choices."""


def check_choice(what, value, choices):
  """Raises ConfigError unless `value` is one of `choices`."""
  choices = sorted(choices)
  if value not in choices:
    raise ConfigError(f'unknown {what} {value!r}; valid choices: '
                      f'{", ".join(map(str, choices))}')
  return value


class Diverged(FloatingPointError):
  """The training loss became NaN or infinite; names the step. The run
  stops without saving, so the last good checkpoint stays the newest."""
