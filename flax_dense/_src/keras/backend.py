"""Keras, imported when a function needs it: ``import_keras``."""

from typing import Any


def import_keras(caller: str, *, jax_backend: bool = True) -> Any:
  """Keras 3 (on the JAX backend, if ``jax_backend``), or our own error
  saying what to do.

  Raises:
    ImportError: without Keras 3.
    RuntimeError: if ``jax_backend`` and Keras runs on another backend.
  """
  try:
    import keras
  except ImportError as error:
    raise ImportError(
      f'{caller} needs Keras 3, an optional dependency: pip install'
      " 'flax_dense[keras]'."
    ) from error
  if int(keras.__version__.split('.')[0]) < 3:
    raise ImportError(
      f'{caller} needs Keras 3, found Keras {keras.__version__}: pip install'
      " 'flax_dense[keras]'."
    )
  backend = keras.backend.backend()
  if jax_backend and backend != 'jax':
    raise RuntimeError(
      f"{caller} needs Keras's JAX backend, but Keras runs on {backend!r}:"
      ' set the environment variable KERAS_BACKEND=jax before Keras is first'
      ' imported (or "backend": "jax" in ~/.keras/keras.json).'
    )
  return keras
