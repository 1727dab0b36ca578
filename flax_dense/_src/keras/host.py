"""flax_dense modules inside Keras 3: ``fd.to_keras``.

:func:`to_keras` hosts a Flax module (a flax_dense layer, an imported model,
or a user's linen model built from them) as one Keras layer whose weights
are Keras variables: Keras trains it, saves it and serves it. Keras is
imported only when it is called; the Keras-side classes live in
:mod:`flax_dense._src.keras.objects`.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import numpy as np
from flax import nnx

from flax_dense._src.convert import linen_form
from flax_dense._src.keras import config as hosting
from flax_dense._src.keras.backend import import_keras


def to_keras(
  module: nn.Module | nnx.Module,
  variables: Mapping[str, Any] | None = None,
  *,
  name: str | None = None,
  seed: int | None = None,
  rng_collections: Sequence[str] = ('dropout',),
) -> Any:
  """A Keras 3 layer (JAX backend) that runs a Flax module.

  The layer's weights are Keras variables named by their path in the
  variables (``flax_module/dense/kernel``): ``params`` trainable,
  ``constants`` non-trainable, so ``model.summary()``, ``model.fit`` and
  optimizers treat them as Keras's own. Each call applies the module to the
  variables' current values. Keras's ``training`` argument reaches the
  module as ``deterministic=not training`` (or ``training=``) when its
  ``__call__`` takes one; in training the rng streams ``rng_collections``
  draw from a ``keras.random.SeedGenerator``. Losses the module sows into
  ``losses`` (activity penalties) are added with ``add_loss``, so
  ``model.fit`` minimises what Keras would. TensorFlow is not needed.

  Any linen module can be hosted, trained and called. A ``.keras`` file
  saves it by its class and fields (see
  :func:`~flax_dense._src.keras.config.module_to_config`), so
  ``model.save('x.keras')`` needs its class importable by name (defined at
  the top level of a module) and fields that are JSON data, modules,
  dtypes or named functions; saving fails otherwise, naming the class or
  field and what to do.
  ``keras.models.load_model`` needs the classes registered: import
  ``flax_dense`` and call :func:`keras_custom_objects` first (or pass it as
  ``custom_objects=``); a file naming classes outside
  :data:`TRUSTED_PACKAGES` (your own modules) loads with
  ``safe_mode=False``.

  Example usage::

    >>> import os; _ = os.environ.setdefault('KERAS_BACKEND', 'jax')
    >>> import keras, jax, jax.numpy as jnp, numpy as np
    >>> import flax_dense as fd
    >>> module = fd.PerPositionDense(3, activation='tanh')
    >>> variables = module.init(jax.random.key(0), jnp.ones((1, 5, 4)))
    >>> layer = fd.to_keras(module, variables, name='per_position')
    >>> model = keras.Sequential([keras.Input((5, 4)), layer])
    >>> [w.path for w in model.trainable_weights]
    ['per_position/bias', 'per_position/kernel']
    >>> x = np.ones((2, 5, 4), np.float32)
    >>> bool(np.allclose(model.predict(x, verbose=0),
    ...                  module.apply(variables, x), atol=1e-6))
    True

  Args:
    module: a linen module (a flax_dense layer, ``fd.KerasSequential``, or
      a model of yours built from them), or an NNX flax_dense layer or
      ``fd.nnx.KerasSequential`` (converted by ``fd.nnx.to_linen``).
    variables: the linen module's variables (``params`` and
      ``constants``), as ``init`` returns them; ``None`` for an NNX module,
      which holds its own.
    name: the Keras layer name; default ``flax_module``.
    seed: seed of the layer's ``SeedGenerator`` (dropout in training).
    rng_collections: the rng streams the module draws from in training.

  Returns:
    A ``keras.layers.Layer``; call it on one input, or on a list of inputs
    for a module with several (``MultiIODense``).

  Raises:
    ImportError: without Keras 3.
    RuntimeError: if Keras runs on another backend than JAX.
    TypeError: for a module that is neither linen nor NNX, or variables
      that are not a mapping.
    ValueError: for variables given with an NNX module or missing for a
      linen one, or a collection other than ``params`` and ``constants``.
      Variables that do not fit the module's inputs raise when the layer is
      first called (built), naming each weight that differs.
  """
  keras = import_keras('to_keras')
  module, variables = linen_form('to_keras', module, variables)
  if not isinstance(module, nn.Module):
    raise TypeError(
      'to_keras: module must be a flax.linen.Module or an NNX module, got'
      f' {type(module).__name__}.'
    )
  if variables is None:
    raise ValueError(
      'to_keras: a linen module needs its variables: to_keras(module,'
      ' module.init(key, sample_inputs)).'
    )
  specs = hosting.variable_specs(variables)
  del keras
  # Imported here: it imports Keras, an optional dependency.
  from flax_dense._src.keras import objects

  layer = objects.FlaxModule(
    module=module,
    variables=[{k: v for k, v in s.items() if k != 'value'} for s in specs],
    seed=seed,
    rng_collections=list(rng_collections),
    name=name or 'flax_module',
  )
  for variable, spec in zip(layer.flax_variables, specs, strict=True):
    # A copy: Keras donates its variables' buffers to its jitted steps,
    # which would delete the caller's arrays.
    variable.assign(np.array(spec['value'], variable.dtype))
  return layer


def keras_custom_objects() -> dict[str, type]:
  """flax_dense's Keras classes, registered, by their registered names.

  ``keras.models.load_model`` finds them once this has run in the process;
  it also returns them for ``custom_objects=``.

  Returns:
    ``{'flax_dense>FlaxModule': ..., 'flax_dense>ConstProduct': ...}``.
  """
  import_keras('keras_custom_objects')
  # Imported here: it imports Keras, an optional dependency.
  from flax_dense._src.keras import objects

  return objects.custom_objects()
