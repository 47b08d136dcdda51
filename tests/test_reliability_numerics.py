"""Numerics at the edges: saturated gates, very long sequences, run-to-run determinism.

- Pre-activations of |z| >= 1e4 (and up to 1e30 in float64) must give finite outputs and
  gradients for the bounded activations, match the reference, and keep |h| <= 1 where the
  maths bounds it.  (relu and linear are unbounded: large inputs may legitimately overflow.)
- T = 100,000 steps run without stack or index overflow, and agree with the same
  sequence processed in two chained halves (forward states and backward state gradients).
- The same call gives bitwise the same results every time, for a given thread count."""
from __future__ import annotations

import numpy as np
import pytest

from fusedrnn import _threads
from test_reliability_inputs import (CELLS, assert_same_results, cells, forward, make_problem,
                                     results, upstream_gradients)

BOUNDED = ("tanh", "sigmoid", "hard_sigmoid")


def activation_options(cell, activation, recurrent_activation):
    options = {"activation": activation}
    if cell.accepts("recurrent_activation"):
        options["recurrent_activation"] = recurrent_activation
    return options


# ----------------------------------------------------------------- saturated gates
@cells
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("magnitude", [1e4, 1e8, 1e30])
@pytest.mark.parametrize("activation,recurrent_activation",
                         [("tanh", "sigmoid"), ("sigmoid", "hard_sigmoid"),
                          ("hard_sigmoid", "tanh")])
def test_saturated_pre_activations_stay_finite(cell, dtype, magnitude, activation,
                                               recurrent_activation, rng):
    problem = make_problem(cell, rng, batch=3, steps=6, features=4, units=5, dtype=dtype,
                           state=True, mask=True)
    # every pre-activation is a sum of terms of size ~magnitude, with random signs
    problem["kernel"] = (np.sign(problem["kernel"]) * magnitude).astype(dtype)
    problem["recurrent_kernel"] = (problem["recurrent_kernel"] * magnitude).astype(dtype)
    problem["bias"] = (problem["bias"] * magnitude).astype(dtype)
    options = activation_options(cell, activation, recurrent_activation)
    out = forward(cell, problem, training=True, **options)
    grads = upstream_gradients(cell, out, rng)
    g = cell.backward(out.cache, **grads)
    for name, value in results(out, g).items():
        assert np.isfinite(value).all(), f"{name} is not finite at |z| ~ {magnitude:g}"
    h0 = problem["initial_state"][0] if len(cell.states) > 1 else problem["initial_state"]
    state_bound = max(1.0, float(np.abs(h0).max()))
    if recurrent_activation != "tanh":  # gates in [0, 1]: h stays within the bound
        assert np.abs(out.outputs).max() <= state_bound * (1 + 1e-6)

    # the reference, in float64 on the same inputs, predicts the saturated values
    wide = {k: (tuple(s.astype(np.float64) for s in v) if isinstance(v, tuple)
                else v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype != bool
                else v) for k, v in problem.items()}
    with np.errstate(over="ignore", invalid="ignore"):
        ref = cell.ref_forward(**wide, **cell.options, **options)
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(out.outputs, ref.outputs, rtol=0, atol=tolerance * state_bound)


@cells
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exactly_saturated_gates_give_exact_zero_gradients(cell, dtype, rng):
    """Huge positive pre-activations: sigmoid gates are exactly 1 (float32's clamped tanh
    and float64's exp both saturate), tanh exactly 1, so the gate derivatives vanish
    exactly and the kernel gradient through them is finite (zero), not NaN."""
    problem = make_problem(cell, rng, batch=2, steps=3, features=4, units=3, dtype=dtype,
                           bias=False)
    problem["x"] = np.abs(problem["x"]) + 1
    problem["kernel"] = np.full_like(problem["kernel"], 1e6)
    problem["recurrent_kernel"] = np.zeros_like(problem["recurrent_kernel"])
    out = forward(cell, problem, training=True)
    g = cell.backward(out.cache, **upstream_gradients(cell, out, rng))
    assert np.isfinite(g.kernel).all() and np.isfinite(g.x).all()
    np.testing.assert_array_equal(g.kernel, 0)


# ------------------------------------------------------------------ long sequences
def _halves(cell, problem, split):
    first = dict(problem, x=problem["x"][:, :split])
    out1 = forward(cell, first, training=True)
    state = tuple(getattr(out1, n) for n in cell.state_outputs)
    second = dict(problem, x=problem["x"][:, split:],
                  initial_state=state if len(state) > 1 else state[0])
    out2 = forward(cell, second, training=True)
    return out1, out2


def _long_sequence(cell, rng, steps):
    problem = make_problem(cell, rng, batch=2, steps=steps, features=3, units=8,
                           dtype=np.float32, bias=True)
    out = forward(cell, problem, training=True)
    for name, value in results(out).items():
        assert np.isfinite(value).all(), name
    # forward: the second half of the chained run is the tail of the long run
    split = steps // 2 + 7
    out1, out2 = _halves(cell, problem, split)
    np.testing.assert_allclose(out.outputs[:, :split], out1.outputs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.outputs[:, split:], out2.outputs, rtol=0, atol=1e-6)
    # backward through all steps: an upstream gradient on the last output only reaches
    # the first step through the whole chain; compare with the chained halves' BPTT
    d_outputs = np.zeros_like(out.outputs)
    d_outputs[:, -1] = 1.0
    g = cell.backward(out.cache, d_outputs=d_outputs)
    g2 = cell.backward(out2.cache, d_outputs=d_outputs[:, split:])
    carried = {f"d_{s}_n": getattr(g2, f"{s}0") for s in cell.states}
    g1 = cell.backward(out1.cache, **carried)
    for name in ("x",):
        assert np.isfinite(getattr(g, name)).all()
    np.testing.assert_allclose(g.x[:, split:], g2.x, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(g.x[:, :split], g1.x, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(g.kernel, g1.kernel + g2.kernel, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("cell", [c for c in CELLS if c.label in ("lstm", "gru")], ids=str)
def test_100k_steps_run_and_chain(cell, rng):
    """T = 100,000: no stack or 32-bit index overflow; about a second per cell."""
    _long_sequence(cell, rng, 100_000)


@pytest.mark.slow
@cells
def test_300k_steps_every_cell(cell, rng):
    _long_sequence(cell, rng, 300_000)


# ------------------------------------------------------------------- determinism
def _run(cell, problem, seed):
    out = forward(cell, problem, training=True)
    grads = upstream_gradients(cell, out, np.random.default_rng(seed))
    return results(out, cell.backward(out.cache, **grads))


@cells
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_identical_results_run_to_run(cell, dtype, n_threads, rng):
    """Big enough (batch 32 x 64 units) for the fused loop and BLAS to use both threads."""
    problem = make_problem(cell, rng, batch=32, steps=5, features=24, units=64, dtype=dtype,
                           state=True, mask=True)
    with _threads.threads(n_threads):
        first = _run(cell, problem, 3)
        for _ in range(3):
            assert_same_results(_run(cell, problem, 3), first, f"{n_threads} threads")


@cells
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_and_two_threads_agree_closely(cell, dtype, rng):
    """Across thread counts results may differ in the last bits (BLAS may split sums
    differently); they must agree to rounding.  See docs/RELIABILITY.md."""
    problem = make_problem(cell, rng, batch=32, steps=5, features=24, units=64, dtype=dtype,
                           state=True, mask=True)
    with _threads.threads(1):
        one = _run(cell, problem, 3)
    with _threads.threads(2):
        two = _run(cell, problem, 3)
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    for key in one:
        scale = max(1.0, float(np.abs(one[key]).max()))
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=tolerance * scale,
                                   err_msg=key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch,features", [(8, 64), (32, 24), (32, 200)])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_lstm_inference_equals_training_forward_where_the_input_is_fused(batch, features,
                                                                         n_threads, dtype, rng):
    """The LSTM fuses x_t W into the step's tiles in inference and training alike (from 16
    rows, or 8 with at most 64 inputs or 512 units or more; wide inputs included), so with
    the same thread split both sum in the same order and agree bitwise.  (From 512 units
    at 8-15 rows inference splits the units and training the rows, so a row's tile place,
    and its last bits, may differ: see docs/RELIABILITY.md.)"""
    cell = next(c for c in CELLS if c.name == "lstm")
    problem = make_problem(cell, rng, batch=batch, steps=7, features=features, units=37,
                           dtype=dtype, state=True, mask=True)
    with _threads.threads(n_threads):
        infer = forward(cell, problem, training=False)
        train = forward(cell, problem, training=True)
    for name in ("outputs", "h_n", "c_n"):
        np.testing.assert_array_equal(getattr(infer, name), getattr(train, name), err_msg=name)
