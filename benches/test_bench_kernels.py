"""Kernel benchmarks: every (cell, mode, point, implementation) of the bench grid.

Benchmarks of one (cell, mode, point) share a group, so pytest-benchmark's table compares
fusedrnn, the NumPy reference and torch side by side."""
import pytest

from fusedrnn import bench



def bench_points(config):
    """The bench command's full grid, or its --quick subset with --bench-grid=quick."""
    return bench.quick_grid() if config.getoption("--bench-grid") == "quick" else bench.full_grid()


def pytest_generate_tests(metafunc):
    if "kernel_spec" not in metafunc.fixturenames:
        return
    specs, ids = [], []
    for cell in bench.CELLS:
        for mode in bench.MODES:
            for point in bench_points(metafunc.config):
                for implementation in bench.IMPLEMENTATIONS:
                    specs.append((cell, mode, point, implementation))
                    ids.append(f"{cell}-{mode}-{point.label}-{implementation}")
    metafunc.parametrize("kernel_spec", specs, ids=ids)


def test_kernel(benchmark, kernel_spec, request):
    cell, mode, point, implementation = kernel_spec
    if not bench.implementation_available(implementation, cell):
        pytest.skip(f"{implementation} cannot run {cell} in this environment")
    if (implementation == "numpy" and bench.numpy_skipped(point)
            and not request.config.getoption("--bench-numpy-everywhere")):
        pytest.skip("NumPy reference left out at the largest points "
                    "(--bench-numpy-everywhere times it)")
    case = bench.make_case(implementation, cell, mode, point)
    benchmark.group = f"{cell}-{mode}-{point.label}"
    benchmark.extra_info.update(cell=cell, mode=mode, implementation=implementation,
                                batch=point.batch, steps=point.steps,
                                features=point.features, units=point.units,
                                flops=bench.flops(cell, mode, point))
    case.run()  # warm-up: first-touch allocations, torch's lazy initialisation
    benchmark(case.run)
    if benchmark.stats is None:  # --benchmark-disable: the case ran once, nothing timed
        return
    median = benchmark.stats.stats.median
    if median > 0:
        benchmark.extra_info["gflops"] = bench.flops(cell, mode, point) / median / 1e9
