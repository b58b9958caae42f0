"""Runs any config: the entry point's dispatch, importable without flags.

    from distill.run import execute
    execute(config, workdir)
"""
from distill import active_distillation
from distill import distillation
from distill import train


def execute(config, workdir):
  """Active distillation if the config has an `active` block, the
  distillation pipeline if it has a `teacher` block, else plain training (a
  teacher, or any supervised model)."""
  if 'active' in config:
    return active_distillation.run(config, workdir)
  if 'teacher' in config:
    return distillation.run(config, workdir)
  return train.train(config, workdir)
