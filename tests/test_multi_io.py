"""MultiIODense: two inputs, two outputs, against NumPy and in summaries."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import flax_dense as fd
from flax_dense.functional import multi_io_dense


@pytest.mark.parametrize(
  'batch_shape,in_features,features', [((5,), 3, 4), ((2, 3), 1, 2), ((), 4, 3)]
)
def test_matches_numpy(batch_shape, in_features, features, key):
  a_key, b_key, init_key = jax.random.split(key, 3)
  a = jax.random.normal(a_key, (*batch_shape, in_features))
  b = jax.random.normal(b_key, (*batch_shape, features))
  layer = fd.MultiIODense(features)
  variables = layer.init(init_key, a, b)
  kernel = np.asarray(variables['params']['kernel'], np.float64)
  assert kernel.shape == (in_features, features)
  assert np.all(np.abs(kernel) <= 0.05)  # the tutorial's uniform initializer.
  projected, mean = layer.apply(variables, a, b)
  a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
  np.testing.assert_allclose(projected, a64 @ kernel + b64, rtol=1e-5)
  np.testing.assert_allclose(mean, b64.mean(-1), rtol=1e-5, atol=1e-7)
  assert projected.shape == (*batch_shape, features)
  assert mean.shape == batch_shape


def test_jit_and_gradients(key):
  a = jax.random.normal(key, (4, 3))
  b = jnp.arange(8.0).reshape(4, 2)
  layer = fd.MultiIODense(2)
  variables = layer.init(key, a, b)
  outputs = layer.apply(variables, a, b)
  jitted = jax.jit(layer.apply)(variables, a, b)
  jax.tree.map(np.testing.assert_allclose, jitted, outputs)
  kernel = variables['params']['kernel']
  check_grads(
    lambda a, b, kernel: multi_io_dense(a, b, kernel),
    (a[0], b[0], kernel),
    order=1,
  )


def test_summary_lists_both_outputs():
  a, b = jnp.ones((8, 3)), jnp.ones((8, 4))
  info = fd.summary(fd.MultiIODense(4), a, b)
  assert info.rows[0].output_shape == ((8, 4), (8,))
  assert info.total_params == 12
  assert '(8, 4), (8,)' in str(info)


@pytest.mark.parametrize(
  'features,a_shape,b_shape,message',
  [
    (0, (2, 3), (2, 4), 'MultiIODense: features must be a positive integer'),
    (4, (), (4,), 'rank >= 1, got shapes () and (4,)'),
    (4, (2, 3), (2, 5), 'b must have shape (..., 4)'),
    (4, (2, 3), (3, 4), 'same leading (batch) axes, got shapes (2, 3) and'),
  ],
)
def test_errors(features, a_shape, b_shape, message, key):
  layer = fd.MultiIODense(features)
  with pytest.raises(ValueError, match=re.escape(message)):
    layer.init(key, jnp.ones(a_shape), jnp.ones(b_shape))


def test_error_on_features_other_than_built(key):
  layer = fd.MultiIODense(2)
  variables = layer.init(key, jnp.ones((1, 3)), jnp.ones((1, 2)))
  message = (
    'MultiIODense: a of shape (1, 5) has 5 features and needs a kernel of'
    ' shape (5, 2) (in_features, features), but the kernel was built with'
    ' shape (3, 2).'
  )
  with pytest.raises(ValueError, match=re.escape(message)):
    layer.apply(variables, jnp.ones((1, 5)), jnp.ones((1, 2)))
