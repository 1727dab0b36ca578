"""The containers of imported Keras models, for NNX."""

from collections.abc import Callable, Sequence
from typing import Any

import jax
from flax import nnx

from flax_dense._src import validate
from flax_dense._src.callables import call_keywords
from flax_dense._src.models.graph import (
  Node,
  apply_graph,
  apply_sequential,
  check_graph,
  check_inputs,
  check_sequential,
)


def _layer_call(
  container: str,
  deterministic: bool | None,
  rngs: nnx.Rngs | jax.Array | None,
) -> Callable[[int, Any, Any, dict[str, Any]], Any]:
  """The ``call`` both containers run their layers with: the dropout
  layers get this call's ``deterministic`` and ``rngs``, if given; a layer
  given several tensors takes them as positional arguments."""
  if deterministic is not None:
    validate.check_bool(deterministic, container, 'deterministic')

  def call(index, layer, inputs, kwargs):
    del index
    # Each dropout layer (a wrapper of one too) takes those its call names.
    kwargs.update(call_keywords(layer, deterministic=deterministic, rngs=rngs))
    if isinstance(inputs, list):
      return layer(*inputs, **kwargs)
    return layer(inputs, **kwargs)

  return call


class KerasSequential(nnx.Module):
  """Applies NNX layers one after another, passing a Keras mask along.

  The NNX twin of :class:`flax_dense.KerasSequential`, which
  ``fd.from_keras(model, api='nnx')`` returns: as in Keras, a mask made by
  a ``Masking`` layer travels with the activations through the layers that
  propagate it until a layer consumes it (``GlobalAveragePooling1D``
  averages over the kept steps only) or drops it. Dropout follows
  ``model.train()`` / ``model.eval()``.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> model = fd.nnx.KerasSequential(
    ...     [fd.nnx.Masking(0.0), nnx.Linear(3, 4, rngs=nnx.Rngs(0)),
    ...      fd.nnx.GlobalAveragePooling1D()],
    ...     names=['masking', 'dense', 'pooling'],
    ...     mask_flow=['compute', 'propagate', 'consume'])
    >>> x = jnp.ones((2, 5, 3)).at[:, 3:].set(0.0)  # 2 padded steps
    >>> y = model(x)  # (2, 4), the mean of 3 steps
    >>> bool(jnp.allclose(y, model.layers[1](x[:, :3]).mean(axis=1)))
    True

  Args:
    layers: the NNX modules, applied in order to one input.
    names: the name of each layer (Keras's layer names after
      ``from_keras``), or ``None``.
    mask_flow: what each layer does with the mask, one of ``'compute'`` (a
      ``Masking`` layer: makes the mask from its inputs), ``'propagate'``,
      ``'consume'`` (gets it as ``mask=``) or ``'drop'``; default: no mask.

  Raises:
    TypeError: if ``layers`` is not a list or tuple of modules, or ``names``
      or ``mask_flow`` is neither ``None`` nor a list or tuple of str.
    ValueError: if ``names`` or ``mask_flow`` do not have one entry per
      layer, or ``mask_flow`` holds an unknown value or ``'compute'`` for a
      layer other than ``Masking``.
  """

  def __init__(
    self,
    layers: Sequence[nnx.Module],
    *,
    names: Sequence[str] | None = None,
    mask_flow: Sequence[str] | None = None,
  ):
    check_sequential('KerasSequential', layers, names, mask_flow)
    layers = list(layers)
    self.layers = nnx.List(layers)
    self.names = None if names is None else tuple(names)
    self.mask_flow = None if mask_flow is None else tuple(mask_flow)

  def __call__(
    self,
    inputs: Any,
    *,
    deterministic: bool | None = None,
    rngs: nnx.Rngs | jax.Array | None = None,
  ) -> Any:
    """Applies the layers.

    Args:
      inputs: the first layer's inputs.
      deterministic: if given, overrides the mode of the dropout layers
        (those with a ``deterministic`` attribute) for this call.
      rngs: if given, the rng streams (or a key) of the dropout layers for
        this call, instead of their own.

    Returns:
      The last layer's outputs.
    """
    call = _layer_call('KerasSequential', deterministic, rngs)
    return apply_sequential(self.layers, self.mask_flow, inputs, call)


class KerasFunctional(nnx.Module):
  """Runs a graph of NNX layers on several inputs, as a Keras functional model.

  The NNX twin of :class:`flax_dense.KerasFunctional`, which
  ``fd.from_keras(model, api='nnx')`` returns for a functional Keras model
  that is not a single chain: the same graph and mask flow, run by the same
  code. Dropout follows ``model.train()`` / ``model.eval()``.

  Example usage::

    >>> import flax_dense as fd, jax.numpy as jnp
    >>> from flax import nnx
    >>> from flax_dense._src.models.graph import Node
    >>> model = fd.nnx.KerasFunctional(  # y = dense(a) + dense(b)
    ...     [nnx.Linear(3, 4, rngs=nnx.Rngs(0))], names=['dense'],
    ...     mask_flow=['propagate'],
    ...     nodes=[Node((0,), steps=(0,)), Node((1,), steps=(0,)),
    ...            Node((2, 3), merge='Add')],
    ...     inputs=2, outputs=[4])
    >>> a, b = jnp.ones((2, 3)), jnp.zeros((2, 3))
    >>> bool(jnp.allclose(model(a, b), model.layers[0](a) + model.layers[0](b)))
    True

  Args:
    layers: the NNX modules, each called at one node or more.
    names: the name of each layer.
    mask_flow: what each layer does with the mask.
    nodes: the calls, each taking earlier tensors.
    inputs: the number of inputs.
    outputs: the numbers of the output tensors.
    single_output: return the one output itself rather than a list.

  Raises:
    TypeError: for an argument of the wrong type (``names='d'`` for
      ``['d']``, ``inputs=2.0``, a node that is not a ``Node``).
    ValueError: if the parts of the graph do not fit together.
  """

  def __init__(
    self,
    layers: Sequence[nnx.Module],
    *,
    names: Sequence[str],
    mask_flow: Sequence[str],
    nodes: Sequence[Node],
    inputs: int,
    outputs: Sequence[int],
    single_output: bool = True,
  ):
    check_graph(
      'KerasFunctional',
      layers,
      names,
      mask_flow,
      nodes,
      inputs,
      outputs,
      single_output,
    )
    self.layers = nnx.List(list(layers))
    self.names = tuple(names)
    self.mask_flow = tuple(mask_flow)
    self.nodes = tuple(nodes)
    self.inputs = int(inputs)
    self.outputs = tuple(outputs)
    self.single_output = bool(single_output)

  def __call__(
    self,
    *inputs: Any,
    deterministic: bool | None = None,
    rngs: nnx.Rngs | jax.Array | None = None,
  ) -> Any:
    """Applies the graph.

    Args:
      *inputs: the model's inputs, in Keras's order.
      deterministic: if given, overrides the mode of the dropout layers for
        this call.
      rngs: if given, the rng streams (or a key) of the dropout layers for
        this call.

    Returns:
      The output, or the list of outputs.
    """
    check_inputs('KerasFunctional', self.inputs, inputs)
    call = _layer_call('KerasFunctional', deterministic, rngs)
    return apply_graph(
      self.layers,
      self.mask_flow,
      self.nodes,
      self.outputs,
      self.single_output,
      inputs,
      call,
    )
