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
