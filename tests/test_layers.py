"""Unit tests of fusedrnn.layers, fusedrnn.initializers and fusedrnn.activations (no Keras):
initializer statistics, dropout rules, stateful behaviour, weights, configs, shapes, masks
and clear errors for bad arguments."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fusedrnn import activations, initializers, ops
from fusedrnn import layers as L
from fusedrnn.layers.recurrent import op_supports_recurrent_dropout


# ----------------------------------------------------------------------------- initializers
def test_glorot_and_he_uniform_bounds_and_variance():
    w = initializers.get("glorot_uniform")((300, 200))
    limit = np.sqrt(6.0 / (300 + 200))
    assert w.dtype == np.float32 and w.shape == (300, 200)
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit
    np.testing.assert_allclose(w.var(), limit**2 / 3, rtol=0.02)
    w = initializers.get("he_uniform")((400, 50), dtype="float64")
    limit = np.sqrt(6.0 / 400)
    assert w.dtype == np.float64 and np.abs(w).max() <= limit
    np.testing.assert_allclose(w.var(), limit**2 / 3, rtol=0.05)


@pytest.mark.parametrize("shape", [(67, 4 * 67), (3, 3), (12, 5), (1, 4)])
def test_orthogonal_rows_or_columns_are_orthonormal(shape):
    w = initializers.get("orthogonal")(shape, dtype="float64")
    rows, cols = shape
    gram = w @ w.T if rows <= cols else w.T @ w
    np.testing.assert_allclose(gram, np.eye(min(rows, cols)), atol=1e-12)
    w = initializers.Orthogonal(gain=2.0)(shape, dtype="float64")
    gram = w @ w.T if rows <= cols else w.T @ w
    np.testing.assert_allclose(gram, 4 * np.eye(min(rows, cols)), atol=1e-11)


def test_random_initializers_statistics_and_aliases():
    w = initializers.get("random_normal")((200, 200), dtype="float64")
    np.testing.assert_allclose(w.std(), 0.05, rtol=0.03)
    assert abs(w.mean()) < 0.002
    for name in ("random_uniform", "uniform"):
        w = initializers.get(name)((200, 200), dtype="float64")
        assert w.min() >= -0.05 and w.max() <= 0.05 and w.max() > 0.049
    embedding = L.Embedding(300, 100)          # Keras' default "uniform": U(-0.05, 0.05)
    embedding.build((None, 4))
    assert np.abs(embedding.embeddings).max() <= 0.05
    np.testing.assert_allclose(embedding.embeddings.var(), 0.1**2 / 12, rtol=0.03)
    np.testing.assert_array_equal(initializers.get("zeros")((2, 3)), 0)
    np.testing.assert_array_equal(initializers.get("ones")((4,)), 1)


def test_initializer_seeding_rules():
    seeded = initializers.GlorotUniform(seed=3)
    np.testing.assert_array_equal(seeded((4, 5)), seeded((4, 5)))  # Keras 3: same values
    unseeded = initializers.get("glorot_uniform")
    np.random.seed(7)
    first = unseeded((4, 5))
    second = unseeded((4, 5))
    np.random.seed(7)
    np.testing.assert_array_equal(unseeded((4, 5)), first)       # global generator
    assert not np.array_equal(first, second)


def test_initializer_get_accepts_keras_forms_and_rejects_others():
    assert isinstance(initializers.get("GlorotUniform"), initializers.GlorotUniform)
    config = {"class_name": "RandomNormal", "config": {"mean": 1.0, "stddev": 0.5, "seed": 2}}
    init = initializers.get(config)
    assert (init.mean, init.stddev, init.seed) == (1.0, 0.5, 2)
    assert initializers.get(initializers.serialize(init)).get_config() == init.get_config()
    custom = lambda shape, dtype: np.full(shape, 0.25, dtype)  # noqa: E731
    layer = L.Dense(2, kernel_initializer=custom)
    layer.build((None, 3))
    np.testing.assert_array_equal(layer.kernel, 0.25)
    with pytest.raises(ValueError, match="kernel_initializer.*nope"):
        L.Dense(2, kernel_initializer="nope")
    with pytest.raises(TypeError, match="initializer"):
        initializers.get(3)


def test_lstm_bias_and_default_weights_follow_keras():
    layer = L.LSTM(5)
    layer.build((None, 4, 3))
    kernel, recurrent, bias = layer.get_weights()
    assert (kernel.shape, recurrent.shape, bias.shape) == ((3, 20), (5, 20), (20,))
    np.testing.assert_array_equal(bias, np.r_[np.zeros(5), np.ones(5), np.zeros(10)])
    assert np.abs(kernel).max() <= np.sqrt(6.0 / (3 + 20))
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(5), atol=1e-6)
    no_forget = L.LSTM(5, unit_forget_bias=False, bias_initializer="ones")
    no_forget.build((None, 4, 3))
    np.testing.assert_array_equal(no_forget.bias, 1.0)
    gru = L.GRU(2)
    gru.build((None, 4, 3))
    assert [w.shape for w in gru.weights] == [(3, 6), (2, 6), (2, 6)]
    gru = L.GRU(2, reset_after=False, use_bias=False)
    gru.build((None, 4, 3))
    assert [w.shape for w in gru.weights] == [(3, 6), (2, 6)]


# ----------------------------------------------------------------------------- activations
def test_activations_get():
    assert activations.get(None).name == "linear"
    assert activations.get("swish").name == "silu"
    z = np.linspace(-3, 3, 7)
    np.testing.assert_allclose(activations.get("softmax")(z[None]).sum(), 1.0)
    with pytest.raises(ValueError, match="activation.*'nope'"):
        activations.get("nope")


# ----------------------------------------------------------------------------- dropout
def test_rnn_input_dropout_uses_one_mask_per_sequence(rng):
    layer = L.LSTM(4, dropout=0.5, return_sequences=True, dtype="float64")
    x = rng.normal(size=(6, 5, 3))
    layer.build(x.shape)
    np.random.seed(11)
    keep = (np.random.random_sample((6, 3)) >= 0.5) / 0.5   # the layer's draw (global generator)
    np.random.seed(11)
    trained = layer(x, training=True)
    np.testing.assert_allclose(trained, layer(x * keep[:, None, :]), atol=1e-12)
    np.testing.assert_allclose(layer(x), layer(x, training=False))  # inference: no dropout


@pytest.mark.parametrize("cls_name", ["LSTM", "GRU", "SimpleRNN"])
def test_recurrent_dropout_mask_reaches_the_kernel_or_is_refused(cls_name, rng):
    cls = getattr(L, cls_name)
    if not op_supports_recurrent_dropout(cls._kind):
        # without kernel support the layer must refuse, never silently ignore the argument
        with pytest.raises(NotImplementedError, match="recurrent_dropout"):
            cls(2, recurrent_dropout=0.3)
        return
    layer = cls(4, dropout=0.25, recurrent_dropout=0.5, return_sequences=True, dtype="float64",
                seed=5)
    x = rng.normal(size=(3, 6, 2))
    layer.build(x.shape)
    generator = np.random.default_rng(5)                 # same draws as the seeded layer
    keep_x = (generator.random((3, 2)) >= 0.25) / 0.75
    keep_h = (generator.random((3, 4)) >= 0.5) / 0.5
    op = getattr(ops, f"{cls._kind}_forward")
    expected = op(x * keep_x[:, None, :], *layer.weights, recurrent_dropout_mask=keep_h).outputs
    np.testing.assert_allclose(layer(x, training=True), expected, atol=1e-12)
    assert not np.allclose(layer(x, training=True), expected)  # a new mask per call
    assert not np.allclose(layer(x), expected)                 # inference: no dropout


def test_dropout_layer_statistics_and_seed(rng):
    x = np.ones((200, 300))
    layer = L.Dropout(0.3, seed=1)
    y = layer(x, training=True)
    kept = y != 0
    np.testing.assert_allclose(kept.mean(), 0.7, atol=0.01)
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(layer(x), x)             # inference: identity
    again = L.Dropout(0.3, seed=1)(x, training=True)
    np.testing.assert_array_equal(again, y)                  # same seed, same masks
    shared = L.Dropout(0.5, noise_shape=(None, 1, None))(np.ones((4, 6, 5)), training=True)
    assert np.all(shared == shared[:, :1, :])               # one draw along the time axis


# ----------------------------------------------------------------------------- stateful
def test_stateful_rnn_carries_and_resets_states(rng):
    layer = L.GRU(3, stateful=True, return_state=True, dtype="float64")
    x1, x2 = rng.normal(size=(2, 2, 4, 2))
    _, h1 = layer(x1)
    _, h2 = layer(x2)
    fresh = L.GRU(3, return_state=True, dtype="float64")
    fresh.build(x1.shape)
    fresh.set_weights(layer.get_weights())
    np.testing.assert_allclose(fresh(x2, initial_state=[h1])[1], h2, atol=1e-12)
    np.testing.assert_allclose(layer.states[0], h2)
    layer.reset_state()
    np.testing.assert_array_equal(layer.states[0], 0)
    np.testing.assert_allclose(layer(x1)[1], h1, atol=1e-12)
    with pytest.raises(ValueError, match="batch size"):
        layer(x1[:1])
    with pytest.raises(ValueError, match="static batch size"):
        L.LSTM(2, stateful=True).build((None, 3, 2))


# ----------------------------------------------------------------------------- weights
def test_weights_are_live_and_set_weights_checks(rng):
    layer = L.LSTM(3)
    layer.build((None, 5, 2))
    kernel = layer.kernel
    assert layer.trainable_weights[0] is kernel and layer.weights[0] is kernel
    assert layer.weight_names == [f"{layer.name}/kernel", f"{layer.name}/recurrent_kernel",
                                  f"{layer.name}/bias"]
    copies = layer.get_weights()
    copies[0][...] = 5.0
    assert not np.any(kernel == 5.0)                       # get_weights returns copies
    new = [rng.normal(size=w.shape) for w in layer.weights]  # float64 values are cast
    layer.set_weights(new)
    assert layer.kernel is kernel and kernel.dtype == np.float32
    np.testing.assert_allclose(kernel, new[0].astype(np.float32))
    with pytest.raises(ValueError, match="expected 3 arrays"):
        layer.set_weights(new[:2])
    with pytest.raises(ValueError, match=r"recurrent_kernel expected shape \(3, 12\)"):
        layer.set_weights([new[0], new[1][:2], new[2]])
    np.testing.assert_allclose(kernel, new[0].astype(np.float32))  # unchanged after failure
    with pytest.raises(ValueError, match="built"):
        L.Dense(2).set_weights([])


def test_bidirectional_weights_order_and_backward_layer(rng):
    layer = L.Bidirectional(L.GRU(2, return_sequences=True, name="enc"))
    layer.build((None, 4, 3))
    assert layer.forward_layer.name == "forward_enc" and layer.backward_layer.name == "backward_enc"
    assert len(layer.weights) == 6
    assert layer.weights[:3] == layer.forward_layer.weights
    assert all(a is b for a, b in zip(layer.weights[3:], layer.backward_layer.weights))
    custom = L.Bidirectional(L.LSTM(2, return_sequences=True),
                             backward_layer=L.LSTM(2, return_sequences=True, go_backwards=True,
                                                   activation="relu"))
    x = rng.normal(size=(2, 4, 3)).astype(np.float32)
    assert custom(x).shape == (2, 4, 4)
    with pytest.raises(ValueError, match="go_backwards"):
        L.Bidirectional(L.LSTM(2), backward_layer=L.LSTM(2))
    with pytest.raises(ValueError, match="return_sequences"):
        L.Bidirectional(L.LSTM(2), backward_layer=L.LSTM(2, go_backwards=True, return_sequences=True))
    with pytest.raises(ValueError, match="merge_mode"):
        L.Bidirectional(L.LSTM(2), merge_mode="max")
    with pytest.raises(ValueError, match="recurrent"):
        L.Bidirectional(L.Dense(2))


# ----------------------------------------------------------------------------- configs
def _all_layers():
    return [
        L.LSTM(3, return_sequences=True, go_backwards=True, dropout=0.1, seed=4,
               recurrent_initializer="glorot_uniform", unit_forget_bias=False),
        L.GRU(2, reset_after=False, activation="relu", stateful=True),
        L.SimpleRNN(1, use_bias=False, return_state=True),
        L.Bidirectional(L.LSTM(2, return_sequences=True), merge_mode="ave"),
        L.TimeDistributed(L.Dense(2, activation="softmax")),
        L.Dense(4, activation="gelu", bias_initializer="ones"),
        L.Embedding(10, 3, mask_zero=True),
        L.Masking(-1.0),
        L.Dropout(0.2, noise_shape=(None, 1, None), seed=3),
        L.RepeatVector(3),
    ]


@pytest.mark.parametrize("layer", _all_layers(), ids=lambda layer: type(layer).__name__)
def test_config_round_trip(layer):
    config = L.serialize(layer)
    json.dumps(config)
    clone = L.deserialize(json.loads(json.dumps(config)))
    assert type(clone) is type(layer)
    assert L.serialize(clone) == config


def test_shapes_and_masks_of_outputs(rng):
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    mask = np.ones((2, 5), bool)
    mask[0, 3:] = False
    cases = [
        L.LSTM(4, return_sequences=True, return_state=True),
        L.GRU(4),
        L.Bidirectional(L.SimpleRNN(4, return_sequences=True)),
        L.Bidirectional(L.LSTM(4, return_state=True), merge_mode=None),
        L.TimeDistributed(L.Dense(6)),
        L.Dense(6),
    ]
    for layer in cases:
        out = layer(x, mask=mask)
        shapes = layer.compute_output_shape((None, 5, 3))
        outs = out if isinstance(out, list) else [out]
        shapes = shapes if isinstance(shapes, list) else [shapes]
        assert [o.shape[1:] for o in outs] == [tuple(s[1:]) for s in shapes], layer.name
    assert L.LSTM(2, return_sequences=True).compute_mask(x, mask) is mask
    assert L.LSTM(2).compute_mask(x, mask) is None
    assert L.LSTM(2, return_state=True).compute_mask(x, mask) == [None, None, None]
    assert L.Dense(2).compute_mask(x, mask) is mask
    assert L.RepeatVector(2).compute_mask(x[:, 0], mask) is None
    assert L.Embedding(4, 2).compute_mask(np.array([[0, 1]])) is None


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("make,error,match", [
    (lambda: L.LSTM(3, kernal_initializer="zeros"), TypeError, "kernal_initializer"),
    (lambda: L.LSTM(0), ValueError, "units"),
    (lambda: L.GRU(2.5), ValueError, "units"),
    (lambda: L.LSTM(3, activation="softmax"), ValueError, "activation"),
    (lambda: L.LSTM(3, recurrent_activation="gelu"), ValueError, "recurrent_activation"),
    (lambda: L.SimpleRNN(3, activation="bogus"), ValueError, "activation"),
    (lambda: L.LSTM(3, unroll=True), ValueError, "unroll"),
    (lambda: L.LSTM(3, dropout=1.0), ValueError, "dropout"),
    (lambda: L.GRU(3, dropout="0.1"), TypeError, "dropout"),
    (lambda: L.LSTM(3, kernel_regularizer="l2"), NotImplementedError, "kernel_regularizer"),
    (lambda: L.LSTM(3, use_cudnn=True), ValueError, "use_cudnn"),
    (lambda: L.LSTM(3, return_sequences="yes"), TypeError, "return_sequences"),
    (lambda: L.LSTM(3, dtype="int32"), TypeError, "dtype"),
    (lambda: L.Dense(3, activation="bogus"), ValueError, "activation"),
    (lambda: L.Embedding(0, 3), ValueError, "input_dim"),
    (lambda: L.Dropout(1.5), ValueError, "rate"),
    (lambda: L.RepeatVector(2.0), TypeError, "n"),
    (lambda: L.TimeDistributed("dense"), ValueError, "layer"),
])
def test_bad_constructor_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_call_arguments(rng):
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    layer = L.LSTM(4)
    layer.build(x.shape)
    with pytest.raises(ValueError, match="3-D"):
        layer(x[0])
    with pytest.raises(ValueError, match="features"):
        layer(x[..., :2])
    with pytest.raises(ValueError, match=r"mask.*\(2, 5\)"):
        layer(x, mask=np.ones((2, 4), bool))
    with pytest.raises(TypeError, match="mask"):
        layer(x, mask=np.ones((2, 5)))
    with pytest.raises(ValueError, match="initial_state expected 2"):
        layer(x, initial_state=[np.zeros((2, 4), np.float32)])
    with pytest.raises(ValueError, match=r"initial_state\[1\].*\(2, 4\)"):
        layer(x, initial_state=[np.zeros((2, 4)), np.zeros((2, 3))])
    with pytest.raises(TypeError, match="inputs"):
        layer(np.array([["a"]]))
    with pytest.raises(ValueError, match="ids must be in"):
        L.Embedding(3, 2)(np.array([[0, 3]]))
    with pytest.raises(TypeError, match="integer ids"):
        L.Embedding(3, 2)(np.array([["a"]]))
    with pytest.raises(ValueError, match="2-D"):
        L.RepeatVector(2)(x)
    with pytest.raises(ValueError, match="at least 3"):
        L.TimeDistributed(L.Dense(2))(x[0])
    with pytest.raises(ValueError, match="at least 2"):
        L.Dense(2)(x[0, 0])
    with pytest.raises(ValueError, match="initial_state"):
        L.Dense(2)(x, initial_state=[x])
    with pytest.raises(ValueError, match="tape"):
        layer.backward(None, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="list of 3"):
        L.LSTM(4, return_state=True).backward(layer.forward(x, training=True)[1], [None])


def test_caller_arrays_are_not_modified(rng):
    x = rng.normal(size=(3, 4, 2))
    mask = np.ones((3, 4), bool)
    mask[1, 2] = False
    states = [rng.normal(size=(3, 2)) for _ in range(4)]
    saved = [a.copy() for a in (x, mask, *states)]
    layer = L.Bidirectional(L.LSTM(2, dropout=0.3, return_sequences=True, return_state=True,
                                   dtype="float64"))
    out, tape = layer.forward(x, mask=mask, initial_state=states, training=True)
    d_out = [np.ones_like(o) for o in out]
    d_saved = [d.copy() for d in d_out]
    layer.backward(tape, d_out)
    for before, after in zip(saved, (x, mask, *states)):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(d_saved, d_out):
        np.testing.assert_array_equal(before, after)


def test_symbolic_call_goes_through_the_engine():
    from fusedrnn import engine

    ids = engine.Input((7,), dtype="int32")
    embedded = L.Embedding(5, 3, mask_zero=True)(ids)
    out = L.LSTM(2, return_state=True)(embedded)
    assert all(engine.is_symbolic(t) for t in out) and len(out) == 3
    assert tuple(out[0].shape) == (None, 2)


def test_bidirectional_stateful_keeps_both_directions_states(rng):
    layer = L.Bidirectional(L.LSTM(2, stateful=True, return_sequences=True, dtype="float64"))
    x = rng.normal(size=(3, 4, 2))
    first = layer(x)
    assert len(layer.states) == 4 and all(s.shape == (3, 2) for s in layer.states)
    assert not np.allclose(layer(x), first)          # continues from the kept states
    layer.reset_state()
    assert all(np.all(s == 0) for s in layer.states)
    np.testing.assert_allclose(layer(x), first, atol=1e-12)
    with pytest.raises(AttributeError, match="stateful"):
        L.Bidirectional(L.LSTM(2)).reset_state()


def test_load_keras_weights_without_h5py_says_what_to_install(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "h5py", None)     # makes `import h5py` fail
    with pytest.raises(ImportError, match="pip install h5py"):
        L.load_keras_weights_h5([L.Dense(2)], str(tmp_path / "missing.weights.h5"))
