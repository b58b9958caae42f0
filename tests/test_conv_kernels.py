"""oneDNN's convolution weight gradient (models/kernels) equals XLA's, and
the reshape max-pool equals nn.max_pool; both fall back where they do not
apply."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import normal
from jax import lax

from core.errors import ConfigError
from models import build
from models import layers
from models.kernels import onednn

needs_onednn = pytest.mark.skipif(
    not onednn.available(),
    reason=f'oneDNN kernel unavailable: {onednn.unavailable_reason()} '
    '(apt-get install libdnnl-dev g++)')

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _grads(conv, x, w, strides, padding):
  def loss(x, w):
    y = conv(x, w, strides, padding, dimension_numbers=NHWC)
    return jnp.sum(jnp.sin(y) * jnp.arange(y.size).reshape(y.shape) / y.size)
  return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)


@pytest.mark.slow
@needs_onednn
@pytest.mark.parametrize('batch,size,cin,cout,kernel,stride,padding', [
    (8, 32, 16, 16, 3, 1, 'SAME'),      # a CIFAR ResNet block
    (8, 32, 16, 32, 3, 2, 'SAME'),      # a stage's first block
    (4, 32, 16, 32, 1, 2, 'SAME'),      # its projection shortcut
    (2, 33, 3, 8, 7, 2, 'SAME'),        # an ImageNet stem, odd size
    (3, 15, 5, 7, 3, 2, 'VALID'),
    (2, 9, 3, 4, 3, 1, ((1, 2), (0, 1))),
    (8, 16, 32, 32, 3, 1, 'SAME'),      # Winograd: a second-stage block
    (3, 9, 48, 40, 3, 1, 'VALID'),      # Winograd, channels not x16
])
def test_gradients_equal_xla(batch, size, cin, cout, kernel, stride, padding):
  x = normal((batch + size + cout, 0), (batch, size, size, cin))
  w = normal((batch + size + cout, 1), (kernel, kernel, cin, cout))
  expected = _grads(lax.conv_general_dilated, x, w, (stride, stride), padding)
  got = _grads(onednn.conv_general_dilated, x, w, (stride, stride), padding)
  # Winograd's transforms round about twice as much as a direct sum (its
  # relative error here is 1-2e-5, the direct kernels' under 1e-5).
  winograd = onednn._layout(w.shape, (stride, stride)) == 2
  for e, g in zip(expected, got):
    assert float(jnp.max(jnp.abs(e))) > 0
    np.testing.assert_allclose(g, e, rtol=0, atol=(5e-5 if winograd else 2e-5)
                               * float(jnp.max(jnp.abs(e))))


@pytest.mark.slow
@needs_onednn
@pytest.mark.parametrize('cin,cout,kernel,stride', [
    (4, 8, 1, 2),     # oneDNN 2.6's own strided 1x1 weight gradient
    (3, 4, 1, 3),     # (jit_1x1:avx2) was wrong on the first of these
    (1, 16, 3, 2), (8, 4, 3, 1)])
def test_repeated_calls_equal_xla(cin, cout, kernel, stride):
  # One program called on 20 inputs: a kernel that reads or writes outside
  # its buffers gives wrong numbers on some of them (14 of 20 on the first
  # case before the strided 1x1 convolution took the subsampled input).
  def grads(conv):
    def loss(x, w):
      y = conv(x, w, (stride, stride), 'SAME', dimension_numbers=NHWC)
      return jnp.sum(jnp.sin(y) * jnp.arange(y.size).reshape(y.shape))
    return jax.jit(jax.grad(loss, argnums=(0, 1)))
  expected, got = grads(lax.conv_general_dilated), grads(
      onednn.conv_general_dilated)
  w = normal(cout, (kernel, kernel, cin, cout))
  for seed in range(20):
    x = normal(seed, (2, 8, 8, cin))
    for e, g in zip(expected(x, w), got(x, w)):
      np.testing.assert_allclose(g, e, rtol=0,
                                 atol=2e-5 * float(jnp.max(jnp.abs(e))))


@needs_onednn
@pytest.mark.parametrize('layout', ['nhwc', 'blocked', 'winograd'])
@pytest.mark.parametrize('stride,cin', [(1, 32), (2, 32), (1, 16)])
def test_every_layout_computes_the_same_convolution(monkeypatch, layout,
                                                    stride, cin):
  """DISTILL_ONEDNN_LAYOUT forces one kind of kernel; Winograd where the
  shape has none (stride 2) is the direct kernel."""
  monkeypatch.setenv('DISTILL_ONEDNN_LAYOUT', layout)
  x = normal((stride + cin, 0), (4, 12, 12, cin))
  w = normal((stride + cin, 1), (3, 3, cin, 32))
  expected = _grads(lax.conv_general_dilated, x, w, (stride, stride), 'SAME')
  got = _grads(onednn.conv_general_dilated, x, w, (stride, stride), 'SAME')
  for e, g in zip(expected, got):
    np.testing.assert_allclose(g, e, rtol=0,
                               atol=5e-5 * float(jnp.max(jnp.abs(e))))


@pytest.mark.slow
@needs_onednn
def test_winograd_asked_where_the_library_has_none_runs_direct(monkeypatch):
  """The library falls back to its direct kernel where oneDNN has no
  Winograd one (here a strided 5x5; on CPUs without AVX-512, every one)."""
  monkeypatch.setenv('DISTILL_ONEDNN_LAYOUT', 'winograd')
  monkeypatch.setattr(onednn, 'winograd_shape', lambda *_: True)
  x = normal((5, 0), (2, 11, 11, 8))
  w = normal((5, 1), (5, 5, 8, 8))
  expected = _grads(lax.conv_general_dilated, x, w, (2, 2), 'SAME')
  got = _grads(onednn.conv_general_dilated, x, w, (2, 2), 'SAME')
  for e, g in zip(expected, got):
    np.testing.assert_allclose(g, e, rtol=0,
                               atol=2e-5 * float(jnp.max(jnp.abs(e))))


def test_winograd_only_where_it_was_measured_faster(monkeypatch):
  monkeypatch.delenv('DISTILL_ONEDNN_LAYOUT', raising=False)
  layout = onednn._layout
  assert layout((3, 3, 32, 32), (1, 1)) == onednn.LAYOUT['winograd']
  assert layout((3, 3, 64, 128), (1, 1)) == onednn.LAYOUT['winograd']
  assert layout((3, 3, 16, 16), (1, 1)) == onednn.LAYOUT['nhwc']   # few
  assert layout((3, 3, 16, 32), (1, 1)) == onednn.LAYOUT['nhwc']   # channels
  assert layout((3, 3, 32, 32), (2, 2)) == onednn.LAYOUT['nhwc']   # strided
  assert layout((1, 1, 64, 64), (1, 1)) == onednn.LAYOUT['nhwc']   # 1x1
  monkeypatch.setenv('DISTILL_ONEDNN_LAYOUT', 'winograd')
  assert layout((3, 3, 16, 16), (1, 1)) == onednn.LAYOUT['winograd']
  assert layout((1, 1, 16, 16), (1, 1)) == onednn.LAYOUT['nhwc']
  monkeypatch.setenv('DISTILL_ONEDNN_LAYOUT', 'fast')
  with pytest.raises(ValueError, match=r"'fast'.*valid choices: auto, nhwc"):
    layout((3, 3, 32, 32), (1, 1))


def _grad_jaxpr(conv, x, w):
  return str(jax.make_jaxpr(jax.grad(lambda w: conv(
      x, w, (1, 1), 'SAME', dimension_numbers=NHWC).sum()))(w))


@needs_onednn
def test_the_weight_gradient_is_the_library_call():
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
  assert 'ffi_call' in _grad_jaxpr(onednn.conv_general_dilated, x, w)
  assert 'ffi_call' not in _grad_jaxpr(lax.conv_general_dilated, x, w)


@pytest.mark.parametrize('x_shape,w_shape,dtype', [
    ((2, 16, 4), (3, 4, 4), jnp.float32),            # 1-D (mnist1d)
    ((2, 8, 8, 4), (3, 3, 4, 4), jnp.bfloat16),
])
def test_falls_back_to_xla_where_it_does_not_apply(x_shape, w_shape, dtype):
  x, w = jnp.ones(x_shape, dtype), jnp.ones(w_shape, dtype)
  dn = ('NWC', 'WIO', 'NWC') if len(x_shape) == 3 else NHWC
  f = lambda w: onednn.conv_general_dilated(
      x, w, (1,) * (len(x_shape) - 2), 'SAME', dimension_numbers=dn).sum()
  assert 'ffi_call' not in str(jax.make_jaxpr(jax.grad(f))(w))
  g = lambda w: lax.conv_general_dilated(
      x, w, (1,) * (len(x_shape) - 2), 'SAME', dimension_numbers=dn).sum()
  np.testing.assert_array_equal(jax.grad(f)(w), jax.grad(g)(w))


def _resnet_grads(conv):
  model = build('resnet', num_classes=10, depth=8, conv=conv)
  x = normal(0, (4, 16, 16, 3))
  variables = model.init(jax.random.PRNGKey(1), x)

  def loss(params):
    logits, _ = model.apply({**variables, 'params': params}, x, train=True,
                            mutable=['batch_stats'])
    return jnp.mean(jax.nn.log_softmax(logits)[:, 3])
  return jax.jit(jax.grad(loss))(variables['params'])


@pytest.mark.slow
@needs_onednn
def test_a_resnet_trains_with_the_same_gradients():
  expected, got = _resnet_grads('xla'), _resnet_grads('onednn')
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_leaves_with_path(expected)]
  assert jax.tree.structure(expected) == jax.tree.structure(got)
  assert any('kernel' in p for p in paths)
  for path, e, g in zip(paths, jax.tree.leaves(expected),
                        jax.tree.leaves(got)):
    np.testing.assert_allclose(g, e, rtol=0, atol=1e-4 * (
        float(jnp.max(jnp.abs(e))) + 1e-6), err_msg=path)


def test_unknown_or_unavailable_implementation_is_one_line(monkeypatch):
  with pytest.raises(ConfigError, match=r'model.conv.*valid choices'):
    build('resnet', num_classes=10, depth=8, conv='cudnn')
  monkeypatch.setitem(onednn._STATE, 'ok', False)
  monkeypatch.setitem(onednn._STATE, 'reason', 'no C++ compiler')
  with pytest.raises(ConfigError, match=r'no C\+\+ compiler.*valid choices'):
    build('resnet', num_classes=10, depth=8, conv='onednn')
  # auto then runs XLA's convolution
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
  assert 'ffi_call' not in _grad_jaxpr(layers.conv_function('auto'), x, w)


@pytest.mark.slow
@pytest.mark.parametrize('impl', ['xla', 'auto'])
@pytest.mark.parametrize('shape,window', [
    ((3, 8, 8, 5), (2, 2)), ((2, 12, 4), (2,)), ((2, 6, 9, 3), (3, 3)),
    ((4, 16, 16, 32), (2, 2)), ((2, 8, 12, 3), (2, 4))])
def test_max_pool_equals_flax(shape, window, impl):
  """The reshape max-pool and (model.conv auto, 2-D, where built) the library's
  equal nn.max_pool's output and gradient exactly (no ties here)."""
  x = normal(0, shape)  # no ties
  ours = jax.jit(lambda x: layers.max_pool(x, window, kernels=_kernels(impl)))
  flax_ = lambda x: nn.max_pool(x, window, strides=window)
  np.testing.assert_array_equal(ours(x), flax_(x))
  weights = normal(1, ours(x).shape)
  grad = lambda f: jax.jit(jax.grad(lambda x: jnp.sum(f(x) * weights)))(x)
  np.testing.assert_array_equal(grad(ours), grad(flax_))
  library = impl == 'auto' and len(window) == 2 and onednn.available()
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(ours(x))))(x))
  assert (onednn._POOL_TARGETS['backward'] in jaxpr) == library


@needs_onednn
def test_library_max_pool_gives_a_tie_s_gradient_to_its_first_maximum():
  x = jnp.zeros((1, 2, 2, 1)).at[0, 1, 0, 0].set(1.0).at[0, 1, 1, 0].set(1.0)
  pool = lambda x: layers.max_pool(x, (2, 2), kernels=_kernels('auto'))
  g = jax.grad(lambda x: jnp.sum(pool(x)))(x)
  np.testing.assert_array_equal(g[0, :, :, 0], [[0, 0], [1, 0]])
  np.testing.assert_array_equal(
      pool(x), [[[[1.0]]]])


def test_max_pool_falls_back_when_windows_do_not_tile():
  x = normal(0, (2, 7, 7, 3))
  np.testing.assert_array_equal(layers.max_pool(x, (2, 2)),
                                nn.max_pool(x, (2, 2), strides=(2, 2)))


@pytest.mark.slow
@needs_onednn
@pytest.mark.parametrize('batch,size,cin,cout,kernel,stride', [
    (4, 16, 16, 32, 3, 2), (3, 9, 3, 8, 3, 1), (2, 8, 8, 4, 1, 1)])
def test_forward_equals_xla_and_all_three_are_library_calls(
    batch, size, cin, cout, kernel, stride):
  x = normal((size, 0), (batch, size, size, cin))
  w = normal((size, 1), (kernel, kernel, cin, cout))
  conv = lambda f: jax.jit(lambda x, w: f(
      x, w, (stride, stride), 'SAME', dimension_numbers=NHWC))
  expected = conv(lax.conv_general_dilated)(x, w)
  got = conv(onednn.conv_general_dilated)(x, w)
  np.testing.assert_allclose(got, expected, rtol=0,
                             atol=2e-5 * float(jnp.max(jnp.abs(expected))))
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda x, w: onednn.conv_general_dilated(
      x, w, (stride, stride), 'SAME', dimension_numbers=NHWC).sum(),
      argnums=(0, 1)))(x, w))
  for target in onednn._TARGETS.values():
    assert target in jaxpr
  assert 'conv_general_dilated' not in jaxpr


@needs_onednn
def test_negative_padding_falls_back_to_xla():
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
  f = lambda x: onednn.conv_general_dilated(
      x, w, (1, 1), ((-1, 0), (0, 0)), dimension_numbers=NHWC)
  assert 'ffi_call' not in str(jax.make_jaxpr(f)(x))


def _kernels(impl):
  return layers.kernels_for(impl)


def _bn_run(impl, x, train=True, add=False, relu=False):
  """Output, new batch stats, gradients (params, x, residual) and the
  gradient's jaxpr of relu?(residual? + BN(x)) by `impl`."""
  bn = layers.batch_norm(train, kernels=_kernels(impl))
  variables = bn.init(jax.random.PRNGKey(0), x)
  params = {'scale': jnp.linspace(0.5, 1.5, x.shape[-1]),
            'bias': jnp.linspace(-1.0, 1.0, x.shape[-1])}
  weights = normal(3, x.shape)
  residual = normal(4, x.shape)

  def loss(params, x, residual):
    y, new = bn.apply({**variables, 'params': params}, x, mutable=[
        'batch_stats'], residual=residual if add else None, relu=relu)
    return jnp.sum(jnp.sin(y) * weights), (y, new)
  (_, (y, new)), grads = jax.jit(jax.value_and_grad(
      loss, argnums=(0, 1, 2), has_aux=True))(params, x, residual)
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: loss(p, x, residual)[0]))(
      params))
  return y, new, grads, jaxpr


@pytest.mark.slow
@needs_onednn
@pytest.mark.parametrize('shape', [(8, 6, 6, 5), (3, 4, 7, 16)])
@pytest.mark.parametrize('add,relu', [(False, False), (False, True),
                                      (True, False), (True, True)])
def test_batch_norm_equals_flax(shape, add, relu):
  """Output, batch stats and the gradients in the parameters, x and the
  residual, with the residual add and ReLU fused or not."""
  x = normal(1, shape) * 3 + 2
  y0, s0, g0, j0 = _bn_run('xla', x, add=add, relu=relu)
  y1, s1, g1, j1 = _bn_run('auto', x, add=add, relu=relu)
  assert 'ffi_call' not in j0 and onednn._BN_TARGETS['backward'] in j1
  if relu:      # the ReLU is the library's: XLA applies none
    assert 'max' not in j1 and 'max' in j0
    assert float(jnp.mean(y0 == 0)) > 0.1       # the mask matters
  tol = lambda e: dict(rtol=0, atol=1e-5 * (float(jnp.max(jnp.abs(e))) + 1))
  np.testing.assert_allclose(y1, y0, **tol(y0))
  for e, g in zip(jax.tree.leaves((s0, g0)), jax.tree.leaves((s1, g1))):
    np.testing.assert_allclose(g, e, **tol(e))
  # evaluation (running averages) is flax's own
  assert 'ffi_call' not in str(jax.make_jaxpr(
      lambda x: layers.batch_norm(False, kernels=_kernels('auto')).apply(
          layers.batch_norm(False).init(jax.random.PRNGKey(0), x), x))(x))


@needs_onednn
def test_batch_norm_across_devices_is_xla_s(monkeypatch):
  """A batch split over several devices needs statistics across them:
  the fused batch norm applies only to a batch on one device."""
  x = jnp.ones((4, 4, 4, 3))
  assert onednn.batch_norm_applies(x)
  mesh = jax.sharding.AbstractMesh((2,), ('data',))
  with jax.sharding.use_abstract_mesh(mesh):
    assert not onednn.batch_norm_applies(x)
  assert not onednn.batch_norm_applies(x.astype(jnp.bfloat16))
  assert not onednn.batch_norm_applies(jnp.ones((4, 4, 3)))


def test_threads_per_call_shares_the_cores(monkeypatch):
  monkeypatch.delenv('DISTILL_ONEDNN_THREADS', raising=False)
  monkeypatch.setattr(onednn.os, 'sched_getaffinity', lambda _: {0, 1, 2, 3},
                      raising=False)
  assert [onednn.threads_per_call(d) for d in (1, 2, 4, 8)] == [4, 2, 1, 1]
  monkeypatch.setenv('DISTILL_ONEDNN_THREADS', '3')
  assert onednn.threads_per_call(8) == 3


@needs_onednn
def test_flops_count_the_library_calls_sharded_or_not():
  from distill import flops  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  x = jax.ShapeDtypeStruct((8, 16, 16, 4), jnp.float32)
  w = jax.ShapeDtypeStruct((3, 3, 4, 6), jnp.float32)
  hand = 2 * 8 * 16 * 16 * 6 * 3 * 3 * 4

  def loss(x, w, spec):
    return onednn.conv_general_dilated(x, w, (1, 1), 'SAME',
                                       dimension_numbers=NHWC,
                                       input_spec=spec).sum()
  assert flops.of(lambda x, w: loss(x, w, None), x, w) == hand
  grad = lambda spec: lambda x, w: jax.grad(loss, argnums=(0, 1))(x, w, spec)
  assert flops.of(grad(None), x, w) == 3 * hand       # forward + 2 gradients
  with jax.sharding.use_abstract_mesh(
      jax.sharding.AbstractMesh((2,), ('data',))):
    assert flops.of(grad(P('data')), x, w) == 3 * hand


def test_describe_does_not_build_the_library(monkeypatch):
  """Every CPU run's manifest calls it: a run without convolutions must not
  pay the compile."""
  monkeypatch.setattr(onednn, '_STATE', {})
  monkeypatch.setattr(onednn, '_load', lambda: pytest.fail('built'))
  monkeypatch.setattr(onednn, 'can_build', lambda: True)
  assert onednn.describe().startswith('oneDNN convolutions (Winograd')
  monkeypatch.setattr(onednn, 'can_build', lambda: False)
  assert onednn.describe().startswith('XLA (')
