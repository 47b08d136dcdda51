"""``fusedrnn bench``: time the fused kernels against the NumPy reference and PyTorch.

For every cell (LSTM, and GRU / SimpleRNN once :mod:`fusedrnn.ops` has them), mode
(``forward`` = inference, ``train`` = forward saving for backward + backward with every
gradient) and grid point, the same problem (:mod:`fusedrnn._bench_cases`) runs through

- fusedrnn (:mod:`fusedrnn.ops`),
- the NumPy reference (:mod:`fusedrnn.reference`),
- torch (``torch.nn.LSTM/GRU/RNN``, the same weights mapped, ``batch_first=True``),

with BLAS and torch capped at the same number of threads.  Each measurement is a warm-up
call, then repeated calls until both a minimum count and a time budget are reached; the
table reports the median.  When the PyTorch drop-in ``fusedrnn.torch`` is present, its
LSTM/GRU/RNN modules are timed against torch.nn's at two sizes (``--no-drop-in`` skips
them), and a small training loop (LSTM + Linear head, Adam) against the same loop with
``torch.nn.LSTM``.

Usage::

    fusedrnn bench [--quick] [--cells lstm,gru,rnn] [--modes forward,train]
                   [--json PATH] [--markdown PATH] [--plot PATH] [--threads N] [--repeat N]

The Markdown report goes to stdout, progress to stderr.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from . import __version__
from ._bench_cases import (
    CELLS,
    DEFAULT_LOOP,
    DROP_IN_IMPLEMENTATIONS,
    DROP_IN_POINTS,
    IMPLEMENTATIONS,
    MODES,
    OP_NAMES,
    QUICK_DROP_IN_POINTS,
    QUICK_LOOP,
    Case,
    LoopConfig,
    Point,
    available_cells,
    build_torch_module,
    drop_in_available,
    drop_in_lstm_available,
    flops,
    full_grid,
    implementation_available,
    make_case,
    make_drop_in_cases,
    make_problem,
    numpy_skipped,
    quick_grid,
    torch_available,
    torch_weights,
    training_loops,
)

__all__ = [
    "CELLS", "MODES", "IMPLEMENTATIONS", "OP_NAMES", "TABLE_COLUMNS", "Point", "Case",
    "LoopConfig", "DEFAULT_LOOP", "QUICK_LOOP", "training_loops", "drop_in_lstm_available",
    "drop_in_available", "DropInResult", "run_drop_in",
    "torch_available", "available_cores", "Timing",
    "MeasureSettings", "Result", "LoopResult", "full_grid", "quick_grid", "numpy_skipped",
    "flops", "available_cells", "implementation_available", "make_case", "make_problem",
    "build_torch_module", "torch_weights", "measure", "run_grid", "run_loop", "environment",
    "thread_limits", "format_markdown", "to_json", "plot_speedups", "main",
]

# Accepted spellings on the command line -> canonical cell names.
CELL_ALIASES = {"lstm": "lstm", "gru": "gru", "rnn": "rnn", "simple_rnn": "rnn",
                "simplernn": "rnn"}

# Marks in the table (explained under it).
SKIPPED = "-"           # left out by the time-budget rule (numpy_skipped)
NOT_AVAILABLE = "n/a"   # the implementation cannot run this cell, or did not measure it
NOT_SELECTED = "off"    # left out with --impls

# After a multi-threaded product NumPy's OpenBLAS workers spin for about 0.1 s (OpenBLAS'
# THREAD_TIMEOUT, 2**28 cycles) before they sleep, and on two cores they take one from
# whatever runs next: the SimpleRNN forward at B=32, T=50, H=256 took 1.8 and 5.9 ms on
# alternate calls for 0.1 s after NumPy products, 1.8 ms from then on.  The grid waits that
# long after the NumPy reference, so that fusedrnn and torch are timed on quiet cores.
NUMPY_BLAS_SPIN_SECONDS = 0.15


# --------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------

# Switching from one implementation to the other costs the first call after the switch:
# the other's OpenMP workers still spin for a while after its call (GNU OpenMP's default
# before they sleep), and its data has displaced ours from the caches.  Measured
# (2026-12-02, Zen 3, 2 threads, medians of 40; the k-th call of one implementation after
# a call of the other, k = 1, 2, 3): SimpleRNN forward B=1, H=128: ours 0.418, 0.258,
# 0.244 ms, torch 2.29, 2.04, 2.04 ms; LSTM training B=1, H=128: ours 1.53, 1.18, 1.16 ms,
# torch 4.29, 3.58, 3.48 ms; GRU forward B=8, H=128: ours 2.35, 2.00, 2.01 ms, torch
# 10.7, 10.3, 10.4 ms.  The switch costs either side 0.2-0.8 ms, so it distorted short
# calls (the faster implementation's most) while the second call is already steady, as in
# a loop of one implementation's calls.  So measure_interleaved precedes a call shorter
# than WARM_CALL_BELOW_SECONDS with one untimed call of the same implementation.
WARM_CALL_BELOW_SECONDS = 0.05

# A burst of load from other processes on a shared machine can slow every call of a short
# measurement: in one full run (2026-12-03, Zen 3) LSTM training at batch 1 with 256 units
# got 5 calls whose median was 7.2x its fastest (47.3 ms against 4.3 ms in the two runs
# before; torch's 2.5x), and the table showed 0.44x torch for a point at 1.9-2.1x in
# the six runs before; in another, LSTM inference at batch 8 with 512 units showed 0.76x
# (1.07-1.18x elsewhere) from calls whose median was 1.85x their fastest.  Otherwise a
# median exceeds its fastest call by 1.02-1.13x at half of the points, and by more than
# 1.5x in 2-10 of a run's 78 interleaved measurements (eight runs).  So a measurement
# whose median exceeds SETTLE_SPREAD x its fastest call keeps going, up to EXTEND_BUDGETS
# budgets in all (or max_repeats), until the calls after the burst decide the median.
SETTLE_SPREAD = 1.5
EXTEND_BUDGETS = 4.0


@dataclass(frozen=True)
class MeasureSettings:
    """How long to time one case: `warmup` untimed calls, then timed calls until at least
    `min_repeats` were made and `budget` seconds have passed (at most `max_repeats`);
    past that, while a median is more than `settle_spread` times its fastest call, until
    `extend_budgets` budgets have passed (SETTLE_SPREAD says why).  measure_interleaved
    also makes an untimed call before each timed call of an implementation whose last call
    took less than `warm_below` seconds."""

    warmup: int = 1
    min_repeats: int = 5
    max_repeats: int = 50
    budget: float = 0.3
    warm_below: float = WARM_CALL_BELOW_SECONDS
    settle_spread: float = SETTLE_SPREAD
    extend_budgets: float = EXTEND_BUDGETS

    def for_numpy(self) -> "MeasureSettings":
        """The NumPy reference is slow: a third of the repeats and of the budget."""
        return dataclasses.replace(self, min_repeats=max(1, self.min_repeats // 3),
                                   budget=self.budget / 3)


@dataclass
class Timing:
    """Wall-clock seconds of each timed call."""

    seconds: List[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1e3

    @property
    def min_ms(self) -> float:
        return min(self.seconds) * 1e3

    @property
    def repeats(self) -> int:
        return len(self.seconds)


def _measured_enough(settings: MeasureSettings, calls: int, elapsed: float, budget: float,
                     timings: Sequence[List[float]]) -> bool:
    """The stopping rule of MeasureSettings after `calls` timed calls (or rounds) in
    `elapsed` seconds against `budget` seconds: enough calls and time, and either every
    median within settle_spread of its fastest call or extend_budgets budgets spent."""
    if calls < settings.min_repeats or elapsed < budget:
        return False
    settled = all(statistics.median(seconds) <= settings.settle_spread * min(seconds)
                  for seconds in timings)
    return settled or elapsed >= settings.extend_budgets * budget


def measure(function: Callable[[], object], settings: MeasureSettings) -> Timing:
    """Time `function` (see MeasureSettings for the stopping rule)."""
    for _ in range(settings.warmup):
        function()
    seconds: List[float] = []
    start = time.perf_counter()
    while len(seconds) < settings.max_repeats:
        t0 = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - t0)
        if _measured_enough(settings, len(seconds), time.perf_counter() - start,
                            settings.budget, [seconds]):
            break
    return Timing(seconds)


def measure_interleaved(functions: Dict[str, Callable[[], object]],
                        settings: MeasureSettings) -> Dict[str, Timing]:
    """Time several implementations of one case call by call in turn (A, B, A, B, ...), so
    that load changes on a shared machine hit them alike and their ratio stays fair.  The
    stopping rule of `measure`, counted in rounds, with `settings.budget` seconds per
    implementation.  A call shorter than `settings.warm_below` is preceded by an untimed
    call of the same implementation (WARM_CALL_BELOW_SECONDS says why)."""
    last_seconds: Dict[str, float] = {name: float("inf") for name in functions}
    for name, function in functions.items():
        for _ in range(settings.warmup):
            t0 = time.perf_counter()
            function()
            last_seconds[name] = time.perf_counter() - t0
    seconds: Dict[str, List[float]] = {name: [] for name in functions}
    budget = settings.budget * len(functions)
    start = time.perf_counter()
    for rounds in range(1, settings.max_repeats + 1):
        for name, function in functions.items():
            if len(functions) > 1 and last_seconds[name] < settings.warm_below:
                function()
            t0 = time.perf_counter()
            function()
            last_seconds[name] = time.perf_counter() - t0
            seconds[name].append(last_seconds[name])
        if _measured_enough(settings, rounds, time.perf_counter() - start, budget,
                            list(seconds.values())):
            break
    return {name: Timing(times) for name, times in seconds.items()}


@dataclass
class Result:
    """All implementations at one (cell, mode, point)."""

    cell: str
    mode: str
    point: Point
    timings: Dict[str, Timing] = field(default_factory=dict)
    marks: Dict[str, str] = field(default_factory=dict)      # why a timing is missing
    saved_bytes: Dict[str, Optional[int]] = field(default_factory=dict)

    @property
    def flops(self) -> int:
        return flops(self.cell, self.mode, self.point)

    def median_ms(self, implementation: str) -> Optional[float]:
        timing = self.timings.get(implementation)
        return None if timing is None else timing.median_ms

    @property
    def gflops(self) -> Optional[float]:
        """GFLOP/s of fusedrnn (GEMM FLOPs over its median time)."""
        return self.gflops_of("fusedrnn")

    def gflops_of(self, implementation: str) -> Optional[float]:
        """GFLOP/s of an implementation: the same FLOP count over its median time."""
        ms = self.median_ms(implementation)
        return None if not ms else self.flops / (ms * 1e-3) / 1e9

    def ratio(self, implementation: str) -> Optional[float]:
        """implementation's median / fusedrnn's median (> 1: fusedrnn is faster)."""
        mine, theirs = self.median_ms("fusedrnn"), self.median_ms(implementation)
        return None if not mine or theirs is None else theirs / mine

    def saved_bytes_per_step(self, implementation: str) -> Optional[float]:
        nbytes = self.saved_bytes.get(implementation)
        return None if nbytes is None else nbytes / self.point.steps


def run_grid(cells: Sequence[str], modes: Sequence[str], points: Sequence[Point],
             implementations: Sequence[str], settings: MeasureSettings,
             dtype=np.float32, skip_numpy_at_large_points: bool = True,
             progress: Optional[Callable[[str], None]] = None) -> List[Result]:
    """Measure every (cell, mode, point).  fusedrnn and torch alternate call by call
    (measure_interleaved), so that load changes on a shared machine hit both alike; the slow
    NumPy reference runs on its own with a third of the repeats."""
    results = []
    for cell in cells:
        for mode in modes:
            for point in points:
                result = Result(cell, mode, point)
                interleaved = {}
                for implementation in IMPLEMENTATIONS:
                    if implementation not in implementations:
                        result.marks[implementation] = NOT_SELECTED
                        continue
                    if not implementation_available(implementation, cell):
                        result.marks[implementation] = NOT_AVAILABLE
                        continue
                    if (implementation == "numpy" and skip_numpy_at_large_points
                            and numpy_skipped(point)):
                        result.marks[implementation] = SKIPPED
                        continue
                    case = make_case(implementation, cell, mode, point, dtype)
                    if implementation == "numpy":
                        result.timings[implementation] = measure(case.run, settings.for_numpy())
                        time.sleep(NUMPY_BLAS_SPIN_SECONDS)
                        if progress is not None:
                            progress(f"{case.name}: {result.timings[implementation].median_ms:.3f} ms")
                    else:
                        interleaved[implementation] = case
                result.timings.update(measure_interleaved(
                    {name: case.run for name, case in interleaved.items()}, settings))
                for implementation, case in interleaved.items():
                    if mode == "train":
                        result.saved_bytes[implementation] = case.saved_bytes()
                    if progress is not None:
                        progress(f"{case.name}: {result.timings[implementation].median_ms:.3f} ms")
                results.append(result)
    return results


@dataclass
class DropInResult:
    """fusedrnn.torch's module and torch.nn's at one (cell, mode, point)."""

    cell: str
    mode: str
    point: Point
    timings: Dict[str, Timing]

    @property
    def ratio(self) -> float:
        """torch.nn's median / fusedrnn.torch's (> 1: the drop-in is faster)."""
        return self.timings["torch"].median_ms / self.timings["fusedrnn.torch"].median_ms


def run_drop_in(cells: Sequence[str], modes: Sequence[str], points: Sequence[Point],
                settings: MeasureSettings, dtype=np.float32,
                progress: Optional[Callable[[str], None]] = None) -> List[DropInResult]:
    """fusedrnn.torch.LSTM/GRU/RNN against torch.nn's, call for call: what a user swapping
    modules gets, the drop-in's own per-call work (weight layouts, autograd) included."""
    results = []
    for cell in cells:
        if not drop_in_available(cell):
            continue
        for mode in modes:
            for point in points:
                cases = make_drop_in_cases(cell, mode, point, dtype)
                timings = measure_interleaved({name: case.run for name, case in cases.items()},
                                              settings)
                if progress is not None:
                    progress(f"drop-in {cell}-{mode}-{point.label}: " + ", ".join(
                        f"{name} {timings[name].median_ms:.3f} ms" for name in cases))
                results.append(DropInResult(cell, mode, point, timings))
    return results


@dataclass
class LoopResult:
    """The drop-in training loop: per-iteration seconds (warm-up excluded) and final loss."""

    config: LoopConfig
    seconds: Dict[str, List[float]]
    final_loss: Dict[str, float]

    def median_ms(self, implementation: str) -> float:
        return statistics.median(self.seconds[implementation]) * 1e3

    @property
    def ratio(self) -> float:
        """torch.nn.LSTM loop time / fusedrnn.torch.LSTM loop time."""
        return self.median_ms("torch") / self.median_ms("fusedrnn")


def run_loop(config: LoopConfig, warmup_iterations: int = 1) -> LoopResult:
    """Train the same model with fusedrnn.torch.LSTM and torch.nn.LSTM, alternating one
    iteration of each; the first `warmup_iterations` are not timed (but do train)."""
    steps = training_loops(config)
    seconds: Dict[str, List[float]] = {name: [] for name in steps}
    losses: Dict[str, float] = {}
    for iteration in range(config.iterations):
        for name, step in steps.items():
            t0 = time.perf_counter()
            losses[name] = step()
            if iteration >= warmup_iterations:
                seconds[name].append(time.perf_counter() - t0)
    return LoopResult(config, seconds, losses)


# --------------------------------------------------------------------------------------
# Threads and environment
# --------------------------------------------------------------------------------------

def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class thread_limits:
    """Context manager capping BLAS/OpenMP (threadpoolctl) and torch at `threads`, restoring
    both on exit.  Enter it after the libraries are imported so threadpoolctl sees them."""

    def __init__(self, threads: int, use_torch: bool):
        self.threads = threads
        self.use_torch = use_torch
        self._limiter = None
        self._torch_threads = None
        self._kernel_threads = None

    def __enter__(self):
        import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS the kernels call)
        from threadpoolctl import threadpool_limits

        if self.use_torch:
            import torch

            self._torch_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        self._limiter = threadpool_limits(limits=self.threads)
        # fusedrnn's kernels split their GEMMs and loops over their own `threads` threads,
        # calling SciPy's BLAS serially from each (threadpool_limits just unpinned it)
        from . import _threads

        self._kernel_threads = _threads._loop_threads()
        _threads._pin_kernel_blas()
        _threads._set_loop_threads(self.threads)
        return self

    def __exit__(self, *exc):
        from . import _threads

        self._limiter.restore_original_limits()
        _threads._pin_kernel_blas()
        _threads._set_loop_threads(self._kernel_threads)
        if self._torch_threads is not None:
            import torch

            torch.set_num_threads(self._torch_threads)
        return False


def measure_peak_gflops(threads: int, dtype=np.float32, seconds: float = 0.02,
                        repeats: int = 5) -> float:
    """The machine's peak GFLOP/s as the kernels can reach it, measured: `threads` threads
    run independent multiply-adds on registers with the kernels' SIMD path (AVX2+FMA where
    the CPU has it), each timed on its own CPU time so that other programs on a shared
    machine do not lower it.  About `seconds` of CPU per thread and run; the best of
    `repeats` runs."""
    from . import _kernels

    float64 = np.dtype(dtype) == np.float64
    iterations = 1 << 14
    while iterations < 1 << 40:  # calibrate the run length on one thread
        t0 = time.perf_counter()
        _kernels.measure_peak(1, iterations, float64)
        if time.perf_counter() - t0 >= seconds:
            break
        iterations *= 4
    return max(_kernels.measure_peak(threads, iterations, float64)
               for _ in range(repeats)) / 1e9


# The tuned-GEMM reference (measure_gemm_gflops): square matrices of this size, large enough
# for NumPy's BLAS to reach its best rate on a few cores (1024: 86-88% of the peak on an AMD
# Zen 3 with 2 threads, median; 512: 72-88%; 2048: 77-78%).
GEMM_REFERENCE_SIZE = 1024


def measure_gemm_gflops(threads: int, dtype=np.float32, size: int = GEMM_REFERENCE_SIZE,
                        seconds: float = 0.5) -> dict:
    """What a tuned GEMM reaches here now: NumPy's BLAS multiplying two `size` x `size`
    matrices on `threads` threads, two warm-up calls, then calls for `seconds` (at least 3),
    each timed on the wall clock like the grid's times.  The peak is the best case of
    register-only multiply-adds; this is what real code with loads and stores gets under
    the machine's current load, to read `% peak` against.  Returns {"size", "calls",
    "median_gflops", "best_gflops"}.  NumPy's BLAS workers then spin for a while (see
    NUMPY_BLAS_SPIN_SECONDS), so this waits that long before returning."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    out = np.empty_like(a)
    seconds_per_call: List[float] = []
    with threadpool_limits(limits=threads, user_api="blas"):
        for _ in range(2):  # the first call after a while also wakes the BLAS threads
            np.dot(a, b, out=out)
        start = time.perf_counter()
        while len(seconds_per_call) < 3 or time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            np.dot(a, b, out=out)
            seconds_per_call.append(time.perf_counter() - t0)
    time.sleep(NUMPY_BLAS_SPIN_SECONDS)
    flops = 2.0 * size ** 3
    return {"size": size, "calls": len(seconds_per_call),
            "median_gflops": flops / statistics.median(seconds_per_call) / 1e9,
            "best_gflops": flops / min(seconds_per_call) / 1e9}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def simd_path() -> str:
    """The kernels' micro-kernels on this CPU (CPUID at run time): "AVX-512" (512-bit tiles,
    with AVX2+FMA), "AVX2+FMA" or "generic C".  A CPU's model name alone does not tell: an
    "AMD EPYC" may be a Zen 3 (AVX2 only) or a Zen 4 (AVX-512)."""
    from . import _kernels

    if _kernels.cpu_has_avx512vl():
        return "AVX-512"
    return "AVX2+FMA" if _kernels.cpu_has_avx2_fma() else "generic C"


def _library_owner(filepath: str) -> str:
    """Which package ships a shared library, from its path (numpy.libs/... -> numpy)."""
    parts = filepath.replace("\\", "/").split("/")
    if "site-packages" in parts:
        index = parts.index("site-packages")
        if index + 1 < len(parts) - 1:
            return parts[index + 1].split(".")[0]
    return os.path.basename(filepath)


def environment(use_torch: bool) -> dict:
    """Versions, CPU and the thread configuration in force (call inside thread_limits)."""
    import scipy
    from threadpoolctl import threadpool_info

    info = {
        "fusedrnn": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "cpu": _cpu_model(),
        "simd": simd_path(),
        "logical_cpus_available": available_cores(),
        "threadpools": [
            {**{key: pool.get(key) for key in ("user_api", "internal_api", "prefix",
                                               "version", "num_threads")},
             "loaded_by": _library_owner(pool.get("filepath") or "")}
            for pool in threadpool_info()
        ],
        "torch_installed": torch_available(),
        "torch": None,          # version, when this run uses torch
        "torch_threads": None,
    }
    if use_torch:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------

def _ms(value: Optional[float]) -> str:
    if value is None:
        return NOT_AVAILABLE
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.2g}"


def _cell_time(result: Result, implementation: str) -> str:
    if implementation in result.marks:
        return result.marks[implementation]
    return _ms(result.median_ms(implementation))


def _ratio(value: Optional[float], missing: str) -> str:
    return missing if value is None else f"{value:.2f}x"


def _gflops(value: Optional[float]) -> str:
    if value is None:
        return NOT_AVAILABLE
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def _kib(value: Optional[float]) -> str:
    return NOT_AVAILABLE if value is None else f"{value / 1024:.1f}"


TABLE_COLUMNS = (
    "cell", "mode", "B", "T", "I", "H", "fusedrnn ms", "numpy ms", "torch ms",
    "fusedrnn GFLOP/s", "% peak", "torch % peak", "torch/fusedrnn", "numpy/fusedrnn",
    "saved KiB/step fusedrnn", "saved KiB/step torch",
)

DROP_IN_COLUMNS = ("cell", "mode", "B", "T", "I", "H", "fusedrnn.torch ms", "torch.nn ms",
                   "torch.nn/fusedrnn.torch")


def _percent_value(value: Optional[float], peak: Optional[float]) -> Optional[float]:
    return None if value is None or not peak else 100 * value / peak


def _percent_suffix(value: float, peak: Optional[float]) -> str:
    """" (87% of the peak)", or nothing without a peak."""
    percent = _percent_value(value, peak)
    return "" if percent is None else f" ({percent:.0f}% of the peak)"


def _percent_of(value: Optional[float], peak: Optional[float]) -> str:
    percent = _percent_value(value, peak)
    return NOT_AVAILABLE if percent is None else f"{percent:.0f}%"


def table_rows(results: Sequence[Result], peak_gflops: Optional[float] = None) -> List[List[str]]:
    """One row per result; `% peak` is fusedrnn's GFLOP/s over peak_gflops (measured),
    `torch % peak` torch's."""
    rows = []
    for r in results:
        p = r.point
        train = r.mode == "train"
        rows.append([
            r.cell, r.mode, str(p.batch), str(p.steps), str(p.features), str(p.units),
            _cell_time(r, "fusedrnn"), _cell_time(r, "numpy"), _cell_time(r, "torch"),
            _gflops(r.gflops),
            _percent_of(r.gflops, peak_gflops),
            _percent_of(r.gflops_of("torch"), peak_gflops),
            _ratio(r.ratio("torch"), r.marks.get("torch", NOT_AVAILABLE)),
            _ratio(r.ratio("numpy"), r.marks.get("numpy", NOT_AVAILABLE)),
            _kib(r.saved_bytes_per_step("fusedrnn")) if train else "",
            _kib(r.saved_bytes_per_step("torch")) if train else "",
        ])
    return rows


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                    first_numeric: int) -> List[str]:
    """A Markdown table, columns from `first_numeric` on right-aligned."""
    numeric = [k >= first_numeric for k in range(len(header))]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if right else "---" for right in numeric) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _load(value: Optional[float]) -> str:
    return NOT_AVAILABLE if value is None else f"{value:.2f}"


def load_average() -> Optional[float]:
    """1-minute system load average, or None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _torch_state(env: dict) -> str:
    """torch's version, or why it has none in this run."""
    if env["torch"]:
        return env["torch"]
    return "not used" if env.get("torch_installed") else "not installed"


def _thread_summary(env: dict) -> str:
    pools = ", ".join(
        f"{pool['internal_api']}{' ' + pool['version'] if pool['version'] else ''} "
        f"(from {pool['loaded_by']}): {pool['num_threads']} threads"
        for pool in env["threadpools"]
    )
    torch_part = (f"; torch {env['torch']}: {env['torch_threads']} threads"
                  if env["torch"] else f"; torch {_torch_state(env)}")
    return pools + torch_part


def format_markdown(env: dict, config: dict, results: Sequence[Result],
                    loop: Optional[LoopResult], notes: Sequence[str],
                    drop_in: Sequence[DropInResult] = ()) -> str:
    """The whole report: header, the kernel table with footnotes, the drop-in modules, the
    training loop."""
    lines = [
        "# fusedrnn benchmark",
        "",
        f"- fusedrnn {env['fusedrnn']}, Python {env['python']}, NumPy {env['numpy']}, "
        f"SciPy {env['scipy']}, torch {_torch_state(env)}",
        f"- CPU: {env['cpu']} ({env['logical_cpus_available']} logical CPUs available"
        + (f"; the kernels' SIMD path: {env['simd']})" if env.get("simd") else ")"),
        f"- threads: {_thread_summary(env)}",
        f"- dtype {config['dtype']}; each time is the median of >= {config['min_repeats']} "
        f"calls after {config['warmup']} warm-up call (NumPy: >= "
        f"{max(1, config['min_repeats'] // 3)}), repeated until a {config['budget']:g} s "
        "budget per measurement"
        + (f" (up to {config['extend_budgets']:g} budgets while a median is more than "
           f"{config['settle_spread']:g}x its fastest call: a burst of other load)"
           if config.get("settle_spread") else "")
        + "; implementations timed together alternate call by call, "
        f"and a call under {config.get('warm_below', WARM_CALL_BELOW_SECONDS) * 1e3:g} ms is "
        "preceded by an untimed call of the same implementation (the first call after the "
        "other's costs 0.2-0.8 ms more: its spinning threads and evicted caches)",
        f"- run time {config['elapsed_seconds']:.0f} s; 1-minute load average "
        f"{_load(config.get('load_before'))} before, {_load(config.get('load_after'))} after "
        "(above the thread count means other processes competed for the CPUs)"
        + (f"; {config['team_stops']} time loops split by units finished on one thread "
           "because a partner thread kept them waiting (descheduled by other processes)"
           if config.get("team_stops") is not None else ""),
    ]
    peak = env.get("peak_gflops")
    if peak:
        lines.append(
            f"- peak {_gflops(peak)} GFLOP/s ({config['dtype']}, {config.get('threads', '?')} "
            "threads), measured: independent multiply-adds on registers with the kernels' "
            "SIMD path, each thread on its own CPU time, best of 5 runs at the start and 5 at "
            "the end of the run; `% peak` is fusedrnn's GFLOP/s over it, `torch % peak` "
            "torch's: a torch/fusedrnn ratio above 100 / (torch % peak) would need more "
            "than the peak"
        )
    gemm = env.get("gemm_reference") or []
    if gemm:
        rates = "; ".join(
            f"{_gflops(g['median_gflops'])} GFLOP/s{_percent_suffix(g['median_gflops'], peak)}"
            f" at the {when} (best {_gflops(g['best_gflops'])}, {g['calls']} calls)"
            for when, g in zip(("start", "end"), gemm))
        lines.append(
            f"- a tuned GEMM here: NumPy's BLAS multiplying {gemm[0]['size']} x "
            f"{gemm[0]['size']} {config['dtype']} matrices on {config.get('threads', '?')} "
            f"thread{'' if config.get('threads') == 1 else 's'}, median of its wall-clock "
            f"calls: {rates}; what code with loads and "
            "stores reaches under the machine's load at the time, to read `% peak` against"
        )
    lines.append("")
    if results:
        lines += _markdown_table(TABLE_COLUMNS, table_rows(results, peak), first_numeric=2)
        lines += [
            "",
            "- Ratios are the other implementation's median time over fusedrnn's: > 1 means "
            "fusedrnn is faster. GFLOP/s counts the GEMM FLOPs of the forward pass "
            "(LSTM 8·B·H·(I+H), GRU 6·B·H·(I+H), RNN 2·B·H·(I+H) per step), three times "
            "that for `train` (forward + backward with all gradients).",
        ]
        if any(r.mode == "train" for r in results):
            lines.append(
                "- `train` saved KiB/step: bytes kept for backward per time step, weights "
                "excluded (fusedrnn: the ops cache's nbytes; torch: the tensors its autograd "
                "saves, measured with saved-tensor hooks)."
            )
        if any(SKIPPED in r.marks.values() for r in results):
            lines.append(
                f"- `{SKIPPED}`: the NumPy reference is left out at the largest points "
                "(batch × units ≥ 128 × 512) to keep the default run short; "
                "`--numpy-everywhere` times it there too."
            )
        if any(NOT_AVAILABLE in r.marks.values() for r in results):
            lines.append(f"- `{NOT_AVAILABLE}`: not available in this environment.")
        if any(NOT_SELECTED in r.marks.values() for r in results):
            lines.append(f"- `{NOT_SELECTED}`: not selected (`--impls`).")
    if drop_in:
        lines += [
            "",
            "## Drop-in modules: fusedrnn.torch vs torch.nn",
            "",
            "The same module call as the torch column above (batch_first, the same weights "
            "through load_state_dict), with fusedrnn.torch's LSTM/GRU/RNN: the kernels plus "
            "the drop-in's own work per call (its checks and autograd's Function, one "
            "layer and direction calling the kernels straight after the module's own checks; "
            "the kernels take torch's weight rows as they are and return the gradients in "
            "torch's layout).  T = 1: one step from a given state (hx, without a gradient), "
            "as a decoding loop calls its recurrent layer once per token.",
            "",
        ]
        rows = [[r.cell, r.mode, str(r.point.batch), str(r.point.steps), str(r.point.features),
                 str(r.point.units), _ms(r.timings["fusedrnn.torch"].median_ms),
                 _ms(r.timings["torch"].median_ms), _ratio(r.ratio, "-")] for r in drop_in]
        lines += _markdown_table(DROP_IN_COLUMNS, rows, first_numeric=2)
    if loop is not None:
        c = loop.config
        lines += [
            "",
            "## Training loop: fusedrnn.torch.LSTM vs torch.nn.LSTM",
            "",
            f"LSTM({c.features}, {c.units}, batch_first=True) + Linear({c.units}, 1) on the "
            f"last output, MSE, Adam(lr={c.learning_rate:g}); batch {c.batch}, {c.steps} "
            f"steps; {c.iterations} iterations, the first not timed; same initial "
            "parameters and data.",
            "",
        ]
        rows = [[name, _ms(loop.median_ms(name)), f"{loop.final_loss[name]:.6f}"]
                for name in ("fusedrnn", "torch")]
        lines += _markdown_table(("LSTM module", "ms/iteration (median)",
                                  "loss after the last iteration"), rows, first_numeric=1)
        lines += ["", f"torch.nn.LSTM / fusedrnn.torch.LSTM: {loop.ratio:.2f}x"]
    if notes:
        lines += [""] + [f"Note: {note}" for note in notes]
    return "\n".join(lines) + "\n"


def to_json(env: dict, config: dict, results: Sequence[Result],
            loop: Optional[LoopResult], notes: Sequence[str],
            drop_in: Sequence[DropInResult] = ()) -> dict:
    """Everything in the report, with raw numbers (seconds of every timed call)."""
    def timing(t: Optional[Timing]):
        if t is None:
            return None
        return {"median_ms": t.median_ms, "min_ms": t.min_ms, "repeats": t.repeats,
                "seconds": t.seconds}

    return {
        "environment": env,
        "config": config,
        "results": [
            {
                "cell": r.cell, "mode": r.mode, "batch": r.point.batch, "steps": r.point.steps,
                "features": r.point.features, "units": r.point.units, "flops": r.flops,
                "times": {impl: timing(r.timings.get(impl)) for impl in IMPLEMENTATIONS},
                "missing": dict(r.marks),
                "fusedrnn_gflops": r.gflops,
                "fusedrnn_percent_of_peak": _percent_value(r.gflops, env.get("peak_gflops")),
                "torch_percent_of_peak": _percent_value(r.gflops_of("torch"),
                                                        env.get("peak_gflops")),
                "ratio_torch_over_fusedrnn": r.ratio("torch"),
                "ratio_numpy_over_fusedrnn": r.ratio("numpy"),
                "saved_bytes_per_step": {impl: r.saved_bytes_per_step(impl)
                                         for impl in ("fusedrnn", "torch")}
                if r.mode == "train" else None,
            }
            for r in results
        ],
        "drop_in": [
            {"cell": r.cell, "mode": r.mode, **dataclasses.asdict(r.point),
             "timings": {name: timing(t) for name, t in r.timings.items()},
             "ratio_torch_over_fusedrnn_torch": r.ratio}
            for r in drop_in
        ],
        "loop": None if loop is None else {
            "config": dataclasses.asdict(loop.config),
            "median_ms": {name: loop.median_ms(name) for name in loop.seconds},
            "final_loss": loop.final_loss,
            "ratio_torch_over_fusedrnn": loop.ratio,
            "seconds": loop.seconds,
        },
        "notes": list(notes),
    }


def plot_speedups(results: Sequence[Result], path: str) -> None:
    """Bar chart of torch/fusedrnn per point, one panel per mode, one bar colour per cell.
    Needs matplotlib (the ``plots`` extra); imported here only."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend needed

    modes = [m for m in MODES if any(r.mode == m for r in results)]
    figure = Figure(figsize=(12, 4.5 * max(1, len(modes))), layout="constrained")
    axes = figure.subplots(len(modes), 1, squeeze=False)[:, 0]
    for ax, mode in zip(axes, modes):
        rows = [r for r in results if r.mode == mode and r.ratio("torch") is not None]
        points = list(dict.fromkeys(r.point for r in rows))
        cells = list(dict.fromkeys(r.cell for r in rows))
        width = 0.8 / max(1, len(cells))
        for k, cell in enumerate(cells):
            xs, ys = [], []
            for r in rows:
                if r.cell == cell:
                    xs.append(points.index(r.point) + (k - (len(cells) - 1) / 2) * width)
                    ys.append(r.ratio("torch"))
            # bars grow from 1 (parity) up or down, on a log scale so 2x and 0.5x look alike
            ax.bar(xs, [y - 1.0 for y in ys], bottom=1.0, width=width, label=cell)
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(points)))
        ax.set_xticklabels([f"B{p.batch} T{p.steps}\n{p.features}/{p.units}" for p in points],
                           fontsize=8)
        ax.set_ylabel("torch time / fusedrnn time")
        ax.set_title(f"{mode}: speed-up of fusedrnn over torch (> 1: fusedrnn faster)")
        ax.legend()
    figure.savefig(path, dpi=120)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _comma_list(text: str, allowed: dict, what: str) -> List[str]:
    """'a,b' -> canonical names, in the given order, without duplicates."""
    names = []
    for raw in text.split(","):
        key = raw.strip().lower()
        if key not in allowed:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {raw.strip()!r}; expected a comma-separated list of "
                f"{', '.join(sorted(set(allowed.values())))}"
            )
        if allowed[key] not in names:
            names.append(allowed[key])
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusedrnn bench",
        description="Time fusedrnn's fused LSTM/GRU/SimpleRNN kernels (inference and "
                    "training step) against the NumPy reference and PyTorch, and the PyTorch "
                    "drop-in modules and a training loop with them against torch.nn's. "
                    "Markdown report on stdout.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="a small subset of the grid with short budgets (well under 30 s)")
    parser.add_argument("--cells", type=lambda s: _comma_list(s, CELL_ALIASES, "cell"),
                        default=None,
                        help="comma-separated cells: lstm,gru,rnn (default: every cell "
                             "fusedrnn.ops provides)")
    parser.add_argument("--modes", type=lambda s: _comma_list(s, {m: m for m in MODES}, "mode"),
                        default=list(MODES), help="comma-separated: forward,train (default both)")
    parser.add_argument("--impls", type=lambda s: _comma_list(
                            s, {i: i for i in IMPLEMENTATIONS}, "implementation"),
                        default=list(IMPLEMENTATIONS),
                        help="comma-separated implementations to time: fusedrnn,numpy,torch "
                             "(fusedrnn is always timed; default all)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="threads for BLAS (threadpoolctl) and torch "
                             "(default: the CPUs this process may use)")
    parser.add_argument("--repeat", type=_positive_int, default=None,
                        help="minimum timed calls per measurement (default 5, quick 2; the "
                             "NumPy reference gets a third)")
    parser.add_argument("--budget", type=_positive_float, default=None,
                        help="seconds of timed calls per measurement (default 0.3, quick 0.03)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--numpy-everywhere", action="store_true",
                        help="also time the NumPy reference at the largest points (slow)")
    parser.add_argument("--loop", action=argparse.BooleanOptionalAction, default=None,
                        help="time a training loop with fusedrnn.torch.LSTM vs torch.nn.LSTM "
                             "(default: on when the drop-in module is available)")
    parser.add_argument("--drop-in", action=argparse.BooleanOptionalAction, default=None,
                        help="time fusedrnn.torch's LSTM/GRU/RNN modules against torch.nn's "
                             "at two sizes (default: on when the drop-in modules are "
                             "available)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the report to a file")
    parser.add_argument("--plot", metavar="PATH",
                        help="save a bar chart of the speed-up over torch (needs matplotlib)")
    return parser


def _check_output_path(parser, option: str, path: Optional[str]) -> None:
    """Fail before the (long) run, not after it, when an output cannot be written."""
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        parser.error(f"{option} {path}: directory {directory} does not exist")
    if os.path.isdir(path):
        parser.error(f"{option} {path}: is a directory, expected a file path")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse and validate the command line (errors exit with status 2 and a message)."""
    parser = build_parser()
    args = parser.parse_args(argv)

    present = available_cells()
    if args.cells is None:
        args.cells = present
    else:
        missing = [c for c in args.cells if c not in present]
        if missing:
            parser.error(
                "--cells: " + ", ".join(
                    f"{c} is not available (fusedrnn.ops has no {'/'.join(OP_NAMES[c])})"
                    for c in missing)
            )
    if not args.cells:
        parser.error("no cell to benchmark: fusedrnn.ops provides no kernels")
    if "fusedrnn" not in args.impls:
        args.impls = ["fusedrnn"] + args.impls  # every ratio is relative to fusedrnn
    # without torch the torch column says n/a (see implementation_available)
    args.torch_missing = "torch" in args.impls and not torch_available()
    args.threads = args.threads or available_cores()
    args.repeat = args.repeat or (2 if args.quick else 5)
    args.budget = args.budget or (0.03 if args.quick else 0.3)

    for option in ("json", "markdown", "plot"):
        _check_output_path(parser, "--" + option, getattr(args, option))
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib: pip install 'fusedrnn[plots]'")
    if args.loop and not drop_in_lstm_available():
        parser.error("--loop needs torch and fusedrnn.torch.LSTM (the PyTorch drop-in)")
    if args.loop is None:
        args.loop = drop_in_lstm_available()
    if args.drop_in and not drop_in_available():
        parser.error("--drop-in needs torch and fusedrnn.torch (the PyTorch drop-in)")
    if args.drop_in is None:
        args.drop_in = drop_in_available()
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``fusedrnn bench``; returns the exit status."""
    args = parse_args(argv)
    dtype = np.dtype(args.dtype)
    settings = MeasureSettings(warmup=1, min_repeats=args.repeat, budget=args.budget)
    points = quick_grid() if args.quick else full_grid()
    use_torch = torch_available() and ("torch" in args.impls or args.loop or args.drop_in)
    notes = []
    if args.torch_missing:
        notes.append("torch is not installed: no torch column (pip install 'fusedrnn[torch]').")
    if use_torch:
        import torch  # noqa: F401  (imported before thread_limits so its OpenMP is capped)

    def progress(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    from . import _kernels
    load_before = load_average()
    team_stops_before = _kernels.team_stops()
    started = time.perf_counter()
    with thread_limits(args.threads, use_torch):
        env = environment(use_torch)
        # measured at the start and again at the end of the run, the higher one kept: once a
        # full run measured 104 GFLOP/s at its start (the same machine's usual 185-205), so
        # one measurement could put points above 100% of "peak"
        peak_measurements = [measure_peak_gflops(args.threads, dtype)]
        gemm_seconds = 0.1 if args.quick else 0.5
        env["gemm_reference"] = [measure_gemm_gflops(args.threads, dtype, seconds=gemm_seconds)]
        progress(f"threads: {_thread_summary(env)}")
        results = run_grid(args.cells, args.modes, points, args.impls, settings, dtype,
                           skip_numpy_at_large_points=not args.numpy_everywhere,
                           progress=progress)
        drop_in = []
        status = 0
        if args.drop_in:
            try:
                drop_in = run_drop_in(args.cells, args.modes,
                                      QUICK_DROP_IN_POINTS if args.quick else DROP_IN_POINTS,
                                      settings, dtype, progress=progress)
            except Exception as exc:  # keep the kernel table; report the failure, exit 1
                notes.append(f"the drop-in modules failed: {type(exc).__name__}: {exc}")
                status = 1
        loop = None
        if args.loop:
            loop_config = QUICK_LOOP if args.quick else DEFAULT_LOOP
            progress(f"training loop: {loop_config}")
            try:
                loop = run_loop(loop_config)
            except Exception as exc:  # keep the kernel table; report the failure, exit 1
                notes.append(f"the training loop failed: {type(exc).__name__}: {exc}")
                status = 1
        peak_measurements.append(measure_peak_gflops(args.threads, dtype))
        env["gemm_reference"].append(measure_gemm_gflops(args.threads, dtype,
                                                         seconds=gemm_seconds))
        env["peak_gflops"] = max(peak_measurements)
        env["peak_gflops_measurements"] = peak_measurements
    elapsed = time.perf_counter() - started
    progress(f"done in {elapsed:.1f} s")

    config = {
        "quick": args.quick, "cells": args.cells, "modes": args.modes,
        "implementations": args.impls, "threads": args.threads, "dtype": args.dtype,
        "warmup": settings.warmup, "min_repeats": settings.min_repeats,
        "max_repeats": settings.max_repeats, "budget": settings.budget,
        "warm_below": settings.warm_below, "settle_spread": settings.settle_spread,
        "extend_budgets": settings.extend_budgets,
        "numpy_everywhere": args.numpy_everywhere, "drop_in": args.drop_in,
        "elapsed_seconds": elapsed,
        "load_before": load_before, "load_after": load_average(),
        "team_stops": _kernels.team_stops() - team_stops_before,
    }
    report = format_markdown(env, config, results, loop, notes, drop_in)
    sys.stdout.write(report)
    sys.stdout.flush()
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(report)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(to_json(env, config, results, loop, notes, drop_in), handle, indent=1)
    if args.plot:
        plot_speedups(results, args.plot)
    return status


if __name__ == "__main__":
    sys.exit(main())
