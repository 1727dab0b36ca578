"""Keras import and export of Embedding, SimpleRNN, LSTM, GRU, Bidirectional.

The tf-keras 2 fixtures (tests/fixtures/README.md, "Recurrent fixtures")
are read with h5py alone and must give tf-keras's outputs, in linen and
NNX; live Keras 3 models must give Keras's outputs through ``from_keras``
(live and ``.keras``) and come back from ``to_keras_model`` to the same
predictions; bad files give our errors naming the file and the layer.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flax_dense as fd
from flax_dense._src.registry.recurrent import cudnn_weights

keras = pytest.importorskip('keras')
layers = keras.layers
FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
pytestmark = pytest.mark.filterwarnings('ignore:Layer .* does not support')

RECURRENT_FIXTURES = (
  'bidirectional_gru',
  'bidirectional_lstm',
  'cudnn_gru',
  'cudnn_lstm',
  'embedding_lstm',
  'encoder_decoder',
  'gru_masked',
  'lstm_config',
  'lstm_masked',
  'simple_rnn_masked',
)


def fixture(name):
  """``(inputs, outputs)`` of a fixture, in the model's order."""
  arrays = np.load(FIXTURES / f'{name}.npz')
  inputs = [arrays[key] for key in arrays.files if key.startswith('inputs')]
  outputs = [arrays[key] for key in arrays.files if key.startswith('outputs')]
  return inputs, outputs


def as_list(outputs):
  return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def assert_outputs(got, want, rtol=1e-5):
  got = as_list(got)
  assert len(got) == len(want)
  for index, (a, b) in enumerate(zip(got, want, strict=True)):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-6, err_msg=index)


# --- tf-keras 2 files. ------------------------------------------------------


@pytest.mark.parametrize('name', RECURRENT_FIXTURES)
def test_tf_keras_file_gives_tf_keras_outputs(name):
  inputs, outputs = fixture(name)
  module, variables = fd.from_keras(FIXTURES / f'{name}.h5')
  assert_outputs(module.apply(variables, *inputs), outputs)
  model = fd.from_keras(FIXTURES / f'{name}.h5', api='nnx')
  assert_outputs(model(*inputs), outputs)


def test_recurrent_files_import_with_h5py_alone():
  script = textwrap.dedent(
    f"""
    import sys
    sys.modules['keras'] = None
    sys.modules['tensorflow'] = None
    sys.modules['tf_keras'] = None
    import numpy as np
    import flax_dense as fd
    for name in {RECURRENT_FIXTURES!r}:
      path = f'{FIXTURES}/{{name}}.h5'
      arrays = np.load(f'{FIXTURES}/{{name}}.npz')
      inputs = [arrays[k] for k in arrays.files if k.startswith('inputs')]
      module, variables = fd.from_keras(path)
      module.apply(variables, *inputs)
    loaded = [
      m for m, module in sys.modules.items()
      if m.split('.')[0] in ('keras', 'tensorflow', 'tf_keras') and module
    ]
    print('imported', loaded)
    """
  )
  result = subprocess.run(
    [sys.executable, '-c', script], capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'imported []' in result.stdout


def test_keras2_hard_sigmoid_is_tf_keras_own():
  _, variables = fd.from_keras(FIXTURES / 'lstm_config.h5')
  module, _ = fd.from_keras(FIXTURES / 'lstm_config.h5')
  lstm = module.layers[module.names.index('hard_sigmoid')]
  x = jnp.array([-3.0, -1.0, 0.0, 1.0, 3.0])
  expected = np.clip(0.2 * np.asarray(x) + 0.5, 0.0, 1.0)
  np.testing.assert_allclose(lstm.recurrent_activation(x), expected)
  # Keras 3's hard_sigmoid would be x / 6 + 0.5 inside [-3, 3].
  assert not np.allclose(jax.nn.hard_sigmoid(x), expected)


def test_cudnn_weights_are_the_fixture_conversion():
  arrays = np.load(FIXTURES / 'cudnn_lstm.npz')
  for layer_name in ('all_steps', 'backwards'):
    stored = [arrays[f'weights/{layer_name}/{i}'] for i in range(3)]
    standard = [arrays[f'standard_weights/{layer_name}/{i}'] for i in range(3)]
    for ours, theirs in zip(
      cudnn_weights(stored, 'lstm'), standard, strict=True
    ):
      np.testing.assert_array_equal(ours, theirs)
  # The model keeps them as its params.
  _, variables = fd.from_keras(FIXTURES / 'cudnn_lstm.h5')
  np.testing.assert_array_equal(
    variables['params']['all_steps']['kernel'],
    arrays['standard_weights/all_steps/0'],
  )


def test_encoder_states_become_the_decoder_initial_state():
  module, variables = fd.from_keras(FIXTURES / 'encoder_decoder.h5')
  assert isinstance(module, fd.KerasFunctional)
  decoder = [n for n in module.nodes if n.keywords]
  assert [n.keywords for n in decoder] == [(('initial_state', 2),)]
  inputs, outputs = fixture('encoder_decoder')
  # Other encoder states give other decoder outputs: the states are used.
  zero = module.apply(variables, inputs[0] * 0, inputs[1])
  assert not np.allclose(zero[0], outputs[0], atol=1e-3)


# --- Bad files. ---------------------------------------------------------


def copy(tmp_path, name):
  path = tmp_path / name
  shutil.copy(FIXTURES / name, path)
  return path


def edit_config(path, edit):
  with h5py.File(path, 'a') as file:
    config = json.loads(file.attrs['model_config'])
    edit(config['config']['layers'])
    file.attrs['model_config'] = json.dumps(config)


def entry(entries, name):
  return next(e for e in entries if e['config']['name'] == name)


def test_unknown_recurrent_variant_names_file_layer_and_variant(tmp_path):
  path = copy(tmp_path, 'bidirectional_gru.h5')
  edit_config(
    path,
    lambda entries: entry(entries, 'state')['config']['layer'].update(
      class_name='PeepholeLSTM'
    ),
  )
  with pytest.raises(ValueError) as error:
    fd.from_keras(path)
  message = str(error.value)
  assert "Bidirectional layer 'state'" in message
  assert 'bidirectional_gru.h5' in message
  assert 'PeepholeLSTM' in message
  path = copy(tmp_path, 'lstm_masked.h5')
  edit_config(
    path, lambda entries: entry(entries, 'last').update(class_name='CuDNNRNN')
  )
  with pytest.raises(ValueError, match="CuDNNRNN layer 'last' of file"):
    fd.from_keras(path)


def test_weights_that_do_not_fit_name_file_and_layer(tmp_path):
  path = copy(tmp_path, 'gru_masked.h5')
  edit_config(
    path,
    lambda entries: entry(entries, 'reset_before')['config'].update(units=4),
  )
  with pytest.raises(ValueError) as error:
    fd.from_keras(path)
  message = str(error.value)
  assert "GRU layer 'reset_before'" in message
  assert 'gru_masked.h5' in message
  assert '(4, 15)' in message  # the kernel given
  path = copy(tmp_path, 'cudnn_lstm.h5')
  edit_config(
    path,
    lambda entries: entry(entries, 'backwards')['config'].update(units=4),
  )
  with pytest.raises(ValueError, match="CuDNNLSTM layer 'backwards'"):
    fd.from_keras(path)


@pytest.mark.parametrize(
  'option,value', [('stateful', True), ('time_major', True)]
)
def test_options_that_change_the_layer_are_refused(tmp_path, option, value):
  path = copy(tmp_path, 'lstm_masked.h5')
  edit_config(
    path,
    lambda entries: entry(entries, 'last')['config'].update({option: value}),
  )
  with pytest.raises(ValueError, match=f"LSTM layer 'last' .* {option}=True"):
    fd.from_keras(path)


# --- Keras 3: live models, .keras files, export. ------------------------


def build(make_model, seed=0):
  with jax.numpy_rank_promotion('allow'):
    model = make_model()
  rng = np.random.default_rng(seed)
  model.set_weights(
    [
      rng.normal(scale=0.5, size=w.shape).astype('float32')
      for w in model.get_weights()
    ]
  )
  return model


def padded_steps(shape=(3, 6, 4), seed=0):
  """Float steps, all zero on the left, middle and right of the examples."""
  x = np.random.default_rng(seed).normal(size=shape).astype('float32')
  x[0, :2] = 0.0
  x[1, 2:4] = 0.0
  x[2, 4:] = 0.0
  return x


def padded_ids(shape=(3, 6), seed=0):
  ids = np.random.default_rng(seed).integers(1, 9, size=shape).astype('int32')
  ids[0, :2] = 0
  ids[1, 2:4] = 0
  ids[2, 4:] = 0
  return ids


def predict(model, inputs):
  with jax.numpy_rank_promotion('allow'):
    given = inputs if len(inputs) > 1 else inputs[0]
    return as_list(model.predict(given, verbose=0))


def embedding_stack():
  ids = keras.Input((6,), dtype='int32')
  x = layers.Embedding(9, 4, mask_zero=True, name='embedding')(ids)
  x = layers.LSTM(
    5, return_sequences=True, dropout=0.3, recurrent_dropout=0.2, name='lstm'
  )(x)
  x = layers.GRU(3, return_sequences=True, reset_after=False, name='gru')(x)
  x = layers.SimpleRNN(2, go_backwards=True, name='rnn')(x)
  return keras.Model(ids, x)


def masked_bidirectional():
  steps = keras.Input((6, 4))
  x = layers.Masking(name='masking')(steps)
  x = layers.Bidirectional(
    layers.LSTM(3, return_sequences=True), merge_mode='ave', name='bi'
  )(x)
  x = layers.Bidirectional(
    layers.GRU(2, return_sequences=True),
    backward_layer=layers.GRU(
      2, return_sequences=True, go_backwards=True, activation='relu'
    ),
    name='bi_gru',
  )(x)
  x = layers.GlobalAveragePooling1D(name='pooling')(x)
  return keras.Model(steps, x)


def encoder_decoder():
  source = keras.Input((6, 4))
  target = keras.Input((5, 3))
  masked = layers.Masking(name='masking')(source)
  _, h, c = layers.LSTM(4, return_state=True, name='encoder')(masked)
  sequences, state_h, _ = layers.LSTM(
    4, return_sequences=True, return_state=True, name='decoder'
  )(target, initial_state=[h, c])
  classes = layers.Dense(3, activation='softmax', name='classes')(sequences)
  return keras.Model([source, target], [classes, state_h])


def time_distributed():
  steps = keras.Input((3, 5, 4))
  x = layers.TimeDistributed(layers.LSTM(3), name='td_lstm')(steps)
  x = layers.TimeDistributed(layers.Dense(2, activation='tanh'), name='td')(x)
  return keras.Model(steps, x)


def bidirectional_states():
  steps = keras.Input((6, 4))
  outputs = layers.Bidirectional(
    layers.SimpleRNN(3, return_state=True), merge_mode='concat', name='bi'
  )(layers.Masking()(steps))
  return keras.Model(steps, outputs)


MODELS = {
  'embedding_stack': (embedding_stack, lambda: [padded_ids()]),
  'masked_bidirectional': (masked_bidirectional, lambda: [padded_steps()]),
  'encoder_decoder': (
    encoder_decoder,
    lambda: [padded_steps(), padded_steps((3, 5, 3), 1)],
  ),
  'bidirectional_states': (bidirectional_states, lambda: [padded_steps()]),
  'time_distributed': (
    time_distributed,
    lambda: [np.random.default_rng(2).normal(size=(2, 3, 5, 4))],
  ),
}


@pytest.mark.parametrize('name', sorted(MODELS))
def test_keras3_model_imports_with_keras_outputs(name, tmp_path):
  make, make_inputs = MODELS[name]
  model = build(make)
  inputs = [np.asarray(x, dtype=x.dtype) for x in make_inputs()]
  want = predict(model, inputs)
  module, variables = fd.from_keras(model)
  assert_outputs(module.apply(variables, *inputs), want)
  path = tmp_path / 'model.keras'
  model.save(path)
  # Keras's own Orthogonal initializer broadcasts as it loads the layers.
  with jax.numpy_rank_promotion('allow'):
    nnx_model = fd.from_keras(str(path), api='nnx')
  assert_outputs(nnx_model(*inputs), want)


@pytest.mark.parametrize(
  'name', ['embedding_stack', 'masked_bidirectional', 'encoder_decoder']
)
def test_export_round_trip_predicts_as_keras(name):
  make, make_inputs = MODELS[name]
  model = build(make)
  inputs = make_inputs()
  module, variables = fd.from_keras(model)
  shapes = [x.shape[1:] for x in inputs]
  with jax.numpy_rank_promotion('allow'):  # Keras's own initializers
    exported = fd.to_keras_model(
      module, variables, input_shape=shapes if len(shapes) > 1 else shapes[0]
    )
  assert_outputs(predict(exported, inputs), predict(model, inputs))
  # And the exported layers are Keras's own, with their options.
  classes = {type(layer).__name__ for layer in exported.layers}
  assert classes & {'LSTM', 'GRU', 'SimpleRNN', 'Bidirectional'}


def test_sequential_export_keeps_each_option():
  module = fd.KerasSequential(
    (
      fd.Embedding(9, 3, mask_zero=True),
      fd.GRU(4, return_sequences=True, reset_after=False, go_backwards=True),
      fd.Bidirectional(fd.LSTM(2, unit_forget_bias=False), merge_mode='mul'),
    ),
    names=('embedding', 'gru', 'bi'),
    mask_flow=('compute', 'use', 'consume'),
  )
  ids = padded_ids((3, 6))
  variables = module.init(jax.random.key(0), ids)
  with jax.numpy_rank_promotion('allow'):  # Keras's own initializers
    exported = fd.to_keras_model(module, variables, input_shape=(6,))
  embedding, gru, bi = exported.layers
  assert embedding.mask_zero
  assert (gru.reset_after, gru.go_backwards) == (False, True)
  assert bi.merge_mode == 'mul' and bi.backward_layer.go_backwards
  assert_outputs(predict(exported, [ids]), [module.apply(variables, ids)])


def test_frozen_recurrent_layers_keep_constants_both_ways():
  model = build(masked_bidirectional)
  model.get_layer('bi').trainable = False
  inputs = [padded_steps()]
  want = predict(model, inputs)
  module, variables = fd.from_keras(model)
  assert set(variables['constants']) == {'bi'}
  assert set(variables['constants']['bi']) == {
    'forward_layer',
    'backward_layer',
  }
  assert_outputs(module.apply(variables, *inputs), want)
  twin = fd.from_keras(model, api='nnx')
  constants = jax.tree.leaves(nnx.state(twin, fd.nnx.Constant))
  assert len(constants) == 6  # two layers' kernel, recurrent kernel, bias
  assert_outputs(twin(*inputs), want)
  back, back_variables = fd.nnx.to_linen(twin)
  assert jax.tree.map(jnp.shape, back_variables) == jax.tree.map(
    jnp.shape, variables
  )
  with jax.numpy_rank_promotion('allow'):
    exported = fd.to_keras_model(module, variables, input_shape=(6, 4))
  assert not exported.get_layer('bi').trainable
  assert_outputs(predict(exported, inputs), want)


def test_embedding_mask_flows_through_bidirectional_into_attention():
  # The translate_dates encoder as a graph: the mask Embedding makes from
  # the ids reaches the Bidirectional and, passed on with its sequences,
  # the AttentionDecoder.
  model = fd.KerasSequential(
    (
      fd.Embedding(9, 4, mask_zero=True),
      fd.Bidirectional(fd.LSTM(3, return_sequences=True)),
      fd.AttentionDecoder(5, 4),
    ),
    names=('embedding', 'encoder', 'decoder'),
    mask_flow=('compute', 'use', 'consume'),
  )
  ids = padded_ids((3, 6))
  variables = model.init(jax.random.key(0), ids)
  params = variables['params']
  mask = ids != 0
  steps = fd.Embedding(9, 4).apply({'params': params['embedding']}, ids)
  encoded = fd.Bidirectional(fd.LSTM(3, return_sequences=True)).apply(
    {'params': params['encoder']}, steps, mask
  )
  want = fd.AttentionDecoder(5, 4).apply(
    {'params': params['decoder']}, encoded, mask=mask
  )
  got = model.apply(variables, ids)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # Without the mask the padding would count.
  unmasked = fd.AttentionDecoder(5, 4).apply(
    {'params': params['decoder']}, encoded
  )
  assert not np.allclose(got, unmasked, atol=1e-4)
  twin = fd.nnx.from_linen(model, variables)
  np.testing.assert_allclose(twin(ids), want, rtol=1e-5, atol=1e-6)


def test_sequential_model_with_dropout_in_training_and_inference():
  model = build(
    lambda: keras.Sequential(
      [
        keras.Input((6,), dtype='int32'),
        layers.Embedding(9, 4, mask_zero=True),
        layers.GRU(3, dropout=0.5, return_sequences=True),
        layers.GlobalAveragePooling1D(),
      ]
    )
  )
  ids = padded_ids()
  module, variables = fd.from_keras(model)
  assert isinstance(module, fd.KerasSequential)
  assert module.mask_flow == ('compute', 'use', 'consume')
  want = predict(model, [ids])
  assert_outputs(module.apply(variables, ids), want)
  trained = module.apply(
    variables,
    ids,
    deterministic=False,
    rngs={'dropout': jax.random.key(1)},
  )
  assert not np.allclose(trained, want[0], atol=1e-4)


def test_unmerged_bidirectional_masks_both_sequences():
  def make():
    steps = keras.Input((6, 4))
    forward, backward = layers.Bidirectional(
      layers.GRU(3, return_sequences=True), merge_mode=None, name='bi'
    )(layers.Masking()(steps))
    pooled = layers.GlobalAveragePooling1D(name='pool')(backward)
    return keras.Model(steps, [forward, pooled])

  model = build(make)
  inputs = [padded_steps()]
  module, variables = fd.from_keras(model)
  assert_outputs(module.apply(variables, *inputs), predict(model, inputs))


def test_variable_length_graph_with_bidirectional_initial_state():
  # No timesteps in the input shapes: the outputs of each layer are counted
  # from its configuration (the encoder's unused c included).
  def make():
    ids = keras.Input((None,), dtype='int32')
    steps = keras.Input((None, 3))
    embedded = layers.Embedding(9, 4, mask_zero=True)(ids)
    _, h, _ = layers.LSTM(4, return_state=True, name='encoder')(embedded)
    decoded = layers.Bidirectional(
      layers.GRU(4, return_sequences=True), merge_mode='sum', name='bi'
    )(steps, initial_state=[h, h])
    outputs = layers.TimeDistributed(layers.Dense(2), name='td')(decoded)
    return keras.Model([ids, steps], outputs)

  model = build(make)
  inputs = [padded_ids((3, 4)), padded_steps((3, 5, 3))]
  want = predict(model, inputs)
  module, variables = fd.from_keras(model)
  assert_outputs(module.apply(variables, *inputs), want)
  assert_outputs(fd.from_keras(model, api='nnx')(*inputs), want)
  with jax.numpy_rank_promotion('allow'):
    back = fd.to_keras_model(module, variables, input_shape=[(4,), (5, 3)])
  assert_outputs(predict(back, inputs), want)
