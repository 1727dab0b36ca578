"""One case per public layer: the table the layer-wide tests draw from.

Each :class:`Case` says how to make a layer on either front end (its linen
constructor, and its NNX constructor taking ``rngs``), what one example of
its inputs looks like (shapes with ``'t'`` for the steps axis, padding, a
mask) and whether it drops units in training. The parity, compile-count,
export and registry tests, and the NNX error tests, draw their layers from
:data:`CASES`; tests/test_cases.py checks that every public layer of
``flax_dense`` and ``flax_dense.nnx`` has a case and that both constructors
of each case make the same layer.

A new layer is one more entry of :data:`CASES` (the first of its name is
its main case; further entries with a ``variant`` cover other settings).
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import flax_dense as fd
from flax_dense._src.models.graph import Node

#: Batch size and number of steps of the example inputs.
BATCH, STEPS = 3, 6

Shape = tuple[int | str, ...]


@dataclasses.dataclass(frozen=True)
class Case:
  """A layer on both front ends and an example of its inputs.

  Attributes:
    name: the layer's class name in ``flax_dense`` / ``flax_dense.nnx``
      (or another linen class that ``fd.nnx.from_linen`` converts).
    linen: makes the linen module.
    nnx: makes the NNX module from an ``nnx.Rngs``; built on the inputs
      of :meth:`inputs` it has the weights' shapes of the linen module's.
    shapes: the shape of one example of each input, ``'t'`` marking the
      steps axis (any size, symbolic in export tests).
    variant: empty for the layer's main case, else what this one varies.
    padded: the value of the trailing padded steps of the first input
      ``(batch, steps, features)``, or None for no padding.
    mask: whether the call also takes the first input's mask (computed with
      the ``padded`` value).
    train: whether the layer drops units: the tests call it in training
      mode (linen ``deterministic=False, rng=key``, NNX ``rngs=key``).
    symbolic_batch: whether ``jax.export`` exports it for a symbolic batch
      (and symbolic steps where ``shapes`` has ``'t'``).
    vocabulary: None for float inputs; else the inputs are int32 ids in
      ``[0, vocabulary)`` (an embedding's tokens).
  """

  name: str
  linen: Callable[[], nn.Module]
  nnx: Callable[[nnx.Rngs], nnx.Module]
  shapes: tuple[Shape, ...]
  variant: str = ''
  padded: float | None = None
  mask: bool = False
  train: bool = False
  symbolic_batch: bool = True
  vocabulary: int | None = None

  @property
  def id(self) -> str:
    return f'{self.name}-{self.variant}' if self.variant else self.name

  def input_specs(self, batch, steps) -> list[tuple[tuple[Any, ...], Any]]:
    """``(shape, dtype)`` of each call input; ``batch``/``steps`` may be
    symbolic dimensions."""
    dtype = jnp.float32 if self.vocabulary is None else jnp.int32
    specs = [
      ((batch, *(steps if s == 't' else s for s in shape)), dtype)
      for shape in self.shapes
    ]
    if self.mask:
      specs.append((specs[0][0][:-1], jnp.bool_))
    return specs

  def inputs(self, batch=BATCH, steps=STEPS, seed=0) -> tuple[jax.Array, ...]:
    """Example call inputs: normal values, padded and masked as told."""
    shapes = [shape for shape, _ in self.input_specs(batch, steps)]
    arrays = [
      random(shape, seed + index)
      if self.vocabulary is None
      else np.random.default_rng(seed + index)
      .integers(0, self.vocabulary, shape)
      .astype('int32')
      for index, shape in enumerate(shapes[: len(self.shapes)])
    ]
    if self.padded is not None:
      arrays[0] = pad(arrays[0], self.padded, seed)
    if self.mask:
      mask_value = 0.0 if self.padded is None else self.padded
      arrays.append(fd.compute_mask(jnp.asarray(arrays[0]), mask_value))
    return tuple(jnp.asarray(x) for x in arrays)

  def linen_kwargs(self, key) -> dict[str, Any]:
    """Call arguments of the linen module: training mode with ``key``."""
    return {'deterministic': False, 'rng': key} if self.train else {}

  def nnx_kwargs(self, key) -> dict[str, Any]:
    """Call arguments of the NNX module: noise drawn from ``key``."""
    return {'rngs': key} if self.train else {}


def random(shape, seed=0) -> np.ndarray:
  """Standard normal float32 values (a writable NumPy array)."""
  return np.random.default_rng(seed).normal(size=shape).astype('float32')


def pad(x, value=0.0, seed=0) -> np.ndarray:
  """``x`` ``(B, T, ...)`` with trailing steps set to ``value``: row 0 has
  two padded steps, the others a random number, none all padded."""
  x = np.array(x)
  lengths = np.random.default_rng(seed).integers(1, x.shape[1] + 1, x.shape[0])
  lengths[0] = max(1, x.shape[1] - 2)
  for row, length in enumerate(lengths):
    x[row, length:] = value
  return x


def sine_gate(x):
  """The function of the Lambda case."""
  return jnp.sin(x) * x[..., :1]


def _add_nodes():
  # y = dense(a) + dense(b): one layer called twice, and a merge.
  return (
    Node((0,), steps=(0,)),
    Node((1,), steps=(0,)),
    Node((2, 3), merge='Add'),
  )


def _dense(*args, **kwargs):
  """A PerPositionDense case: ``(5, 4)`` inputs, 3 features."""
  return Case(
    'PerPositionDense',
    lambda: fd.PerPositionDense(3, *args, **kwargs),
    lambda rngs: fd.nnx.PerPositionDense(5, 4, 3, *args, rngs=rngs, **kwargs),
    ((5, 4),),
  )


def _variant(case: Case, variant: str, **changes) -> Case:
  return dataclasses.replace(case, variant=variant, **changes)


_SEQ = (('t', 4),)
_DROPOUT = {'train': True}

CASES: list[Case] = [
  _dense(),
  _variant(_dense(use_bias=False), 'no-bias'),
  *(
    _variant(_dense(activation=activation), name)
    for name, activation in [
      ('softmax', 'softmax'),
      ('tanh', 'tanh'),
      ('relu', 'relu'),
      ('callable', jax.nn.gelu),
    ]
  ),
  _variant(_dense(activity_regularizer=fd.l1_l2(0.01, 0.02)), 'regularized'),
  _variant(_dense(dtype=jnp.bfloat16), 'bfloat16'),
  Case(
    'PerPositionDense',
    lambda: fd.PerPositionDense(2),
    lambda rngs: fd.nnx.PerPositionDense(5, 4, 2, rngs=rngs),
    ((2, 5, 4),),
    variant='nested-batch',
  ),
  # 7 steps in windows of 2 every 2: the weights fix 3 windows, not the 7.
  Case(
    'LocallyConnected1D',
    lambda: fd.LocallyConnected1D(3, 2, strides=2, activation='relu'),
    lambda rngs: fd.nnx.LocallyConnected1D(
      7, 4, 3, 2, strides=2, activation='relu', rngs=rngs
    ),
    ((7, 4),),
  ),
  Case(
    'LocallyConnected1D',
    lambda: fd.LocallyConnected1D(
      2, 3, data_format='channels_first', use_bias=False
    ),
    lambda rngs: fd.nnx.LocallyConnected1D(
      6, 4, 2, 3, data_format='channels_first', use_bias=False, rngs=rngs
    ),
    ((4, 6),),
    variant='channels-first-no-bias',
  ),
  Case(
    'ConstProduct',
    lambda: fd.ConstProduct([0.5, 1.5, -2.0, 1.0]),
    lambda rngs: fd.nnx.ConstProduct(4, weights=[0.5, 1.5, -2.0, 1.0]),
    _SEQ,
  ),
  Case(
    'ConstProduct',
    lambda: fd.ConstProduct([0.5, 1.5, -2.0, 1.0], trainable=True),
    lambda rngs: fd.nnx.ConstProduct(
      4, weights=[0.5, 1.5, -2.0, 1.0], trainable=True, rngs=rngs
    ),
    _SEQ,
    variant='trainable',
  ),
  Case(
    'ConstProduct',
    lambda: fd.ConstProduct(trainable=True),
    lambda rngs: fd.nnx.ConstProduct(4, trainable=True, rngs=rngs),
    _SEQ,
    variant='trainable-drawn',
  ),
  Case(
    'Masking', lambda: fd.Masking(0.0), lambda rngs: fd.nnx.Masking(0.0), _SEQ
  ),
  Case(
    'Masking',
    lambda: fd.Masking(-1.0),
    lambda rngs: fd.nnx.Masking(-1.0),
    _SEQ,
    variant='value',
    padded=-1.0,
  ),
  Case(
    'Dropout',
    lambda: fd.Dropout(0.5),
    lambda rngs: fd.nnx.Dropout(0.5, rngs=rngs),
    _SEQ,
    **_DROPOUT,
  ),
  Case(
    'Dropout',
    lambda: fd.Dropout(0.4, noise_shape=(None, 1, None)),
    lambda rngs: fd.nnx.Dropout(0.4, noise_shape=(None, 1, None), rngs=rngs),
    _SEQ,
    variant='noise-shape',
    **_DROPOUT,
  ),
  Case(
    'Dropout',
    lambda: fd.Dropout(0.5, deterministic=True),
    lambda rngs: fd.nnx.Dropout(0.5, deterministic=True, rngs=rngs),
    _SEQ,
    variant='eval',
  ),
  Case(
    'SpatialDropout1D',
    lambda: fd.SpatialDropout1D(0.5),
    lambda rngs: fd.nnx.SpatialDropout1D(0.5, rngs=rngs),
    _SEQ,
    **_DROPOUT,
  ),
  Case(
    'SpatialDropout1D',
    lambda: fd.SpatialDropout1D(0.5, data_format='channels_first'),
    lambda rngs: fd.nnx.SpatialDropout1D(
      0.5, data_format='channels_first', rngs=rngs
    ),
    ((4, 't'),),
    variant='channels-first',
    **_DROPOUT,
  ),
  Case(
    'SpatialDropout2D',
    lambda: fd.SpatialDropout2D(0.5),
    lambda rngs: fd.nnx.SpatialDropout2D(0.5, rngs=rngs),
    (('t', 2, 3),),
    **_DROPOUT,
  ),
  Case(
    'SpatialDropout2D',
    lambda: fd.SpatialDropout2D(0.5, data_format='channels_first'),
    lambda rngs: fd.nnx.SpatialDropout2D(
      0.5, data_format='channels_first', rngs=rngs
    ),
    ((3, 't', 5),),
    variant='channels-first',
    **_DROPOUT,
  ),
  Case(
    'SpatialDropout3D',
    lambda: fd.SpatialDropout3D(0.5),
    lambda rngs: fd.nnx.SpatialDropout3D(0.5, rngs=rngs),
    (('t', 2, 2, 3),),
    **_DROPOUT,
  ),
  Case(
    'SpatialDropout3D',
    lambda: fd.SpatialDropout3D(0.5, data_format='channels_first'),
    lambda rngs: fd.nnx.SpatialDropout3D(
      0.5, data_format='channels_first', rngs=rngs
    ),
    ((3, 't', 2, 2),),
    variant='channels-first',
    **_DROPOUT,
  ),
  Case(
    'Activation',
    lambda: fd.Activation('gelu'),
    lambda rngs: fd.nnx.Activation('gelu'),
    _SEQ,
  ),
  Case(
    'Activation',
    lambda: fd.Activation('softmax'),
    lambda rngs: fd.nnx.Activation('softmax'),
    _SEQ,
    variant='softmax',
  ),
  Case(
    'Reshape',
    lambda: fd.Reshape((2, -1)),
    lambda rngs: fd.nnx.Reshape((2, -1)),
    ((5, 4),),
  ),
  Case(
    'Permute',
    lambda: fd.Permute((2, 1)),
    lambda rngs: fd.nnx.Permute((2, 1)),
    _SEQ,
  ),
  Case('Flatten', lambda: fd.Flatten(), lambda rngs: fd.nnx.Flatten(), _SEQ),
  Case(
    'Flatten',
    lambda: fd.Flatten('channels_first'),
    lambda rngs: fd.nnx.Flatten('channels_first'),
    ((4, 't'),),
    variant='channels-first',
  ),
  Case(
    'RepeatVector',
    lambda: fd.RepeatVector(3),
    lambda rngs: fd.nnx.RepeatVector(3),
    ((4,),),
  ),
  Case(
    'Lambda',
    lambda: fd.Lambda(sine_gate),
    lambda rngs: fd.nnx.Lambda(sine_gate),
    _SEQ,
  ),
  Case(
    'ActivityRegularization',
    lambda: fd.ActivityRegularization(0.1, 0.3),
    lambda rngs: fd.nnx.ActivityRegularization(0.1, 0.3),
    _SEQ,
  ),
  Case(
    'GlobalAveragePooling1D',
    lambda: fd.GlobalAveragePooling1D(),
    lambda rngs: fd.nnx.GlobalAveragePooling1D(),
    _SEQ,
    padded=0.0,
    mask=True,
  ),
  Case(
    'GlobalAveragePooling1D',
    lambda: fd.GlobalAveragePooling1D(keepdims=True),
    lambda rngs: fd.nnx.GlobalAveragePooling1D(keepdims=True),
    _SEQ,
    variant='keepdims',
    padded=0.0,
  ),
  Case(
    'GlobalMaxPooling1D',
    lambda: fd.GlobalMaxPooling1D(),
    lambda rngs: fd.nnx.GlobalMaxPooling1D(),
    _SEQ,
    padded=0.0,
    mask=True,
  ),
  Case(
    'GlobalMaxPooling1D',
    lambda: fd.GlobalMaxPooling1D('channels_first', keepdims=True),
    lambda rngs: fd.nnx.GlobalMaxPooling1D('channels_first', keepdims=True),
    ((4, 't'),),
    variant='channels-first',
  ),
  Case(
    'MultiIODense',
    lambda: fd.MultiIODense(3),
    lambda rngs: fd.nnx.MultiIODense(2, 3, rngs=rngs),
    ((2,), (3,)),
  ),
  Case(
    'AttentionDecoder',
    lambda: fd.AttentionDecoder(5, 3),
    lambda rngs: fd.nnx.AttentionDecoder(4, 5, 3, rngs=rngs),
    _SEQ,
    padded=0.0,
    mask=True,
  ),
  Case(
    'AttentionDecoder',
    lambda: fd.AttentionDecoder(5, 3, return_probabilities=True),
    lambda rngs: fd.nnx.AttentionDecoder(
      4, 5, 3, return_probabilities=True, rngs=rngs
    ),
    _SEQ,
    variant='probabilities',
    padded=0.0,
    mask=True,
  ),
  Case(
    'Dense',
    lambda: nn.Dense(3),
    lambda rngs: nnx.Linear(4, 3, rngs=rngs),
    _SEQ,
  ),
  Case(
    'KerasSequential',
    lambda: fd.KerasSequential(
      (
        fd.Masking(),
        fd.PerPositionDense(3, activation='tanh'),
        fd.Dropout(0.3),
        fd.GlobalAveragePooling1D(),
      ),
      names=('masking', 'dense', 'dropout', 'pooling'),
      mask_flow=('compute', 'propagate', 'propagate', 'consume'),
    ),
    lambda rngs: fd.nnx.KerasSequential(
      (
        fd.nnx.Masking(),
        fd.nnx.PerPositionDense(6, 4, 3, activation='tanh', rngs=rngs),
        fd.nnx.Dropout(0.3, deterministic=True, rngs=rngs),
        fd.nnx.GlobalAveragePooling1D(),
      ),
      names=('masking', 'dense', 'dropout', 'pooling'),
      mask_flow=('compute', 'propagate', 'propagate', 'consume'),
    ),
    ((6, 4),),
    padded=0.0,
  ),
  Case(
    'KerasSequential',
    lambda: fd.KerasSequential(
      (
        fd.Masking(0.0),
        nn.Dense(4),
        fd.Dropout(0.3),
        fd.ActivityRegularization(l2=0.1),
        fd.GlobalAveragePooling1D(),
      ),
      names=('masking', 'dense', 'dropout', 'penalty', 'pooling'),
      mask_flow=('compute', 'propagate', 'propagate', 'propagate', 'consume'),
    ),
    lambda rngs: fd.nnx.KerasSequential(
      (
        fd.nnx.Masking(0.0),
        nnx.Linear(4, 4, rngs=rngs),
        fd.nnx.Dropout(0.3, deterministic=True, rngs=rngs),
        fd.nnx.ActivityRegularization(l2=0.1),
        fd.nnx.GlobalAveragePooling1D(),
      ),
      names=('masking', 'dense', 'dropout', 'penalty', 'pooling'),
      mask_flow=('compute', 'propagate', 'propagate', 'propagate', 'consume'),
    ),
    _SEQ,
    variant='any-steps',
    padded=0.0,
  ),
  Case(
    'KerasSequential',
    lambda: fd.KerasSequential(
      (fd.PerPositionDense(4, activation='tanh'), fd.Flatten(), nn.Dense(2))
    ),
    lambda rngs: fd.nnx.KerasSequential(
      (
        fd.nnx.PerPositionDense(5, 3, 4, activation='tanh', rngs=rngs),
        fd.nnx.Flatten(),
        nnx.Linear(20, 2, rngs=rngs),
      )
    ),
    ((5, 3),),
    variant='flatten-dense',
  ),
  Case(
    'Embedding',
    lambda: fd.Embedding(11, 4, mask_zero=True),
    lambda rngs: fd.nnx.Embedding(11, 4, mask_zero=True, rngs=rngs),
    (('t',),),
    vocabulary=11,
  ),
  Case(
    'SimpleRNN',
    lambda: fd.SimpleRNN(5, return_sequences=True),
    lambda rngs: fd.nnx.SimpleRNN(4, 5, return_sequences=True, rngs=rngs),
    _SEQ,
    padded=0.0,
    mask=True,
  ),
  Case(
    'LSTM',
    lambda: fd.LSTM(5, return_sequences=True),
    lambda rngs: fd.nnx.LSTM(4, 5, return_sequences=True, rngs=rngs),
    _SEQ,
    padded=0.0,
    mask=True,
  ),
  Case(
    'LSTM',
    lambda: fd.LSTM(3, go_backwards=True, use_bias=False),
    lambda rngs: fd.nnx.LSTM(
      4, 3, go_backwards=True, use_bias=False, rngs=rngs
    ),
    _SEQ,
    variant='last-backwards-no-bias',
  ),
  Case(
    'GRU',
    lambda: fd.GRU(5, return_sequences=True),
    lambda rngs: fd.nnx.GRU(4, 5, return_sequences=True, rngs=rngs),
    _SEQ,
    padded=0.0,
    mask=True,
  ),
  Case(
    'GRU',
    lambda: fd.GRU(3, reset_after=False),
    lambda rngs: fd.nnx.GRU(4, 3, reset_after=False, rngs=rngs),
    _SEQ,
    variant='reset-before',
  ),
  Case(
    'Bidirectional',
    lambda: fd.Bidirectional(fd.LSTM(3, return_sequences=True)),
    lambda rngs: fd.nnx.Bidirectional(
      fd.nnx.LSTM(4, 3, return_sequences=True, rngs=rngs), rngs=rngs
    ),
    _SEQ,
    padded=0.0,
    mask=True,
  ),
  Case(
    'LSTM',
    lambda: fd.LSTM(3, return_state=True, go_backwards=True),
    lambda rngs: fd.nnx.LSTM(
      4, 3, return_state=True, go_backwards=True, rngs=rngs
    ),
    _SEQ,
    variant='masked-state-backwards',
    padded=0.0,
    mask=True,
  ),
  Case(
    'Bidirectional',
    lambda: fd.Bidirectional(
      fd.LSTM(3, return_sequences=True),
      merge_mode='sum',
      backward_layer=fd.LSTM(
        3, return_sequences=True, go_backwards=True, activation='relu'
      ),
    ),
    lambda rngs: fd.nnx.Bidirectional(
      fd.nnx.LSTM(4, 3, return_sequences=True, rngs=rngs),
      merge_mode='sum',
      backward_layer=fd.nnx.LSTM(
        4,
        3,
        return_sequences=True,
        go_backwards=True,
        activation='relu',
        rngs=rngs,
      ),
      rngs=rngs,
    ),
    _SEQ,
    variant='backward-layer',
    padded=0.0,
    mask=True,
  ),
  Case(
    'Bidirectional',
    lambda: fd.Bidirectional(fd.GRU(3), merge_mode='sum'),
    lambda rngs: fd.nnx.Bidirectional(
      fd.nnx.GRU(4, 3, rngs=rngs), merge_mode='sum', rngs=rngs
    ),
    _SEQ,
    variant='sum',
  ),
  # A layer of fixed positions, run on every step.
  Case(
    'TimeDistributed',
    lambda: fd.TimeDistributed(fd.PerPositionDense(3)),
    lambda rngs: fd.nnx.TimeDistributed(
      fd.nnx.PerPositionDense(5, 4, 3, rngs=rngs)
    ),
    (('t', 5, 4),),
  ),
  Case(
    'KerasFunctional',
    lambda: fd.KerasFunctional(
      layers=(nn.Dense(4),),
      names=('dense',),
      mask_flow=('propagate',),
      nodes=_add_nodes(),
      inputs=2,
      outputs=(4,),
    ),
    lambda rngs: fd.nnx.KerasFunctional(
      [nnx.Linear(3, 4, rngs=rngs)],
      names=['dense'],
      mask_flow=['propagate'],
      nodes=_add_nodes(),
      inputs=2,
      outputs=[4],
    ),
    ((3,), (3,)),
  ),
]


def main_cases() -> list[Case]:
  """The first case of each layer."""
  seen, main = set(), []
  for case in CASES:
    if case.name not in seen:
      seen.add(case.name)
      main.append(case)
  return main


def named(case_id: str) -> Case:
  """The case of that id (``name`` or ``name-variant``)."""
  (case,) = (case for case in CASES if case.id == case_id)
  return case


def ids(cases: Sequence[Case]) -> list[str]:
  return [case.id for case in cases]
