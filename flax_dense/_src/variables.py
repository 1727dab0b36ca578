"""Where the layers keep what is not trained: names, types, and the loss sum.

Linen keeps variables in named collections, NNX in typed ``nnx.Variable``
attributes; the two spell the same split:

===================  ====================  =========================
what                 linen collection      NNX variable type
===================  ====================  =========================
trained weights      ``'params'``          ``nnx.Param``
frozen weights       :data:`CONSTANTS`     :class:`Constant`
activity penalties   :data:`LOSSES`        :class:`Loss` (sown)
===================  ====================  =========================
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from flax_dense._src.ops.reductions import widen

#: Name of the linen collection that holds frozen (non-trainable) weights.
CONSTANTS = 'constants'

#: Name of the linen collection that holds sown losses.
LOSSES = 'losses'


class Constant(nnx.Variable):
  """A frozen weight of an NNX layer: saved with the model, never trained.

  Not an ``nnx.Param``, so ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` and
  ``nnx.grad`` leave it alone, while ``nnx.state(model)`` and checkpoints
  carry it; ``nnx.state(model, fd.nnx.Constant)`` selects it.
  """


class Loss(nnx.Variable):
  """A loss sown by an NNX layer during its call (an activity penalty).

  Layers sow with ``self.sow(Loss, name, value)``, which appends to a tuple
  per call; read and clear them with ``nnx.pop(model, fd.nnx.Loss)`` after
  the forward pass and sum them with :func:`collect_losses`.
  """


def collect_losses(state: Any) -> jax.Array:
  """Sums every loss the layers sowed: Keras's ``sum(model.losses)``.

  For linen, apply the model with ``mutable=['losses']`` and pass the state
  it returns. For NNX, pass what ``nnx.pop(model, fd.nnx.Loss)`` returns
  after the forward pass (which also clears them for the next one), or the
  model itself to read them without clearing. Nothing sown gives 0.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> layer = fd.ActivityRegularization(l1=0.1)
    >>> y, state = layer.apply({}, jnp.ones((2, 3)), mutable=['losses'])
    >>> fd.collect_losses(state)  # 0.1 * 6 / batch size 2
    Array(0.3, dtype=float32)

  Args:
    state: the mutable state returned by linen's ``apply``, or any mapping
      of collections (only its ``losses`` collection is read); or an NNX
      module or ``nnx.State`` (only its :class:`Loss` variables are read).

  Returns:
    A scalar: the sum of every sown loss.

  Raises:
    ValueError: if ``state`` is none of these.
  """
  if isinstance(state, nnx.Module):
    state = nnx.state(state, Loss)
  if isinstance(state, nnx.State):
    leaves = jax.tree.leaves(nnx.filter_state(state, Loss))
  elif isinstance(state, Mapping):
    leaves = jax.tree.leaves(state.get(LOSSES, {}))
  else:
    raise ValueError(
      'collect_losses: state must be the mapping of collections returned by'
      " model.apply(..., mutable=['losses']), an NNX module, or the state"
      f' nnx.pop(model, fd.nnx.Loss) returns, got {type(state).__name__}.'
    )
  # float16 and bfloat16 losses are added up in float32.
  return sum((jnp.sum(widen(leaf)) for leaf in leaves), jnp.zeros(()))


def _swap_params_and_constants(variables: dict) -> dict:
  variables = dict(variables)
  params = variables.pop('params', {})
  constants = variables.pop(CONSTANTS, {})
  return {**variables, 'params': constants, CONSTANTS: params}


def frozen(module: nn.Module) -> nn.Module:
  """``module`` with its ``params`` stored in the ``constants`` collection.

  How :func:`flax_dense.from_keras` freezes a layer set ``trainable = False`` in Keras;
  ``fd.nnx.to_linen`` freezes a layer whose NNX weights are constants so.
  """
  frozen_type = nn.map_variables(
    type(module),
    ('params', CONSTANTS),
    _swap_params_and_constants,
    _swap_params_and_constants,
    init=False,
    mutable=True,
  )
  fields = {
    field.name: getattr(module, field.name)
    for field in dataclasses.fields(module)
    if field.init and field.name not in ('parent', 'name')
  }
  return frozen_type(**fields)


def frozen_base(module_type: type) -> type | None:
  """The layer class that ``from_keras``'s ``frozen`` wrapped, if it did."""
  base = module_type.__mro__[1]
  if (
    module_type.__module__ == 'flax.linen.transforms'
    and module_type.__name__ == f'Map_variables{base.__name__}'
  ):
    return base
  return None


def unfrozen(module: nn.Module) -> nn.Module:
  """The layer a :func:`frozen` wrapper holds, else ``module`` itself."""
  base = frozen_base(type(module))
  if base is None:
    return module
  return base(
    **{
      field.name: getattr(module, field.name)
      for field in dataclasses.fields(base)
      if field.init and field.name not in ('parent', 'name')
    }
  )
