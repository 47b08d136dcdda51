"""fusedrnn.layers against the real keras.layers (Keras 3, jax backend) with the same weights.

Keras runs in float32 (its jax backend computes tanh in float32 even for float64 layers:
keras.src.backend.common.dtypes.result_type("float64", float) is "float32" in 3.15), so
our float32 layers are compared with a float32 tolerance.  Each configuration covers
several features at once (masks with holes, initial states, return_state, go_backwards,
odd sizes 1, 3, 67) because every Keras call costs a jax trace.
"""
from __future__ import annotations

import numpy as np
import pytest

from fusedrnn import layers as L
from helpers import assert_close, require

RTOL = 2e-5


@pytest.fixture
def keras(request):
    return require("keras", request)


def _holey_mask(batch, steps):
    mask = np.ones((batch, steps), bool)
    mask[0, 2:4] = False            # holes in the middle
    mask[1, -1] = False             # last step masked
    mask[-1, 0] = False             # first step masked
    return mask


def _pair(keras, cls_name, units, **kwargs):
    """A Keras layer and ours with the same constructor arguments (ours unbuilt)."""
    return getattr(keras.layers, cls_name)(units, **kwargs), getattr(L, cls_name)(units, **kwargs)


def _copy_weights(keras_layer, ours, input_shape):
    ours.build(input_shape)
    ours.set_weights(keras_layer.get_weights())


def _assert_outputs(ours, theirs, name):
    ours = ours if isinstance(ours, (list, tuple)) else [ours]
    theirs = theirs if isinstance(theirs, (list, tuple)) else [theirs]
    assert len(ours) == len(theirs), name
    for k, (a, b) in enumerate(zip(ours, theirs)):
        b = np.asarray(b)
        assert a.shape == b.shape, f"{name}[{k}]: {a.shape} vs {b.shape}"
        assert_close(a, b, RTOL, name=f"{name}[{k}]")


RNN_CONFIGS = [
    ("LSTM", {}, 67),
    ("GRU", {}, 3),
    ("GRU", {"reset_after": False}, 1),
    ("SimpleRNN", {}, 3),
]


@pytest.mark.parametrize("cls_name,extra,units", RNN_CONFIGS, ids=lambda v: str(v))
@pytest.mark.parametrize("return_sequences,go_backwards", [(True, False), (False, True), (True, True)])
def test_rnn_matches_keras_with_mask_state_and_return_state(keras, cls_name, extra, units,
                                                            return_sequences, go_backwards, rng):
    batch, steps, features = 4, 6, 3
    theirs, ours = _pair(keras, cls_name, units, return_sequences=return_sequences,
                         return_state=True, go_backwards=go_backwards, **extra)
    x = rng.normal(size=(batch, steps, features)).astype(np.float32)
    mask = _holey_mask(batch, steps)
    states = [rng.normal(size=(batch, units)).astype(np.float32)
              for _ in range(2 if cls_name == "LSTM" else 1)]
    expected = theirs(x, mask=mask, initial_state=states)
    _copy_weights(theirs, ours, x.shape)
    _assert_outputs(ours(x, mask=mask, initial_state=states), expected, cls_name)


@pytest.mark.parametrize("cls_name,features,units", [("LSTM", 1, 3), ("GRU", 5, 67), ("SimpleRNN", 1, 1)])
def test_rnn_defaults_match_keras(keras, cls_name, features, units, rng):
    theirs, ours = _pair(keras, cls_name, units)
    x = rng.normal(size=(3, 5, features)).astype(np.float32)
    expected = theirs(x)
    _copy_weights(theirs, ours, x.shape)
    _assert_outputs(ours(x), expected, cls_name)
    # Keras' own initial weights have our shapes and order
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in theirs.get_weights()]


def test_zero_output_for_mask_last_output_matches_keras(keras, rng):
    # RNN(zero_output_for_mask=True) without return_sequences: Keras returns outputs[-1],
    # which is zeros for a sequence whose last step is masked
    theirs, ours = _pair(keras, "LSTM", 3, zero_output_for_mask=True)
    x = rng.normal(size=(4, 5, 2)).astype(np.float32)
    mask = _holey_mask(4, 5)
    expected = np.asarray(theirs(x, mask=mask))
    _copy_weights(theirs, ours, x.shape)
    out = ours(x, mask=mask)
    assert np.all(out[1] == 0) and np.all(expected[1] == 0)
    _assert_outputs(out, expected, "zero_output_for_mask")


@pytest.mark.parametrize("cls_name", ["LSTM", "GRU", "SimpleRNN"])
def test_stateful_matches_keras(keras, cls_name, rng):
    batch = 2
    theirs, ours = _pair(keras, cls_name, 3, stateful=True, return_sequences=True)
    x1 = rng.normal(size=(batch, 4, 2)).astype(np.float32)
    x2 = rng.normal(size=(batch, 4, 2)).astype(np.float32)
    first, second = np.asarray(theirs(x1)), np.asarray(theirs(x2))
    theirs.reset_state()
    after_reset = np.asarray(theirs(x2))
    _copy_weights(theirs, ours, x1.shape)
    _assert_outputs(ours(x1), first, "first call")
    _assert_outputs(ours(x2), second, "second call continues from the first's states")
    ours.reset_state()
    _assert_outputs(ours(x2), after_reset, "after reset_state")
    assert not np.allclose(second, after_reset)
    with pytest.raises(ValueError, match="batch size"):
        ours(x1[:1])


@pytest.mark.parametrize("merge_mode,cls_name", [("concat", "LSTM"), ("sum", "GRU"),
                                                 ("ave", "SimpleRNN"), ("mul", "LSTM"),
                                                 (None, "GRU")])
def test_bidirectional_sequences_with_mask_match_keras(keras, merge_mode, cls_name, rng):
    x = rng.normal(size=(4, 6, 3)).astype(np.float32)
    mask = _holey_mask(4, 6)
    theirs = keras.layers.Bidirectional(
        getattr(keras.layers, cls_name)(3, return_sequences=True), merge_mode=merge_mode)
    ours = L.Bidirectional(getattr(L, cls_name)(3, return_sequences=True), merge_mode=merge_mode)
    expected = theirs(x, mask=mask)
    _copy_weights(theirs, ours, x.shape)
    _assert_outputs(ours(x, mask=mask), expected, f"Bidirectional {merge_mode}")
    # Keras zeroes masked steps in both directions when returning sequences
    assert ours.forward_layer.zero_output_for_mask and ours.backward_layer.zero_output_for_mask
    assert ours.backward_layer.go_backwards and not ours.forward_layer.go_backwards


def test_bidirectional_states_and_initial_state_match_keras(keras, rng):
    x = rng.normal(size=(3, 5, 2)).astype(np.float32)
    mask = _holey_mask(3, 5)
    theirs = keras.layers.Bidirectional(keras.layers.LSTM(4, return_state=True))
    ours = L.Bidirectional(L.LSTM(4, return_state=True))
    states = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(4)]
    expected = theirs(x, mask=mask, initial_state=states)
    _copy_weights(theirs, ours, x.shape)
    got = ours(x, mask=mask, initial_state=states)
    assert len(got) == 5   # [output, h_fw, c_fw, h_bw, c_bw]
    _assert_outputs(got, expected, "Bidirectional return_state")


def test_embedding_masking_dense_match_keras(keras, rng):
    ids = np.array([[3, 1, 0, 0], [2, 0, 5, 1], [0, 0, 0, 0]])
    theirs = keras.layers.Embedding(7, 3, mask_zero=True)
    ours = L.Embedding(7, 3, mask_zero=True)
    expected = theirs(ids)
    _copy_weights(theirs, ours, ids.shape)
    _assert_outputs(ours(ids), expected, "Embedding")
    np.testing.assert_array_equal(ours.compute_mask(ids), np.asarray(theirs.compute_mask(ids)))

    x = rng.normal(size=(2, 4, 3)).astype(np.float32)
    x[0, 1] = 0.5
    x[1, 3] = 0.5
    x[1, 0, 1] = 0.5              # partially equal: not masked
    theirs, ours = keras.layers.Masking(0.5), L.Masking(0.5)
    _assert_outputs(ours(x), theirs(x), "Masking")
    np.testing.assert_array_equal(ours.compute_mask(x), np.asarray(theirs.compute_mask(x)))

    for shape, activation in [((5, 3), "relu"), ((2, 4, 3), "softmax"), ((2, 4, 1), None)]:
        x = rng.normal(size=shape).astype(np.float32)
        theirs = keras.layers.Dense(67 if activation == "relu" else 3, activation=activation)
        ours = L.Dense(67 if activation == "relu" else 3, activation=activation)
        expected = theirs(x)
        _copy_weights(theirs, ours, x.shape)
        ours.bias[...] = rng.normal(size=ours.bias.shape)
        theirs.set_weights(ours.get_weights())
        _assert_outputs(ours(x), theirs(x), f"Dense {shape} {activation}")


def test_time_distributed_repeat_vector_dropout_match_keras(keras, rng):
    x = rng.normal(size=(2, 4, 3)).astype(np.float32)
    theirs = keras.layers.TimeDistributed(keras.layers.Dense(5, activation="tanh"))
    ours = L.TimeDistributed(L.Dense(5, activation="tanh"))
    expected = theirs(x)
    _copy_weights(theirs, ours, x.shape)
    _assert_outputs(ours(x), expected, "TimeDistributed")
    v = rng.normal(size=(2, 3)).astype(np.float32)
    _assert_outputs(L.RepeatVector(4)(v), keras.layers.RepeatVector(4)(v), "RepeatVector")
    # inference: Dropout is the identity in both
    _assert_outputs(L.Dropout(0.5)(x), keras.layers.Dropout(0.5)(x), "Dropout")


def test_mask_propagation_matches_keras(keras, rng):
    """compute_mask of each layer kind, as Keras 3.15 propagates masks."""
    ids = np.array([[3, 1, 0, 4], [2, 0, 0, 0]])
    mask = ids != 0
    x = rng.normal(size=(2, 4, 3)).astype(np.float32)
    pairs = [
        (keras.layers.LSTM(2, return_sequences=True), L.LSTM(2, return_sequences=True), x),
        (keras.layers.GRU(2), L.GRU(2), x),
        (keras.layers.Dense(2), L.Dense(2), x),
        (keras.layers.Dropout(0.3), L.Dropout(0.3), x),
        (keras.layers.TimeDistributed(keras.layers.Dense(2)), L.TimeDistributed(L.Dense(2)), x),
        (keras.layers.Embedding(5, 2), L.Embedding(5, 2), ids),   # mask_zero=False: no mask
    ]
    for theirs, ours, inputs in pairs:
        expected = theirs.compute_mask(inputs, mask) if theirs.supports_masking else None
        got = ours.compute_mask(inputs, mask)
        if expected is None:
            assert got is None, type(ours).__name__
        else:
            np.testing.assert_array_equal(got, np.asarray(expected), err_msg=type(ours).__name__)
    # RepeatVector does not support masking: Keras drops the mask
    assert not keras.layers.RepeatVector(2).supports_masking
    assert L.RepeatVector(2).compute_mask(x[:, 0], mask) is None
    bidirectional = L.Bidirectional(L.LSTM(2, return_sequences=True), merge_mode=None)
    assert all(m is mask for m in bidirectional.compute_mask(x, mask))


def _keras_model(keras):
    return keras.Sequential([
        keras.Input((6,), dtype="int32"),
        keras.layers.Embedding(9, 4, mask_zero=True),
        keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True)),
        keras.layers.Dropout(0.2),
        keras.layers.GRU(5, return_sequences=True),
        keras.layers.TimeDistributed(keras.layers.Dense(3, activation="tanh")),
        keras.layers.GRU(3, go_backwards=True),      # a second GRU: key "gru_1"
        keras.layers.Dense(2, activation="softmax"),
    ])


def _our_layers():
    return [
        L.Embedding(9, 4, mask_zero=True),
        L.Bidirectional(L.LSTM(3, return_sequences=True)),
        L.Dropout(0.2),
        L.GRU(5, return_sequences=True),
        L.TimeDistributed(L.Dense(3, activation="tanh")),
        L.GRU(3, go_backwards=True),
        L.Dense(2, activation="softmax"),
    ]


def _run_chain(layers, inputs):
    """Eager forward through a list of layers, passing masks on as Keras does."""
    x, mask = inputs, None
    for layer in layers:
        if not layer.built:
            layer.build((None,) + np.shape(x)[1:])
        next_mask = layer.compute_mask(x, mask)
        x = layer(x, mask=mask)
        mask = next_mask
    return x


def test_load_keras_weights_h5_round_trip(keras, tmp_path, rng, request):
    require("h5py", request)
    model = _keras_model(keras)
    ids = rng.integers(1, 9, size=(5, 6))
    ids[0, 3:] = 0
    ids[1, 1] = 0                 # a hole in the middle
    ids[2, :] = 0                 # fully masked
    expected = np.asarray(model(ids))
    path = tmp_path / "model.weights.h5"
    model.save_weights(str(path))

    layers = _our_layers()
    _run_chain(layers, ids)       # builds the layers (fresh random weights)
    L.load_keras_weights_h5(layers, str(path))
    for ours, theirs in zip(layers, model.layers):
        for a, b in zip(ours.get_weights(), theirs.get_weights()):
            np.testing.assert_array_equal(a, b)
    _assert_outputs(_run_chain(layers, ids), expected, "model with loaded weights")

    # a mismatching layer list is refused before anything is assigned
    wrong = _our_layers()
    wrong[3] = L.GRU(4, return_sequences=True)
    _run_chain(wrong, ids)
    before = [w.copy() for layer in wrong for w in layer.weights]
    with pytest.raises(ValueError, match="gru"):
        L.load_keras_weights_h5(wrong, str(path))
    after = [w for layer in wrong for w in layer.weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    with pytest.raises(ValueError, match="build"):
        L.load_keras_weights_h5(_our_layers(), str(path))   # unbuilt layers


def test_keras_layer_configs_deserialize(keras, rng):
    """A Keras layer's get_config() builds the equivalent fusedrnn layer."""
    theirs = [
        keras.layers.LSTM(3, return_sequences=True, go_backwards=True, unit_forget_bias=False),
        keras.layers.GRU(2, reset_after=False, activation="relu", dropout=0.25),
        keras.layers.SimpleRNN(2, use_bias=False, return_state=True),
        keras.layers.Bidirectional(keras.layers.GRU(2, return_sequences=True), merge_mode="sum"),
        keras.layers.TimeDistributed(keras.layers.Dense(2, activation="softmax")),
        keras.layers.Dense(3, activation="relu", kernel_initializer="he_uniform"),
        keras.layers.Embedding(5, 2, mask_zero=True),
        keras.layers.Dropout(0.2),
        keras.layers.Masking(-1.0),
        keras.layers.RepeatVector(3),
    ]
    for layer in theirs:
        keras_config = layer.get_config()
        ours = L.deserialize({"class_name": type(layer).__name__, "config": keras_config})
        assert type(ours).__name__ == type(layer).__name__
        for key, value in ours.get_config().items():
            if key in keras_config and not isinstance(value, dict) and key != "dtype":
                assert value == keras_config[key], (type(layer).__name__, key)
    x = rng.normal(size=(2, 4, 3)).astype(np.float32)
    keras_bidirectional, ours = theirs[3], L.deserialize(
        {"class_name": "Bidirectional", "config": theirs[3].get_config()})
    expected = keras_bidirectional(x)
    _copy_weights(keras_bidirectional, ours, x.shape)
    _assert_outputs(ours(x), expected, "Bidirectional from a Keras config")
