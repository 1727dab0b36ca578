"""Keras's recurrent layers for NNX: SimpleRNN, LSTM, GRU, Bidirectional."""

import inspect
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from flax_dense._src import initializers, validate
from flax_dense._src.nnx.common import check_rngs, make_param
from flax_dense._src.nnx.dropout import _stream, dropout_key
from flax_dense._src.ops.activations import resolve_activation
from flax_dense._src.ops.recurrent import (
  LAYERS,
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


class _Recurrent(nnx.Module):
  """What the NNX SimpleRNN, LSTM and GRU share: weights, checks, the call."""

  kind: str = 'lstm'

  def __init__(
    self,
    in_features: int,
    units: int,
    *,
    activation: Any = 'tanh',
    recurrent_activation: Any = 'sigmoid',
    use_bias: bool = True,
    dtype: Dtype | None = None,
    param_dtype: Dtype = jnp.float32,
    precision: PrecisionLike = None,
    kernel_init: Initializer = glorot_uniform,
    recurrent_kernel_init: Initializer = initializers.orthogonal,
    bias_init: Initializer = initializers.zeros,
    unit_forget_bias: bool = True,
    reset_after: bool = True,
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    return_sequences: bool = False,
    return_state: bool = False,
    go_backwards: bool = False,
    deterministic: bool = False,
    rng_collection: str = 'dropout',
    zero_output_for_mask: bool = False,
    rngs: nnx.Rngs,
  ):
    layer = LAYERS[self.kind]
    check_recurrent_fields(
      layer,
      units,
      dropout,
      recurrent_dropout,
      {
        'use_bias': use_bias,
        'unit_forget_bias': unit_forget_bias,
        'reset_after': reset_after,
        'return_sequences': return_sequences,
        'return_state': return_state,
        'go_backwards': go_backwards,
        'deterministic': deterministic,
        'zero_output_for_mask': zero_output_for_mask,
      },
      rng_collection,
    )
    validate.check_positive_int(in_features, layer, 'in_features')
    rngs = check_rngs(rngs, layer)
    resolve_activation(activation, layer)
    resolve_activation(recurrent_activation, layer)
    inits = {
      'kernel': ('kernel_init', kernel_init),
      'recurrent_kernel': ('recurrent_kernel_init', recurrent_kernel_init),
      'bias': ('bias_init', bias_init),
    }
    shapes = recurrent_shapes(
      self.kind, in_features, units, use_bias, reset_after
    )
    self.bias = nnx.data(None)
    for name, shape in shapes.items():
      field, init = inits[name]
      if name == 'bias' and self.kind == 'lstm' and unit_forget_bias:
        validate.check_initializer(init, layer, field)
        init = unit_forget_bias_init(init, units)
      param = make_param(
        layer, name, init, rngs, shape, param_dtype, field=field
      )
      setattr(self, name, param)
    self.in_features = in_features
    self.units = units
    self.activation = activation
    self.recurrent_activation = recurrent_activation
    self.use_bias = use_bias
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.precision = precision
    self.unit_forget_bias = unit_forget_bias
    self.reset_after = reset_after
    self.dropout = dropout
    self.recurrent_dropout = recurrent_dropout
    self.return_sequences = return_sequences
    self.return_state = return_state
    self.go_backwards = go_backwards
    self.deterministic = deterministic
    self.rng_collection = rng_collection
    self.zero_output_for_mask = zero_output_for_mask
    self.rngs = _stream(rngs, rng_collection, layer)

  def __call__(
    self,
    inputs: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike | None = None,
    initial_state: Any = None,
    deterministic: bool | None = None,
    *,
    zero_output_for_mask: bool | None = None,
    rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
  ) -> Any:
    """Runs the layer over the sequences.

    Args:
      inputs: ``(..., T, in_features)``; all leading axes are batch axes.
      mask: ``(..., T)`` boolean, True = process the timestep, or ``None``.
      initial_state: ``[h]`` (a single array too) or LSTM's ``[h, c]``,
        each ``(..., units)``; default zeros.
      deterministic: overrides the attribute (``model.eval()`` sets it).
      zero_output_for_mask: overrides the attribute for this call.
      rngs: overrides the layer's dropout stream for this call (or a key).

    Returns:
      ``(..., T, units)`` with ``return_sequences``, else ``(..., units)``;
      with ``return_state`` followed by ``h`` (and LSTM's ``c``).
    """
    layer = LAYERS[self.kind]
    zero_output = self.zero_output_for_mask
    if zero_output_for_mask is not None:
      zero_output = validate.check_bool(
        zero_output_for_mask, layer, 'zero_output_for_mask'
      )
    if deterministic is None:
      deterministic = self.deterministic
    deterministic = validate.check_bool(deterministic, layer, 'deterministic')
    inputs, mask, states = check_recurrent_inputs(
      layer, self.kind, self.units, inputs, mask, initial_state
    )
    shapes = recurrent_shapes(
      self.kind, inputs.shape[-1], self.units, self.use_bias, self.reset_after
    )
    params = {name: getattr(self, name)[...] for name in shapes}
    for name, shape in shapes.items():
      validate.check_built_shape(
        params[name].shape,
        layer,
        name,
        shape,
        f'inputs of shape {inputs.shape}',
      )
    key = None
    if not deterministic and (self.dropout or self.recurrent_dropout):
      key = dropout_key(rngs, self.rngs, self.rng_collection, layer)
    outputs, states = recurrent_layer(
      inputs,
      mask,
      states,
      params,
      key,
      kind=self.kind,
      activation=resolve_activation(self.activation, layer),
      recurrent_activation=resolve_activation(self.recurrent_activation, layer),
      reset_after=self.reset_after,
      go_backwards=self.go_backwards,
      zero_output_for_mask=zero_output,
      return_sequences=self.return_sequences,
      dropout=self.dropout,
      recurrent_dropout=self.recurrent_dropout,
      dtype=self.dtype,
      precision=self.precision,
    )
    return format_outputs(outputs, states, self.return_state)

  def config(self) -> dict[str, Any]:
    """The keyword arguments that rebuild this layer (without ``rngs`` and
    the initializers, whose work its weights hold)."""
    parameters = inspect.signature(type(self).__init__).parameters
    return {
      name: getattr(self, name)
      for name, parameter in parameters.items()
      if parameter.kind is inspect.Parameter.KEYWORD_ONLY
      and name != 'rngs'
      and not name.endswith('_init')
    }


class SimpleRNN(_Recurrent):
  """Keras's ``SimpleRNN`` for NNX, the twin of :class:`flax_dense.SimpleRNN`.

  ``fd.nnx.SimpleRNN(in_features, units, *, ..., rngs)`` takes the
  keywords of the linen layer's fields.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> layer = fd.nnx.SimpleRNN(3, 4, rngs=nnx.Rngs(0))
    >>> layer.kernel.shape, layer.recurrent_kernel.shape, layer.bias.shape
    ((3, 4), (4, 4), (4,))
    >>> layer(jnp.ones((2, 5, 3))).shape
    (2, 4)
  """

  kind = 'simple_rnn'

  def __init__(
    self,
    in_features: int,
    units: int,
    *,
    activation: Any = 'tanh',
    use_bias: bool = True,
    dtype: Dtype | None = None,
    param_dtype: Dtype = jnp.float32,
    precision: PrecisionLike = None,
    kernel_init: Initializer = glorot_uniform,
    recurrent_kernel_init: Initializer = initializers.orthogonal,
    bias_init: Initializer = initializers.zeros,
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    return_sequences: bool = False,
    return_state: bool = False,
    go_backwards: bool = False,
    deterministic: bool = False,
    rng_collection: str = 'dropout',
    zero_output_for_mask: bool = False,
    rngs: nnx.Rngs,
  ):
    super().__init__(
      in_features,
      units,
      activation=activation,
      use_bias=use_bias,
      dtype=dtype,
      param_dtype=param_dtype,
      precision=precision,
      kernel_init=kernel_init,
      recurrent_kernel_init=recurrent_kernel_init,
      bias_init=bias_init,
      dropout=dropout,
      recurrent_dropout=recurrent_dropout,
      return_sequences=return_sequences,
      return_state=return_state,
      go_backwards=go_backwards,
      deterministic=deterministic,
      rng_collection=rng_collection,
      zero_output_for_mask=zero_output_for_mask,
      rngs=rngs,
    )


class LSTM(_Recurrent):
  """Keras's ``LSTM`` for NNX, the twin of :class:`flax_dense.LSTM`.

  ``fd.nnx.LSTM(in_features, units, *, ..., rngs)`` takes the keywords of
  the linen layer's fields; ``model.train()`` / ``model.eval()`` switch its dropout.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> layer = fd.nnx.LSTM(3, 4, return_sequences=True, dropout=0.5,
    ...                     rngs=nnx.Rngs(0))
    >>> layer.kernel.shape, layer.recurrent_kernel.shape, layer.bias.shape
    ((3, 16), (4, 16), (16,))
    >>> layer.eval()
    >>> layer(jnp.ones((2, 5, 3))).shape
    (2, 5, 4)
  """

  kind = 'lstm'

  def __init__(
    self,
    in_features: int,
    units: int,
    *,
    activation: Any = 'tanh',
    recurrent_activation: Any = 'sigmoid',
    use_bias: bool = True,
    dtype: Dtype | None = None,
    param_dtype: Dtype = jnp.float32,
    precision: PrecisionLike = None,
    kernel_init: Initializer = glorot_uniform,
    recurrent_kernel_init: Initializer = initializers.orthogonal,
    bias_init: Initializer = initializers.zeros,
    unit_forget_bias: bool = True,
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    return_sequences: bool = False,
    return_state: bool = False,
    go_backwards: bool = False,
    deterministic: bool = False,
    rng_collection: str = 'dropout',
    zero_output_for_mask: bool = False,
    rngs: nnx.Rngs,
  ):
    super().__init__(
      in_features,
      units,
      activation=activation,
      use_bias=use_bias,
      dtype=dtype,
      param_dtype=param_dtype,
      precision=precision,
      kernel_init=kernel_init,
      recurrent_kernel_init=recurrent_kernel_init,
      bias_init=bias_init,
      dropout=dropout,
      recurrent_dropout=recurrent_dropout,
      return_sequences=return_sequences,
      return_state=return_state,
      go_backwards=go_backwards,
      deterministic=deterministic,
      rng_collection=rng_collection,
      zero_output_for_mask=zero_output_for_mask,
      rngs=rngs,
      recurrent_activation=recurrent_activation,
      unit_forget_bias=unit_forget_bias,
    )


class GRU(_Recurrent):
  """Keras's ``GRU`` for NNX, the twin of :class:`flax_dense.GRU`.

  ``fd.nnx.GRU(in_features, units, *, ..., rngs)`` takes the keywords of
  the linen layer's fields.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> layer = fd.nnx.GRU(3, 4, rngs=nnx.Rngs(0))
    >>> layer.bias.shape  # reset_after: input row, recurrent row
    (2, 12)
    >>> h, state = fd.nnx.GRU(3, 4, return_state=True, rngs=nnx.Rngs(0))(
    ...     jnp.ones((2, 5, 3)))
    >>> h.shape, state.shape
    ((2, 4), (2, 4))
  """

  kind = 'gru'

  def __init__(
    self,
    in_features: int,
    units: int,
    *,
    activation: Any = 'tanh',
    recurrent_activation: Any = 'sigmoid',
    use_bias: bool = True,
    dtype: Dtype | None = None,
    param_dtype: Dtype = jnp.float32,
    precision: PrecisionLike = None,
    kernel_init: Initializer = glorot_uniform,
    recurrent_kernel_init: Initializer = initializers.orthogonal,
    bias_init: Initializer = initializers.zeros,
    reset_after: bool = True,
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    return_sequences: bool = False,
    return_state: bool = False,
    go_backwards: bool = False,
    deterministic: bool = False,
    rng_collection: str = 'dropout',
    zero_output_for_mask: bool = False,
    rngs: nnx.Rngs,
  ):
    super().__init__(
      in_features,
      units,
      activation=activation,
      use_bias=use_bias,
      dtype=dtype,
      param_dtype=param_dtype,
      precision=precision,
      kernel_init=kernel_init,
      recurrent_kernel_init=recurrent_kernel_init,
      bias_init=bias_init,
      dropout=dropout,
      recurrent_dropout=recurrent_dropout,
      return_sequences=return_sequences,
      return_state=return_state,
      go_backwards=go_backwards,
      deterministic=deterministic,
      rng_collection=rng_collection,
      zero_output_for_mask=zero_output_for_mask,
      rngs=rngs,
      recurrent_activation=recurrent_activation,
      reset_after=reset_after,
    )


#: The NNX layers ``Bidirectional`` wraps.
RECURRENT_LAYERS = (SimpleRNN, LSTM, GRU)


class Bidirectional(nnx.Module):
  """Keras's ``Bidirectional`` for NNX: a recurrent layer run both ways.

  The twin of :class:`flax_dense.Bidirectional`. ``layer`` itself becomes
  ``forward_layer`` (its weights are kept); ``backward_layer`` is the given
  one, or a new layer of the same configuration with ``go_backwards``
  flipped whose weights ``rngs`` draws. As in Keras, both output zeros at
  masked steps when they return sequences.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> layer = fd.nnx.Bidirectional(
    ...     fd.nnx.LSTM(3, 4, return_sequences=True, rngs=nnx.Rngs(0)),
    ...     merge_mode='sum', rngs=nnx.Rngs(1))
    >>> layer.backward_layer.go_backwards
    True
    >>> layer(jnp.ones((2, 5, 3))).shape
    (2, 5, 4)

  Args:
    layer: an NNX :class:`SimpleRNN`, :class:`LSTM` or :class:`GRU`.
    merge_mode: ``'concat'``, ``'sum'``, ``'mul'``, ``'ave'``, or ``None``
      for the two outputs as a tuple.
    backward_layer: the backward layer, or ``None``.
    rngs: draws the default backward layer's weights (may be ``None`` when
      ``backward_layer`` is given).
  """

  def __init__(
    self,
    layer: _Recurrent,
    *,
    merge_mode: str | None = 'concat',
    backward_layer: _Recurrent | None = None,
    rngs: nnx.Rngs | None = None,
  ):
    check_recurrent_layer(layer, 'layer', RECURRENT_LAYERS)
    check_merge_mode(merge_mode)
    if backward_layer is None:
      rngs = check_rngs(rngs, 'Bidirectional')
      config = layer.config()
      config['go_backwards'] = not layer.go_backwards
      backward_layer = type(layer)(
        layer.in_features, layer.units, **config, rngs=rngs
      )
    check_recurrent_layer(backward_layer, 'backward_layer', RECURRENT_LAYERS)
    check_bidirectional_pair(layer, backward_layer)
    self.forward_layer = layer
    self.backward_layer = backward_layer
    self.merge_mode = merge_mode

  def __call__(
    self,
    inputs: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike | None = None,
    initial_state: Any = None,
    deterministic: bool | None = None,
    *,
    rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
  ) -> Any:
    """Runs both layers and merges their outputs, as the linen twin does.

    Args:
      inputs: ``(..., T, D)``.
      mask: ``(..., T)`` boolean or ``None``, given to both layers.
      initial_state: ``None`` or the forward states then the backward ones.
      deterministic: given to both layers (else each follows its own
        attribute, which ``model.eval()`` / ``model.train()`` set).
      rngs: given to both layers for this call; a key is split in two, so
        that the two directions draw different dropout masks.

    Returns:
      The merged outputs, or the two outputs for ``merge_mode=None``; with
      ``return_state`` followed by the forward then the backward states.
    """
    if deterministic is not None:
      validate.check_bool(deterministic, 'Bidirectional', 'deterministic')
    forward_rngs = backward_rngs = rngs
    if isinstance(rngs, jax.Array):
      forward_rngs, backward_rngs = jax.random.split(rngs)
    forward_state, backward_state = split_bidirectional_state(initial_state)
    forward, backward = (
      layer(
        inputs,
        mask,
        state,
        deterministic,
        zero_output_for_mask=layer.return_sequences,
        rngs=layer_rngs,
      )
      for layer, state, layer_rngs in (
        (self.forward_layer, forward_state, forward_rngs),
        (self.backward_layer, backward_state, backward_rngs),
      )
    )
    return merge_bidirectional(
      forward,
      backward,
      self.merge_mode,
      self.forward_layer.return_sequences,
      self.forward_layer.return_state,
    )
