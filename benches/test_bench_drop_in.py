"""Drop-in module benchmark: fusedrnn.torch's LSTM/GRU/RNN against torch.nn's, the same
module call (forward under no_grad, or forward + the input and parameter gradients) at the
points of ``fusedrnn bench``'s drop-in table."""
import dataclasses

import pytest

from fusedrnn import bench


def pytest_generate_tests(metafunc):
    if "drop_in_spec" in metafunc.fixturenames:
        quick = metafunc.config.getoption("--bench-grid") == "quick"
        points = bench.QUICK_DROP_IN_POINTS if quick else bench.DROP_IN_POINTS
        specs = [(cell, mode, point, implementation)
                 for cell in bench.CELLS for mode in bench.MODES for point in points
                 for implementation in bench.DROP_IN_IMPLEMENTATIONS]
        metafunc.parametrize("drop_in_spec", specs,
                             ids=[f"{c}-{m}-{p.label}-{i}" for c, m, p, i in specs])


def test_drop_in_module(benchmark, drop_in_spec):
    cell, mode, point, implementation = drop_in_spec
    if not bench.drop_in_available(cell):
        pytest.skip("needs torch and fusedrnn.torch (the PyTorch drop-in)")
    case = bench.make_drop_in_cases(cell, mode, point)[implementation]
    benchmark.group = f"drop-in-{cell}-{mode}-{point.label}"
    benchmark.extra_info.update(cell=cell, mode=mode, implementation=implementation,
                                **dataclasses.asdict(point))
    case.run()  # warm-up
    benchmark(case.run)
