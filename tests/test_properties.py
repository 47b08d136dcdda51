"""Property-based tests: the kernels agree with the NumPy reference for any shapes and
options hypothesis picks (including empty batches and zero-length sequences).

Derandomized, so CI runs the same examples every time; deadline=None because the machine
is shared.  float32 kernels are compared with the float64 reference on the same
(float32-rounded) inputs, so the tolerance measures the kernels' own error."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_reliability_inputs import CELLS, forward, make_problem

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
# Relative to max(1, max|expected|); measured worst cases are well below (test_lstm.py).
TOLERANCE = {np.float64: 1e-11, np.float32: 2e-5}
GRAD_TOLERANCE = {np.float64: 1e-10, np.float32: 1e-4}
ACTIVATIONS = ["tanh", "sigmoid", "relu", "linear", "hard_sigmoid"]


@st.composite
def cases(draw):
    cell = draw(st.sampled_from(CELLS))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = dict(batch=draw(st.integers(0, 4)), steps=draw(st.integers(0, 6)),
                 features=draw(st.integers(1, 5)), units=draw(st.integers(1, 6)))
    flags = dict(bias=draw(st.booleans()), state=draw(st.booleans()),
                 mask=draw(st.booleans()), dropout=draw(st.booleans()))
    options = dict(go_backwards=draw(st.booleans()),
                   zero_output_for_mask=draw(st.booleans()),
                   activation=draw(st.sampled_from(ACTIVATIONS)))
    if cell.accepts("recurrent_activation"):
        options["recurrent_activation"] = draw(st.sampled_from(ACTIVATIONS))
    seed = draw(st.integers(0, 2**32 - 1))
    return cell, dtype, shape, flags, options, seed


def as_float64(value):
    if isinstance(value, tuple):
        return tuple(as_float64(v) for v in value)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.astype(np.float64)
    return value


def close(actual, expected, tolerance, name):
    assert actual.shape == expected.shape, name
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance * scale, err_msg=name)


@settings(SETTINGS, max_examples=200)
@given(cases())
def test_kernels_match_the_reference(case):
    cell, dtype, shape, flags, options, seed = case
    rng = np.random.default_rng(seed)
    problem = make_problem(cell, rng, dtype=dtype, **shape, **flags)
    if flags["mask"]:
        problem["mask"] = rng.random((shape["batch"], shape["steps"])) > 0.4  # any pattern
    out = forward(cell, problem, training=True, **options)
    with np.errstate(all="ignore"):
        ref = cell.ref_forward(**{k: as_float64(v) for k, v in problem.items()},
                               **cell.options, **options, training=True)
    for name in ("outputs",) + cell.state_outputs:
        assert getattr(out, name).dtype == dtype
        close(getattr(out, name), getattr(ref, name), TOLERANCE[dtype], name)

    grads = {"d_outputs": rng.standard_normal(out.outputs.shape).astype(dtype)}
    for name in cell.state_outputs:
        grads[f"d_{name}"] = rng.standard_normal(getattr(out, name).shape).astype(dtype)
    g = cell.backward(out.cache, **grads)
    with np.errstate(all="ignore"):
        g_ref = cell.ref_backward(ref.cache, **{k: as_float64(v) for k, v in grads.items()})
    for name in g._fields:
        actual, expected = getattr(g, name), getattr(g_ref, name)
        assert (actual is None) == (expected is None), name
        if actual is not None:
            assert actual.dtype == dtype, name
            close(actual, expected, GRAD_TOLERANCE[dtype], f"d {name}")


@SETTINGS
@given(cases())
def test_inference_equals_training_forward(case):
    """training=False runs a different compiled variant: its results are the same."""
    cell, dtype, shape, flags, options, seed = case
    problem = make_problem(cell, np.random.default_rng(seed), dtype=dtype, **shape, **flags)
    train = forward(cell, problem, training=True, **options)
    infer = forward(cell, problem, training=False, **options)
    assert infer.cache is None
    for name in ("outputs",) + cell.state_outputs:
        np.testing.assert_array_equal(getattr(infer, name), getattr(train, name), err_msg=name)


@SETTINGS
@given(cases())
def test_go_backwards_is_forward_on_the_reversed_sequence(case):
    """go_backwards=True on x equals go_backwards=False on x[:, ::-1] (mask reversed too)."""
    cell, dtype, shape, flags, options, seed = case
    problem = make_problem(cell, np.random.default_rng(seed), dtype=dtype, **shape, **flags)
    options = dict(options, go_backwards=False)
    backwards = forward(cell, problem, **dict(options, go_backwards=True))
    reversed_problem = dict(problem, x=problem["x"][:, ::-1])
    if "mask" in problem:
        reversed_problem["mask"] = problem["mask"][:, ::-1]
    forwards = forward(cell, reversed_problem, **options)
    for name in ("outputs",) + cell.state_outputs:
        np.testing.assert_array_equal(getattr(backwards, name), getattr(forwards, name),
                                      err_msg=name)
