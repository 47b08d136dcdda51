"""Threads: the kernels release the GIL, are safe to call from several Python threads at
once, survive fork, and their BLAS thread count is controlled by fusedrnn._threads.

Everything that depends on process-wide state that pytest may already have touched
(BLAS threads started, environment variables, fork) runs in a fresh subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fusedrnn import _threads
from test_reliability_inputs import (CELLS, assert_same_results, cells, forward, make_problem,
                                     results, upstream_gradients)

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                   "BLIS_NUM_THREADS", "GOTO_NUM_THREADS")


def run_python(code: str, timeout: float = 120, env_update=None, args=()) -> str:
    """Run code in a fresh interpreter (no inherited BLAS thread caps); return stdout."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV_VARS}
    env.update(env_update or {})
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


# ------------------------------------------------------------------------ the GIL
def _long_problem(cell, rng):
    """Long and thin, so Python-side validation is negligible and the time is spent in the
    compiled loop; lengthened until one inference call takes about 0.2 s on one thread."""
    steps = 8000 // cell.gates
    while True:
        problem = make_problem(cell, rng, batch=4, steps=steps, features=16, units=32,
                               dtype=np.float32, bias=True)
        start = time.perf_counter()
        forward(cell, problem)
        elapsed = time.perf_counter() - start
        if elapsed >= 0.12 or steps >= 400_000:
            return problem
        steps = min(400_000, int(steps * 0.2 / max(elapsed, 1e-3)) + 1)


def _largest_stall(work) -> tuple[float, float]:
    """Run work() while a counter thread ticks; return (largest gap between ticks during
    the work, duration of the work), both in seconds."""
    ticks = []
    stop = threading.Event()

    def counter():
        while not stop.is_set():
            ticks.append(time.perf_counter())

    thread = threading.Thread(target=counter, daemon=True)
    thread.start()
    while len(ticks) < 1000:  # the counter is running
        time.sleep(0.001)
    start = time.perf_counter()
    work()
    end = time.perf_counter()
    stop.set()
    thread.join()
    inside = [start] + [t for t in ticks if start <= t <= end] + [end]
    return max(np.diff(inside)), end - start


@cells
@pytest.mark.parametrize("phase", ["forward", "backward"])
def test_kernels_release_the_gil(cell, phase, rng):
    """If the kernel held the GIL, the counter thread would stall for the whole call.
    With it released the counter only waits for the Python switch interval (5 ms) around
    the short Python parts.  BLAS is capped to one thread so the counter has a core.
    On a shared machine the host may also stop the counter's CPU for a while (seen once in
    ~20 runs), so the call is timed up to three times: a kernel holding the GIL stalls
    the counter every time."""
    with _threads.threads(1):
        problem = _long_problem(cell, rng)
        if phase == "forward":
            work = lambda: forward(cell, problem)  # noqa: E731
        else:
            out = forward(cell, problem, training=True)
            grads = upstream_gradients(cell, out, rng)
            work = lambda: cell.backward(out.cache, **grads)  # noqa: E731
        for _ in range(3):
            stall, duration = _largest_stall(work)
            if duration > 0.05 and stall < 0.5 * duration:
                break
    # ten switch intervals at least (the problem is sized for ~0.2 s; a calibration under
    # load can leave it shorter)
    assert duration > 0.05, f"the kernel ran only {duration:.3f} s: make the problem longer"
    assert stall < 0.5 * duration, (
        f"the counter thread stalled {stall:.3f} s of a {duration:.3f} s kernel call: "
        "the GIL is held while the kernel runs"
    )


# ------------------------------------------------------- concurrent calls from threads
def _job(cell, seed, dtype, options, shape=(5, 30, 7, 24)):
    """One forward+backward run; every result array, by name."""
    rng = np.random.default_rng(seed)
    batch, steps, features, units = shape
    problem = make_problem(cell, rng, batch=batch, steps=steps, features=features, units=units,
                           dtype=dtype, bias=True, state=True, mask=True, dropout=True)
    out = forward(cell, problem, training=True, **options)
    return results(out, cell.backward(out.cache, **upstream_gradients(cell, out, rng)))


def test_concurrent_calls_match_serial_calls():
    """Eight threads run a mix of cells, dtypes and options 3 times each, all at once;
    every result is bitwise what a serial run of the same job gives."""
    jobs = []
    for k, cell in enumerate(CELLS):
        for dtype in (np.float32, np.float64):
            for go_backwards in (False, True):
                jobs.append((cell, 100 * k + len(jobs), dtype, {"go_backwards": go_backwards}))
    serial = [_job(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [(i, pool.submit(_job, *jobs[i])) for _ in range(3) for i in range(len(jobs))]
        for i, future in futures:
            assert_same_results(future.result(timeout=120), serial[i], f"job {i}")


def test_concurrent_calls_on_the_parallel_path_match_serial_calls():
    """Problems big enough for the fused loop's own OpenMP team (batch 32 x 64 units):
    several Python threads each start a team at once; results are still bitwise serial."""
    jobs = [(cell, 7 + k, np.float32, {}, (32, 4, 16, 64)) for k, cell in enumerate(CELLS)]
    with _threads.threads(2):
        serial = [_job(*job) for job in jobs]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = [pool.submit(_job, *job) for job in jobs]
            for i, future in enumerate(futures):
                assert_same_results(future.result(timeout=300), serial[i], f"job {i}")


@cells
def test_one_cache_used_by_many_threads_at_once(cell, rng):
    """backward only reads the cache: concurrent backward passes on one cache agree."""
    problem = make_problem(cell, rng, batch=6, steps=40, features=8, units=16, state=True,
                           mask=True)
    out = forward(cell, problem, training=True)
    grads = upstream_gradients(cell, out, rng)
    expected = results(out, cell.backward(out.cache, **grads))
    with ThreadPoolExecutor(max_workers=6) as pool:
        runs = [pool.submit(lambda: results(out, cell.backward(out.cache, **grads)))
                for _ in range(12)]
        for run in runs:
            assert_same_results(run.result(timeout=120), expected)


# -------------------------------------------------------------------------- fork
FORK_SCRIPT = """
    import multiprocessing as mp, sys
    import numpy as np
    import fusedrnn
    from fusedrnn import _threads, ops

    GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}
    B, T, I, H = 32, 8, 64, 64   # big enough for OpenBLAS threads and the OpenMP loop
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I))

    def run(name):
        k = np.full((I, GATES[name] * H), 0.01)
        r = np.full((H, GATES[name] * H), -0.01)
        out = getattr(ops, name + "_forward")(x, k, r, training=True)
        g = getattr(ops, name + "_backward")(out.cache, out.outputs)
        return out.outputs, g.kernel

    names = sys.argv[1:]
    parallel = [run(name) for name in names]  # starts the OpenMP and OpenBLAS pools here
    parent_loop_threads = _threads._loop_threads()
    assert parent_loop_threads == 2, parent_loop_threads
    # what the child computes: fused loops on one thread (the split changes the last bits)
    fusedrnn._kernels.set_kernel_threads(1)
    parent = [run(name) for name in names]
    fusedrnn._kernels.set_kernel_threads(parent_loop_threads)

    def child(queue):
        fusedrnn.set_num_threads(2)  # the fused loops stay on one thread in a forked child
        queue.put(([run(name) for name in names], _threads._loop_threads()))

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(queue,))
    proc.start()
    got, child_loop_threads = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0, proc.exitcode
    assert child_loop_threads == 1, child_loop_threads
    assert _threads._loop_threads() == parent_loop_threads  # the parent is unaffected
    for child_results, parent_results in zip(got, parent):
        for a, b in zip(child_results, parent_results):
            np.testing.assert_array_equal(a, b)
    print("fork ok", *names)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the fork start method needs POSIX")
def test_forked_child_runs_kernels_after_the_parent_did():
    """OpenBLAS and OpenMP worker threads started in the parent do not exist in a forked
    child: the child must still run every kernel (not hang: timeouts) and get the parent's
    results.  (GNU OpenMP hangs in that case: fusedrnn._threads drops the child's fused
    loops to one thread at fork.)"""
    names = sorted({cell.name for cell in CELLS})
    out = run_python(FORK_SCRIPT, timeout=150, args=names)
    assert out.split() == ["fork", "ok", *names]


# ------------------------------------------------------------------ thread control
def test_threads_context_caps_and_restores():
    before = _threads.get_num_threads()
    with _threads.threads(1) as count:
        assert count == 1
        assert _threads.get_num_threads() == 1
        with _threads.threads(2):
            assert _threads.get_num_threads() == 2
        assert _threads.get_num_threads() == 1
    assert _threads.get_num_threads() == before


def test_threads_context_restores_after_an_exception():
    before = _threads.get_num_threads()
    with pytest.raises(RuntimeError):
        with _threads.threads(1):
            raise RuntimeError("inside")
    assert _threads.get_num_threads() == before


def test_set_num_threads_and_negative_counts():
    before = _threads.get_num_threads()
    cores = _threads.available_cores()
    try:
        _threads.set_num_threads(1)
        assert _threads.get_num_threads() == 1
        _threads.set_num_threads(-1)
        assert _threads.get_num_threads() == cores
        _threads.set_num_threads(-cores - 5)  # never fewer than one
        assert _threads.get_num_threads() == 1
        _threads.set_num_threads(np.int64(1))
        assert _threads.get_num_threads() == 1
        _threads.set_num_threads(None)
        assert _threads.get_num_threads() == cores
    finally:
        _threads.set_num_threads(before)


@pytest.mark.parametrize("bad,error", [(0, ValueError), (1.5, TypeError), ("2", TypeError),
                                       (True, TypeError), ([2], TypeError)])
def test_bad_thread_counts_are_rejected(bad, error):
    before = _threads.get_num_threads()
    with pytest.raises(error, match="n"):
        _threads.set_num_threads(bad)
    with pytest.raises(error, match="n"):
        with _threads.threads(bad):
            pass
    assert _threads.get_num_threads() == before


def test_default_is_all_cores_and_blas_env_is_respected():
    code = """
        from fusedrnn import _threads
        print(_threads.get_num_threads(), _threads._blas_threads(), _threads.available_cores())
    """
    used, blas, cores = map(int, run_python(code).split())
    assert used == cores and blas == cores
    _, blas, _ = map(int, run_python(code, env_update={"OPENBLAS_NUM_THREADS": "1"}).split())
    assert blas == 1


def test_caps_apply_to_blas_and_to_the_fused_loops():
    with _threads.threads(1):
        assert _threads._blas_threads() == 1
        assert _threads._loop_threads() == 1
    before = (_threads._blas_threads(), _threads._loop_threads())
    with _threads.threads(2):
        expected_loop = 2 if _threads._runtime() is not None and \
            _threads._runtime().has_openmp() else 1
        assert (_threads._blas_threads(), _threads._loop_threads()) == (2, expected_loop)
    assert (_threads._blas_threads(), _threads._loop_threads()) == before


@pytest.mark.skipif(_threads.available_cores() < 2, reason="needs 2 cores to tell 1 from 2")
def test_one_thread_cap_keeps_the_kernels_on_one_core():
    """CPU time / wall time of a GEMM-heavy kernel run: about 1 under threads(1) (no BLAS
    or OpenMP worker is busy besides the caller), which is what the cap promises."""
    code = """
        import time, numpy as np
        from fusedrnn import ops, _threads
        rng = np.random.default_rng(0)
        x = rng.standard_normal((128, 20, 256)).astype(np.float32)
        k = (rng.standard_normal((256, 1024)) * 0.05).astype(np.float32)
        r = (rng.standard_normal((256, 1024)) * 0.05).astype(np.float32)
        with _threads.threads(1):
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(3):
                out = ops.lstm_forward(x, k, r, training=True)
                ops.lstm_backward(out.cache, out.outputs)
            print((time.process_time() - cpu) / (time.perf_counter() - wall))
    """
    ratio = float(run_python(code))
    assert ratio < 1.3, f"CPU/wall = {ratio:.2f} under threads(1): more than one busy thread"
