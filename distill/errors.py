"""The one exception type for bad user input (configs, flags, paths)."""


class ConfigError(ValueError):
  """A bad config value. Its message is one line naming the valid choices."""


def check_choice(what, value, choices):
  """Raises ConfigError unless `value` is one of `choices`."""
  choices = sorted(choices)
  if value not in choices:
    raise ConfigError(f'unknown {what} {value!r}; valid choices: '
                      f'{", ".join(map(str, choices))}')
  return value
