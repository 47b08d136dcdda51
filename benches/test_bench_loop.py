"""Training-loop benchmark: one optimisation step (forward, backward, Adam) of the same
model with fusedrnn.torch.LSTM and with torch.nn.LSTM (issue 5)."""
import dataclasses
import math

import pytest

from fusedrnn import bench


@pytest.fixture(scope="module")
def loop_config(request):
    return bench.QUICK_LOOP if request.config.getoption("--bench-grid") == "quick" \
        else bench.DEFAULT_LOOP


@pytest.mark.parametrize("implementation", ["fusedrnn", "torch"])
def test_training_step(benchmark, implementation, loop_config):
    if not bench.drop_in_lstm_available():
        pytest.skip("needs torch and fusedrnn.torch.LSTM (the PyTorch drop-in)")
    step = bench.training_loops(loop_config)[implementation]
    benchmark.group = "training-loop"
    benchmark.extra_info.update(implementation=implementation, **dataclasses.asdict(loop_config))
    step()  # warm-up
    loss = benchmark(step)
    assert math.isfinite(loss)  # a NaN loss means the step is broken, not slow
