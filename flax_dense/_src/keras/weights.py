"""Keras weights files into an imported model: ``fd.load_keras_weights``."""

import os
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from flax_dense._src.keras import h5
from flax_dense._src.variables import CONSTANTS, Constant


def _keras_order(names: Sequence[str]) -> list[str]:
  """Weight names in Keras's ``get_weights()`` order: kernel, then bias."""
  return sorted(names, key=lambda name: (name != 'kernel', name != 'bias'))


def load_keras_weights(
  module_or_variables: Any, path: str | os.PathLike
) -> Any:
  """Weights from a Keras weights file into an imported model.

  Reads ``path``, a Keras 3 ``model.save_weights('x.weights.h5')`` file (or
  a Keras 2 ``save_weights('x.h5')`` one) with h5py alone, and puts each
  Keras layer's arrays into the layer of the same name: its ``kernel``,
  then its ``bias``, Keras's order. Every layer with weights in the target
  must be in the file and the other way round, and every array must have
  the shape already there.

  Example usage::

    >>> import flax_dense as fd, jax, jax.numpy as jnp
    >>> module, variables = fd.from_keras(
    ...     'tests/fixtures/functional.h5')
    >>> loaded = fd.load_keras_weights(
    ...     variables, 'tests/fixtures/keras3.weights.h5')
    >>> jax.tree.map(jnp.shape, loaded) == jax.tree.map(jnp.shape, variables)
    True

  Args:
    module_or_variables: the variables ``from_keras`` returned (linen;
      ``{'params': {layer: {'kernel', 'bias'}}, 'constants': ...}``), or an
      NNX model it returned (``api='nnx'``).
    path: the weights file.

  Returns:
    For variables, new variables of the same structure holding the file's
    weights (the given ones are left alone). For an NNX model, the same
    model, its weights replaced in place.

  Raises:
    FileNotFoundError: if there is no file at ``path``.
    ValueError: for a file that is not a readable Keras weights file (a
      whole-model file, corrupt, Keras 1), layers missing on either side,
      or weights of other shapes than the model's.
    TypeError: for a target that is neither variables nor an NNX model.
  """
  caller = 'load_keras_weights'
  path = os.fspath(path)
  weights, _ = h5.read_weights(path, caller)
  is_nnx = isinstance(module_or_variables, nnx.Module)
  if is_nnx:
    tree = _nnx_layers(module_or_variables)
  elif isinstance(module_or_variables, dict):
    tree = {
      layer: values
      for collection in ('params', CONSTANTS)
      for layer, values in module_or_variables.get(collection, {}).items()
    }
  else:
    raise TypeError(
      f'{caller}: expected the variables from_keras returned or an NNX model'
      f' it returned, got {type(module_or_variables).__name__}.'
    )
  with_weights = {name for name, arrays in weights.items() if arrays}
  if with_weights != set(tree):
    raise ValueError(
      f'{caller}: {path!r} holds weights of the layers'
      f' {sorted(with_weights)}, the model of {sorted(tree)}; they must be'
      ' the same.'
    )
  loaded: dict[str, dict[str, Any]] = {}
  for layer, values in tree.items():
    names = _keras_order(list(values))
    arrays = weights[layer]
    shapes = [tuple(np.shape(values[name])) for name in names]
    if [tuple(a.shape) for a in arrays] != shapes:
      raise ValueError(
        f'{caller}: {path!r}: layer {layer!r} holds weights of shapes'
        f' {[tuple(a.shape) for a in arrays]}, the model needs {names} of'
        f' shapes {shapes}.'
      )
    loaded[layer] = {
      name: jnp.asarray(array)
      for name, array in zip(names, arrays, strict=True)
    }
  if is_nnx:
    for layer, values in loaded.items():
      for name, value in values.items():
        getattr(_nnx_layer(module_or_variables, layer), name)[...] = value
    return module_or_variables
  return {
    collection: (
      {layer: loaded.get(layer, v) for layer, v in trees.items()}
      if collection in ('params', CONSTANTS)
      else trees
    )
    for collection, trees in module_or_variables.items()
  }


def _nnx_layer(model: Any, name: str) -> nnx.Module:
  return model.layers[list(model.names).index(name)]


def _nnx_layers(model: Any) -> dict[str, dict[str, Any]]:
  """``{layer name: {weight name: array}}`` of an imported NNX model."""
  names = getattr(model, 'names', None)
  if names is None:
    raise TypeError(
      'load_keras_weights: expected an NNX model from_keras returned'
      ' (KerasSequential or KerasFunctional with names), got'
      f' {type(model).__name__}.'
    )
  tree = {}
  for name, layer in zip(names, model.layers, strict=True):
    values = {
      key: value[...]
      for key, value in vars(layer).items()
      if isinstance(value, nnx.Variable)
      and isinstance(value, nnx.Param | Constant)
    }
    if values:
      tree[name] = values
  return tree
