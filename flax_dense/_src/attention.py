"""Attention decoder of Bahdanau, Cho & Bengio (2014), as in the Keras tutorial."""

import functools
import math
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype, Initializer, PrecisionLike

from flax_dense._src.batching import vmap_batch_axes
from flax_dense._src.checks import check_positive_int, stored_shape

#: Params initialised with ``kernel_init``; the other matrices are recurrent
#: (``recurrent_init``) and the ``b_*`` vectors are biases (``bias_init``),
#: as in the Keras tutorial.
ATTENTION_KERNELS = ('V_a', 'W_a', 'U_a')


def glorot_uniform_any_rank(
  key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32
) -> jax.Array:
  """Glorot-uniform with Keras's fans, so it also initialises the vector ``V_a``.

  A matrix gets Flax's ``glorot_uniform``; a vector of length n gets Keras's
  fans ``fan_in = fan_out = n``, i.e. uniform in ``±sqrt(3 / n)``.
  """
  if len(shape) > 1:
    return nn.initializers.glorot_uniform()(key, shape, dtype)
  limit = math.sqrt(3 / shape[0])
  return jax.random.uniform(key, shape, dtype, -limit, limit)


def attention_decoder_shapes(
  in_features: int, units: int, output_dim: int
) -> dict[str, tuple[int, ...]]:
  """The shapes of the params of an attention decoder, by Keras name.

  Args:
    in_features: D, the features of one encoder timestep.
    units: size of the decoder state.
    output_dim: number of labels.

  Returns:
    ``{name: shape}`` for ``V_a, W_a, U_a, b_a, W_s``, ``C_g, U_g, W_g, b_g``
    for the gates g in r, z, p, and ``C_o, U_o, W_o, b_o``.
  """
  shapes = {
    'V_a': (units,),
    'W_a': (units, units),
    'U_a': (in_features, units),
    'b_a': (units,),
    'W_s': (in_features, units),
  }
  for gate in 'rzp':
    shapes[f'C_{gate}'] = (in_features, units)
    shapes[f'U_{gate}'] = (units, units)
    shapes[f'W_{gate}'] = (output_dim, units)
    shapes[f'b_{gate}'] = (units,)
  shapes['C_o'] = (in_features, output_dim)
  shapes['U_o'] = (units, output_dim)
  shapes['W_o'] = (output_dim, output_dim)
  shapes['b_o'] = (output_dim,)
  return shapes


def masked_softmax(logits: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Softmax over the kept entries; masked entries get exactly 0.

  With nothing kept every weight is 0: no NaN in the value or the gradient.

  Args:
    logits: ``(T,)``.
    mask: ``(T,)`` boolean, True = keep, or ``None`` (keep all).

  Returns:
    ``(T,)`` weights summing to 1, or to 0 when nothing is kept.
  """
  if mask is None:
    return jax.nn.softmax(logits)
  # Shifting by the largest kept logit keeps exp finite; with nothing kept the
  # shift is 0. The inner where keeps masked logits out of exp as well: an inf
  # there, even if discarded, would turn the gradient into NaN.
  peak = jnp.max(jnp.where(mask, logits, -jnp.inf))
  peak = jax.lax.stop_gradient(jnp.where(jnp.any(mask), peak, 0))
  exps = jnp.where(mask, jnp.exp(jnp.where(mask, logits - peak, 0)), 0)
  total = jnp.sum(exps)
  return exps / jnp.where(total > 0, total, 1)


def attention_decoder(
  inputs: jax.Array,
  params: dict[str, jax.Array],
  mask: jax.Array | None = None,
  return_probabilities: bool = False,
  precision: PrecisionLike = None,
) -> jax.Array:
  """Decodes a sequence of encoder states with attention, for one example.

  The recurrence of the Keras tutorial's ``AttentionDecoder``. From
  ``s0 = tanh(x[0] @ W_s)`` and ``y0 = 0``, each of the T steps maps
  ``(y, s)`` to ``(y', s')``::

    e = tanh(s @ W_a + x @ U_a + b_a) @ V_a     # (T,) energies
    a = softmax(e)                              # over the kept timesteps
    context = a @ x
    r = sigmoid(y @ W_r + s @ U_r + context @ C_r + b_r)
    z = sigmoid(y @ W_z + s @ U_z + context @ C_z + b_z)
    p = tanh(y @ W_p + (r * s) @ U_p + context @ C_p + b_p)
    s' = (1 - z) * s + z * p
    y' = softmax(y @ W_o + s @ U_o + context @ C_o + b_o)

  and emits ``y'``, or ``a`` with ``return_probabilities``. The loop is a
  ``jax.lax.scan``: compile time does not grow with T.

  Args:
    inputs: ``(T, D)`` encoder states x.
    params: arrays with the shapes of :func:`attention_decoder_shapes`.
    mask: ``(T,)`` boolean, True = attend to this timestep, or ``None``.
      Masked timesteps get attention weight exactly 0; with every timestep
      masked the weights are all 0 and the context is 0. The mask does not
      change the number of steps, nor ``s0``, which reads ``x[0]``.
    return_probabilities: emit the attention weights instead of ``y'``.
    precision: passed to every contraction.

  Returns:
    ``(T, output_dim)`` label distributions, or ``(T, T)`` attention weights
    (row i: the weights over encoder timesteps at step i).
  """
  timesteps, in_features = inputs.shape
  units = params['W_a'].shape[0]
  output_dim = params['W_o'].shape[0]
  shapes = attention_decoder_shapes(in_features, units, output_dim)
  chex.assert_shape(
    [params[name] for name in shapes],
    list(shapes.values()),
    custom_message='attention_decoder: params must have the shapes of'
    f' attention_decoder_shapes({in_features}, {units}, {output_dim}).',
  )
  if mask is not None:
    chex.assert_shape(
      mask, (timesteps,), custom_message='attention_decoder: mask must be (T,).'
    )
  dot = functools.partial(jnp.dot, precision=precision)

  def gate(name, output, state, context):
    return (
      dot(output, params[f'W_{name}'])
      + dot(state, params[f'U_{name}'])
      + dot(context, params[f'C_{name}'])
      + params[f'b_{name}']
    )

  # The encoder's share of the energies is the same at every step, so it is
  # computed once, outside the loop (the tutorial's time-distributed dense).
  encoded = dot(inputs, params['U_a']) + params['b_a'][None, :]

  def step(carry, _):
    output, state = carry
    energies = dot(
      jnp.tanh(dot(state, params['W_a'])[None, :] + encoded), params['V_a']
    )
    weights = masked_softmax(energies, mask)
    context = dot(weights, inputs)
    reset = jax.nn.sigmoid(gate('r', output, state, context))
    update = jax.nn.sigmoid(gate('z', output, state, context))
    proposal = jnp.tanh(gate('p', output, reset * state, context))
    next_state = (1 - update) * state + update * proposal
    # The tutorial reads the previous state here, not next_state.
    next_output = jax.nn.softmax(gate('o', output, state, context))
    emitted = weights if return_probabilities else next_output
    return (next_output, next_state), emitted

  state = jnp.tanh(dot(inputs[0], params['W_s']))
  output = jnp.zeros((output_dim,), state.dtype)
  _, emitted = jax.lax.scan(step, (output, state), length=timesteps)
  return emitted


class AttentionDecoder(nn.Module):
  """Attention decoder of Bahdanau et al. (2014), the Keras tutorial's layer.

  Maps encoder states ``(..., T, D)`` to label distributions
  ``(..., T, output_dim)``, or to the attention weights ``(..., T, T)`` with
  ``return_probabilities=True``, by the recurrence of
  :func:`flax_dense.functional.attention_decoder` (a ``jax.lax.scan`` over
  T). All leading axes are batch axes. The params keep the tutorial's names
  and shapes (``V_a``, ``W_a``, ``U_a``, ``b_a``, ``W_s``, ``C_g``, ``U_g``,
  ``W_g``, ``b_g`` for g in r, z, p, o), so its Keras weights port one to
  one, and both modes share them: train with label outputs, then apply the
  same variables with ``return_probabilities=True`` to see where it looks.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.AttentionDecoder(units=16, output_dim=10)
    >>> x = jnp.ones((4, 7, 8))  # (batch, timesteps, features)
    >>> variables = layer.init(jax.random.key(0), x)
    >>> shapes = jax.tree.map(jnp.shape, variables['params'])
    >>> shapes['V_a'], shapes['U_a'], shapes['W_r'], shapes['C_o']
    ((16,), (8, 16), (10, 16), (8, 10))
    >>> layer.apply(variables, x).shape
    (4, 7, 10)
    >>> mask = jnp.arange(7) < 5  # the last two timesteps are padding
    >>> mask = jnp.broadcast_to(mask, (4, 7))
    >>> attention = layer.clone(return_probabilities=True)
    >>> weights = attention.apply(variables, x, mask)
    >>> weights.shape  # (batch, decoder steps, encoder timesteps)
    (4, 7, 7)
    >>> weights[0, 0] > 0
    Array([ True,  True,  True,  True,  True, False, False], dtype=bool)

  Attributes:
    units: size of the decoder state s.
    output_dim: number of labels, the size of each output distribution y.
    return_probabilities: return the ``(..., T, T)`` attention weights instead
      of the label distributions.
    dtype: the dtype of the computation (default: inferred from inputs and
      params).
    param_dtype: the dtype passed to parameter initializers.
    precision: numerical precision of the contractions, see
      ``jax.lax.Precision``.
    kernel_init: initializer of the attention params ``V_a (units,)``,
      ``W_a`` and ``U_a``; it must accept a vector shape. Default:
      Glorot-uniform (Keras's fans for the vector).
    recurrent_init: initializer of ``W_s`` and of the ``C_*``, ``U_*`` and
      ``W_*`` gate matrices. Default: orthogonal.
    bias_init: initializer of the ``b_*`` biases. Default: zeros.
  """

  units: int
  output_dim: int
  return_probabilities: bool = False
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = glorot_uniform_any_rank
  recurrent_init: Initializer = nn.initializers.orthogonal()
  bias_init: Initializer = nn.initializers.zeros_init()

  def _check_fields(self) -> None:
    for name in ('units', 'output_dim'):
      check_positive_int(getattr(self, name), 'AttentionDecoder', name)
    if not isinstance(self.return_probabilities, bool):
      raise ValueError(
        'AttentionDecoder: return_probabilities must be True or False, got'
        f' {self.return_probabilities!r}.'
      )

  def _initializer(self, name: str) -> Initializer:
    if name.startswith('b_'):
      return self.bias_init
    if name in ATTENTION_KERNELS:
      return self.kernel_init
    return self.recurrent_init

  @nn.compact
  def __call__(self, inputs: Any, mask: Any = None) -> jax.Array:
    """Decodes the encoder states.

    Args:
      inputs: ``(..., T, D)`` encoder states.
      mask: ``(..., T)`` boolean, True = attend to this timestep, e.g. from
        :func:`flax_dense.compute_mask`; or ``None``. Masked timesteps get
        attention weight exactly 0; a fully masked example attends to
        nothing (weights 0, context 0) and still decodes T steps.

    Returns:
      ``(..., T, output_dim)`` label distributions, or ``(..., T, T)``
      attention weights with ``return_probabilities``.

    Raises:
      ValueError: for a non-positive ``units`` or ``output_dim``, inputs of
        rank below 2 or with no timesteps, a mask whose shape is not
        ``inputs.shape[:-1]``, or D, ``units`` or ``output_dim`` differing
        from the shapes the params were built with.
    """
    self._check_fields()
    inputs = jnp.asarray(inputs)
    if inputs.ndim < 2 or inputs.shape[-2] == 0:
      raise ValueError(
        'AttentionDecoder: inputs must have shape (..., timesteps, features)'
        f' with rank >= 2 and at least one timestep, got shape {inputs.shape}.'
      )
    if mask is not None:
      mask = jnp.asarray(mask)
      if mask.shape != inputs.shape[:-1]:
        raise ValueError(
          f'AttentionDecoder: mask must have shape {inputs.shape[:-1]}'
          f' (..., timesteps) to match inputs of shape {inputs.shape}, got'
          f' shape {mask.shape}.'
        )
      mask = mask.astype(bool)
    shapes = attention_decoder_shapes(
      inputs.shape[-1], self.units, self.output_dim
    )
    for name, shape in shapes.items():
      built_shape = stored_shape(self, 'params', name)
      if built_shape is not None and built_shape != shape:
        raise ValueError(
          f'AttentionDecoder: inputs of shape {inputs.shape} with'
          f' units={self.units} and output_dim={self.output_dim} need {name}'
          f' of shape {shape}, but it was built with shape {built_shape};'
          ' inputs must be (..., timesteps, features) with the features the'
          ' layer was built for.'
        )
    params = {
      name: self.param(name, self._initializer(name), shape, self.param_dtype)
      for name, shape in shapes.items()
    }
    inputs, *values = nn.dtypes.promote_dtype(
      inputs, *params.values(), dtype=self.dtype
    )
    decode = functools.partial(
      attention_decoder,
      return_probabilities=self.return_probabilities,
      precision=self.precision,
    )
    return vmap_batch_axes(
      lambda x, m, p: decode(x, p, m),
      inputs.ndim - 2,
      (inputs, mask),
      dict(zip(params, values, strict=True)),
    )
