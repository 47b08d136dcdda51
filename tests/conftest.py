"""Shared test setup: Keras' backend, a global seed, and the reference switch."""
import os

# Keras must know its backend before it is imported; float64 parity needs x64 in JAX.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_ENABLE_X64", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import zlib

import numpy as np
import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--require-parity", action="store_true", default=os.environ.get("CI") == "true",
        help="fail (instead of skip) when torch or keras is missing; on by default in CI",
    )


@pytest.fixture(autouse=True)
def _global_seed():
    """Every test starts from the same NumPy global seed (tests should still use rng)."""
    np.random.seed(0)
    yield


@pytest.fixture
def rng(request):
    """A per-test generator seeded from the test's name: reproducible and independent."""
    seed = zlib.crc32(request.node.nodeid.encode())  # stable across runs, unlike hash()
    return np.random.default_rng(seed)
