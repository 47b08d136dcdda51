"""float64 finite-difference checks of every layer's backward() (fusedrnn.layers).

The loss is a fixed random projection of every output (outputs and returned states), so
each output's gradient path is exercised; gradients are checked w.r.t. the inputs, the
initial states and every trainable weight.  Dropout layers draw their masks from NumPy's
global generator, which is reseeded before each evaluation so all evaluations share one mask.
"""
from __future__ import annotations

import numpy as np
import pytest

from fusedrnn import layers as L
from helpers import numerical_gradient

F64 = "float64"


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _projections(outputs, rng):
    return [None if o is None else rng.normal(size=np.shape(o)) for o in _as_list(outputs)]


def check_gradients(layer, inputs, rng, *, mask=None, initial_state=None, seed=1234,
                    rtol=1e-6, atol=1e-8, check_inputs=True):
    """Compare layer.backward with central differences of sum(projection * outputs)."""
    call = {"mask": mask, "training": True}
    if initial_state is not None:
        call["initial_state"] = initial_state
    np.random.seed(seed)
    outputs, tape = layer.forward(inputs, **call)
    weights_before = [w.copy() for w in layer.weights]
    projections = _projections(outputs, rng)

    def loss():
        np.random.seed(seed)  # the same dropout masks at every evaluation
        out, _ = layer.forward(inputs, **call)
        return sum(float(np.sum(o * p)) for o, p in zip(_as_list(out), projections))

    d_outputs = projections if isinstance(outputs, list) else projections[0]
    d_inputs, d_initial, d_weights = layer.backward(tape, d_outputs)
    assert len(d_weights) == len(layer.trainable_weights)
    for name, weight, grad in zip(layer.weight_names, layer.trainable_weights, d_weights):
        assert grad.shape == weight.shape, name
        np.testing.assert_allclose(grad, numerical_gradient(loss, weight), rtol=rtol, atol=atol,
                                   err_msg=f"d {name}")
    if check_inputs:
        assert d_inputs.shape == inputs.shape
        np.testing.assert_allclose(d_inputs, numerical_gradient(loss, inputs), rtol=rtol,
                                   atol=atol, err_msg="d inputs")
    if initial_state is None:
        assert d_initial is None
    else:
        assert len(d_initial) == len(initial_state)
        for k, (state, grad) in enumerate(zip(initial_state, d_initial)):
            np.testing.assert_allclose(grad, numerical_gradient(loss, state), rtol=rtol,
                                       atol=atol, err_msg=f"d initial_state[{k}]")
    for before, after in zip(weights_before, layer.weights):  # backward never touches weights
        np.testing.assert_array_equal(before, after)
    return d_inputs, d_initial, d_weights


def _holey_mask(batch, steps):
    mask = np.ones((batch, steps), bool)
    mask[0, 1:3] = False          # a hole in the middle
    mask[-1, -1] = False          # last step masked
    if batch > 2:
        mask[1, 0] = False        # first step masked
    return mask


RNN_CASES = [
    ("LSTM", {}),
    ("GRU", {}),
    ("GRU", {"reset_after": False}),
    ("SimpleRNN", {}),
]


@pytest.mark.parametrize("cls_name,extra", RNN_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("return_sequences,go_backwards", [(True, False), (False, True)])
def test_rnn_backward_with_mask_state_and_return_state(cls_name, extra, return_sequences,
                                                       go_backwards, rng):
    batch, steps, features, units = 3, 4, 3, 2
    layer = getattr(L, cls_name)(units, dtype=F64, return_sequences=return_sequences,
                                 return_state=True, go_backwards=go_backwards, **extra)
    layer.build((None, steps, features))
    for w in layer.weights:  # non-trivial biases
        w[...] = rng.normal(scale=0.5, size=w.shape)
    x = rng.normal(size=(batch, steps, features))
    states = [rng.normal(size=(batch, units)) for _ in layer._state_names]
    check_gradients(layer, x, rng, mask=_holey_mask(batch, steps), initial_state=states)


@pytest.mark.parametrize("cls_name", ["LSTM", "GRU", "SimpleRNN"])
def test_rnn_backward_plain_output_without_bias(cls_name, rng):
    layer = getattr(L, cls_name)(3, dtype=F64, use_bias=False, activation="relu")
    x = rng.normal(size=(2, 3, 1))
    layer.build(x.shape)
    check_gradients(layer, x, rng)


def test_rnn_zero_output_for_mask_last_output_gradient(rng):
    # without return_sequences the output is the last (possibly zeroed) entry, not h_n
    layer = L.GRU(2, dtype=F64, zero_output_for_mask=True)
    x = rng.normal(size=(3, 4, 2))
    layer.build(x.shape)
    mask = _holey_mask(3, 4)
    out = layer(x, mask=mask)
    np.testing.assert_array_equal(out[-1], 0.0)   # its last step is masked
    check_gradients(layer, x, rng, mask=mask)


@pytest.mark.parametrize("cls_name", ["LSTM", "GRU", "SimpleRNN"])
def test_rnn_input_dropout_gradient(cls_name, rng):
    layer = getattr(L, cls_name)(2, dtype=F64, dropout=0.4, return_sequences=True)
    x = rng.normal(size=(4, 3, 5))
    layer.build(x.shape)
    d_inputs, _, _ = check_gradients(layer, x, rng)
    # the per-sequence mask zeroes whole feature columns for every step of a row
    dropped = np.all(d_inputs == 0, axis=1)
    assert dropped.any() and not dropped.all()


@pytest.mark.parametrize("cls_name,extra", RNN_CASES, ids=lambda v: str(v))
def test_recurrent_dropout_gradient(cls_name, extra, rng):
    cls = getattr(L, cls_name)
    if not L.recurrent.op_supports_recurrent_dropout(cls._kind):
        # without kernel support the layer must refuse, never silently ignore the argument
        with pytest.raises(NotImplementedError, match="recurrent_dropout"):
            cls(3, recurrent_dropout=0.5)
        return
    layer = cls(3, dtype=F64, dropout=0.3, recurrent_dropout=0.5, return_sequences=True,
                return_state=True, **extra)
    x = rng.normal(size=(3, 4, 2))
    layer.build(x.shape)
    for w in layer.weights:
        w[...] = rng.normal(scale=0.5, size=w.shape)
    states = [rng.normal(size=(3, 3)) for _ in layer._state_names]
    check_gradients(layer, x, rng, mask=_holey_mask(3, 4), initial_state=states)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave", "mul", None])
def test_bidirectional_backward(merge_mode, rng):
    inner = {"concat": L.LSTM, "sum": L.GRU, "ave": L.SimpleRNN, "mul": L.LSTM, None: L.GRU}
    layer = L.Bidirectional(inner[merge_mode](2, dtype=F64, return_sequences=True,
                                              return_state=merge_mode in ("mul", None)),
                            merge_mode=merge_mode)
    x = rng.normal(size=(3, 4, 2))
    layer.build(x.shape)
    for w in layer.weights:
        w[...] = rng.normal(scale=0.5, size=w.shape)
    check_gradients(layer, x, rng, mask=_holey_mask(3, 4))


def test_bidirectional_last_output_with_initial_state(rng):
    layer = L.Bidirectional(L.LSTM(2, dtype=F64, return_state=True), merge_mode="concat")
    x = rng.normal(size=(2, 3, 2))
    layer.build(x.shape)
    states = [rng.normal(size=(2, 2)) for _ in range(4)]
    check_gradients(layer, x, rng, mask=_holey_mask(2, 3), initial_state=states)


@pytest.mark.parametrize("activation", ["linear", "relu", "tanh", "sigmoid", "softmax", "elu",
                                        "selu", "softplus", "softsign", "silu", "gelu",
                                        "exponential", "hard_sigmoid", "leaky_relu"])
def test_dense_backward(activation, rng):
    layer = L.Dense(3, activation=activation, dtype=F64)
    x = rng.normal(size=(2, 4, 3))        # 3-D: applied on the last axis
    layer.build(x.shape)
    layer.bias[...] = rng.normal(size=3)
    check_gradients(layer, x, rng)


def test_dense_2d_without_bias(rng):
    layer = L.Dense(4, use_bias=False, dtype=F64)
    x = rng.normal(size=(5, 3))
    layer.build(x.shape)
    check_gradients(layer, x, rng)


def test_embedding_backward_accumulates_repeated_ids(rng):
    layer = L.Embedding(6, 3, dtype=F64, mask_zero=True)
    ids = np.array([[1, 2, 2, 0], [5, 1, 0, 0]])
    layer.build(ids.shape)
    _, tape = layer.forward(ids, training=True)
    projection = rng.normal(size=(2, 4, 3))
    d_inputs, d_initial, (d_embeddings,) = layer.backward(tape, projection)
    assert d_inputs is None and d_initial is None

    def loss():
        return float(np.sum(layer.forward(ids)[0] * projection))

    np.testing.assert_allclose(d_embeddings, numerical_gradient(loss, layer.embeddings), atol=1e-8)


@pytest.mark.parametrize("noise_shape", [None, (None, 1, None)])
def test_dropout_backward(noise_shape, rng):
    layer = L.Dropout(0.5, noise_shape=noise_shape, dtype=F64)
    x = rng.normal(size=(3, 4, 5))
    d_inputs, _, _ = check_gradients(layer, x, rng)
    assert np.any(d_inputs == 0)


def test_masking_repeat_timedistributed_backward(rng):
    x = rng.normal(size=(2, 4, 3))
    x[0, 1] = 0.0
    # masked steps are a kink (any perturbation unmasks them): Keras' gradient there is 0
    masking = L.Masking(0.0, dtype=F64)
    _, tape = masking.forward(x, training=True)
    upstream = rng.normal(size=x.shape)
    d_inputs, _, d_weights = masking.backward(tape, upstream)
    expected = upstream.copy()
    expected[0, 1] = 0.0
    np.testing.assert_array_equal(d_inputs, expected)
    assert d_weights == []
    check_gradients(L.RepeatVector(3, dtype=F64), rng.normal(size=(2, 3)), rng)
    td = L.TimeDistributed(L.Dense(2, activation="tanh", dtype=F64))
    td.build(x.shape)
    check_gradients(td, x, rng)


def test_trainable_false_gives_no_weight_gradients(rng):
    layer = L.LSTM(2, dtype=F64, trainable=False)
    x = rng.normal(size=(2, 3, 2))
    layer.build(x.shape)
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 3
    _, _, d_weights = check_gradients(layer, x, rng)
    assert d_weights == []
