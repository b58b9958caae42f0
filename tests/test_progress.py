"""The progress line: no rates for a window holding only the compiled first
step (its time is compilation, reported apart); no accuracy where the data
has no labels."""
import numpy as np

from distill import monitoring
from distill.logging_utils import format_duration


def test_first_window_reports_compilation_not_rates():
  line = monitoring.progress_line(1, 10, {'train/loss': 2.0,
                                     'compile_seconds': 3.21})
  assert line == 'step 1/10 (10.0%) loss 2.0000 | compiled in 3.2 s'
  assert 'MFU' not in line and 'ex/s' not in line


def test_later_windows_report_rates_and_eta():
  line = monitoring.progress_line(5, 10, {
      'train/loss': 1.0, 'train/accuracy': 0.5, 'step_seconds': 0.5,
      'examples_per_sec': 256.0, 'mfu': 0.123})
  assert line == ('step 5/10 (50.0%) loss 1.0000 acc 0.5000 | 256 ex/s | '
                  '500.0 ms/step | MFU 12.3% | ETA ' +
                  format_duration(2.5))


def test_a_metric_counted_over_no_example_is_absent_not_zero():
  """Accuracy on examples without labels (counts 0) is not reported."""
  window = [{'loss': (np.float32(2.0), np.float32(4.0)),
             'accuracy': (np.float32(0.0), np.float32(0.0)),
             'teacher_agreement': (np.float32(3.0), np.float32(4.0))}] * 2
  logs = monitoring.reduce_window(window)
  assert logs == {'train/loss': 0.5, 'train/teacher_agreement': 0.75}
  line = monitoring.progress_line(2, 10, logs)
  assert line.startswith('step 2/10 (20.0%) loss 0.5000 agree 0.7500 (no '
                         'labels)'), line
  assert 'acc' not in line
