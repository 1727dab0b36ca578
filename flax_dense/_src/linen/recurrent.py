"""Keras's recurrent layers for linen: SimpleRNN, LSTM, GRU, Bidirectional."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype, Initializer, PrecisionLike

from flax_dense._src import initializers, validate
from flax_dense._src.linen.common import stored_shape
from flax_dense._src.ops.activations import resolve_activation
from flax_dense._src.ops.recurrent import (
  check_recurrent_fields,
  check_recurrent_inputs,
  format_outputs,
  glorot_uniform,
  recurrent_layer,
  recurrent_shapes,
  unit_forget_bias_init,
)
from flax_dense._src.ops.wrappers import (
  check_bidirectional_pair,
  check_merge_mode,
  check_recurrent_layer,
  merge_bidirectional,
  split_bidirectional_state,
)

#: The fields every recurrent layer's ``__call__`` reads, by kind.
_KINDS = {'SimpleRNN': 'simple_rnn', 'LSTM': 'lstm', 'GRU': 'gru'}


def _deterministic(
  layer: str, field: Any, given: Any, rates: tuple[float, float]
) -> bool:
  """The call's ``deterministic``: the call's value, else the field's."""
  for value in (field, given):
    if value is not None:
      validate.check_bool(value, layer, 'deterministic')
  value = field if given is None else given
  if value is None:
    if any(rates):
      raise ValueError(
        f'{layer}: deterministic must be given, as a field ({layer}(...,'
        ' deterministic=...)) or when calling the layer, since dropout or'
        f' recurrent_dropout is positive (got {rates[0]} and {rates[1]}).'
      )
    return True
  return bool(value)


def _recurrent_call(
  module: nn.Module,
  inputs: Any,
  mask: Any,
  initial_state: Any,
  deterministic: bool | None,
  zero_output_for_mask: bool | None,
) -> Any:
  """The shared ``__call__`` of the linen SimpleRNN, LSTM and GRU."""
  layer = type(module).__name__
  kind = _KINDS[layer]
  reset_after = getattr(module, 'reset_after', True)
  flags = {
    'use_bias': module.use_bias,
    'return_sequences': module.return_sequences,
    'return_state': module.return_state,
    'go_backwards': module.go_backwards,
    'zero_output_for_mask': module.zero_output_for_mask,
  }
  if zero_output_for_mask is not None:
    flags['zero_output_for_mask'] = zero_output_for_mask
  if kind == 'lstm':
    flags['unit_forget_bias'] = module.unit_forget_bias
  if kind == 'gru':
    flags['reset_after'] = reset_after
  check_recurrent_fields(
    layer,
    module.units,
    module.dropout,
    module.recurrent_dropout,
    flags,
    module.rng_collection,
  )
  activation = resolve_activation(module.activation, layer)
  recurrent_activation = resolve_activation(
    getattr(module, 'recurrent_activation', 'sigmoid'), layer
  )
  inputs, mask, states = check_recurrent_inputs(
    layer, kind, module.units, inputs, mask, initial_state
  )
  rates = (module.dropout, module.recurrent_dropout)
  deterministic = _deterministic(
    layer, module.deterministic, deterministic, rates
  )
  shapes = recurrent_shapes(
    kind, inputs.shape[-1], module.units, module.use_bias, reset_after
  )
  inits = {
    'kernel': ('kernel_init', module.kernel_init),
    'recurrent_kernel': ('recurrent_kernel_init', module.recurrent_kernel_init),
    'bias': ('bias_init', module.bias_init),
  }
  params = {}
  for name, shape in shapes.items():
    validate.check_built_shape(
      stored_shape(module, 'params', name),
      layer,
      name,
      shape,
      f'inputs of shape {inputs.shape}',
    )
    field, init = inits[name]
    init = validate.checked_initializer(init, layer, name, field)
    if name == 'bias' and kind == 'lstm' and module.unit_forget_bias:
      init = unit_forget_bias_init(init, module.units)
    params[name] = module.param(name, init, shape, module.param_dtype)
  key = None
  if not deterministic and any(rates):
    key = module.make_rng(module.rng_collection)
  outputs, states = recurrent_layer(
    inputs,
    mask,
    states,
    params,
    key,
    kind=kind,
    activation=activation,
    recurrent_activation=recurrent_activation,
    reset_after=reset_after,
    go_backwards=module.go_backwards,
    zero_output_for_mask=flags['zero_output_for_mask'],
    return_sequences=module.return_sequences,
    dropout=module.dropout,
    recurrent_dropout=module.recurrent_dropout,
    dtype=module.dtype,
    precision=module.precision,
  )
  return format_outputs(outputs, states, module.return_state)


_CALL_DOC = """Runs the layer over the sequences.

    Args:
      inputs: ``(..., T, D)``; all leading axes are batch axes.
      mask: ``(..., T)`` boolean, True = process the timestep (e.g. from
        ``Embedding.compute_mask``), or ``None``. A masked step carries the
        states unchanged and outputs the previous output (zeros with
        ``zero_output_for_mask``), as Keras does.
      initial_state: ``[h]`` (a single array too) or LSTM's ``[h, c]``,
        each ``(..., units)``; default zeros.
      deterministic: overrides the field for this call; needed (here or as
        a field) when a dropout rate is positive.
      zero_output_for_mask: overrides the field for this call.

    Returns:
      ``(..., T, units)`` with ``return_sequences``, else ``(..., units)``;
      with ``return_state`` the tuple ``(outputs, h)`` or LSTM's
      ``(outputs, h, c)``.

    Raises:
      TypeError: for a non-boolean mask or an initial state of another type.
      ValueError: for inputs of rank below 2, a mask or initial state of
        another shape or number, or inputs whose features differ from those
        the weights were built with.
    """


class SimpleRNN(nn.Module):
  """Keras's ``SimpleRNN``: ``h' = activation(x @ kernel + h @ R + bias)``.

  Maps sequences ``(..., T, D)`` to the last output ``(..., units)`` or
  every output ``(..., T, units)`` (``return_sequences``), honouring Keras
  masks; see :func:`flax_dense.functional.recurrent`. Weights have Keras's
  names and shapes, so ``keras_layer.get_weights()`` ports directly.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.SimpleRNN(4, return_sequences=True)
    >>> x = jnp.ones((2, 5, 3))  # (batch, timesteps, features)
    >>> variables = layer.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'bias': (4,), 'kernel': (3, 4), 'recurrent_kernel': (4, 4)}}
    >>> layer.apply(variables, x).shape
    (2, 5, 4)

  Attributes:
    units: U, the size of the state and output.
    activation: Keras name or callable (default ``'tanh'``).
    use_bias: whether to add ``bias (U,)``.
    dtype: the dtype of the computation (default: inferred).
    param_dtype: the dtype passed to parameter initializers.
    precision: numerical precision of the contractions.
    kernel_init: initializer of ``kernel (D, U)`` (Glorot-uniform).
    recurrent_kernel_init: initializer of ``recurrent_kernel (U, U)``
      (orthogonal).
    bias_init: initializer of ``bias`` (zeros).
    dropout: rate of the input dropout, one mask per sequence.
    recurrent_dropout: rate of the dropout of ``h``, one mask per sequence.
    return_sequences: return every step's output.
    return_state: also return the final state.
    go_backwards: process the sequence backwards; outputs are then in
      processing order, as in Keras.
    deterministic: turn dropout off (needed when a rate is positive).
    rng_collection: the rng stream of the dropout masks.
    zero_output_for_mask: masked steps output zeros (Keras's
      ``Bidirectional`` sets it with ``return_sequences``).
  """

  units: int
  activation: Any = 'tanh'
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = glorot_uniform
  recurrent_kernel_init: Initializer = initializers.orthogonal
  bias_init: Initializer = initializers.zeros
  dropout: float = 0.0
  recurrent_dropout: float = 0.0
  return_sequences: bool = False
  return_state: bool = False
  go_backwards: bool = False
  deterministic: bool | None = None
  rng_collection: str = 'dropout'
  zero_output_for_mask: bool = False

  @nn.compact
  def __call__(
    self,
    inputs: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike | None = None,
    initial_state: Any = None,
    deterministic: bool | None = None,
    *,
    zero_output_for_mask: bool | None = None,
  ) -> Any:
    return _recurrent_call(
      self, inputs, mask, initial_state, deterministic, zero_output_for_mask
    )

  __call__.__doc__ = _CALL_DOC


class LSTM(nn.Module):
  """Keras's ``LSTM`` (gates i, f, c, o), masks and dropout as in Keras 3.

  Maps sequences ``(..., T, D)`` to ``(..., units)`` or ``(..., T, units)``
  (``return_sequences``); with ``return_state`` also the final ``h`` and
  ``c``. See :func:`flax_dense.functional.recurrent` for the math.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.LSTM(4, return_state=True)
    >>> x = jnp.ones((2, 5, 3))
    >>> variables = layer.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'bias': (16,), 'kernel': (3, 16), 'recurrent_kernel': (4, 16)}}
    >>> variables['params']['bias'][4:8]  # unit_forget_bias
    Array([1., 1., 1., 1.], dtype=float32)
    >>> mask = jnp.array([[True] * 5, [True, True, True, False, False]])
    >>> outputs, h, c = layer.apply(variables, x, mask)
    >>> outputs.shape, h.shape, c.shape
    ((2, 4), (2, 4), (2, 4))

  Attributes:
    units: U, the size of ``h`` and ``c``.
    activation: of the candidate and the carry (default ``'tanh'``).
    recurrent_activation: of the gates (default ``'sigmoid'``).
    use_bias: whether to add ``bias (4U,)``.
    dtype: the dtype of the computation (default: inferred).
    param_dtype: the dtype passed to parameter initializers.
    precision: numerical precision of the contractions.
    kernel_init: initializer of ``kernel (D, 4U)`` (Glorot-uniform).
    recurrent_kernel_init: of ``recurrent_kernel (U, 4U)`` (orthogonal).
    bias_init: initializer of ``bias`` (zeros).
    unit_forget_bias: set the forget gate's bias to ones at init.
    dropout: rate of the input dropout, one mask per sequence (one per gate
      when ``recurrent_dropout`` is positive, as Keras's cells do).
    recurrent_dropout: rate of the dropout of ``h``, one mask per gate.
    return_sequences: return every step's output.
    return_state: also return the final ``h`` and ``c``.
    go_backwards: process the sequence backwards.
    deterministic: turn dropout off (needed when a rate is positive).
    rng_collection: the rng stream of the dropout masks.
    zero_output_for_mask: masked steps output zeros.
  """

  units: int
  activation: Any = 'tanh'
  recurrent_activation: Any = 'sigmoid'
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = glorot_uniform
  recurrent_kernel_init: Initializer = initializers.orthogonal
  bias_init: Initializer = initializers.zeros
  unit_forget_bias: bool = True
  dropout: float = 0.0
  recurrent_dropout: float = 0.0
  return_sequences: bool = False
  return_state: bool = False
  go_backwards: bool = False
  deterministic: bool | None = None
  rng_collection: str = 'dropout'
  zero_output_for_mask: bool = False

  @nn.compact
  def __call__(
    self,
    inputs: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike | None = None,
    initial_state: Any = None,
    deterministic: bool | None = None,
    *,
    zero_output_for_mask: bool | None = None,
  ) -> Any:
    return _recurrent_call(
      self, inputs, mask, initial_state, deterministic, zero_output_for_mask
    )

  __call__.__doc__ = _CALL_DOC


class GRU(nn.Module):
  """Keras's ``GRU`` (gates z, r, h), both ``reset_after`` variants.

  Maps sequences ``(..., T, D)`` to ``(..., units)`` or ``(..., T, units)``
  (``return_sequences``). With ``reset_after`` (Keras's default) the bias is
  ``(2, 3U)``: the input bias row, then the recurrent bias row.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.ones((2, 5, 3))
    >>> variables = fd.GRU(4).init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'bias': (2, 12), 'kernel': (3, 12), 'recurrent_kernel': (4, 12)}}
    >>> jax.tree.map(jnp.shape, fd.GRU(4, reset_after=False).init(
    ...     jax.random.key(0), x))['params']['bias']
    (12,)

  Attributes:
    units: U, the size of ``h``.
    activation: of the candidate (default ``'tanh'``).
    recurrent_activation: of the gates (default ``'sigmoid'``).
    use_bias: whether to add a bias.
    dtype: the dtype of the computation (default: inferred).
    param_dtype: the dtype passed to parameter initializers.
    precision: numerical precision of the contractions.
    kernel_init: initializer of ``kernel (D, 3U)`` (Glorot-uniform).
    recurrent_kernel_init: of ``recurrent_kernel (U, 3U)`` (orthogonal).
    bias_init: initializer of ``bias`` (zeros).
    reset_after: apply the reset gate after the recurrent matmul (Keras 3's
      and cuDNN's convention) or before it.
    dropout: rate of the input dropout, one mask per sequence.
    recurrent_dropout: rate of the dropout of ``h``, one mask per gate.
    return_sequences: return every step's output.
    return_state: also return the final ``h``.
    go_backwards: process the sequence backwards.
    deterministic: turn dropout off (needed when a rate is positive).
    rng_collection: the rng stream of the dropout masks.
    zero_output_for_mask: masked steps output zeros.
  """

  units: int
  activation: Any = 'tanh'
  recurrent_activation: Any = 'sigmoid'
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = glorot_uniform
  recurrent_kernel_init: Initializer = initializers.orthogonal
  bias_init: Initializer = initializers.zeros
  reset_after: bool = True
  dropout: float = 0.0
  recurrent_dropout: float = 0.0
  return_sequences: bool = False
  return_state: bool = False
  go_backwards: bool = False
  deterministic: bool | None = None
  rng_collection: str = 'dropout'
  zero_output_for_mask: bool = False

  @nn.compact
  def __call__(
    self,
    inputs: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike | None = None,
    initial_state: Any = None,
    deterministic: bool | None = None,
    *,
    zero_output_for_mask: bool | None = None,
  ) -> Any:
    return _recurrent_call(
      self, inputs, mask, initial_state, deterministic, zero_output_for_mask
    )

  __call__.__doc__ = _CALL_DOC


#: The linen layers ``Bidirectional`` wraps.
RECURRENT_LAYERS = (SimpleRNN, LSTM, GRU)


class Bidirectional(nn.Module):
  """Keras's ``Bidirectional``: a recurrent layer run both ways, merged.

  The forward layer is a copy of ``layer``; the backward one a copy with
  ``go_backwards`` flipped, unless ``backward_layer`` is given. As in Keras,
  both output zeros at masked steps when they return sequences, and the
  backward sequence is flipped back in time before the merge. Their params
  live under ``forward_layer`` and ``backward_layer``.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.Bidirectional(fd.GRU(4, return_sequences=True))
    >>> x = jnp.ones((2, 5, 3))
    >>> variables = layer.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables['params']['backward_layer'])
    {'bias': (2, 12), 'kernel': (3, 12), 'recurrent_kernel': (4, 12)}
    >>> layer.apply(variables, x).shape
    (2, 5, 8)

  Attributes:
    layer: a :class:`SimpleRNN`, :class:`LSTM` or :class:`GRU`.
    merge_mode: ``'concat'``, ``'sum'``, ``'mul'``, ``'ave'``, or ``None``
      to return the two outputs as a tuple.
    backward_layer: the backward layer, or ``None`` for a copy of
      ``layer`` going the other way.
    deterministic: if not ``None``, given to both layers when the call
      gives none (``None``: each layer follows its own field).
  """

  layer: nn.Module
  merge_mode: str | None = 'concat'
  backward_layer: nn.Module | None = None
  deterministic: bool | None = None

  def _layers(self) -> tuple[nn.Module, nn.Module]:
    """The forward and backward layers, checked, as Keras configures them."""
    check_recurrent_layer(self.layer, 'layer', RECURRENT_LAYERS)
    if self.backward_layer is not None:
      check_recurrent_layer(
        self.backward_layer, 'backward_layer', RECURRENT_LAYERS
      )
    check_merge_mode(self.merge_mode)
    # A given backward_layer is a field, named so already; the forward one
    # (and the default backward one) are copies under Keras's names.
    backward = self.backward_layer
    if backward is None:
      backward = self.layer.clone(
        parent=self,
        name='backward_layer',
        go_backwards=not self.layer.go_backwards,
      )
    check_bidirectional_pair(self.layer, backward)
    forward = self.layer.clone(parent=self, name='forward_layer')
    return forward, backward

  @nn.compact
  def __call__(
    self,
    inputs: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike | None = None,
    initial_state: Any = None,
    deterministic: bool | None = None,
  ) -> Any:
    """Runs both layers and merges their outputs.

    Args:
      inputs: ``(..., T, D)``.
      mask: ``(..., T)`` boolean or ``None``, given to both layers.
      initial_state: ``None`` or a list of the forward states then the
        backward states (``[h_f, h_b]`` or ``[h_f, c_f, h_b, c_b]``).
      deterministic: given to both layers; overrides the field.

    Returns:
      The merged outputs (``(..., T, 2U)`` or ``(..., 2U)`` for
      ``'concat'``), or the two outputs for ``merge_mode=None``; with
      ``return_state`` followed by the forward then the backward states.
    """
    if deterministic is None:
      deterministic = self.deterministic
    if deterministic is not None:
      validate.check_bool(deterministic, 'Bidirectional', 'deterministic')
    forward_layer, backward_layer = self._layers()
    forward_state, backward_state = split_bidirectional_state(initial_state)
    # Keras's rule: a layer returning sequences outputs zeros at masked steps.
    forward = forward_layer(
      inputs,
      mask,
      forward_state,
      deterministic,
      zero_output_for_mask=forward_layer.return_sequences,
    )
    backward = backward_layer(
      inputs,
      mask,
      backward_state,
      deterministic,
      zero_output_for_mask=backward_layer.return_sequences,
    )
    return merge_bidirectional(
      forward,
      backward,
      self.merge_mode,
      forward_layer.return_sequences,
      forward_layer.return_state,
    )
