"""Doctests run as a user runs the library: JAX's default rank promotion.

``tests/conftest.py`` makes silent broadcasting raise for the test suite.
Keras's own layers, which some doctests call, broadcast on purpose, so the
doctests under ``flax_dense/`` run with promotion allowed.
"""

import os

os.environ.setdefault('KERAS_BACKEND', 'jax')

import jax  # noqa: E402
import pytest  # noqa: E402
from _pytest.doctest import DoctestItem  # noqa: E402


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
  if isinstance(item, DoctestItem):
    with jax.numpy_rank_promotion('allow'):
      return (yield)
  return (yield)
