"""The Keras-side classes of flax_dense: imported only with Keras 3 on JAX.

:mod:`flax_dense._src.keras.host` imports this module when one of its
functions is first called, so the library itself never needs Keras.
"""

import os
from typing import Any

# flax_dense imports this module only once Keras runs on JAX; a direct import
# (pytest's doctest collection) must not start Keras's default TensorFlow.
os.environ.setdefault('KERAS_BACKEND', 'jax')

import keras  # noqa: E402

from flax_dense._src import validate  # noqa: E402
from flax_dense._src.keras import config as hosting  # noqa: E402
from flax_dense._src.variables import CONSTANTS, collect_losses  # noqa: E402

_PACKAGE = 'flax_dense'


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FlaxModule(keras.layers.Layer):
  """A Keras layer that applies a Flax linen module to its weights.

  Made by :func:`flax_dense.to_keras`, which documents its behaviour; built
  directly only by ``from_config`` when a ``.keras`` file is loaded.

  Args:
    module: the linen module (from ``to_keras``), or the module as
      :func:`~flax_dense._src.keras.config.module_to_config` writes it
      (from a ``.keras`` file). A module is written so only by
      ``get_config``, when a ``.keras`` file is saved: any module can be
      hosted and trained, and only saving needs its class importable.
    variables: one entry per weight: ``collection``, ``path``, ``shape``,
      ``dtype``. The weights start at zero; ``to_keras`` or Keras's loader
      assigns their values.
    seed: seed of the ``SeedGenerator`` the rng streams draw from.
    rng_collections: the rng streams the module draws from in training.
    **kwargs: ``keras.layers.Layer``'s (``name``, ``trainable``, ...).
  """

  def __init__(
    self,
    module: Any,
    variables: list[dict[str, Any]],
    seed: int | None = None,
    rng_collections: list[str] | tuple[str, ...] = ('dropout',),
    **kwargs: Any,
  ):
    super().__init__(**kwargs)
    if isinstance(module, dict):
      self._module_config = module
      module = hosting.module_from_config(module, _trusted())
    else:
      self._module_config = None
    self._specs = [dict(spec) for spec in variables]
    self._seed = seed
    self._rng_collections = tuple(rng_collections)
    self.module = module
    self.seed_generator = keras.random.SeedGenerator(seed)
    weights = []
    with keras.name_scope(self.name, caller=self):
      for spec in self._specs:
        weights.append(self._make_weight(spec))
    # A list attribute: Keras tracks the variables it holds, in this order.
    self.flax_variables = weights

  def _make_weight(self, spec: dict[str, Any]) -> keras.Variable:
    *scopes, leaf = spec['path']
    scope_stack = [keras.name_scope(part) for part in scopes]
    for scope in scope_stack:
      scope.__enter__()
    try:
      return keras.Variable(
        initializer='zeros',
        shape=tuple(spec['shape']),
        dtype=spec['dtype'],
        trainable=spec['collection'] != CONSTANTS,
        name=leaf,
      )
    finally:
      for scope in reversed(scope_stack):
        scope.__exit__(None, None, None)

  def build(self, input_shape: Any) -> None:
    shapes = input_shape if _is_list_of_shapes(input_shape) else [input_shape]
    hosting.check_variables_fit(
      self.module, self._specs, [tuple(s) for s in shapes], self.compute_dtype
    )
    self.built = True

  def call(self, inputs: Any, training: bool | None = None) -> Any:
    training = training is not None and validate.check_bool(
      training, f"FlaxModule '{self.name}'", 'training'
    )
    variables = hosting.nest_variables(
      self._specs, [variable.value for variable in self.flax_variables]
    )
    arguments = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
    rngs = {}
    if training:
      rngs = {
        name: self.seed_generator.next() for name in self._rng_collections
      }
    outputs, state = self.module.apply(
      variables,
      *arguments,
      rngs=rngs,
      mutable=['losses'],
      **hosting.call_arguments(self.module, training),
    )
    if state:
      self.add_loss(collect_losses(state))
    return outputs

  def get_config(self) -> dict[str, Any]:
    return {
      **super().get_config(),
      'module': self._module_config
      or hosting.module_to_config(self.module, f"layer '{self.name}': module"),
      'variables': self._specs,
      'seed': self._seed,
      'rng_collections': list(self._rng_collections),
    }


def _is_list_of_shapes(input_shape: Any) -> bool:
  return isinstance(input_shape, list | tuple) and any(
    isinstance(entry, list | tuple) for entry in input_shape
  )


def _trusted() -> bool:
  """Whether any class may be imported: not while Keras loads in safe mode.

  Outside a load (``to_keras`` building the layer) Keras's safe mode is
  unset, and the module's classes are already imported.
  """
  from keras.src.saving import serialization_lib

  return serialization_lib.in_safe_mode() is not True


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConstProduct(keras.layers.Layer):
  """The Keras form of :class:`flax_dense.ConstProduct`.

  ``(..., N) -> (..., 1)``, ``y = prod(x * w, axis=-1)``, with ``w`` a
  weight vector of N entries, trainable or not (``trainable=False`` keeps
  it as a non-trainable weight: saved, never trained).

  Args:
    units: N, the size of ``w``.
    **kwargs: ``keras.layers.Layer``'s (``name``, ``trainable``, ...).
  """

  def __init__(self, units: int, **kwargs: Any):
    super().__init__(**kwargs)
    self.units = units
    self.kernel = self.add_weight(
      shape=(units,), initializer='zeros', name='kernel'
    )

  def build(self, input_shape: Any) -> None:
    if input_shape[-1] != self.units:
      raise ValueError(
        f'ConstProduct: inputs must have {self.units} features (the size of'
        f' the weights), got inputs of shape {tuple(input_shape)}.'
      )
    self.built = True

  def call(self, inputs: Any) -> Any:
    return keras.ops.prod(
      inputs * keras.ops.cast(self.kernel, inputs.dtype),
      axis=-1,
      keepdims=True,
    )

  def compute_output_shape(self, input_shape: Any) -> tuple:
    return (*input_shape[:-1], 1)

  def get_config(self) -> dict[str, Any]:
    return {**super().get_config(), 'units': self.units}


def custom_objects() -> dict[str, type]:
  """The registered classes of this module, by registered name."""
  return {
    keras.saving.get_registered_name(cls): cls
    for cls in (FlaxModule, ConstProduct)
  }
