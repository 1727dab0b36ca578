"""Attention decoder of Bahdanau, Cho & Bengio (2014), as in the Keras tutorial."""

import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from flax.typing import Dtype, PrecisionLike

from flax_dense._src import validate
from flax_dense._src.ops.batching import vmap_batch_axes
from flax_dense._src.ops.reductions import accumulation_dtype, narrow, widen

#: Params initialised with ``kernel_init``; the other matrices are recurrent
#: (``recurrent_init``) and the ``b_*`` vectors are biases (``bias_init``),
#: as in the Keras tutorial.
ATTENTION_KERNELS = ('V_a', 'W_a', 'U_a')


def initializer_field(name: str) -> str:
  """The argument whose initializer draws the param ``name`` of the decoder.

  Biases (``b_*``) take ``bias_init``, the attention kernels
  ``kernel_init``, the other (recurrent) matrices ``recurrent_init``.
  """
  if name.startswith('b_'):
    return 'bias_init'
  if name in ATTENTION_KERNELS:
    return 'kernel_init'
  return 'recurrent_init'


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

  Raises:
    TypeError: if a size is not an integer.
    ValueError: if a size is not positive.
  """
  for name, size in (
    ('in_features', in_features),
    ('units', units),
    ('output_dim', output_dim),
  ):
    if not jax.export.is_symbolic_dim(size):
      validate.check_positive_int(size, 'attention_decoder_shapes', name)
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
    ``(T,)`` weights summing to 1, or to 0 when nothing is kept, in the
    dtype of ``logits`` (float16 and bfloat16 are normalised in float32).
  """
  dtype = logits.dtype
  return narrow(_masked_softmax(widen(logits), mask), dtype)


def _masked_softmax(logits: jax.Array, mask: jax.Array | None) -> jax.Array:
  """:func:`masked_softmax` in the dtype of ``logits``."""
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
      masked the weights are all 0 and the context is 0. Masked timesteps
      are read as zeros everywhere (``s0`` reads ``x[0]``), so whatever they
      hold, even NaN or Inf, reaches neither the outputs nor the gradients.
      The mask does not change the number of steps.
    return_probabilities: emit the attention weights instead of ``y'``.
    precision: passed to every contraction.

  Returns:
    ``(T, output_dim)`` label distributions, or ``(T, T)`` attention weights
    (row i: the weights over encoder timesteps at step i).

  Raises:
    TypeError: if ``return_probabilities`` is not a bool.
    ValueError: if ``inputs`` is not ``(T, D)`` with ``T >= 1``.
  """
  validate.check_bool(
    return_probabilities, 'attention_decoder', 'return_probabilities'
  )
  inputs = jnp.asarray(inputs)
  validate.check_rank(inputs, 'attention_decoder', 2, '(timesteps, features)')
  validate.check_nonempty_axes(
    'attention_decoder',
    inputs.shape,
    {'timesteps': inputs.shape[0], 'features': inputs.shape[1]},
  )
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
    # A where, not a product with the mask: 0 * NaN would be NaN.
    inputs = jnp.where(mask[:, None], inputs, jnp.zeros((), inputs.dtype))
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
    # The context sums over every timestep: float32 for narrow floats.
    dtype = jnp.result_type(weights, inputs)
    context = narrow(
      dot(weights, inputs, preferred_element_type=accumulation_dtype(dtype)),
      dtype,
    )
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
  return _emit_steps(step, (output, state), timesteps)


def _emit_steps(step, carry, timesteps):
  """The outputs of ``timesteps`` steps of ``step``, stacked: ``(T, ...)``.

  ``jax.lax.scan`` for a known T. A symbolic T (``jax.export`` with
  ``jax.export.symbolic_shape``) has no scan, whose length must be known:
  then a ``jax.lax.fori_loop`` writes each step's output into its row, the
  same values, differentiable in forward mode only (fine for serving).
  """
  if isinstance(timesteps, int):
    return jax.lax.scan(step, carry, length=timesteps)[1]
  emitted = jax.eval_shape(lambda carry: step(carry, None)[1], carry)
  rows = jnp.zeros((timesteps, *emitted.shape), emitted.dtype)

  def body(index, state):
    carry, rows = state
    carry, row = step(carry, None)
    return carry, jax.lax.dynamic_update_index_in_dim(rows, row, index, 0)

  return jax.lax.fori_loop(0, timesteps, body, (carry, rows))[1]


# Jitted so that eager calls compile once per shape: the loops inside (chunks,
# the decoder scan) would otherwise be compiled again at every call.
@functools.partial(
  jax.jit, static_argnames=('return_probabilities', 'dtype', 'precision')
)
def attention_decoder_layer(
  inputs: jax.Array,
  mask: jax.Array | None,
  params: dict[str, jax.Array],
  return_probabilities: bool = False,
  dtype: Dtype | None = None,
  precision: PrecisionLike = None,
) -> jax.Array:
  """The ``AttentionDecoder`` layer of both front ends, over a batch.

  Args:
    inputs: ``(..., T, D)``, already checked against ``params``.
    mask: ``(..., T)`` boolean or ``None``.
    params: arrays with the shapes of :func:`attention_decoder_shapes`.
    return_probabilities: emit the attention weights.
    dtype: the computation dtype, or ``None`` to infer it.
    precision: passed to every contraction.

  Returns:
    ``(..., T, output_dim)`` or ``(..., T, T)``.
  """
  inputs, *values = promote_dtype(inputs, *params.values(), dtype=dtype)
  decode = functools.partial(
    attention_decoder,
    return_probabilities=return_probabilities,
    precision=precision,
  )
  return vmap_batch_axes(
    lambda x, m, p: decode(x, p, m),
    inputs.ndim - 2,
    (inputs, mask),
    dict(zip(params, values, strict=True)),
  )


def check_attention_fields(
  units: Any, output_dim: Any, return_probabilities: Any
) -> None:
  """Checks the sizes and the flag of ``AttentionDecoder``."""
  validate.check_positive_int(units, 'AttentionDecoder', 'units')
  validate.check_positive_int(output_dim, 'AttentionDecoder', 'output_dim')
  validate.check_bool(
    return_probabilities, 'AttentionDecoder', 'return_probabilities'
  )


def attention_decoder_mask(
  inputs: jax.Array, mask: jax.typing.ArrayLike | None
) -> jax.Array | None:
  """``AttentionDecoder``'s mask as booleans, checked against the inputs."""
  if inputs.ndim < 2 or inputs.shape[-2] == 0:
    raise ValueError(
      'AttentionDecoder: inputs must have shape (..., timesteps, features)'
      f' with rank >= 2 and at least one timestep, got shape {inputs.shape}.'
    )
  if mask is None:
    return None
  mask = jnp.asarray(mask)
  if mask.shape != inputs.shape[:-1]:
    raise ValueError(
      f'AttentionDecoder: mask must have shape {inputs.shape[:-1]}'
      f' (..., timesteps) to match inputs of shape {inputs.shape}, got'
      f' shape {mask.shape}.'
    )
  return mask.astype(bool)


# ---------------------------------------------------------------------------
# LocallyConnected1D, shared by its linen and NNX classes, the pure function
# and the Keras weight converter.
