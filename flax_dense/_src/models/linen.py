"""The containers of imported Keras models, for linen."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn

from flax_dense._src import validate
from flax_dense._src.models.graph import (
  Node,
  apply_graph,
  apply_sequential,
  check_graph,
  check_inputs,
  check_sequential,
  freeze,
)


class KerasSequential(nn.Module):
  """Applies layers one after another, passing a Keras mask along.

  The module :func:`from_keras` returns, and a plain Flax module to write by
  hand as well. As in Keras, a mask made by ``Masking`` travels with the
  activations through the layers that propagate it until a layer consumes
  it (``GlobalAveragePooling1D`` averages over the kept steps only) or
  drops it (``Reshape``, ``Flatten``, ...). Layers with a ``deterministic``
  field left ``None`` (dropout) get the ``deterministic`` argument: Keras's
  ``training`` negated, inference by default.

  Example usage::

    >>> import flax.linen as nn, jax, jax.numpy as jnp
    >>> import flax_dense as fd
    >>> model = fd.KerasSequential(
    ...     layers=(fd.Masking(0.0), nn.Dense(4), fd.GlobalAveragePooling1D()),
    ...     names=('masking', 'dense', 'pooling'),
    ...     mask_flow=('compute', 'propagate', 'consume'))
    >>> x = jnp.ones((2, 5, 3)).at[:, 3:].set(0.0)  # 2 padded steps
    >>> variables = model.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'dense': {'bias': (4,), 'kernel': (3, 4)}}}
    >>> y = model.apply(variables, x)  # (2, 4), the mean of 3 steps
    >>> dense = nn.Dense(4).bind({'params': variables['params']['dense']})
    >>> bool(jnp.allclose(y, dense(x[:, :3]).mean(axis=1)))
    True

  Attributes:
    layers: the modules, applied in order to one input.
    names: the name of each layer in the variables (Keras's layer names
      after :func:`from_keras`); default ``layers_0``, ``layers_1``, ...
    mask_flow: what each layer does with the mask, one of
      ``'compute'`` (a :class:`Masking` layer: makes the mask from its
      inputs), ``'propagate'`` (passes it on), ``'consume'`` (gets it as
      ``mask=`` and ends it) or ``'drop'`` (ends it); default: no mask.
  """

  layers: Sequence[nn.Module]
  names: Sequence[str] | None = None
  mask_flow: Sequence[str] | None = None

  def __post_init__(self):
    # A module must hash to be a static jit argument; clone() passes the
    # tuples back in, which stay as they are.
    for field in ('layers', 'names', 'mask_flow'):
      object.__setattr__(self, field, freeze(getattr(self, field)))
    super().__post_init__()

  @nn.compact
  def __call__(self, inputs: Any, deterministic: bool = True) -> Any:
    """Applies the layers.

    Args:
      inputs: the first layer's inputs.
      deterministic: passed to the layers whose ``deterministic`` field is
        ``None``: true for inference (dropout off), false for training.

    Returns:
      The last layer's outputs.

    Raises:
      TypeError: if ``layers`` is not a tuple or list of modules, or
        ``names`` or ``mask_flow`` is neither ``None`` nor a tuple or list
        of str.
      ValueError: if ``names`` or ``mask_flow`` do not have one entry per
        layer, or ``mask_flow`` holds an unknown value or ``'compute'`` for
        a layer other than :class:`Masking`.
    """
    check_sequential('KerasSequential', self.layers, self.names, self.mask_flow)
    deterministic = validate.check_bool(
      deterministic, 'KerasSequential', 'deterministic'
    )

    def call(index, layer, inputs, kwargs):
      if self.names is not None:
        layer = layer.clone(
          parent=self, name=self.names[index], _deep_clone=True
        )
      if getattr(layer, 'deterministic', False) is None:
        kwargs['deterministic'] = deterministic
      return layer(inputs, **kwargs)

    return apply_sequential(self.layers, self.mask_flow, inputs, call)


class KerasFunctional(nn.Module):
  """Runs a graph of layers on several inputs, as a Keras functional model.

  The module :func:`flax_dense.from_keras` returns for a functional Keras
  model that is not a single chain: several inputs and outputs, branches,
  layers called at several nodes (sharing their weights), and Keras's merge
  layers. As in Keras, a mask made by ``Masking`` flows along the graph;
  the merges combine their inputs' masks as Keras 3 does (see
  :func:`merge_mask`).

  Example usage::

    >>> import flax.linen as nn, jax, jax.numpy as jnp
    >>> import flax_dense as fd
    >>> from flax_dense._src.models.graph import Node
    >>> model = fd.KerasFunctional(  # y = dense(a) + dense(b)
    ...     layers=(nn.Dense(4),), names=('dense',), mask_flow=('propagate',),
    ...     nodes=(Node((0,), steps=(0,)), Node((1,), steps=(0,)),
    ...            Node((2, 3), merge='Add')),
    ...     inputs=2, outputs=(4,))
    >>> a, b = jnp.ones((2, 3)), jnp.zeros((2, 3))
    >>> variables = model.init(jax.random.key(0), a, b)
    >>> jax.tree.map(jnp.shape, variables)  # one dense, called twice
    {'params': {'dense': {'bias': (4,), 'kernel': (3, 4)}}}
    >>> model.apply(variables, a, b).shape
    (2, 4)

  Attributes:
    layers: the modules, each called at one node or more.
    names: the name of each module in the variables.
    mask_flow: what each module does with the mask (see
      :class:`KerasSequential`).
    nodes: the calls (:class:`Node`), each taking earlier tensors.
    inputs: the number of inputs, tensors ``0 .. inputs - 1``.
    outputs: the numbers of the output tensors.
    single_output: whether the model returns its one output itself (as a
      Keras model built with one output tensor does) rather than a list.
  """

  layers: Sequence[nn.Module]
  names: Sequence[str]
  mask_flow: Sequence[str]
  nodes: Sequence[Node]
  inputs: int
  outputs: Sequence[int]
  single_output: bool = True

  def __post_init__(self):
    for field in ('layers', 'names', 'mask_flow', 'nodes', 'outputs'):
      object.__setattr__(self, field, freeze(getattr(self, field)))
    super().__post_init__()

  @nn.compact
  def __call__(self, *inputs: Any, deterministic: bool = True) -> Any:
    """Applies the graph.

    Args:
      *inputs: the model's inputs, in Keras's order.
      deterministic: passed to the layers whose ``deterministic`` field is
        ``None``: true for inference (dropout off), false for training.

    Returns:
      The output, or the list of outputs.

    Raises:
      TypeError: for a field of the wrong type (``names='d'`` for
        ``('d',)``, ``inputs=2.0``, a node that is not a :class:`Node`).
      ValueError: for a number of inputs other than ``inputs``, or parts of
        the graph that do not fit together.
    """
    check_graph(
      'KerasFunctional',
      self.layers,
      self.names,
      self.mask_flow,
      self.nodes,
      self.inputs,
      self.outputs,
      self.single_output,
    )
    check_inputs('KerasFunctional', self.inputs, inputs)
    deterministic = validate.check_bool(
      deterministic, 'KerasFunctional', 'deterministic'
    )
    bound = [
      layer.clone(parent=self, name=name, _deep_clone=True)
      for layer, name in zip(self.layers, self.names, strict=True)
    ]

    def call(index, layer, inputs, kwargs):
      layer = bound[index]
      if getattr(layer, 'deterministic', False) is None:
        kwargs['deterministic'] = deterministic
      if isinstance(inputs, list):
        return layer(*inputs, **kwargs)
      return layer(inputs, **kwargs)

    return apply_graph(
      self.layers,
      self.mask_flow,
      self.nodes,
      self.outputs,
      self.single_output,
      inputs,
      call,
    )
