"""Every flag of the public API is a bool: anything else is a TypeError.

A flag is a parameter whose default is ``True`` or ``False``, or that is
annotated ``bool`` (or ``bool | None``) and has a default: linen fields,
NNX constructor arguments, ``__call__`` arguments and functions of
``flax_dense``, ``flax_dense.nnx``, ``flax_dense.functional``,
``flax_dense.checkpoint`` and ``flax_dense.sharding``, and the parameters
of the Keras activations (``gelu``'s ``approximate``), which
``keras_activation`` and both ``Activation`` layers take. The walk below finds
them all, and each has a row in :data:`CALLS` that calls it with otherwise
valid arguments (a new flag without a row fails
:func:`test_every_flag_has_a_valid_call`).

A truthy string such as ``'False'``, an integer or (for a flag that has no
``None`` meaning) ``None`` is refused with a ``TypeError`` naming the layer
or function and the argument. NumPy bools (``np.True_``, ``np.False_``,
what a comparison of NumPy scalars gives) are bools and accepted, with the
same result as Python's; a JAX array is not a flag and is refused too.
"""

import dataclasses
import importlib
import inspect
import re
import tempfile
import types
import typing

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flax_dense as fd
from flax_dense._src.models.graph import Node

MODULES = [
  'flax_dense',
  'flax_dense.nnx',
  'flax_dense.functional',
  'flax_dense.checkpoint',
  'flax_dense.sharding',
]
KEY = jax.random.key(0)
SEQ = jnp.arange(30.0).reshape(2, 5, 3) / 30.0
MASK = jnp.array([[True, True, False, True, False]] * 2)
VEC = jnp.ones((2, 3))
MAPS = {1: SEQ, 2: jnp.ones((2, 3, 3, 2)), 3: jnp.ones((2, 2, 2, 2, 3))}


def _is_flag_annotation(annotation) -> bool:
  if isinstance(annotation, str):
    return annotation.replace(' ', '') in ('bool', 'bool|None')
  if annotation is bool:
    return True
  origin = typing.get_origin(annotation)
  return origin in (typing.Union, types.UnionType) and set(
    typing.get_args(annotation)
  ) == {bool, type(None)}


def _is_flag(default, annotation) -> bool:
  if isinstance(default, bool):
    return True
  has_default = default not in (inspect.Parameter.empty, dataclasses.MISSING)
  return has_default and _is_flag_annotation(annotation)


def _flags_of_signature(function) -> list[tuple[str, bool]]:
  """``(name, optional)`` of each flag; optional: ``None`` is allowed."""
  return [
    (p.name, p.default is None)
    for p in inspect.signature(function).parameters.values()
    if _is_flag(p.default, p.annotation)
  ]


def walk() -> dict[str, bool]:
  """``'module.Name.where.argument'`` of every public flag -> optional."""
  found = {}
  for module_name in MODULES:
    module = importlib.import_module(module_name)
    for name in module.__all__:
      obj = getattr(module, name)
      prefix = f'{module_name}.{name}'
      if inspect.isclass(obj):
        places = []
        if issubclass(obj, nn.Module):
          for field in dataclasses.fields(obj):
            if field.name not in ('parent', 'name') and _is_flag(
              field.default, field.type
            ):
              found[f'{prefix}.field.{field.name}'] = field.default is None
        else:
          places.append('__init__')
        places.append('__call__')
        for place in places:
          # Methods inherited from Flax (nnx.Variable's) are not ours.
          if not getattr(getattr(obj, place), '__module__', '').startswith(
            'flax_dense'
          ):
            continue
          for argument, optional in _flags_of_signature(getattr(obj, place)):
            found[f'{prefix}.{place}.{argument}'] = optional
      elif inspect.isfunction(obj):
        for argument, optional in _flags_of_signature(obj):
          found[f'{prefix}.{argument}'] = optional
  # The parameters of the Keras activations, which keras_activation and
  # both Activation layers pass on.
  for activation, function in fd.KERAS_ACTIVATIONS.items():
    for argument, optional in _flags_of_signature(function):
      for taker in ('keras_activation', 'Activation', 'nnx.Activation'):
        found[f'{taker}.{activation}.{argument}'] = optional
  return found


# -- One valid call per flag, with the flag replaced by ``value`` ----------


def _linen(layer, *inputs, **call):
  variables = layer.init({'params': KEY, 'dropout': KEY}, *inputs, **call)
  return layer.apply(variables, *inputs, rngs={'dropout': KEY}, **call)


def _nnx_sequential():
  return fd.nnx.KerasSequential([nnx.Linear(3, 4, rngs=nnx.Rngs(0))])


def _nodes():
  return (
    Node((0,), steps=(0,)),
    Node((1,), steps=(0,)),
    Node((2, 3), merge='Add'),
  )


def _nnx_functional(**kwargs):
  return fd.nnx.KerasFunctional(
    [nnx.Linear(3, 4, rngs=nnx.Rngs(0))],
    names=['dense'],
    mask_flow=['propagate'],
    nodes=_nodes(),
    inputs=2,
    outputs=[4],
    **kwargs,
  )


def _linen_functional(**kwargs):
  return fd.KerasFunctional(
    layers=(nn.Dense(4),),
    names=('dense',),
    mask_flow=('propagate',),
    nodes=_nodes(),
    inputs=2,
    outputs=(4,),
    **kwargs,
  )


def _decoder_params():
  shapes = fd.functional.attention_decoder_shapes(3, 4, 2)
  return {name: jnp.full(shape, 0.1) for name, shape in shapes.items()}


def _save(overwrite):
  with tempfile.TemporaryDirectory() as path:
    return fd.checkpoint.save(path, {'a': jnp.ones(2)}, overwrite=overwrite)


def _linen_layer_calls():
  calls = {}
  for n in (1, 2, 3):
    name = f'SpatialDropout{n}D'
    calls[f'{name}.field.deterministic'] = lambda v, name=name, n=n: _linen(
      getattr(fd, name)(0.5, deterministic=v), MAPS[n]
    )
    calls[f'{name}.__call__.deterministic'] = lambda v, name=name, n=n: _linen(
      getattr(fd, name)(0.5), MAPS[n], deterministic=v
    )
    calls[f'nnx.{name}.__init__.deterministic'] = lambda v, name=name, n=n: (
      getattr(fd.nnx, name)(0.5, deterministic=v, rngs=nnx.Rngs(0))(MAPS[n])
    )
    calls[f'nnx.{name}.__call__.deterministic'] = lambda v, name=name, n=n: (
      getattr(fd.nnx, name)(0.5, rngs=nnx.Rngs(0))(MAPS[n], deterministic=v)
    )
  for name in ('GlobalAveragePooling1D', 'GlobalMaxPooling1D'):
    calls[f'{name}.field.keepdims'] = lambda v, name=name: _linen(
      getattr(fd, name)(keepdims=v), SEQ, MASK
    )
    calls[f'nnx.{name}.__init__.keepdims'] = lambda v, name=name: getattr(
      fd.nnx, name
    )(keepdims=v)(SEQ, MASK)
  return calls


# Keys drop the leading 'flax_dense.'.
IDS = jnp.array([[1, 2, 0], [3, 0, 0]])

#: The flags each recurrent layer has, besides ``deterministic``.
RECURRENT_FLAGS = {
  'SimpleRNN': ('use_bias', 'return_sequences', 'return_state', 'go_backwards'),
  'LSTM': (
    'use_bias',
    'unit_forget_bias',
    'return_sequences',
    'return_state',
    'go_backwards',
  ),
  'GRU': (
    'use_bias',
    'reset_after',
    'return_sequences',
    'return_state',
    'go_backwards',
  ),
}


def _recurrent_calls():
  """A valid call for every flag of the recurrent layers, both front ends."""
  calls = {}
  for name, flags in RECURRENT_FLAGS.items():
    linen, twin = getattr(fd, name), getattr(fd.nnx, name)
    for flag in (*flags, 'deterministic', 'zero_output_for_mask'):
      calls[f'{name}.field.{flag}'] = lambda v, c=linen, f=flag: _linen(
        c(2, **{f: v}), SEQ
      )
    for flag in (*flags, 'deterministic', 'zero_output_for_mask'):
      calls[f'nnx.{name}.__init__.{flag}'] = lambda v, c=twin, f=flag: c(
        3, 2, **{f: v}, rngs=nnx.Rngs(0)
      )(SEQ)
    for flag in ('deterministic', 'zero_output_for_mask'):
      calls[f'{name}.__call__.{flag}'] = lambda v, c=linen, f=flag: _linen(
        c(2), SEQ, **{f: v}
      )
      calls[f'nnx.{name}.__call__.{flag}'] = lambda v, c=twin, f=flag: c(
        3, 2, rngs=nnx.Rngs(0)
      )(SEQ, **{f: v})
  calls['Bidirectional.__call__.deterministic'] = lambda v: _linen(
    fd.Bidirectional(fd.LSTM(2)), SEQ, deterministic=v
  )
  calls['Bidirectional.field.deterministic'] = lambda v: _linen(
    fd.Bidirectional(fd.LSTM(2), deterministic=v), SEQ
  )
  steps = SEQ[:, :, None]  # (batch, steps, 1, features)
  calls['TimeDistributed.field.deterministic'] = lambda v: _linen(
    fd.TimeDistributed(fd.Dropout(0.5), deterministic=v), steps
  )
  calls['TimeDistributed.__call__.deterministic'] = lambda v: _linen(
    fd.TimeDistributed(fd.Dropout(0.5)), steps, deterministic=v
  )
  calls['nnx.TimeDistributed.__call__.deterministic'] = lambda v: (
    fd.nnx.TimeDistributed(fd.nnx.Dropout(0.5, rngs=nnx.Rngs(0)))(
      steps, deterministic=v
    )
  )
  calls['nnx.Bidirectional.__call__.deterministic'] = lambda v: (
    fd.nnx.Bidirectional(fd.nnx.LSTM(3, 2, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))(
      SEQ, deterministic=v
    )
  )
  calls['Embedding.field.mask_zero'] = lambda v: _linen(
    fd.Embedding(4, 2, mask_zero=v), IDS
  )
  calls['nnx.Embedding.__init__.mask_zero'] = lambda v: fd.nnx.Embedding(
    4, 2, mask_zero=v, rngs=nnx.Rngs(0)
  )(IDS)
  kernels = fd.functional.recurrent_shapes('gru', 3, 2)
  weights = {name: jnp.full(shape, 0.1) for name, shape in kernels.items()}
  for flag in ('reset_after', 'go_backwards', 'zero_output_for_mask'):
    calls[f'functional.recurrent.{flag}'] = lambda v, f=flag: (
      fd.functional.recurrent(
        SEQ[0],
        weights['kernel'],
        weights['recurrent_kernel'],
        # No bias: its shape depends on reset_after.
        None if f == 'reset_after' else weights['bias'],
        kind='gru',
        **{f: v},
      )
    )
  for flag in ('use_bias', 'reset_after'):
    calls[f'functional.recurrent_shapes.{flag}'] = lambda v, f=flag: (
      fd.functional.recurrent_shapes('gru', 3, 2, **{f: v})
    )
  return calls


CALLS = {
  'AttentionDecoder.field.return_probabilities': lambda v: _linen(
    fd.AttentionDecoder(4, 2, return_probabilities=v), SEQ
  ),
  'nnx.AttentionDecoder.__init__.return_probabilities': lambda v: (
    fd.nnx.AttentionDecoder(3, 4, 2, return_probabilities=v, rngs=nnx.Rngs(0))(
      SEQ
    )
  ),
  'functional.attention_decoder.return_probabilities': lambda v: (
    fd.functional.attention_decoder(
      SEQ[0], _decoder_params(), return_probabilities=v
    )
  ),
  'ConstProduct.field.trainable': lambda v: _linen(
    fd.ConstProduct([1.0, 2.0, 3.0], trainable=v), SEQ
  ),
  'nnx.ConstProduct.__init__.trainable': lambda v: fd.nnx.ConstProduct(
    3, weights=[1.0, 2.0, 3.0], trainable=v
  )(SEQ),
  'PerPositionDense.field.use_bias': lambda v: _linen(
    fd.PerPositionDense(4, use_bias=v), SEQ
  ),
  'nnx.PerPositionDense.__init__.use_bias': lambda v: fd.nnx.PerPositionDense(
    5, 3, 4, use_bias=v, rngs=nnx.Rngs(0)
  )(SEQ),
  'LocallyConnected1D.field.use_bias': lambda v: _linen(
    fd.LocallyConnected1D(2, 2, use_bias=v), SEQ
  ),
  'nnx.LocallyConnected1D.__init__.use_bias': lambda v: (
    fd.nnx.LocallyConnected1D(5, 3, 2, 2, use_bias=v, rngs=nnx.Rngs(0))(SEQ)
  ),
  'Dropout.field.deterministic': lambda v: _linen(
    fd.Dropout(0.5, deterministic=v), SEQ
  ),
  'Dropout.__call__.deterministic': lambda v: _linen(
    fd.Dropout(0.5), SEQ, deterministic=v
  ),
  'nnx.Dropout.__init__.deterministic': lambda v: fd.nnx.Dropout(
    0.5, deterministic=v, rngs=nnx.Rngs(0)
  )(SEQ),
  'nnx.Dropout.__call__.deterministic': lambda v: fd.nnx.Dropout(
    0.5, rngs=nnx.Rngs(0)
  )(SEQ, deterministic=v),
  **_linen_layer_calls(),
  **_recurrent_calls(),
  'masked_mean.keepdims': lambda v: fd.masked_mean(SEQ, MASK, 1, keepdims=v),
  'masked_max.keepdims': lambda v: fd.masked_max(SEQ, MASK, 1, keepdims=v),
  'functional.masked_mean.keepdims': lambda v: fd.functional.masked_mean(
    SEQ, MASK, 1, keepdims=v
  ),
  'functional.masked_max.keepdims': lambda v: fd.functional.masked_max(
    SEQ, MASK, 1, keepdims=v
  ),
  'masked_sparse_categorical_crossentropy.from_logits': lambda v: (
    fd.masked_sparse_categorical_crossentropy(
      jnp.zeros((2, 5), int), SEQ, MASK, from_logits=v
    )
  ),
  'KerasSequential.__call__.deterministic': lambda v: _linen(
    fd.KerasSequential([nn.Dense(4)]), SEQ, deterministic=v
  ),
  'nnx.KerasSequential.__call__.deterministic': lambda v: _nnx_sequential()(
    VEC, deterministic=v
  ),
  'KerasFunctional.field.single_output': lambda v: _linen(
    _linen_functional(single_output=v), VEC, VEC
  ),
  'KerasFunctional.__call__.deterministic': lambda v: _linen(
    _linen_functional(), VEC, VEC, deterministic=v
  ),
  'nnx.KerasFunctional.__init__.single_output': lambda v: _nnx_functional(
    single_output=v
  )(VEC, VEC),
  'nnx.KerasFunctional.__call__.deterministic': lambda v: _nnx_functional()(
    VEC, VEC, deterministic=v
  ),
  'keras_activation.gelu.approximate': lambda v: fd.keras_activation(
    'gelu', approximate=v
  )(SEQ),
  'Activation.gelu.approximate': lambda v: _linen(
    fd.Activation('gelu', {'approximate': v}), SEQ
  ),
  'nnx.Activation.gelu.approximate': lambda v: fd.nnx.Activation(
    'gelu', {'approximate': v}
  )(SEQ),
  'checkpoint.save.overwrite': _save,
}

FLAGS = {key.removeprefix('flax_dense.'): opt for key, opt in walk().items()}


def test_every_flag_has_a_valid_call():
  assert sorted(FLAGS) == sorted(CALLS)


def _param(key, *values):
  return pytest.param(key, *values, id=f'{key}={values[-1]!r}')


def _not_bools(key):
  values = ['False', 'True', 1, 0, jnp.array(False)]
  return values if FLAGS.get(key, True) else [*values, None]


NOT_BOOL_CASES = [
  _param(key, value) for key in CALLS for value in _not_bools(key)
]


def _owner_and_argument(key):
  """The layer or function a message names, and the argument."""
  parts = key.split('.')
  if parts[0] in ('nnx', 'functional', 'checkpoint', 'sharding'):
    parts = parts[1:]
  return parts[0], parts[-1]


@pytest.mark.parametrize('key,value', NOT_BOOL_CASES)
def test_a_flag_that_is_not_a_bool_is_a_type_error(key, value):
  owner, argument = _owner_and_argument(key)
  pattern = rf'{re.escape(owner)}\b.*\b{re.escape(argument)}\b'
  with pytest.raises(TypeError, match=pattern):
    CALLS[key](value)


def _same(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


BOOL_CASES = [_param(key, flag) for key in CALLS for flag in (False, True)]


@pytest.mark.parametrize('key,flag', BOOL_CASES)
def test_numpy_bools_are_bools(key, flag):
  # The Python bool is a valid call (the row is right), and NumPy's gives
  # the same result.
  expected = CALLS[key](flag)
  _same(CALLS[key](np.bool_(flag)), expected)
