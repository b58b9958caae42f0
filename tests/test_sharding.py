"""The 8-device CPU mesh gives the 1-device losses, for data and FSDP sharding."""
import json
import os
import sys

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import conftest
from conftest import REPO
from core.errors import ConfigError
from distill import sharding


def _start_mesh_equivalence():
  env = dict(os.environ,
             XLA_FLAGS=conftest.xla_flags(8),
             JAX_PLATFORMS='cpu')
  return conftest.start_process(
      [sys.executable, os.path.join(REPO, 'tests', 'mesh_equivalence.py'),
       '{folder}/results.json'], env=env)


# About two minutes of 8-device runs: started when the tests are collected.
EARLY_PROCESSES = (_start_mesh_equivalence,)
EARLY_FIXTURES = ('results',)   # only tests using these need the process


@pytest.fixture(scope='module')
def results():
  run = conftest.early_process(_start_mesh_equivalence)
  code, stderr = run.wait(timeout=900)
  assert code == 0, stderr
  with open(os.path.join(run.folder, 'results.json')) as f:
    return json.load(f)


@pytest.mark.slow
@pytest.mark.parametrize('mesh', ['data', 'fsdp'])
def test_losses_match_one_device(results, mesh):
  single, sharded = results['single'], results[mesh]
  assert len(single['losses']) == 6
  np.testing.assert_allclose(sharded['losses'], single['losses'], atol=1e-5,
                             rtol=0)
  assert abs(sharded['val_loss'] - single['val_loss']) < 1e-5
  # The run learned something: the comparison is not between constants.
  assert single['losses'][-1] < single['losses'][0]


@pytest.mark.slow
def test_fsdp_stores_an_eighth_of_the_parameters(results):
  fsdp, data = results['fsdp'], results['data']
  assert data['param_bytes_per_device'] == data['param_bytes']
  ratio = fsdp['param_bytes_per_device'] / fsdp['param_bytes']
  assert 0.125 <= ratio < 0.14, ratio


@pytest.mark.slow
def test_guide_projection_on_a_sharded_mesh(results):
  """GUIDE projects a teacher sharded over fsdp x model into a sharded
  student (LAuReL residuals) exactly as on one device."""
  g = results['guide']
  assert g['max_abs_diff'] < 1e-4     # float32 SVD, sharded reductions
  assert g['student_sharded_leaves'] > 0
  assert g['laurel_output_diff'] < 1e-4


@pytest.mark.parametrize('name', [
    'single_remat_flash', 'data_remat_flash', 'fsdp', 'fsdp_model'])
@pytest.mark.slow
def test_lm_losses_match_one_device(results, name):
  """The LM on 8 devices (data, FSDP, FSDP x model), with remat and flash
  attention, gives the 1-device losses (remat alone: the same numbers)."""
  single, other = results['lm']['single'], results['lm'][name]
  assert len(single['losses']) == 6
  np.testing.assert_allclose(other['losses'], single['losses'], atol=1e-5,
                             rtol=0)
  assert abs(other['val_loss'] - single['val_loss']) < 1e-5
  assert single['losses'][-1] < single['losses'][0]


@pytest.mark.slow
def test_scanned_lm_on_fsdp_x_model_with_remat_and_flash(results):
  lm = results['lm']
  np.testing.assert_allclose(lm['fsdp_model_scan_remat_flash']['losses'],
                             lm['single_scan']['losses'], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_lm_with_every_family_field_on_fsdp_x_model(results):
  """The pretrained families' options at once (mesh_equivalence.FAMILY_LM:
  GQA, head_dim, GeGLU, QKV bias, QK-norm, Gemma's norms, embedding scale
  and soft caps, Llama 3's rope scaling, sliding-window layers, tied
  embeddings), scanned: fsdp x model with remat gives the 1-device losses."""
  lm = results['lm']
  single = lm['single_family_scan']
  assert len(single['losses']) == 6
  np.testing.assert_allclose(lm['fsdp_model_family_scan_remat']['losses'],
                             single['losses'], atol=1e-5, rtol=0)
  # Not constants, and not the plain LM's numbers. (On random tokens with
  # tied embeddings the loss starts at log(vocab), its floor: no fall to
  # assert.)
  assert np.ptp(single['losses']) > 1e-3
  assert single['losses'][0] != lm['single_scan']['losses'][0]


@pytest.mark.slow
def test_activations_are_sharded(results):
  """For a fixed global batch, an LM step's temporaries per device on 8
  devices are well under those on 1: activations follow the batch."""
  temp = results['lm_temp_bytes']
  assert temp['8'] < temp['1'] / 4, temp


class FakeMesh:
  shape = {'data': 2, 'fsdp': 4, 'model': 1}


def test_rules_skip_axes_that_do_not_divide():
  assert sharding.spec_for((64, 256), ('embed', 'mlp'), FakeMesh) == P(
      'fsdp', None)
  assert sharding.spec_for((10,), ('classes',), FakeMesh) == P(None)
  assert sharding.spec_for((3, 3, 3, 6), (None, None, 'conv_in', 'conv_out'),
                           FakeMesh) == P(None, None, None, None)
  assert sharding.spec_for((3, 3, 3, 16), (None, None, 'conv_in',
                                           'conv_out'), FakeMesh) == P(
                                               None, None, None, 'fsdp')


@pytest.mark.parametrize('mesh,match', [
    (dict(data=3), 'needs 3 devices per slice, but there are 1'),
    (dict(data=-1, fsdp=-1), 'at most one axis may be -1'),
    (dict(dat=1), "unknown mesh axis 'dat'; valid choices: data, fsdp, model, "
     'dcn_data, dcn_fsdp, dcn_model'),
    (dict(dcn_data=2), 'do not divide the 1 devices into slices'),
])
def test_mesh_errors(mesh, match):
  import jax  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match=match):
    sharding.make_mesh(mesh, jax.devices()[:1])
