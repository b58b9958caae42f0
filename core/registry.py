"""The one registration helper: named entries in a dict, added by decorator.

    STRATEGIES = {}
    register = registry.registrar(STRATEGIES, 'active strategy')

    @register('random')
    def random_choice(...): ...

Losses (distill/methods.py), residual connections (models/residual.py) and
active-learning strategies (distill/active.py) register this way; a name
registered twice is an error, an unknown one is looked up with
`core.errors.check_choice` (one line naming the valid choices).
"""


def registrar(table, kind, entry=None):
  """A `register(name, **info)` decorator factory adding to the dict
  `table`: the decorated object, or `entry(name, obj, **info)` when given.
  `kind` names what is registered, in errors."""
  def register(name, **info):
    def wrap(obj):
      if name in table:
        raise ValueError(f'{kind} {name!r} is registered twice')
      table[name] = entry(name, obj, **info) if entry else obj
      return obj
    return wrap
  return register
