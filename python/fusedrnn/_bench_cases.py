"""What the benchmark times: the grid, the inputs, and one runnable case per
(implementation, cell, mode, point).

Shared by the ``fusedrnn bench`` command (:mod:`fusedrnn.bench`) and the pytest-benchmark
suites in ``benches/``, so both time exactly the same work.

Implementations:

- ``fusedrnn``: :mod:`fusedrnn.ops` (the fused kernels);
- ``numpy``: :mod:`fusedrnn.reference` (the pure-NumPy specification, same API);
- ``torch``: ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` with ``batch_first=True`` and the same
  weights mapped from Keras' layout.

Modes: ``forward`` is inference (nothing saved for backward; torch under ``no_grad``);
``train`` is a forward pass that saves for backward plus the backward pass producing every
parameter gradient and the input gradient, given a fixed random upstream gradient of the
output sequence.

Cells are detected at run time: GRU and SimpleRNN take part as soon as ``fusedrnn.ops``
has their forward and backward functions (the NumPy baseline likewise needs them in
``fusedrnn.reference``).
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

from . import ops, reference

CELLS = ("lstm", "gru", "rnn")
MODES = ("forward", "train")
IMPLEMENTATIONS = ("fusedrnn", "numpy", "torch")

# Gate blocks per cell (columns of the kernel = GATES * units).
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
# Names of each cell's functions in fusedrnn.ops / fusedrnn.reference.
OP_NAMES = {
    "lstm": ("lstm_forward", "lstm_backward"),
    "gru": ("gru_forward", "gru_backward"),
    "rnn": ("simple_rnn_forward", "simple_rnn_backward"),
}
TORCH_CLASSES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}

# Forward FLOPs per step and batch row are GATES * 2 * units * (features + units) (the two
# GEMMs); training counts three times the forward (forward + two backward GEMMs).
TRAIN_FLOP_FACTOR = 3


@dataclass(frozen=True)
class Point:
    """One problem size: batch rows, time steps, input features, hidden units."""

    batch: int
    steps: int
    features: int
    units: int

    @property
    def label(self) -> str:
        return f"B{self.batch}-T{self.steps}-I{self.features}-H{self.units}"


# The grid of issue 2: batch 1, 8, 32, 128 at T=100 for three (features, units) sizes,
# plus one long sequence.
FULL_GRID_SIZES = ((64, 128), (128, 256), (256, 512))
FULL_GRID_BATCHES = (1, 8, 32, 128)
FULL_GRID_STEPS = 100
LONG_POINT = Point(batch=8, steps=1000, features=64, units=128)


def full_grid() -> List[Point]:
    """The default benchmark grid, small problems first."""
    points = [
        Point(batch, FULL_GRID_STEPS, features, units)
        for features, units in FULL_GRID_SIZES
        for batch in FULL_GRID_BATCHES
    ]
    points.append(LONG_POINT)
    return points


def quick_grid() -> List[Point]:
    """A small subset for a fast look (and the smoke tests): two sizes, short sequences."""
    return [Point(1, 50, 64, 128), Point(32, 50, 128, 256)]


def numpy_skipped(point: Point) -> bool:
    """True where the default run leaves out the NumPy baseline to stay within its time
    budget: the largest points (batch * units >= 128 * 512), where one reference training
    step takes several seconds."""
    return point.batch * point.units >= 128 * 512


def flops(cell: str, mode: str, point: Point) -> int:
    """GEMM FLOPs of one call (forward, or forward + backward for ``train``)."""
    per_step = 2 * GATES[cell] * point.batch * point.units * (point.features + point.units)
    total = per_step * point.steps
    return total * TRAIN_FLOP_FACTOR if mode == "train" else total


# --------------------------------------------------------------------------------------
# Availability (decided at run time: other cells and torch may or may not be there)
# --------------------------------------------------------------------------------------

def _has_ops(module, cell: str) -> bool:
    return all(callable(getattr(module, name, None)) for name in OP_NAMES[cell])


def available_cells() -> List[str]:
    """Cells whose fused forward and backward kernels exist in fusedrnn.ops."""
    return [cell for cell in CELLS if _has_ops(ops, cell)]


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def implementation_available(implementation: str, cell: str) -> bool:
    """Whether `implementation` can run `cell` in this environment."""
    if implementation == "fusedrnn":
        return _has_ops(ops, cell)
    if implementation == "numpy":
        return _has_ops(reference, cell)
    if implementation == "torch":
        return torch_available()
    raise ValueError(f"unknown implementation {implementation!r}; expected one of {IMPLEMENTATIONS}")


def drop_in_available(cell: str = "lstm") -> bool:
    """True when fusedrnn.torch (the PyTorch drop-in) with `cell`'s class can be imported."""
    if not torch_available() or importlib.util.find_spec("fusedrnn.torch") is None:
        return False
    try:
        module = importlib.import_module("fusedrnn.torch")
    except ImportError:
        return False
    return hasattr(module, TORCH_CLASSES[cell])


def drop_in_lstm_available() -> bool:
    """True when fusedrnn.torch (the PyTorch drop-in) with an LSTM class can be imported."""
    return drop_in_available("lstm")


# --------------------------------------------------------------------------------------
# Inputs and weights (Keras layout), and their torch mapping
# --------------------------------------------------------------------------------------

@dataclass
class Problem:
    """Random inputs, Keras-layout weights and an upstream gradient for one point."""

    cell: str
    point: Point
    x: np.ndarray
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray          # LSTM (4H,), GRU (2, 3H) (reset_after=True), RNN (H,)
    d_outputs: np.ndarray     # fixed upstream gradient of the output sequence


def make_problem(cell: str, point: Point, dtype=np.float32, seed: int = 0) -> Problem:
    """Inputs ~ N(0, 1) and weights ~ U(+-1/sqrt(units)) (torch's default scale, which keeps
    the gates out of saturation); the same seed gives the same problem everywhere."""
    rng = np.random.default_rng(seed)
    b, t, i, h = point.batch, point.steps, point.features, point.units
    g = GATES[cell]
    scale = 1.0 / np.sqrt(h)

    def uniform(*shape):
        return rng.uniform(-scale, scale, size=shape).astype(dtype)

    bias_shape = (2, g * h) if cell == "gru" else (g * h,)
    return Problem(
        cell=cell,
        point=point,
        x=rng.standard_normal((b, t, i)).astype(dtype),
        kernel=uniform(i, g * h),
        recurrent_kernel=uniform(h, g * h),
        bias=uniform(*bias_shape),
        d_outputs=rng.standard_normal((b, t, h)).astype(dtype),
    )


def _gru_keras_to_torch_order(matrix: np.ndarray, units: int) -> np.ndarray:
    """Reorder gate columns from Keras' (z, r, h) to torch's (r, z, n)."""
    z, r, n = (matrix[..., k * units:(k + 1) * units] for k in range(3))
    return np.concatenate([r, z, n], axis=-1)


def torch_weights(problem: Problem) -> Dict[str, np.ndarray]:
    """The problem's weights as torch's layer-0 parameters (weight_ih_l0, ...)."""
    units = problem.point.units
    kernel, recurrent, bias = problem.kernel, problem.recurrent_kernel, problem.bias
    if problem.cell == "gru":
        kernel = _gru_keras_to_torch_order(kernel, units)
        recurrent = _gru_keras_to_torch_order(recurrent, units)
        bias = _gru_keras_to_torch_order(bias, units)
        bias_ih, bias_hh = bias[0], bias[1]
    else:
        # LSTM gate order i, f, g, o equals Keras' i, f, c, o; torch adds its two biases.
        bias_ih, bias_hh = bias, np.zeros_like(bias)
    return {
        "weight_ih_l0": kernel.T,
        "weight_hh_l0": recurrent.T,
        "bias_ih_l0": bias_ih,
        "bias_hh_l0": bias_hh,
    }


def build_torch_module(problem: Problem):
    """A torch.nn.LSTM/GRU/RNN (batch_first, tanh) holding the problem's weights."""
    import torch

    point = problem.point
    cls = getattr(torch.nn, TORCH_CLASSES[problem.cell])
    module = cls(point.features, point.units, batch_first=True)
    module = module.to(dtype=torch.float64 if problem.x.dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for name, value in torch_weights(problem).items():
            getattr(module, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return module


# --------------------------------------------------------------------------------------
# Runnable cases
# --------------------------------------------------------------------------------------

@dataclass
class Case:
    """One timed unit of work.  ``run()`` does it once; ``saved_bytes()`` reports the bytes
    the implementation saves for backward (training only; None where not measurable)."""

    implementation: str
    cell: str
    mode: str
    point: Point
    run: Callable[[], object]
    saved_bytes: Callable[[], Optional[int]]

    @property
    def name(self) -> str:
        return f"{self.cell}-{self.mode}-{self.implementation}-{self.point.label}"


def _not_measured() -> Optional[int]:
    return None


def _ops_api_case(module, problem: Problem, mode: str) -> tuple:
    """run / saved_bytes for fusedrnn.ops or fusedrnn.reference (same API)."""
    forward_name, backward_name = OP_NAMES[problem.cell]
    forward = getattr(module, forward_name)
    backward = getattr(module, backward_name)
    args = (problem.x, problem.kernel, problem.recurrent_kernel, problem.bias)
    # GRU's reset_after defaults to True (torch's formulation), which takes the (2, 3H) bias.
    if mode == "forward":
        return (lambda: forward(*args, training=False)), _not_measured

    def train():
        result = forward(*args, training=True)
        return backward(result.cache, problem.d_outputs)

    def saved_bytes():
        nbytes = getattr(forward(*args, training=True).cache, "nbytes", None)
        return None if nbytes is None else int(nbytes)

    return train, saved_bytes


def torch_saved_bytes(module, x) -> int:
    """Bytes torch's autograd saves for backward in one forward pass of `module` on `x`,
    counting each storage once and leaving out the parameters (shared, like our weights).

    Uses saved-tensor hooks, so it sees whatever torch's CPU RNN path really keeps."""
    import torch

    parameter_storages = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved: Dict[object, int] = {}

    def pack(tensor):
        try:
            storage = tensor.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # opaque (e.g. mkldnn) tensors
            key, nbytes = ("opaque", id(tensor)), tensor.numel() * tensor.element_size()
        if key not in parameter_storages:
            saved[key] = nbytes
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        module(x)
    return sum(saved.values())


def _torch_case(problem: Problem, mode: str) -> tuple:
    return _module_case(build_torch_module(problem), problem, mode)


def _module_case(module, problem: Problem, mode: str, hx=None) -> tuple:
    """run / saved_bytes for a torch module (torch.nn's or fusedrnn.torch's): forward under
    no_grad, or forward + the gradients of the input and every parameter; hx: the initial
    state passed to every call (None: zeros)."""
    import torch

    x = torch.from_numpy(problem.x)
    if mode == "forward":
        def forward():
            with torch.no_grad():
                return module(x, hx)

        return forward, _not_measured

    x_grad = x.clone().requires_grad_(True)
    d_outputs = torch.from_numpy(problem.d_outputs)
    inputs = [x_grad, *module.parameters()]

    def train():
        outputs, _ = module(x_grad, hx)
        # autograd.grad returns fresh gradients (no accumulation into .grad between runs)
        return torch.autograd.grad(outputs, inputs, d_outputs)

    return train, (lambda: torch_saved_bytes(module, x_grad))


def make_case(implementation: str, cell: str, mode: str, point: Point, dtype=np.float32,
              seed: int = 0) -> Case:
    """The case timing `implementation` on `cell` in `mode` at `point`."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {CELLS}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if not implementation_available(implementation, cell):
        raise RuntimeError(f"{implementation} cannot run {cell} in this environment")
    problem = make_problem(cell, point, dtype, seed)
    if implementation == "fusedrnn":
        run, saved = _ops_api_case(ops, problem, mode)
    elif implementation == "numpy":
        run, saved = _ops_api_case(reference, problem, mode)
    else:
        run, saved = _torch_case(problem, mode)
    return Case(implementation, cell, mode, point, run, saved)


# --------------------------------------------------------------------------------------
# The PyTorch drop-in modules against torch.nn's, module for module
# --------------------------------------------------------------------------------------

# Where the drop-in's own per-call work shows: one row with 512 units (the kernels are
# quick and the weights large: the gradients go back to torch's (4H, I) layout from the
# kernels' (I, 4H) on every call, and the weights come the other way for training), a
# common training batch, and one step with a carried state, as a decoding loop calls its
# recurrent layer once per token (each weight is used once).
DROP_IN_POINTS = (Point(batch=1, steps=100, features=256, units=512),
                  Point(batch=32, steps=100, features=128, units=256),
                  Point(batch=1, steps=1, features=512, units=512))
QUICK_DROP_IN_POINTS = (Point(batch=4, steps=20, features=32, units=64),)
DROP_IN_IMPLEMENTATIONS = ("fusedrnn.torch", "torch")


def make_drop_in_cases(cell: str, mode: str, point: Point, dtype=np.float32,
                       seed: int = 0) -> Dict[str, Case]:
    """``{"fusedrnn.torch": case, "torch": case}``: torch.nn's module holding the point's
    weights and fusedrnn.torch's loaded from its state_dict, timed as the torch column
    (``_module_case``) on the same input and upstream gradient."""
    if not drop_in_available(cell):
        raise RuntimeError(f"fusedrnn.torch.{TORCH_CLASSES[cell]} cannot run in this "
                           "environment (torch missing?)")
    problem = make_problem(cell, point, dtype, seed)
    reference_module = build_torch_module(problem)
    fused_class = getattr(importlib.import_module("fusedrnn.torch"), TORCH_CLASSES[cell])
    fused_module = fused_class(point.features, point.units, batch_first=True)
    fused_module = fused_module.to(dtype=next(reference_module.parameters()).dtype)
    fused_module.load_state_dict(reference_module.state_dict())
    hx = None
    if point.steps == 1:  # a decoding loop's step: the state carried from the last one
        import torch

        rng = np.random.default_rng(seed + 1)
        states = [torch.from_numpy((rng.standard_normal((1, point.batch, point.units)) * 0.5)
                                   .astype(problem.x.dtype))
                  for _ in range(2 if cell == "lstm" else 1)]
        hx = tuple(states) if cell == "lstm" else states[0]
    cases = {}
    for name, module in (("fusedrnn.torch", fused_module), ("torch", reference_module)):
        run, saved = _module_case(module, problem, mode, hx)
        cases[name] = Case(name, cell, mode, point, run, saved)
    return cases


# --------------------------------------------------------------------------------------
# Training loop with the PyTorch drop-in (issue 5)
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoopConfig:
    """A small sequence-regression training loop: LSTM + Linear head on the last output,
    MSE loss, Adam."""

    batch: int = 32
    steps: int = 100
    features: int = 64
    units: int = 128
    iterations: int = 20
    learning_rate: float = 1e-3


DEFAULT_LOOP = LoopConfig()
QUICK_LOOP = LoopConfig(batch=16, steps=50, features=32, units=64, iterations=6)


def make_training_loop(lstm_class, config: LoopConfig, seed: int = 0,
                       initial_state: Optional[dict] = None):
    """A model (``lstm_class`` + Linear head), its Adam optimizer, fixed data, and a
    ``step()`` doing one optimisation step and returning the loss.

    With ``initial_state`` (a state_dict) the model starts from those parameters, so two
    loops with different LSTM classes follow the same trajectory."""
    import torch

    class SequenceRegressor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = lstm_class(config.features, config.units, batch_first=True)
            self.head = torch.nn.Linear(config.units, 1)

        def forward(self, x):
            outputs, _ = self.rnn(x)
            return self.head(outputs[:, -1])

    torch.manual_seed(seed)
    model = SequenceRegressor()
    if initial_state is not None:
        model.load_state_dict(initial_state)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(config.batch, config.steps, config.features, generator=generator)
    y = torch.randn(config.batch, 1, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_function = torch.nn.MSELoss()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(model(x), y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return model, step


def training_loops(config: LoopConfig, seed: int = 0) -> Dict[str, Callable[[], float]]:
    """``{"fusedrnn": step, "torch": step}``: the same model, data and initial parameters,
    with fusedrnn.torch.LSTM and with torch.nn.LSTM."""
    import torch

    fused = importlib.import_module("fusedrnn.torch")
    reference_model, torch_step = make_training_loop(torch.nn.LSTM, config, seed)
    _, fused_step = make_training_loop(fused.LSTM, config, seed,
                                       initial_state=reference_model.state_dict())
    return {"fusedrnn": fused_step, "torch": torch_step}
