"""float64 finite-difference check of every gradient lstm_backward returns.

The scalar loss mixes all three results, L = <A, outputs> + <B, h_n> + <C, c_n>, so
d_outputs = A, d_h_n = B, d_c_n = C exercise every path of the backward pass.  The same
check runs on the NumPy reference: both must agree with the central differences of the
*kernel's own* forward pass (and the kernel with the reference, see test_lstm.py)."""
from __future__ import annotations

import numpy as np
import pytest

from fusedrnn import ops
from fusedrnn import reference as ref
from helpers import assert_close, numerical_gradient

# Central differences with eps = 1e-6 on O(1) values are good to ~1e-9.
FD_RTOL = 1e-6


def make_case(rng, batch, steps, features, units, *, bias=True, state=True):
    bound = 1.0 / np.sqrt(units)
    params = dict(
        x=rng.standard_normal((batch, steps, features)),
        kernel=rng.uniform(-2 * bound, 2 * bound, (features, 4 * units)),
        recurrent_kernel=rng.uniform(-2 * bound, 2 * bound, (units, 4 * units)),
    )
    if bias:
        params["bias"] = rng.uniform(-bound, bound, 4 * units)
    if state:
        params["h0"] = rng.standard_normal((batch, units))
        params["c0"] = rng.standard_normal((batch, units))
    weights = dict(
        d_outputs=rng.standard_normal((batch, steps, units)),
        d_h_n=rng.standard_normal((batch, units)),
        d_c_n=rng.standard_normal((batch, units)),
    )
    return params, weights


def call(module, params, training=False, **options):
    state = (params["h0"], params["c0"]) if "h0" in params else None
    return module.lstm_forward(params["x"], params["kernel"], params["recurrent_kernel"],
                               params.get("bias"), initial_state=state, training=training,
                               **options)


def check_gradients(params, weights, **options):
    def loss():
        out = call(ops, params, **options)
        return (np.sum(weights["d_outputs"] * out.outputs) + np.sum(weights["d_h_n"] * out.h_n)
                + np.sum(weights["d_c_n"] * out.c_n))

    analytic = {
        "kernel": ops.lstm_backward(call(ops, params, training=True, **options).cache, **weights),
        "reference": ref.lstm_backward(call(ref, params, training=True, **options).cache,
                                       **weights),
    }
    for name, array in params.items():
        numeric = numerical_gradient(loss, array)
        field = name  # LSTMGradients uses the same names: x, kernel, ..., h0, c0
        for source, grads in analytic.items():
            assert_close(getattr(grads, field), numeric, FD_RTOL, name=f"{source} d{name}")
    for field in ("bias", "h0", "c0"):  # gradients of absent inputs are None
        if field not in params:
            for grads in analytic.values():
                assert getattr(grads, field) is None, field


MASK_CASES = {
    "none": None,
    # row 0: hole in the middle; row 1: first step masked; row 2: never valid
    "mixed": np.array([[1, 1, 0, 0, 1], [0, 1, 1, 0, 1], [0, 0, 0, 0, 0]], bool),
}


@pytest.mark.parametrize("mask_name", list(MASK_CASES))
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("zero_output", [False, True], ids=["carry", "zero"])
def test_gradients_masks_and_direction(rng, mask_name, go_backwards, zero_output):
    params, weights = make_case(rng, 3, 5, 2, 3)
    check_gradients(params, weights, mask=MASK_CASES[mask_name], go_backwards=go_backwards,
                    zero_output_for_mask=zero_output)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("state", [True, False], ids=["state", "nostate"])
def test_gradients_optional_inputs(rng, bias, state):
    params, weights = make_case(rng, 2, 4, 3, 2, bias=bias, state=state)
    check_gradients(params, weights)


@pytest.mark.parametrize("batch,steps,features,units", [(1, 1, 1, 1), (2, 1, 3, 2), (1, 6, 1, 1),
                                                        (2, 3, 1, 4)])
def test_gradients_small_shapes(rng, batch, steps, features, units):
    params, weights = make_case(rng, batch, steps, features, units)
    check_gradients(params, weights, mask=rng.random((batch, steps)) > 0.3)


@pytest.mark.parametrize("activation,recurrent_activation", [
    ("sigmoid", "tanh"), ("linear", "sigmoid"), ("tanh", "hard_sigmoid"), ("relu", "sigmoid"),
])
def test_gradients_other_activations(rng, activation, recurrent_activation):
    # relu and hard_sigmoid have kinks; a random point lies within eps of one with
    # probability ~1e-4, and the reference/kernel comparison covers them exactly anyway.
    params, weights = make_case(rng, 2, 4, 2, 3)
    check_gradients(params, weights, activation=activation,
                    recurrent_activation=recurrent_activation,
                    mask=np.array([[1, 0, 1, 1], [1, 1, 0, 1]], bool), go_backwards=True)


@pytest.mark.parametrize("state", [True, False], ids=["state", "nostate"])
def test_gradients_recurrent_dropout_mask(rng, state):
    params, weights = make_case(rng, 3, 4, 2, 3, state=state)
    keep = (rng.random((3, 3)) > 0.4) / 0.6  # inverted dropout, as Keras scales it
    check_gradients(params, weights, recurrent_dropout_mask=keep,
                    mask=np.array([[1, 1, 0, 1], [0, 1, 1, 1], [1, 1, 1, 1]], bool))
