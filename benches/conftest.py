"""pytest-benchmark suites over the ``fusedrnn bench`` grid.

Run with ``pytest benches/ --benchmark-only`` (plain ``pytest`` does not collect this
directory: pyproject's testpaths is ``tests``).  The grid, the problems and the timed work
come from :mod:`fusedrnn.bench`, so these numbers are comparable with the command's.

Options:
  --bench-grid=full|quick   the command's default grid (default) or its --quick subset
  --bench-threads=N         BLAS and torch threads (default: the CPUs this process may use)
  --bench-numpy-everywhere  also time the NumPy reference at the largest points
"""
import pytest

from fusedrnn import bench


def pytest_addoption(parser):
    group = parser.getgroup("fusedrnn benches")
    group.addoption("--bench-grid", choices=("full", "quick"), default="full",
                    help="grid of problem sizes: the bench command's full grid or --quick subset")
    group.addoption("--bench-threads", type=int, default=None,
                    help="threads for BLAS and torch (default: all available CPUs)")
    group.addoption("--bench-numpy-everywhere", action="store_true",
                    help="also time the NumPy reference at the largest points (slow)")


def pytest_configure(config):
    threads = config.getoption("--bench-threads")
    if threads is not None and threads < 1:
        raise pytest.UsageError(f"--bench-threads: expected a positive integer, got {threads}")


@pytest.fixture(scope="session", autouse=True)
def bench_threads(request):
    """Cap BLAS/OpenMP and torch at the same thread count for the whole session."""
    threads = request.config.getoption("--bench-threads") or bench.available_cores()
    use_torch = bench.torch_available()
    if use_torch:
        import torch  # noqa: F401  (loaded first so threadpoolctl caps its OpenMP too)
    with bench.thread_limits(threads, use_torch):
        yield threads
