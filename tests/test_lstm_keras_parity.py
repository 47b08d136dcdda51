"""Parity of fusedrnn.ops.lstm_forward/lstm_backward with the real keras.layers.LSTM
(Keras 3, JAX backend; conftest.py sets KERAS_BACKEND=jax and JAX_ENABLE_X64=1).

Weights go in through layer.set_weights([kernel, recurrent_kernel, bias]): our layout *is*
Keras' layout.  Masks go through the layer's mask= argument.

Keras 3.15 quirk: keras.ops.tanh (and so the string activation "tanh") computes in float32
even for float64 inputs on JAX (keras.src.backend.common.dtypes.result_type demotes 64-bit
results, keras-team/keras#23223).  float64 parity therefore runs with activation=jnp.tanh
(the same function, kept in float64); the stock "tanh" is checked at float32 accuracy.

Unmasked cases use unroll=True (the same cell code, ~10x faster to run eagerly).  Masked
cases use the default lax.scan loop: Keras' unrolled loop has different mask semantics (a
masked step re-emits the previous *output*, zeros before the first one instead of h0, and
it ignores zero_output_for_mask), while the scan loop carries the state as documented."""
from __future__ import annotations

import numpy as np
import pytest

from fusedrnn import ops
from helpers import assert_close, require

RTOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.fixture
def keras(request):
    return require("keras", request)


def exact_tanh():
    """tanh that keeps float64 on JAX (see the module docstring)."""
    import jax.numpy as jnp
    return jnp.tanh


def random_problem(rng, batch, steps, features, units, dtype):
    bound = 1.0 / np.sqrt(units)
    arrays = dict(
        x=rng.standard_normal((batch, steps, features)),
        kernel=rng.uniform(-bound, bound, (features, 4 * units)),
        recurrent_kernel=rng.uniform(-bound, bound, (units, 4 * units)),
        bias=rng.uniform(-bound, bound, 4 * units),
        h0=rng.standard_normal((batch, units)),
        c0=rng.standard_normal((batch, units)),
    )
    return {k: v.astype(dtype) for k, v in arrays.items()}


def keras_layer(keras, p, dtype, *, activation="default", unroll=True, **options):
    units = p["recurrent_kernel"].shape[0]
    if activation == "default":  # tanh, exact in float64
        activation = "tanh" if dtype == np.float32 else exact_tanh()
    # zeros initializers: set_weights replaces them, and Keras' orthogonal init costs seconds
    layer = keras.layers.LSTM(units, activation=activation, return_sequences=True,
                              return_state=True, unroll=unroll, dtype=np.dtype(dtype).name,
                              kernel_initializer="zeros", recurrent_initializer="zeros",
                              **options)
    layer.build(p["x"].shape)
    layer.set_weights([p["kernel"], p["recurrent_kernel"], p["bias"]])
    return layer


def keras_forward(layer, p, *, with_state=True, mask=None):
    kwargs = {}
    if with_state:
        kwargs["initial_state"] = [p["h0"], p["c0"]]
    if mask is not None:
        kwargs["mask"] = mask
    outputs, h_n, c_n = layer(p["x"], **kwargs)
    return [np.asarray(v) for v in (outputs, h_n, c_n)]


def fused_forward(p, *, with_state=True, **options):
    return ops.lstm_forward(p["x"], p["kernel"], p["recurrent_kernel"], p["bias"],
                            initial_state=(p["h0"], p["c0"]) if with_state else None, **options)


def assert_same(ours, theirs, dtype, rtol=None):
    rtol = RTOL[dtype] if rtol is None else rtol
    for name, a, b in zip(("outputs", "h_n", "c_n"), ours[:3], theirs):
        assert a.dtype == dtype
        assert a.shape == b.shape, (name, a.shape, b.shape)
        assert_close(a, b, rtol, name=name)


DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,features,units,with_state", [
    (1, 1, 1, True), (3, 67, 3, False), (67, 3, 67, True), (4, 5, 6, False),
])
def test_matches_keras_lstm(rng, keras, dtype, batch, features, units, with_state):
    p = random_problem(rng, batch, 5, features, units, dtype)
    layer = keras_layer(keras, p, dtype)
    assert_same(fused_forward(p, with_state=with_state),
                keras_forward(layer, p, with_state=with_state), dtype)


# each option in each dtype, in 4 cases (every scan-loop case costs a JAX compilation)
MASK_CASES = [(np.float32, False, False), (np.float32, True, True), (np.float64, False, True),
              (np.float64, True, False)]


@pytest.mark.parametrize("dtype,go_backwards,zero_output", MASK_CASES,
                         ids=["float32-fwd-carry", "float32-bwd-zero", "float64-fwd-zero",
                              "float64-bwd-carry"])
def test_masks_and_go_backwards_match_keras(rng, keras, dtype, go_backwards, zero_output):
    """Arbitrary masks: holes in the middle, first and last steps masked, a dead row."""
    batch, steps = 5, 7
    p = random_problem(rng, batch, steps, 3, 4, dtype)
    mask = rng.random((batch, steps)) > 0.35
    mask[0] = [1, 1, 0, 0, 0, 1, 1]  # hole in the middle
    mask[1, 0] = mask[1, -1] = False  # first step masked in either direction
    mask[2] = False  # never updates
    layer = keras_layer(keras, p, dtype, go_backwards=go_backwards,
                        zero_output_for_mask=zero_output, unroll=False)
    ours = fused_forward(p, mask=mask, go_backwards=go_backwards, zero_output_for_mask=zero_output)
    assert_same(ours, keras_forward(layer, p, mask=mask), dtype)


def test_long_masked_sequence_matches_keras(rng, keras):
    """T=300 through Keras' scan loop, float64, random mask: no drift over time."""
    dtype = np.float64
    p = random_problem(rng, 3, 300, 3, 3, dtype)
    mask = rng.random((3, 300)) > 0.2
    layer = keras_layer(keras, p, dtype, unroll=False)
    assert_same(fused_forward(p, mask=mask), keras_forward(layer, p, mask=mask), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,recurrent_activation", [
    ("relu", "hard_sigmoid"), ("sigmoid", "sigmoid"), ("linear", "hard_sigmoid"),
    ("tanh", "relu"), (None, "linear"),
])
def test_other_activations_match_keras(rng, keras, dtype, activation, recurrent_activation):
    """Keras 3's hard_sigmoid is relu6(x + 3) / 6, as ours; None means linear."""
    p = random_problem(rng, 3, 5, 3, 4, dtype)
    # bounded activations: large weights reach the flat parts as well; an all-linear
    # recurrence is polynomial in h and blows up unless the weights are small
    scale = 0.5 if (activation in ("linear", None) and recurrent_activation == "linear") else 2.0
    for name in ("kernel", "recurrent_kernel", "bias"):
        p[name] = p[name] * dtype(scale)
    keras_activation = activation
    if activation == "tanh" and dtype == np.float64:
        keras_activation = exact_tanh()
    layer = keras_layer(keras, p, dtype, activation=keras_activation,
                        recurrent_activation=recurrent_activation)
    mask = rng.random((3, 5)) > 0.3
    mask[:, 0] = True  # unrolled Keras differs from its scan loop on a masked first step
    ours = fused_forward(p, activation=activation, recurrent_activation=recurrent_activation,
                         mask=mask)
    assert_same(ours, keras_forward(layer, p, mask=mask), dtype)


def test_stock_tanh_in_float64_is_float32_accurate(rng, keras):
    """With the stock "tanh" a float64 Keras LSTM agrees with ours only to float32
    accuracy (keras-team/keras#23223); documents why the other tests pass jnp.tanh."""
    p = random_problem(rng, 3, 6, 3, 4, np.float64)
    layer = keras_layer(keras, p, np.float64, activation="tanh")
    assert_same(fused_forward(p), keras_forward(layer, p), np.float64, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_return_sequences_false_and_single_step(rng, keras, dtype):
    """return_sequences=False returns the last output, which is our outputs[:, -1]
    (the carried state for a masked last step)."""
    p = random_problem(rng, 4, 1, 3, 3, dtype)
    layer = keras.layers.LSTM(3, return_state=True, unroll=True, dtype=np.dtype(dtype).name,
                              activation="tanh" if dtype == np.float32 else exact_tanh(),
                              kernel_initializer="zeros", recurrent_initializer="zeros")
    layer.build(p["x"].shape)
    layer.set_weights([p["kernel"], p["recurrent_kernel"], p["bias"]])
    last, h_n, c_n = (np.asarray(v) for v in layer(p["x"], initial_state=[p["h0"], p["c0"]]))
    ours = fused_forward(p)
    assert_close(ours.outputs[:, -1], last, RTOL[dtype], name="last output")
    assert_close(ours.h_n, h_n, RTOL[dtype], name="h_n")
    assert_close(ours.c_n, c_n, RTOL[dtype], name="c_n")


@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
def test_gradients_match_keras_jax_autodiff(rng, keras, go_backwards):
    """float64 gradients of L = <A, outputs> + <B, h_n> + <C, c_n> w.r.t. x, the three
    weights and the initial states, from jax.grad through layer.stateless_call."""
    import jax
    import jax.numpy as jnp

    dtype = np.float64
    batch, steps, features, units = 3, 6, 2, 4
    p = random_problem(rng, batch, steps, features, units, dtype)
    mask = rng.random((batch, steps)) > 0.3
    mask[0, 0] = mask[1, -1] = False
    d_out = rng.standard_normal((batch, steps, units))
    d_h = rng.standard_normal((batch, units))
    d_c = rng.standard_normal((batch, units))
    layer = keras_layer(keras, p, dtype, go_backwards=go_backwards, unroll=False)
    assert [v.path.split("/")[-1] for v in layer.trainable_variables] == [
        "kernel", "recurrent_kernel", "bias"]
    non_trainable = [v.value for v in layer.non_trainable_variables]  # dropout seed state

    def loss(weights, x, h0, c0):
        (outputs, h_n, c_n), _ = layer.stateless_call(
            list(weights), non_trainable, x, initial_state=[h0, c0], mask=jnp.asarray(mask))
        return jnp.sum(outputs * d_out) + jnp.sum(h_n * d_h) + jnp.sum(c_n * d_c)

    weights = tuple(jnp.asarray(p[k]) for k in ("kernel", "recurrent_kernel", "bias"))
    g_weights, g_x, g_h0, g_c0 = jax.grad(loss, argnums=(0, 1, 2, 3))(
        weights, jnp.asarray(p["x"]), jnp.asarray(p["h0"]), jnp.asarray(p["c0"]))

    out = fused_forward(p, mask=mask, go_backwards=go_backwards, training=True)
    grads = ops.lstm_backward(out.cache, d_out, d_h, d_c)
    expected = dict(kernel=g_weights[0], recurrent_kernel=g_weights[1], bias=g_weights[2],
                    x=g_x, h0=g_h0, c0=g_c0)
    for name, value in expected.items():
        assert_close(getattr(grads, name), np.asarray(value), RTOL[dtype], name=f"d{name}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_recurrent_dropout_mask_matches_keras_with_one_mask_for_all_gates(rng, keras, dtype):
    """Keras 3 draws four independent (batch, units) recurrent dropout masks, one per gate
    (LSTMCell implementation 1); ours takes one mask for all gates.  With Keras' four masks
    set to that same mask, training-mode outputs agree."""
    p = random_problem(rng, 4, 6, 3, 5, dtype)
    keep = ((rng.random((4, 5)) > 0.5) / 0.5).astype(dtype)
    layer = keras_layer(keras, p, dtype, recurrent_dropout=0.5)
    assert layer.cell.implementation == 1  # the per-gate path, as Keras selects it
    layer.cell.get_recurrent_dropout_mask = lambda step_input: [keep] * 4
    theirs = [np.asarray(v)
              for v in layer(p["x"], initial_state=[p["h0"], p["c0"]], training=True)]
    assert_same(fused_forward(p, recurrent_dropout_mask=keep), theirs, dtype)
