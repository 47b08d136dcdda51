"""Accuracy of the kernels' element-wise activations (fusedrnn._kernels).

float32 tanh is a clamped rational approximation and float32 sigmoid is built on it; the
documented bound is a max absolute error of 5e-7 against float64.  Measured over *every*
float32 in [-16, 16] (beyond it tanh is clamped to exactly +-1): tanh 4.10e-7 at
x = +-5.827876, sigmoid 2.27e-7 at x = 11.5491; on the 2M-point grid below tanh reaches
3.54e-7.  float64 uses libm, so it must be exact to a
few ulps.  Codes: tanh 0, sigmoid 1, relu 2, linear 3, hard_sigmoid 4 (csrc/fusedrnn.h)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from fusedrnn._kernels import activate, activation_grad

TANH, SIGMOID, RELU, LINEAR, HARD_SIGMOID = 0, 1, 2, 3, 4
FLOAT32_ABS_BOUND = 5e-7

F32 = np.finfo(np.float32)
EXTREMES = np.array(
    [0.0, -0.0, F32.tiny, -F32.tiny, F32.smallest_subnormal, -F32.smallest_subnormal, 1e-30,
     -1e-30, 7.9053111, -7.9053111, 7.9053112, 8.0, -8.0, 15.81, 20.0, -20.0, 88.0, -88.0,
     1e4, -1e4, 1e30, -1e30, F32.max, -F32.max],
    dtype=np.float32,
)


def exact(code: int, x64: np.ndarray) -> np.ndarray:
    """float64 ground truth of each activation."""
    if code == TANH:
        return np.tanh(x64)
    if code == SIGMOID:
        return expit(x64)  # accurate to an ulp even deep in the left tail
    if code == RELU:
        return np.maximum(x64, 0.0)
    if code == LINEAR:
        return x64
    if code == HARD_SIGMOID:
        return np.clip(x64 / 6.0 + 0.5, 0.0, 1.0)
    raise AssertionError(code)


@pytest.fixture(scope="module")
def dense_grid_f32():
    """2M evenly spaced points over [-20, 20] (spacing 2e-5) plus the extremes."""
    return np.concatenate([np.linspace(-20.0, 20.0, 2_000_001, dtype=np.float32), EXTREMES])


@pytest.mark.parametrize("code,name", [(TANH, "tanh"), (SIGMOID, "sigmoid")])
def test_float32_max_abs_error_bound(dense_grid_f32, code, name):
    x = dense_grid_f32
    y = activate(x, code)
    assert y.dtype == np.float32 and y.shape == x.shape
    error = np.abs(y.astype(np.float64) - exact(code, x.astype(np.float64)))
    worst = int(np.argmax(error))
    assert error[worst] < FLOAT32_ABS_BOUND, (
        f"float32 {name}: max abs error {error[worst]:.3e} at x={x[worst]!r} exceeds "
        f"the documented bound {FLOAT32_ABS_BOUND:.0e}"
    )
    print(f"float32 {name}: measured max abs error {error[worst]:.3e} at x={x[worst]!r}")


@pytest.mark.parametrize("code,name", [(TANH, "tanh"), (SIGMOID, "sigmoid")])
def test_float32_random_points_error_bound(rng, code, name):
    """Random float32 values (not on the grid), including every binade up to 1e4."""
    x = np.concatenate([
        rng.uniform(-10, 10, 200_000),
        rng.choice([-1, 1], 100_000) * 10.0 ** rng.uniform(-38, 4, 100_000),
    ]).astype(np.float32)
    error = np.abs(activate(x, code).astype(np.float64) - exact(code, x.astype(np.float64)))
    assert error.max() < FLOAT32_ABS_BOUND, (
        f"float32 {name}: max abs error {error.max():.3e} at x={x[np.argmax(error)]!r}"
    )


def float32_range(lo: float, hi: float) -> np.ndarray:
    """Every float32 in [lo, hi] (0 <= lo < hi), in order, via their bit patterns."""
    first, last = np.array([lo, hi], np.float32).view(np.int32)
    return np.arange(first, last + 1, dtype=np.int32).view(np.float32)


def test_float32_tanh_every_value_in_the_worst_region():
    """All 2.1M float32 in [5.5, 6.5] and their negatives: the worst case of the rational
    approximation (4.10e-7 at 5.827876) lies here, between the grid points."""
    x = float32_range(5.5, 6.5)
    x = np.concatenate([x, -x])
    error = np.abs(activate(x, TANH).astype(np.float64) - np.tanh(x.astype(np.float64)))
    worst = int(np.argmax(error))
    assert error[worst] < FLOAT32_ABS_BOUND, (
        f"float32 tanh: max abs error {error[worst]:.3e} at x={x[worst]!r}"
    )


def test_float32_tanh_small_arguments_relative_error():
    """Near zero tanh(x) ~ x: the rational form keeps a small *relative* error as well."""
    x = np.logspace(-30, 0, 20_001).astype(np.float32)
    x = np.concatenate([x, -x])
    truth = np.tanh(x.astype(np.float64))
    relative = np.abs(activate(x, TANH) - truth) / np.abs(truth)
    assert relative.max() < 1e-6, f"max relative error {relative.max():.3e}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturation_infinities_and_nan(dtype):
    special = np.array([np.inf, -np.inf, np.nan, 1e4, -1e4, 50.0, -50.0], dtype)
    tanh = activate(special, TANH)
    np.testing.assert_array_equal(tanh[[0, 1, 3, 4]], [1.0, -1.0, 1.0, -1.0])
    assert np.isnan(tanh[2])
    np.testing.assert_allclose(tanh[[5, 6]], [1.0, -1.0], rtol=0, atol=FLOAT32_ABS_BOUND)
    sigmoid = activate(special, SIGMOID)
    np.testing.assert_array_equal(sigmoid[[0, 1, 3, 4]], [1.0, 0.0, 1.0, 0.0])
    assert np.isnan(sigmoid[2])
    np.testing.assert_allclose(sigmoid[[5, 6]], [1.0, 0.0], rtol=0, atol=FLOAT32_ABS_BOUND)
    hard = activate(special, HARD_SIGMOID)
    np.testing.assert_array_equal(hard[[0, 1, 3, 4, 5, 6]], [1, 0, 1, 0, 1, 0])
    assert np.isnan(hard[2])
    relu = activate(special, RELU)
    np.testing.assert_array_equal(relu[[0, 1, 3, 4]], [np.inf, 0.0, 1e4, 0.0])
    assert np.isnan(relu[2])
    linear = activate(special, LINEAR)
    np.testing.assert_array_equal(linear, special)  # NaN == NaN here (assert_array_equal)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_propagates_everywhere(dtype):
    x = np.full(37, np.nan, dtype)  # odd length: vector body and scalar tail both see NaN
    for code in (TANH, SIGMOID, RELU, LINEAR, HARD_SIGMOID):
        assert np.all(np.isnan(activate(x, code))), f"code {code} swallowed NaN"


def test_float32_outputs_stay_in_range(dense_grid_f32):
    """The approximation never overshoots: |tanh| <= 1 and 0 <= sigmoid <= 1, with odd
    symmetry (tanh(-x) = -tanh(x) exactly)."""
    x = dense_grid_f32
    tanh = activate(x, TANH)
    sigmoid = activate(x, SIGMOID)
    assert np.abs(tanh).max() <= 1.0
    assert sigmoid.min() >= 0.0 and sigmoid.max() <= 1.0
    np.testing.assert_array_equal(activate(-x, TANH), -tanh)


def test_float64_matches_libm():
    x = np.concatenate([np.linspace(-40.0, 40.0, 400_001), EXTREMES.astype(np.float64),
                        [np.finfo(np.float64).max, -np.finfo(np.float64).max, 1e-300, 710.0,
                         -710.0, 745.0, -745.0]])
    for code in (TANH, SIGMOID):
        y = activate(x, code)
        assert y.dtype == np.float64
        truth = exact(code, x)
        err = np.abs(y - truth)
        # libm and NumPy's own tanh may each be off by an ulp: allow 4 ulps of the result
        bound = 4 * np.spacing(np.abs(truth)) + 1e-300
        worst = int(np.argmax(err / bound))
        assert np.all(err <= bound), f"code {code}: error {err[worst]:.3e} at x={x[worst]!r}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("code", [RELU, LINEAR, HARD_SIGMOID])
def test_piecewise_linear_activations_are_exact(rng, dtype, code):
    x = np.concatenate([rng.uniform(-5, 5, 1001), [-3.0, 3.0, 0.0, -0.0, 2.9999, -2.9999]])
    x = x.astype(dtype)
    expected = exact(code, x.astype(np.float64)).astype(dtype)
    y = activate(x, code)
    if code == HARD_SIGMOID:  # x/6 + 0.5 in the working precision: within an ulp
        np.testing.assert_allclose(y, expected, rtol=0, atol=np.finfo(dtype).eps)
        np.testing.assert_array_equal(y[x <= -3], 0)
        np.testing.assert_array_equal(y[x >= 3], 1)
    else:
        np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activate_copies_input(rng, dtype):
    x = rng.standard_normal(101).astype(dtype)
    before = x.copy()
    for code in range(5):
        activate(x, code)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("code,derivative", [
    (TANH, lambda y: 1 - y * y),
    (SIGMOID, lambda y: y * (1 - y)),
    (RELU, lambda y: (y > 0).astype(y.dtype)),
    (LINEAR, lambda y: np.ones_like(y)),
    (HARD_SIGMOID, lambda y: ((y > 0) & (y < 1)) / 6.0),
])
def test_activation_grad_from_output(rng, dtype, code, derivative):
    """activation_grad(y, dv) = dv * f'(x) expressed through y = f(x)."""
    x = np.concatenate([rng.uniform(-6, 6, 999), [-3.0, 3.0, 0.0, 10.0, -10.0]]).astype(dtype)
    y = activate(x, code)
    dv = rng.standard_normal(x.size).astype(dtype)
    got = activation_grad(y, dv, code)
    expected = dv.astype(np.float64) * derivative(y.astype(np.float64))
    assert got.dtype == dtype and got.shape == dv.shape
    # 1 - y*y cancels near saturation, so the rounding error scales with |dv|, not the result
    bound = 4 * np.finfo(dtype).eps * (np.abs(expected) + np.abs(dv))
    assert np.all(np.abs(got - expected) <= bound), f"worst {np.max(np.abs(got - expected)):.3e}"


@pytest.mark.parametrize("code", [TANH, SIGMOID])
def test_float64_grad_matches_finite_differences(rng, code):
    """The derivative-through-the-output formulas are the true derivatives."""
    x = rng.uniform(-4, 4, 200)
    eps = 1e-6
    numeric = (exact(code, x + eps) - exact(code, x - eps)) / (2 * eps)
    got = activation_grad(activate(x, code), np.ones_like(x), code)
    np.testing.assert_allclose(got, numeric, rtol=1e-8, atol=1e-10)
