"""Keras activations by name: coverage, values and gradients against Keras 3.

Keras runs on the JAX backend (tests/conftest.py), so ``keras.activations``
functions take and return JAX arrays and can be differentiated with
``jax.grad`` like ours.
"""

import inspect

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import flax_dense as fd
from flax_dense._src.ops.activations import (
  keras_activation,
  resolve_activation,
)

# Public functions of keras.activations that are not activations.
KERAS_HELPERS = {'deserialize', 'get', 'serialize'}

# Keras needs these; its ``threshold`` has no defaults.
REQUIRED = {'threshold': {'threshold': 0.3, 'default_value': -1.0}}

# Non-default values of every parameter of every activation that has some.
PARAMETERS = [
  ('celu', {'alpha': 0.5}),
  ('elu', {'alpha': 2.0}),
  ('gelu', {'approximate': True}),
  ('glu', {'axis': 0}),
  ('hard_shrink', {'threshold': 1.5}),
  ('leaky_relu', {'negative_slope': 0.1}),
  ('log_softmax', {'axis': 0}),
  ('relu', {'negative_slope': 0.1}),
  ('relu', {'max_value': 6.0}),
  ('relu', {'max_value': 1.5}),
  ('relu', {'threshold': 0.5}),
  ('relu', {'threshold': -0.5}),
  ('relu', {'negative_slope': 0.1, 'max_value': 1.5, 'threshold': 0.5}),
  ('relu', {'negative_slope': 0.3, 'max_value': 2.0, 'threshold': -0.5}),
  ('soft_shrink', {'threshold': 1.5}),
  ('softmax', {'axis': 0}),
  ('squareplus', {'b': 1.0}),
  ('threshold', {'threshold': -0.7, 'default_value': 2.0}),
]

# Functions we wrote ourselves rather than took from jax.nn, with parameters
# that move their kinks; their gradients are checked by finite differences.
OWN_FORMULAS = [
  ('hard_shrink', {}),
  ('relu', {'negative_slope': 0.1, 'max_value': 1.5, 'threshold': 0.5}),
  ('soft_shrink', {}),
  ('sparsemax', {}),
  ('sparsemax', {'axis': 0}),
  ('tanh_shrink', {}),
  ('threshold', {'threshold': 0.3, 'default_value': -1.0}),
]


def inputs(seed: int = 0) -> jax.Array:
  """(8, 16) float32: Gaussians at several scales plus extreme values.

  Row 0 holds large, tiny, zero and negative values; the last axis is even,
  as ``glu`` needs.
  """
  rng = np.random.default_rng(seed)
  scales = np.array([1.0, 0.1, 1.0, 3.0, 10.0, 30.0, 1e3, 1e-30])[:, None]
  x = (rng.normal(size=(8, 16)) * scales).astype(np.float32)
  x[0, :8] = [1e4, -1e4, 80, -80, 1e-30, -1e-30, 0, -0.0]
  x[0, 8:] = [-0.5, 0.5, -3, 3, -6, 6, -2.5, 88]
  return jnp.asarray(x)


def keras_names() -> set[str]:
  """Every name ``keras.activations.get`` accepts, from the public API."""
  names = {
    name
    for name in dir(keras.activations)
    if not name.startswith('_') and name not in KERAS_HELPERS
  }
  for name in names:
    assert callable(keras.activations.get(name)), name
  return names


def assert_matches(ours: jax.Array, reference: jax.Array) -> None:
  np.testing.assert_allclose(
    np.asarray(ours),
    np.asarray(reference),
    rtol=1e-6,
    atol=np.finfo(np.float32).tiny,
  )


def sparsemax_reference(x: np.ndarray, axis: int) -> np.ndarray:
  """Sparsemax in float64 by the definition, one slice at a time.

  The support is the largest ``k`` with ``1 + k z_(k) > z_(1) + ... +
  z_(k)`` for the entries ``z`` sorted in decreasing order.
  """
  x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
  outputs = np.empty_like(x)
  for index in np.ndindex(x.shape[:-1]):
    z = x[index]
    descending = sorted(z, reverse=True)
    cumulative = 0.0
    for k, value in enumerate(descending, start=1):
      cumulative += value
      if 1 + k * value > cumulative:
        support, support_sum = k, cumulative
    tau = (support_sum - 1) / support
    outputs[index] = np.maximum(z - tau, 0)
  return np.moveaxis(outputs, -1, axis)


def test_names_are_exactly_keras_names():
  assert set(fd.KERAS_ACTIVATIONS) == keras_names()


def test_every_activation_is_callable():
  for name, function in fd.KERAS_ACTIVATIONS.items():
    assert callable(function), name


@pytest.mark.parametrize('name', sorted(fd.KERAS_ACTIVATIONS))
def test_parameters_and_defaults_are_keras(name):
  def parameters(function):
    signature = inspect.signature(function).parameters.values()
    return [(p.name, p.default) for p in list(signature)[1:]]

  ours = parameters(fd.KERAS_ACTIVATIONS[name])
  assert ours == parameters(keras.activations.get(name))


@pytest.mark.parametrize(
  'name', sorted(set(fd.KERAS_ACTIVATIONS) - {'sparsemax'})
)
def test_values_match_keras(name):
  x = inputs()
  params = REQUIRED.get(name, {})
  ours = resolve_activation(name, 'test', **params)(x)
  assert ours.shape == keras.activations.get(name)(x, **params).shape
  assert ours.dtype == jnp.float32
  assert_matches(ours, keras.activations.get(name)(x, **params))


@pytest.mark.parametrize(
  'name, params', PARAMETERS, ids=[f'{n}-{p}' for n, p in PARAMETERS]
)
def test_values_with_parameters_match_keras(name, params):
  x = inputs(1)
  ours = keras_activation(name, **params)(x)
  assert_matches(ours, keras.activations.get(name)(x, **params))


@pytest.mark.parametrize(
  'name', sorted(set(fd.KERAS_ACTIVATIONS) - {'sparsemax'})
)
def test_gradients_match_keras(name):
  x = inputs(2)[1:6]  # away from overflow, where gradients are inf or nan
  params = REQUIRED.get(name, {})
  cotangent = jnp.asarray(np.random.default_rng(3).normal(size=x.shape))
  if name == 'glu':
    cotangent = cotangent[:, :8]

  def gradient(function):
    return jax.grad(lambda x: jnp.sum(function(x, **params) * cotangent))(x)

  ours = gradient(fd.KERAS_ACTIVATIONS[name])
  assert_matches(ours, gradient(keras.activations.get(name)))


@pytest.mark.parametrize('axis', [-1, 0, 1])
def test_sparsemax_matches_the_definition(axis):
  x = inputs(4)[1:6]  # where float32 cumulative sums are accurate
  ours = keras_activation('sparsemax', axis=axis)(x)
  np.testing.assert_allclose(
    ours, sparsemax_reference(x, axis), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(jnp.sum(ours, axis=axis), 1.0, rtol=1e-5)
  assert (np.asarray(ours) >= 0).all()


def test_sparsemax_spreads_over_ties():
  ours = keras_activation('sparsemax')(jnp.array([[0.0, 0.5, 1.0], [2, 2, 2]]))
  np.testing.assert_allclose(
    ours, [[0.0, 0.25, 0.75], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6
  )


def test_sparsemax_matches_keras_on_a_support_of_one():
  # Keras 3.15 computes the threshold wrongly when the support has more
  # than one entry (keras-team/keras#23425); with a gap above 1 between the
  # largest entry and the others both give a one-hot output.
  rng = np.random.default_rng(5)
  x = rng.normal(size=(6, 16)).astype(np.float32)
  x[np.arange(6), rng.integers(0, 16, size=6)] += 8.0
  x[0, :3] = [1e4, -1e4, 1e-30]
  x = jnp.asarray(x)
  ours = fd.KERAS_ACTIVATIONS['sparsemax'](x)
  np.testing.assert_array_equal(ours.sum(-1), 1.0)
  assert_matches(ours, keras.activations.get('sparsemax')(x))


@pytest.mark.parametrize(
  'name, params', OWN_FORMULAS, ids=[f'{n}-{p}' for n, p in OWN_FORMULAS]
)
def test_own_formulas_have_correct_gradients(name, params):
  # Gaussian inputs moved at least 0.01 from the kinks of every function
  # here (sparsemax's kinks, where the support changes, are not near them).
  x = np.asarray(inputs(6)[2:4, :6], np.float64)
  kinks = np.array([-1.5, -0.5, 0.3, 0.5, 1.5, 2.0])
  near = np.min(np.abs(x[..., None] - kinks), axis=-1) < 1e-2
  x = np.where(near, x + 0.05, x)
  function = jax.jit(keras_activation(name, **params))
  # First order: all but tanh_shrink are piecewise linear, so have no second
  # derivative to check, and tanh_shrink is x minus jnp.tanh.
  with jax.enable_x64(True):
    check_grads(function, (x,), order=1, eps=1e-4)


@pytest.mark.parametrize('name', sorted(fd.KERAS_ACTIVATIONS))
def test_jit_and_vmap(name):
  function = keras_activation(name, **REQUIRED.get(name, {}))
  x = inputs(7)[1:5]
  eager = function(x)
  np.testing.assert_allclose(jax.jit(function)(x), eager, rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(function)(x), eager, rtol=1e-6)


def test_names_are_case_insensitive():
  function = resolve_activation('Leaky_ReLU', 'test', negative_slope=0.1)
  np.testing.assert_allclose(function(jnp.array([-2.0])), [-0.2], rtol=1e-6)


def test_none_is_the_identity():
  x = inputs()
  assert resolve_activation(None, 'test')(x) is x


def test_a_callable_is_returned_as_it_is():
  assert resolve_activation(jnp.sin, 'test') is jnp.sin


def test_keras_activation_as_a_layer_activation(key):
  leaky = keras_activation('leaky_relu', negative_slope=0.1)
  x = inputs()[1:3].reshape(2, 4, 4)
  expected = keras.activations.leaky_relu(x, negative_slope=0.1)
  assert_matches(fd.Activation(leaky).apply({}, x), expected)
  assert_matches(fd.nnx.Activation(leaky)(x), expected)

  layer = fd.PerPositionDense(3, activation=leaky)
  variables = layer.init(key, x)
  linear = fd.PerPositionDense(3).apply(variables, x)
  assert_matches(layer.apply(variables, x), keras.ops.leaky_relu(linear, 0.1))

  module = fd.nnx.PerPositionDense(4, 4, 3, activation=leaky, rngs=nnx.Rngs(0))
  linear = fd.nnx.PerPositionDense(4, 4, 3, rngs=nnx.Rngs(0))(x)
  assert_matches(module(x), keras.ops.leaky_relu(linear, 0.1))


def test_unknown_name():
  with pytest.raises(
    ValueError,
    match=r"^Dense: unknown activation 'softmaxx'; expected a callable or"
    r' one of: celu, .*, softmax, .*threshold\.',
  ):
    resolve_activation('softmaxx', 'Dense')


def test_unknown_parameter():
  with pytest.raises(
    ValueError,
    match=r"^Activation: activation 'leaky_relu' has no parameter 'slope';"
    r" it accepts 'negative_slope'\.$",
  ):
    resolve_activation('leaky_relu', 'Activation', slope=0.1)


def test_unknown_parameters_list_the_accepted_ones():
  with pytest.raises(
    ValueError,
    match=r"^keras_activation: activation 'relu' has no parameter 'alpha',"
    r" 'x'; it accepts 'negative_slope', 'max_value', 'threshold'\.$",
  ):
    keras_activation('relu', x=1.0, alpha=0.5, threshold=0.1)


def test_parameter_of_an_activation_without_parameters():
  with pytest.raises(
    ValueError,
    match=r"^Activation: activation 'tanh' has no parameter 'axis'; it takes"
    r' no parameters\.',
  ):
    resolve_activation('tanh', 'Activation', axis=0)


def test_threshold_needs_its_parameters():
  with pytest.raises(
    ValueError,
    match=r"^Activation: activation 'threshold' needs the parameters"
    r" 'threshold', 'default_value', which have no default; got none\.$",
  ):
    resolve_activation('threshold', 'Activation')
  with pytest.raises(
    ValueError,
    match=r"needs the parameters 'default_value', which have no default;"
    r" got 'threshold'\.$",
  ):
    keras_activation('threshold', threshold=0.0)


@pytest.mark.parametrize('activation', [None, jnp.sin])
def test_parameters_need_a_name(activation):
  with pytest.raises(
    ValueError,
    match=r"^Activation: activation parameters \['axis'\] apply to a Keras"
    r' activation name, got activation .*; bind the parameters of your own'
    r' function with functools\.partial\.',
  ):
    resolve_activation(activation, 'Activation', axis=0)


@pytest.mark.parametrize('activation', [3, 0.5, b'relu'])
def test_activation_of_wrong_type(activation):
  message = (
    r'^Activation: activation must be None, a callable or a Keras name, got'
    rf' .* of type {type(activation).__name__}\.'
  )
  with pytest.raises(TypeError, match=message):
    resolve_activation(activation, 'Activation')
  with pytest.raises(TypeError, match=message):
    fd.Activation(activation).apply({}, jnp.ones(3))
  with pytest.raises(TypeError, match=message):
    fd.nnx.Activation(activation)


def test_layer_activation_of_wrong_type(key):
  with pytest.raises(
    TypeError,
    match=r'^PerPositionDense: activation must be None, a callable or a'
    r' Keras name, got 3 of type int\.',
  ):
    fd.PerPositionDense(3, activation=3).init(key, jnp.ones((2, 3, 4)))


def test_keras_activation_needs_a_name():
  with pytest.raises(
    TypeError,
    match=r'^keras_activation: name must be a Keras activation name \(a'
    r' string\), got None of type NoneType\.',
  ):
    keras_activation(None)


def test_activation_layers_take_keras_parameters():
  x = np.linspace(-3.0, 3.0, 13, dtype=np.float32)[None]
  expected = np.asarray(keras.activations.leaky_relu(x, negative_slope=0.1))
  linen = fd.Activation('leaky_relu', {'negative_slope': 0.1})
  np.testing.assert_array_equal(linen.apply({}, x), expected)
  hash(linen)  # hashable, so usable as a static argument
  np.testing.assert_array_equal(
    fd.nnx.Activation('leaky_relu', {'negative_slope': 0.1})(x), expected
  )
  layer = fd.PerPositionDense(2, activation=fd.keras_activation('elu', alpha=2))
  y = layer.apply(layer.init(jax.random.key(0), x[..., None]), x[..., None])
  assert float(y.min()) >= -2.0 and float(y.min()) < -1.0


def test_activation_layers_reject_unknown_parameters():
  message = r"Activation: activation 'leaky_relu' has no parameter 'slope'"
  with pytest.raises(ValueError, match=message):
    fd.Activation('leaky_relu', {'slope': 0.1}).apply({}, jnp.ones(2))
  with pytest.raises(ValueError, match=message):
    fd.nnx.Activation('leaky_relu', {'slope': 0.1})


def test_bound_activation_is_one_object_per_parameters():
  # The layers' jitted ops take the activation as a static argument: a new
  # object at every call would compile them again.
  assert fd.keras_activation('elu', alpha=2) is fd.keras_activation(
    'elu', alpha=2
  )
  assert fd.keras_activation('elu', alpha=2) is not fd.keras_activation(
    'elu', alpha=3
  )
