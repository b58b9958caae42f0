"""The CPU peak that MFU divides by (distill/flops.py)."""
import json

from distill import flops


def test_the_cpu_ceiling_keeps_the_best_measurement_of_this_host(tmp_path):
  """MFU's CPU peak: a measurement on a loaded machine (low) does not
  replace the best one kept for this host; a better one replaces it."""
  cache = str(tmp_path / 'ceiling.json')
  key = flops._host_key()  # pylint: disable=protected-access
  with open(cache, 'w') as f:
    json.dump({key: 1e30, 'another host': 1.0}, f)
  assert flops.cpu_matmul_ceiling(64, 2, cache) == 1e30
  low = str(tmp_path / 'low.json')
  with open(low, 'w') as f:
    json.dump({key: 1.0}, f)
  measured = flops.cpu_matmul_ceiling(64, 2, low)
  assert 1.0 < measured < 1e30
  with open(low) as f:
    assert json.load(f)[key] == measured
  assert flops.cpu_matmul_ceiling(64, 2, '') > 1.0   # no cache: measured
