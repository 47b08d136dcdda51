"""Test utilities: importing the parity references, finite differences, tolerances."""
from __future__ import annotations

import numpy as np
import pytest


def require(module_name: str, request=None):
    """Import torch/keras for a parity test; skip locally if missing, fail in CI.

    CI passes --require-parity (CI=true sets it by default), so parity never silently skips."""
    try:
        return __import__(module_name)
    except ImportError as exc:
        strict = request is not None and request.config.getoption("--require-parity")
        if strict:
            pytest.fail(f"{module_name} is required for parity tests in CI: {exc}")
        pytest.skip(f"{module_name} not installed")


def numerical_gradient(f, array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() w.r.t. every element of `array` (in place,
    restored afterwards).  float64 only."""
    assert array.dtype == np.float64
    grad = np.zeros_like(array)
    flat = array.reshape(-1)
    gflat = grad.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + eps
        up = f()
        flat[k] = old - eps
        down = f()
        flat[k] = old
        gflat[k] = (up - down) / (2 * eps)
    return grad


def assert_close(actual, expected, rtol, atol=None, name=""):
    """assert_allclose with an absolute floor scaled to the expected magnitude."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol if atol is not None else rtol * scale,
                               err_msg=name)


def cast_problem(problem: dict, dtype) -> dict:
    """The same problem in dtype (a tuple initial_state, LSTM's (h0, c0), element-wise)."""
    out = {}
    for key, value in problem.items():
        if value is None:
            out[key] = None
        elif isinstance(value, tuple):
            out[key] = tuple(np.asarray(v, dtype) for v in value)
        else:
            out[key] = np.asarray(value, dtype)
    return out


def upstream_gradients(rng, batch, steps, units, which: str, *, cell_state=False):
    """d_outputs, d_h_n (and d_c_n with cell_state); `which` picks the given ones ("o", "h",
    "c"), the others are None."""
    d_outputs = rng.standard_normal((batch, steps, units)) if "o" in which else None
    d_h_n = rng.standard_normal((batch, units)) if "h" in which else None
    if not cell_state:
        return d_outputs, d_h_n
    d_c_n = rng.standard_normal((batch, units)) if "c" in which else None
    return d_outputs, d_h_n, d_c_n


def run_kernel_and_reference(forward, backward, ref_forward, ref_backward, problem, dtype,
                             upstream, **options):
    """The kernel in dtype, the reference in float64 on the dtype-rounded inputs.
    Returns (kernel forward, kernel grads, reference forward, reference grads)."""
    kernel_in = cast_problem(problem, dtype)
    reference_in = cast_problem(kernel_in, np.float64)
    k_out = forward(**kernel_in, training=True, **options)
    r_out = ref_forward(**reference_in, training=True, **options)
    k_up = [None if g is None else g.astype(dtype) for g in upstream]
    r_up = [None if g is None else g.astype(np.float64) for g in k_up]
    return k_out, backward(k_out.cache, *k_up), r_out, ref_backward(r_out.cache, *r_up)
