"""Keras weights as flax_dense params, pure NumPy: ``keras_weights_to_params``."""

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Kinds of :func:`keras_weights_to_params` and the layout of their Keras
#: kernel (the layer each becomes: the function's docstring).
WEIGHT_KINDS: dict[str, str] = {
  'dense': '(in_features, units)',
  'dense2d': '(positions, in_features, units)',
  'einsum_dense': '(positions, in_features, units)',
  'locally_connected1d': '(output_length, kernel_size * in_features, filters)',
}


def _weight_kind(kind: str) -> str:
  """The key of :data:`WEIGHT_KINDS` that ``kind`` spells, in any case."""
  if isinstance(kind, str):
    spelled = kind.lower().replace('_', '')
    for known in WEIGHT_KINDS:
      if known.replace('_', '') == spelled:
        return known
  raise ValueError(
    f'keras_weights_to_params: unknown kind {kind!r}; expected one of'
    f' {", ".join(map(repr, WEIGHT_KINDS))} (or the Keras class name, e.g.'
    " 'LocallyConnected1D')."
  )


def keras_weights_to_params(
  kind: str, weights: Sequence[Any], *, kernel_size: int = 1
) -> dict[str, np.ndarray]:
  """The params of a flax_dense layer from one Keras layer's weights.

  ``weights`` is what the Keras layer's ``get_weights()`` returns:
  ``[kernel, bias]``, or ``[kernel]`` for a layer without bias. No Keras is
  needed: the arrays can come from ``np.load``, an ``.h5`` file or a
  pickle. ``kind`` names the Keras layer (case and underscores do not
  matter, so the class name works too):

  ==========================  ===================  ==========================
  kind                        Keras kernel         flax_dense layer
  ==========================  ===================  ==========================
  ``'dense'``                 ``(D, K)``           ``flax.linen.Dense(K)``
  ``'einsum_dense'``          ``(P, D, K)``        ``PerPositionDense(K)``
  ``'dense2d'``               ``(P, D, K)``        ``PerPositionDense(K)``
  ``'locally_connected1d'``   ``(P, k * D, K)``    ``PerPositionDense(K)``
                                                   (``k = 1``) or
                                                   ``LocallyConnected1D(K,
                                                   k)``
  ==========================  ===================  ==========================

  ``'einsum_dense'`` is ``EinsumDense('abc,bcd->abd', bias_axes='bd')``;
  ``'dense2d'`` the classic custom ``Dense2D`` layer (kernel
  ``(P, D, units)``, bias ``(P, units)``); ``'locally_connected1d'`` the
  tf.keras ``LocallyConnected1D(units, kernel_size=1)`` of the default
  ``implementation=1``, whose kernel ``(output_length, kernel_size *
  input_dim, filters)`` is ``(P, D, units)`` for ``kernel_size=1``; give
  the layer's ``kernel_size`` for a larger window, whose kernel
  :class:`LocallyConnected1D` takes as it is (other implementations'
  layouts: ``flax_dense._src.interop.keras_h5.locally_connected1d_weights``).
  The bias is ``(K,)`` for ``'dense'`` and ``(P, K)`` for the others.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp, numpy as np
    >>> kernel = np.ones((5, 4, 3), np.float32)  # (P, 1 * D, K)
    >>> bias = np.zeros((5, 3), np.float32)  # (P, K)
    >>> params = fd.keras_weights_to_params('LocallyConnected1D', [kernel, bias])
    >>> {name: w.shape for name, w in sorted(params.items())}
    {'bias': (5, 3), 'kernel': (5, 4, 3)}
    >>> fd.PerPositionDense(3).apply({'params': params}, jnp.ones((2, 5, 4))).shape
    (2, 5, 3)

  Args:
    kind: the Keras layer: ``'dense'``, ``'einsum_dense'``, ``'dense2d'`` or
      ``'locally_connected1d'``.
    weights: ``[kernel]`` or ``[kernel, bias]``, array-likes.
    kernel_size: for ``'locally_connected1d'``, the layer's window, whose
      multiple the kernel's middle axis must be.

  Returns:
    ``{'kernel': ..., 'bias': ...}`` (no ``'bias'`` for ``[kernel]``) as new
    NumPy arrays of the weights' dtype; use them as
    ``layer.apply({'params': params}, x)``.

  Raises:
    ValueError: for an unknown ``kind``, a number of weights other than 1 or
      2, or a kernel or bias whose shape does not fit the layout of
      ``kind``.
  """
  kind = _weight_kind(kind)
  layout = WEIGHT_KINDS[kind]
  caller = f'keras_weights_to_params({kind!r})'
  if isinstance(weights, str | bytes) or not isinstance(weights, Sequence):
    raise ValueError(
      f'{caller}: weights must be the list [kernel, bias] or [kernel] of the'
      f" layer's get_weights(), got {type(weights).__name__}."
    )
  if len(weights) not in (1, 2):
    raise ValueError(
      f'{caller}: weights must be [kernel, bias] or [kernel], got'
      f' {len(weights)} arrays of shapes'
      f' {[np.shape(w) for w in weights]}.'
    )
  kernel, *bias = (np.array(w) for w in weights)
  kernel_rank = 2 if kind == 'dense' else 3
  if kernel.ndim != kernel_rank:
    raise ValueError(
      f'{caller}: kernel must be {layout}, rank {kernel_rank}, got shape'
      f' {kernel.shape}.'
    )
  if not isinstance(kernel_size, int) or isinstance(kernel_size, bool):
    raise TypeError(
      f'{caller}: kernel_size must be an int, got {kernel_size!r}.'
    )
  if kernel_size < 1 or (kind != 'locally_connected1d' and kernel_size != 1):
    raise ValueError(
      f'{caller}: kernel_size must be a positive int, and 1 unless kind is'
      f" 'locally_connected1d', got {kernel_size}."
    )
  if kernel.shape[1] % kernel_size:
    raise ValueError(
      f'{caller}: the kernel of shape {kernel.shape} must be {layout}, but'
      f' {kernel.shape[1]} is no multiple of kernel_size={kernel_size}.'
    )
  params = {'kernel': kernel}
  if bias:
    bias_shape = kernel.shape[-1:] if kind == 'dense' else kernel.shape[::2]
    if bias[0].shape != bias_shape:
      raise ValueError(
        f'{caller}: the bias of a kernel of shape {kernel.shape} must have'
        f' shape {bias_shape}, got {bias[0].shape}.'
      )
    params['bias'] = bias[0]
  return params
