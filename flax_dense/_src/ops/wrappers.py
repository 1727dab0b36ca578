"""Keras's wrappers: ``TimeDistributed``'s steps and ``Bidirectional``'s
two directions.

``TimeDistributed`` runs a layer on every step of ``(batch, steps, ...)``
inputs by folding the steps into the batch (``(batch * steps, ...)``), as
Keras's wrapper runs it step by step: flax_dense's layers treat the
examples of a batch independently, so both give the same values.
"""

from typing import Any

import jax
import jax.numpy as jnp

from flax_dense._src import validate


def merge_steps(inputs: Any) -> tuple[jax.Array, tuple[Any, Any]]:
  """``TimeDistributed``'s inputs with the steps folded into the batch.

  Args:
    inputs: ``(B, T, ...)``, of rank 3 or more.

  Returns:
    ``(inputs (B * T, ...), (B, T))``.

  Raises:
    TypeError: if ``inputs`` is not an array.
    ValueError: for a rank below 3.
  """
  inputs = validate.as_array(inputs, 'TimeDistributed', 'inputs')
  validate.check_min_rank(inputs, 'TimeDistributed', 3, '(batch, steps, ...)')
  batch, steps = inputs.shape[:2]
  return inputs.reshape(batch * steps, *inputs.shape[2:]), (batch, steps)


def check_wrapped_layer(layer: Any, kind: type, expected: str) -> None:
  """Raises ``TypeError`` unless ``TimeDistributed``'s ``layer`` is a
  ``kind``."""
  if not isinstance(layer, kind):
    raise TypeError(
      f'TimeDistributed: layer must be {expected} (a layer to run on each'
      f' step), got {validate.describe_given(layer)}.'
    )


def split_steps(outputs: Any, batch_steps: tuple[Any, Any]) -> Any:
  """The wrapped layer's outputs ``(B * T, ...)`` (an array or a tuple of
  them) back to ``(B, T, ...)``."""

  def split(output: jax.Array) -> jax.Array:
    return output.reshape(*batch_steps, *output.shape[1:])

  return jax.tree.map(split, outputs)


#: Keras's ``Bidirectional`` merge modes.
MERGE_MODES = ('concat', 'sum', 'mul', 'ave', None)


def check_merge_mode(merge_mode: Any) -> Any:
  """``merge_mode`` if Keras's ``Bidirectional`` accepts it."""
  if merge_mode is not None and not isinstance(merge_mode, str):
    raise TypeError(
      f'Bidirectional: merge_mode must be one of {MERGE_MODES}, got'
      f' {merge_mode!r} of type {type(merge_mode).__name__}.'
    )
  if merge_mode not in MERGE_MODES:
    raise ValueError(
      f'Bidirectional: merge_mode must be one of {MERGE_MODES}, got'
      f' {merge_mode!r}.'
    )
  return merge_mode


def merge_bidirectional(
  forward: Any,
  backward: Any,
  merge_mode: str | None,
  return_sequences: bool,
  return_state: bool,
) -> Any:
  """Keras's ``Bidirectional`` output from its two layers' outputs.

  The backward layer's sequence (in processing order) is flipped back in
  time; the outputs are merged; with ``return_state`` the forward states
  then the backward states follow.

  Args:
    forward: the forward layer's return value.
    backward: the backward layer's return value.
    merge_mode: ``'concat'``, ``'sum'``, ``'mul'``, ``'ave'`` or ``None``
      (the two outputs, unmerged).
    return_sequences: whether the outputs are ``(..., T, U)``.
    return_state: whether the return values hold states.

  Returns:
    The merged output, ``(y, y_rev)`` for ``None``, followed by the states
    with ``return_state``.
  """
  states: tuple = ()
  if return_state:
    states = (*forward[1:], *backward[1:])
    forward, backward = forward[0], backward[0]
  if return_sequences:
    backward = jnp.flip(backward, axis=-2)
  if merge_mode == 'concat':
    output = (jnp.concatenate([forward, backward], axis=-1),)
  elif merge_mode == 'sum':
    output = (forward + backward,)
  elif merge_mode == 'ave':
    output = ((forward + backward) / 2,)
  elif merge_mode == 'mul':
    output = (forward * backward,)
  else:
    output = (forward, backward)
  if return_state:
    return (*output, *states)
  return output[0] if merge_mode is not None else output


def check_recurrent_layer(layer: Any, name: str, kinds: tuple) -> None:
  """Raises ``TypeError`` unless ``layer`` is one of ``kinds``."""
  if not isinstance(layer, kinds):
    expected = ', '.join(kind.__name__ for kind in kinds)
    raise TypeError(
      f'Bidirectional: {name} must be a recurrent layer ({expected}), got'
      f' a {type(layer).__name__}.'
    )


def check_bidirectional_pair(forward: Any, backward: Any) -> None:
  """Keras's rules on the two layers of ``Bidirectional``."""
  if forward.go_backwards == backward.go_backwards:
    raise ValueError(
      'Bidirectional: the forward and backward layers must have different'
      f' go_backwards, got {forward.go_backwards} for both.'
    )
  for name in ('return_sequences', 'return_state'):
    if getattr(forward, name) != getattr(backward, name):
      raise ValueError(
        f'Bidirectional: the forward and backward layers must have the same'
        f' {name}, got {getattr(forward, name)} and'
        f' {getattr(backward, name)}.'
      )


def split_bidirectional_state(initial_state: Any) -> tuple[Any, Any]:
  """``Bidirectional``'s initial states: the forward half, the backward half."""
  if initial_state is None:
    return None, None
  if not isinstance(initial_state, list | tuple):
    raise TypeError(
      'Bidirectional: initial_state must be a list of the forward then the'
      f' backward states, got {type(initial_state).__name__}.'
    )
  half = len(initial_state) // 2
  return list(initial_state[:half]), list(initial_state[half:])
