"""Runs any table (experiments/harness.py, experiments/tables/).

    python -m experiments.run --table=digits
    python -m experiments.run --table=cifar10 --report_only
    python -m experiments.run --table=path/to/my_table.py
    python -m experiments.run --list
"""
from absl import app

from experiments import harness

if __name__ == '__main__':
  app.run(harness.main)
