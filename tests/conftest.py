"""Test configuration: loud failures for silent broadcasting, Keras on JAX.

Also the fixtures the test modules share (they never import each other;
the table of layer cases is tests/cases.py).
"""

import contextlib
import os

os.environ.setdefault('KERAS_BACKEND', 'jax')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

jax.config.update('jax_numpy_rank_promotion', 'raise')


@pytest.fixture
def key():
  return jax.random.key(0)


@pytest.fixture(params=['linen', 'nnx'])
def api(request):
  """The front end a test runs on: 'linen' or 'nnx'."""
  return request.param


def _build(case, api, inputs=None, key=None):
  """``case``'s layer made on ``api``, ready to call.

  Returns ``(call, state)``: ``call(*inputs)`` runs the layer (in training
  mode, drawing from ``key``, if the case drops units), and ``state`` is
  the linen variables or the NNX module. Linen modules are initialised on
  ``inputs`` (the case's example inputs by default); NNX modules are made
  by the case's NNX constructor with ``nnx.Rngs(0, dropout=1)``.
  """
  key = jax.random.key(1) if key is None else key
  if api == 'linen':
    module = case.linen()
    inputs = case.inputs() if inputs is None else inputs
    kwargs = case.linen_kwargs(key)
    variables = module.init(jax.random.key(0), *inputs, **kwargs)
    return (lambda *x: module.apply(variables, *x, **kwargs)), variables
  if api == 'nnx':
    model = case.nnx(nnx.Rngs(0, dropout=1))
    return model, model
  raise ValueError(f"api must be 'linen' or 'nnx', got {api!r}")


@pytest.fixture
def build():
  """``build(case, api, inputs=None, key=None) -> (call, state)``."""
  return _build


@pytest.fixture
def keras_allowed():
  """A context manager factory: Keras's own code needs rank promotion."""
  return lambda: jax.numpy_rank_promotion('allow')


@pytest.fixture
def keras_model(keras_allowed):
  """``keras_model(make_model, seed=0)``: a Keras model from ``make_model``
  with random weights, biases included."""

  def build(make_model, seed=0):
    with keras_allowed():
      model = make_model()
    rng = np.random.default_rng(seed)
    model.set_weights(
      [rng.normal(size=w.shape).astype('float32') for w in model.get_weights()]
    )
    return model

  return build


_COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
  lambda event, duration, **kwargs: (
    _COMPILES.append(event)
    if event == '/jax/core/compile/backend_compile_duration'
    else None
  )
)


@contextlib.contextmanager
def _count_compiles():
  start = len(_COMPILES)
  counted: list[str] = []
  yield counted
  counted.extend(_COMPILES[start:])


@pytest.fixture
def count_compiles():
  """A context manager yielding a list whose length, after the block, is
  the number of backend compiles in it."""
  return _count_compiles


@pytest.fixture
def keras_call(keras_allowed):
  """``keras_call(layer, *args, **kwargs)``: a Keras layer's call, with the
  rank promotion Keras's own code needs."""

  def call(layer, *args, **kwargs):
    with keras_allowed():
      return layer(*args, **kwargs)

  return call


def _tree_close(actual, expected, rtol=1e-5, atol=2e-6):
  actual, expected = jax.tree.leaves(actual), jax.tree.leaves(expected)
  assert len(actual) == len(expected), (len(actual), len(expected))
  for a, e in zip(actual, expected, strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol, atol)


@pytest.fixture
def tree_close():
  """``tree_close(actual, expected, rtol=1e-5, atol=2e-6)``: the same
  number of leaves, each close to its twin."""
  return _tree_close


def _linear_loss(probe, seed=2):
  rng = np.random.default_rng(seed)
  cotangents = [
    rng.normal(size=np.shape(leaf)) for leaf in jax.tree.leaves(probe)
  ]

  def loss(outputs):
    leaves = jax.tree.leaves(outputs)
    return sum(
      jnp.sum(leaf * c) for leaf, c in zip(leaves, cotangents, strict=True)
    )

  return loss


@pytest.fixture
def linear_loss():
  """``linear_loss(probe) -> loss``: ``loss(outputs)`` is a fixed random
  linear function of outputs shaped like ``probe``'s leaves (their sum
  weighted by normal values), so that its gradients pull every output."""
  return _linear_loss
