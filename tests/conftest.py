"""Test configuration: loud failures for silent broadcasting, Keras on JAX."""

import os

os.environ.setdefault('KERAS_BACKEND', 'jax')

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update('jax_numpy_rank_promotion', 'raise')


@pytest.fixture
def key():
  return jax.random.key(0)
