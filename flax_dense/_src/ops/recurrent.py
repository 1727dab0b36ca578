"""Keras's recurrent layers (SimpleRNN, LSTM, GRU): cells, masks, dropout.

The math of one example is :func:`recurrent`: one ``jax.lax.scan`` over the
timesteps, each step adding ``h @ recurrent_kernel`` to the projected input
``x_t @ kernel + bias`` (``jax.vmap`` batches it: every step runs a
``(B, U) @ (U, G*U)`` matmul over the whole batch). Where the input
projection runs depends on the platform, chosen as XLA compiles:

- on GPU and TPU it is hoisted out of the loop, one ``(T*B, D) @ (D, G*U)``
  matmul before the scan, so that only ``h @ recurrent_kernel`` stays
  inside (the usual layout of fused RNN kernels);
- on CPU it stays inside the step: the hoisted form writes and reads back
  a ``(T, B, G*U)`` array, and measured about 1.5 times slower there (see
  ``docs/performance.md``, Recurrent layers).

Both give the same values. The weights have Keras's names, shapes and gate
order (LSTM i, f, c, o; GRU z, r, h), so Keras weights port directly.
"""

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from flax.typing import Dtype, PrecisionLike

from flax_dense._src import validate
from flax_dense._src.ops.activations import ActivationFunction
from flax_dense._src.ops.batching import vmap_batch_axes
from flax_dense._src.ops.dropout import dropout as _dropout

#: The gates of each recurrent kind, in Keras's order.
GATES = {'simple_rnn': 1, 'lstm': 4, 'gru': 3}
#: The states of each kind: ``h`` (and LSTM's carry ``c``).
STATES = {'simple_rnn': 1, 'lstm': 2, 'gru': 1}
#: The layer of each kind, named in messages.
LAYERS = {'simple_rnn': 'SimpleRNN', 'lstm': 'LSTM', 'gru': 'GRU'}


#: Whether the input projection leaves the time loop on CPU (see the module
#: docstring); on every other platform it does.
_HOISTED_ON_CPU = False

#: Keras's default kernel initializer (fans D and G*U).
glorot_uniform = jax.nn.initializers.glorot_uniform()


def recurrent_shapes(
  kind: str,
  in_features: int,
  units: int,
  use_bias: bool = True,
  reset_after: bool = True,
) -> dict[str, tuple[int, ...]]:
  """The Keras shapes of a recurrent layer's weights, by Keras name.

  Args:
    kind: ``'simple_rnn'``, ``'lstm'`` or ``'gru'``.
    in_features: D, the features of one timestep.
    units: U, the size of the state.
    use_bias: whether there is a ``bias``.
    reset_after: GRU only: its bias is then ``(2, 3U)`` (input row,
      recurrent row).

  Returns:
    ``{'kernel': (D, G*U), 'recurrent_kernel': (U, G*U), 'bias': ...}``
    with G the gates of ``kind`` (1, 4 or 3).

  Raises:
    TypeError: for an argument of the wrong type.
    ValueError: for an unknown ``kind`` or a size below 1.
  """
  validate.check_string(kind, 'recurrent_shapes', 'kind', tuple(GATES))
  validate.check_positive_int(in_features, 'recurrent_shapes', 'in_features')
  validate.check_positive_int(units, 'recurrent_shapes', 'units')
  validate.check_bool(use_bias, 'recurrent_shapes', 'use_bias')
  validate.check_bool(reset_after, 'recurrent_shapes', 'reset_after')
  gates = GATES[kind]
  shapes: dict[str, tuple[int, ...]] = {
    'kernel': (in_features, gates * units),
    'recurrent_kernel': (units, gates * units),
  }
  if use_bias:
    two_rows = kind == 'gru' and reset_after
    shapes['bias'] = (2, gates * units) if two_rows else (gates * units,)
  return shapes


def _keep_row(keep: jax.Array | None, gate: int) -> jax.Array | None:
  """The dropout multipliers of ``gate``: one row shared, or one per gate."""
  if keep is None:
    return None
  return keep[0] if keep.shape[0] == 1 else keep[gate]


def _project(
  values: jax.Array,
  kernel: jax.Array,
  keep: jax.Array | None,
  gates: int,
  precision: PrecisionLike,
) -> jax.Array:
  """``values @ kernel``, each gate's columns reading its dropped copy.

  Args:
    values: ``(..., N)``, timesteps or a state.
    kernel: ``(N, G*U)``.
    keep: ``None``, ``(1, N)`` (one dropout mask for every gate) or
      ``(G, N)`` (one per gate, Keras's ``implementation=1``).
    gates: G.
    precision: of the contraction.

  Returns:
    ``(..., G*U)``.
  """
  if keep is None:
    return jnp.dot(values, kernel, precision=precision)
  # Explicit leading axes: no rank promotion.
  keep = keep.reshape((1,) * (values.ndim - 1) + keep.shape)
  if keep.shape[-2] == 1:
    return jnp.dot(values * keep[..., 0, :], kernel, precision=precision)
  size = kernel.shape[0]
  per_gate = kernel.reshape(size, gates, kernel.shape[1] // gates)
  dropped = values[..., None, :] * keep
  out = jnp.einsum('...gn,ngu->...gu', dropped, per_gate, precision=precision)
  return out.reshape(*out.shape[:-2], out.shape[-2] * out.shape[-1])


def _cell(
  kind: str,
  recurrent_kernel: jax.Array,
  recurrent_bias: jax.Array | None,
  recurrent_keep: jax.Array | None,
  activation: ActivationFunction,
  recurrent_activation: ActivationFunction,
  reset_after: bool,
  precision: PrecisionLike,
):
  """One step ``(projected x_t (G*U,), states) -> (output, states)``."""
  gates = GATES[kind]
  units = recurrent_kernel.shape[0]

  def recurrent_part(h, columns=slice(None)):
    kernel = recurrent_kernel[:, columns]
    keep = recurrent_keep
    if keep is not None and keep.shape[0] > 1:
      keep = keep[: kernel.shape[1] // units]
    return _project(h, kernel, keep, kernel.shape[1] // units, precision)

  def simple_rnn_step(x, states):
    (h,) = states
    h = activation(x + recurrent_part(h))
    return h, (h,)

  def lstm_step(x, states):
    h, c = states
    z = x + recurrent_part(h)
    i, f, g, o = jnp.split(z, gates)
    c = recurrent_activation(f) * c + recurrent_activation(i) * activation(g)
    h = recurrent_activation(o) * activation(c)
    return h, (h, c)

  def gru_step(x, states):
    (h,) = states
    x_z, x_r, x_h = jnp.split(x, gates)
    if reset_after:
      inner = recurrent_part(h)
      if recurrent_bias is not None:
        inner = inner + recurrent_bias
      r_z, r_r, r_h = jnp.split(inner, gates)
      r = recurrent_activation(x_r + r_r)
      candidate = activation(x_h + r * r_h)
    else:
      r_z, r_r = jnp.split(recurrent_part(h, slice(0, 2 * units)), 2)
      r = recurrent_activation(x_r + r_r)
      keep = _keep_row(recurrent_keep, 2)
      h_h = h if keep is None else h * keep
      candidate = activation(
        x_h
        + jnp.dot(
          r * h_h, recurrent_kernel[:, 2 * units :], precision=precision
        )
      )
    z = recurrent_activation(x_z + r_z)
    h = z * h + (1 - z) * candidate
    return h, (h,)

  return {'simple_rnn': simple_rnn_step, 'lstm': lstm_step, 'gru': gru_step}[
    kind
  ]


def recurrent(
  inputs: jax.Array,
  kernel: jax.Array,
  recurrent_kernel: jax.Array,
  bias: jax.Array | None = None,
  mask: jax.Array | None = None,
  initial_state: Sequence[jax.Array] | None = None,
  *,
  kind: str = 'lstm',
  activation: ActivationFunction = jnp.tanh,
  recurrent_activation: ActivationFunction = jax.nn.sigmoid,
  reset_after: bool = True,
  go_backwards: bool = False,
  zero_output_for_mask: bool = False,
  input_keep: jax.Array | None = None,
  recurrent_keep: jax.Array | None = None,
  precision: PrecisionLike = None,
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
  """Runs a Keras SimpleRNN, LSTM or GRU over one sequence.

  With ``x`` the (dropped) inputs and ``h`` the (dropped) previous output,
  each step computes, as Keras's cells do::

    SimpleRNN  h' = activation(x @ K + b + h @ R)
    LSTM       i, f, g, o = split(x @ K + b + h @ R, 4)
               c' = sig(f) * c + sig(i) * activation(g)
               h' = sig(o) * activation(c')
    GRU        z, r, x_h = split(x @ K + b_in, 3)     (and the same for h)
               reset_after:  h~ = activation(x_h + r * (h @ R_h + b_rec_h))
               otherwise:    h~ = activation(x_h + (r * h) @ R_h)
               h' = z * h + (1 - z) * h~

  where ``sig`` is ``recurrent_activation``. ``x @ K + b`` is one matmul
  before the ``jax.lax.scan`` on GPU and TPU, and computed step by step
  inside it on CPU (see the module docstring).

  Masks follow Keras 3 (``keras.src.backend.jax.rnn``): at a masked step
  every state is carried unchanged and the output is the previous ``h``
  (the initial ``h`` before any kept step), or zeros with
  ``zero_output_for_mask``. A masked step's inputs reach neither outputs
  nor gradients, even if they are NaN.

  Args:
    inputs: ``(T, D)``.
    kernel: ``(D, G*U)``, G = 1, 4, 3 for SimpleRNN, LSTM, GRU.
    recurrent_kernel: ``(U, G*U)``.
    bias: ``(G*U,)``, ``(2, 3U)`` for a GRU with ``reset_after`` (input
      row, recurrent row), or ``None``.
    mask: ``(T,)`` boolean, True = process this step, or ``None``.
    initial_state: ``[h]`` or LSTM's ``[h, c]``, each ``(U,)``; default
      zeros.
    kind: ``'simple_rnn'``, ``'lstm'`` or ``'gru'``.
    activation: of the candidate and (LSTM) of the carry.
    recurrent_activation: of the gates (LSTM, GRU).
    reset_after: GRU only: apply the reset gate after the recurrent matmul.
    go_backwards: process the steps from last to first; the outputs are
      then in processing order (reversed time), as in Keras.
    zero_output_for_mask: masked steps output zeros.
    input_keep: ``None``, or dropout multipliers (0 or ``1/(1-rate)``) of
      the inputs, ``(1, D)`` shared by the gates or ``(G, D)`` one per gate.
    recurrent_keep: the same for ``h``: ``(1, U)`` or ``(G, U)``.
    precision: of every contraction.

  Returns:
    ``(outputs (T, U), states)``: the output of every step in processing
    order, and the final states ``(h,)`` or ``(h, c)``, each ``(U,)``.

  Raises:
    TypeError: if a flag is not a bool.
    ValueError: for weights whose shapes do not fit ``kind``.
  """
  for name, flag in (
    ('reset_after', reset_after),
    ('go_backwards', go_backwards),
    ('zero_output_for_mask', zero_output_for_mask),
  ):
    validate.check_bool(flag, 'recurrent', name)
  gates = GATES[kind]
  units = recurrent_kernel.shape[0]
  in_features = inputs.shape[-1]
  shapes = recurrent_shapes(
    kind, in_features, units, bias is not None, reset_after
  )
  given = {'kernel': kernel, 'recurrent_kernel': recurrent_kernel}
  if bias is not None:
    given['bias'] = bias
  for name, shape in shapes.items():
    validate.check_array_shape(
      given[name], 'recurrent', name, shape, str(shape)
    )
  if initial_state is None:
    initial_state = (jnp.zeros((units,), inputs.dtype),) * STATES[kind]
  initial_state = tuple(initial_state)
  input_bias = recurrent_bias = None
  if bias is not None:
    input_bias, recurrent_bias = (
      (bias[0], bias[1])
      if bias.ndim == 2
      else (
        bias,
        None,
      )
    )
  if mask is not None:
    # A where, not a product: 0 * NaN would be NaN.
    inputs = jnp.where(mask[:, None], inputs, jnp.zeros((), inputs.dtype))
  cell = _cell(
    kind,
    recurrent_kernel,
    recurrent_bias,
    recurrent_keep,
    activation,
    recurrent_activation,
    reset_after,
    precision,
  )

  def project(x):
    projected = _project(x, kernel, input_keep, gates, precision)
    if input_bias is None:
      return projected
    # Explicit leading axes: no rank promotion.
    return projected + input_bias.reshape((1,) * (x.ndim - 1) + (-1,))

  def run(hoisted):
    def step(states, xs):
      x, kept = xs
      output, new_states = cell(x if hoisted else project(x), states)
      if kept is None:
        return new_states, output
      previous = jnp.zeros_like(output) if zero_output_for_mask else states[0]
      new_states = tuple(
        jnp.where(kept, new, old)
        for new, old in zip(new_states, states, strict=True)
      )
      return new_states, jnp.where(kept, output, previous)

    # Saving nothing but the carry and recomputing the step in the backward
    # pass measured about 15% faster gradients on CPU than saving the gates
    # (less memory traffic), with bit-identical results.
    step = jax.checkpoint(
      step,
      prevent_cse=False,
      policy=jax.checkpoint_policies.nothing_saveable,
    )
    xs = project(inputs) if hoisted else inputs
    return jax.lax.scan(step, initial_state, (xs, mask), reverse=go_backwards)

  # XLA lowers only the branch of the platform it compiles for.
  states, outputs = jax.lax.platform_dependent(
    cpu=lambda: run(_HOISTED_ON_CPU), default=lambda: run(True)
  )
  if go_backwards:
    outputs = jnp.flip(outputs, axis=0)
  return outputs, states


def dropout_keeps(
  key: jax.Array | None,
  rate: float,
  shape: tuple[Any, ...],
  dtype: Dtype,
) -> jax.Array | None:
  """Keras's per-sequence dropout multipliers of shape ``shape``, or None.

  Keras 3's cells draw ``dropout(ones)`` once per call: entries are 0 or
  ``1 / (1 - rate)``, the same at every timestep.
  """
  if key is None or rate == 0.0:
    return None
  return _dropout(jnp.ones(shape, dtype), rate, key)


@functools.partial(
  jax.jit,
  static_argnames=(
    'kind',
    'activation',
    'recurrent_activation',
    'reset_after',
    'go_backwards',
    'zero_output_for_mask',
    'return_sequences',
    'dropout',
    'recurrent_dropout',
    'dtype',
    'precision',
  ),
)
def recurrent_layer(
  inputs: jax.Array,
  mask: jax.Array | None,
  initial_state: tuple[jax.Array, ...] | None,
  params: dict[str, jax.Array],
  dropout_key: jax.Array | None,
  *,
  kind: str,
  activation: ActivationFunction,
  recurrent_activation: ActivationFunction,
  reset_after: bool,
  go_backwards: bool,
  zero_output_for_mask: bool,
  return_sequences: bool,
  dropout: float,
  recurrent_dropout: float,
  dtype: Dtype | None,
  precision: PrecisionLike,
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
  """The recurrent layers of both front ends, over a batch, under one jit.

  Args:
    inputs: ``(..., T, D)``, already checked.
    mask: ``(..., T)`` boolean or ``None``.
    initial_state: the states, each ``(..., U)``, or ``None`` for zeros.
    params: ``kernel``, ``recurrent_kernel`` and maybe ``bias``.
    dropout_key: key of the dropout masks, or ``None`` (no dropout).
    kind: ``'simple_rnn'``, ``'lstm'`` or ``'gru'``.
    activation: see :func:`recurrent`.
    recurrent_activation: see :func:`recurrent`.
    reset_after: see :func:`recurrent`.
    go_backwards: see :func:`recurrent`.
    zero_output_for_mask: see :func:`recurrent`.
    return_sequences: return every step's output, not just the last.
    dropout: rate of the input dropout.
    recurrent_dropout: rate of the recurrent dropout.
    dtype: the computation dtype, or ``None`` to infer it.
    precision: of every contraction.

  Returns:
    ``(outputs, states)``: ``(..., T, U)`` or ``(..., U)``, and the final
    states, each ``(..., U)``.
  """
  names = list(params)
  states = () if initial_state is None else tuple(initial_state)
  inputs, *values = promote_dtype(
    inputs, *params.values(), *states, dtype=dtype
  )
  params = dict(zip(names, values[: len(names)], strict=True))
  batch = inputs.shape[:-2]
  units = params['recurrent_kernel'].shape[0]
  if initial_state is None:
    states = (jnp.zeros((*batch, units), inputs.dtype),) * STATES[kind]
  else:
    states = tuple(values[len(names) :])
  # Keras's implementation=1 (forced by recurrent dropout) draws a mask per
  # gate; otherwise one input mask serves every gate.
  rows = GATES[kind] if kind != 'simple_rnn' and recurrent_dropout else 1
  input_key = recurrent_key = None
  if dropout_key is not None:
    input_key, recurrent_key = jax.random.split(dropout_key)
  input_keep = dropout_keeps(
    input_key, dropout, (*batch, rows, inputs.shape[-1]), inputs.dtype
  )
  recurrent_keep = dropout_keeps(
    recurrent_key, recurrent_dropout, (*batch, rows, units), inputs.dtype
  )
  run = functools.partial(
    recurrent,
    kind=kind,
    activation=activation,
    recurrent_activation=recurrent_activation,
    reset_after=reset_after,
    go_backwards=go_backwards,
    zero_output_for_mask=zero_output_for_mask,
    precision=precision,
  )

  def one(x, m, states, input_keep, recurrent_keep, params):
    return run(
      x,
      params['kernel'],
      params['recurrent_kernel'],
      params.get('bias'),
      m,
      states,
      input_keep=input_keep,
      recurrent_keep=recurrent_keep,
    )

  batched: list[Any] = [inputs, mask, states, input_keep, recurrent_keep]
  outputs, states = vmap_batch_axes(
    one,
    len(batch),
    batched,
    params,
  )
  if not return_sequences:
    outputs = outputs[..., -1, :]
  return outputs, states


# ---------------------------------------------------------------------------
# The checks of both front ends, before any math.


def check_recurrent_fields(
  layer: str,
  units: Any,
  dropout: Any,
  recurrent_dropout: Any,
  flags: dict[str, Any],
  rng_collection: Any,
) -> None:
  """Checks the sizes, rates, flags and rng stream of a recurrent layer."""
  validate.check_positive_int(units, layer, 'units')
  validate.check_rate(dropout, layer, 'dropout')
  validate.check_rate(recurrent_dropout, layer, 'recurrent_dropout')
  for name, value in flags.items():
    validate.check_bool(value, layer, name)
  validate.check_str(rng_collection, layer, 'rng_collection')


def check_recurrent_inputs(
  layer: str,
  kind: str,
  units: int,
  inputs: Any,
  mask: Any,
  initial_state: Any,
) -> tuple[jax.Array, jax.Array | None, tuple[jax.Array, ...] | None]:
  """The inputs, mask and initial states of a call, checked.

  Returns:
    ``(inputs (..., T, D), mask (..., T) or None, states or None)``.

  Raises:
    TypeError: for inputs or states that are not arrays, a mask that is not
      boolean, or an initial state that is neither an array nor a list.
    ValueError: for inputs of rank below 2, with no timesteps or features,
      a mask of another shape, or states of another number or shape.
  """
  inputs = validate.as_array(inputs, layer, 'inputs')
  validate.check_min_rank(inputs, layer, 2, '(..., timesteps, features)')
  validate.check_nonempty_axes(
    layer,
    inputs.shape,
    {'timesteps': inputs.shape[-2], 'features': inputs.shape[-1]},
  )
  if mask is not None:
    mask = validate.as_array(mask, layer, 'mask')
    if mask.dtype != jnp.bool_:
      raise TypeError(
        f'{layer}: mask must be a boolean array (True = keep the timestep),'
        f' got dtype {mask.dtype}; use mask.astype(bool).'
      )
    if mask.shape != inputs.shape[:-1]:
      raise ValueError(
        f'{layer}: mask must have shape {inputs.shape[:-1]} (...,'
        f' timesteps) to match inputs of shape {inputs.shape}, got shape'
        f' {mask.shape}.'
      )
  if initial_state is None:
    return inputs, mask, None
  count = STATES[kind]
  names = '[h, c]' if count == 2 else '[h]'
  if isinstance(initial_state, list | tuple):
    states = list(initial_state)
  elif count == 1 and not isinstance(initial_state, dict | str):
    states = [initial_state]
  else:
    raise TypeError(
      f'{layer}: initial_state must be a list of {count} arrays {names},'
      f' got {type(initial_state).__name__}.'
    )
  if len(states) != count:
    raise ValueError(
      f'{layer}: initial_state must hold {count} arrays {names}, got'
      f' {len(states)}.'
    )
  expected = (*inputs.shape[:-2], units)
  for index, state in enumerate(states):
    state = validate.as_array(state, layer, f'initial_state[{index}]')
    if state.shape != expected:
      raise ValueError(
        f'{layer}: initial_state[{index}] must have shape {expected}'
        f' (..., units) for inputs of shape {inputs.shape}, got shape'
        f' {state.shape}.'
      )
    states[index] = state
  return inputs, mask, tuple(states)


def unit_forget_bias_init(bias_init, units: int):
  """Keras's LSTM bias: ``bias_init`` for i, c, o and ones for f."""

  def init(key, shape, dtype=jnp.float32):
    value = bias_init(key, shape, dtype)
    return jnp.asarray(value).at[units : 2 * units].set(1)

  return init


def format_outputs(
  outputs: jax.Array, states: tuple[jax.Array, ...], return_state: bool
) -> Any:
  """Keras's return value: ``outputs``, or ``(outputs, *states)``."""
  return (outputs, *states) if return_state else outputs
