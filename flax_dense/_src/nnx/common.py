"""What every NNX module of the package shares."""

from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx
from flax.typing import Dtype, Initializer

from flax_dense._src import validate
from flax_dense._src.ops.regularizers import Regularizer, activity_penalty
from flax_dense._src.variables import Loss


def check_rngs(rngs: Any, layer: str) -> nnx.Rngs:
  """``rngs`` if it is an ``nnx.Rngs``; our own error otherwise."""
  if not isinstance(rngs, nnx.Rngs):
    raise TypeError(
      f'{layer}: rngs must be an nnx.Rngs to draw the initial weights, e.g.'
      f' {layer}(..., rngs=nnx.Rngs(0)), got {rngs!r}.'
    )
  return rngs


def make_param(
  layer: str,
  name: str,
  init: Initializer,
  rngs: nnx.Rngs,
  shape: tuple[int, ...],
  param_dtype: Dtype,
  metadata: Mapping[str, Any] | None = None,
  field: str | None = None,
) -> nnx.Param:
  """An ``nnx.Param`` drawn by ``init``, checked like linen checks it.

  The initializer may be wrapped by ``nnx.with_partitioning``: its sharding
  metadata then travels with the variable.
  """
  init = validate.checked_initializer(init, layer, name, field)
  return nnx.Param(init(rngs.params(), shape, param_dtype), **(metadata or {}))


def sow_activity_loss(
  module: nnx.Module, regularizer: Regularizer | None, outputs: jax.Array
) -> None:
  """Sows Keras's activity penalty of ``outputs`` as a :class:`Loss`.

  Only inside ``nnx.capture(model, fd.nnx.Loss)``, which returns the losses
  beside the outputs: outside it Flax deprecates sowing, and the losses of
  every call would pile up in the model's state.
  """
  if regularizer is None or not hasattr(module, '__captures__'):
    return
  module.sow(Loss, 'activity_loss', activity_penalty(regularizer, outputs))
