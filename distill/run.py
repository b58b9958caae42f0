"""Runs any config: the entry point's dispatch, importable without flags.

    from distill.run import execute
    execute(config, workdir)
"""
from distill import distillation
from distill import train


def execute(config, workdir):
  """The distillation pipeline if the config has a `teacher` block, else
  plain training (a teacher, or any supervised model)."""
  if 'teacher' in config:
    return distillation.run(config, workdir)
  return train.train(config, workdir)
