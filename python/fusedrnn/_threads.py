"""How many threads the fused kernels use.

The kernels own their threads: one OpenMP team (when built with OpenMP) runs
  - the big GEMMs (the input projection of many steps at once, the weight gradients after
    the time loop), each split into bands of rows or columns with one serial BLAS call per
    thread (scipy's OpenBLAS in the wheels; the float32 weight gradients run the kernels'
    own AVX2 tiles where the CPU has them); a weight gradient summed over at least as many
    rows (T*B) as it has columns splits the sum instead, each thread summing its share;
  - the fused time loop: with enough batch rows each thread runs the whole loop for its own
    rows (rows never interact, so the threads never wait for each other); with fewer than
    4 rows and large steps each owns a range of units and they meet at a barrier per step;
    small steps run on one thread (csrc/internal.h: frnn_pick_split).
So SciPy's BLAS, the one the kernels call, is pinned to one thread when fusedrnn.ops is
imported (see _pin_kernel_blas: OpenBLAS' spinning idle workers stole a core from the time
loop).  n kernel threads therefore means at most n busy threads, with no oversubscription.

Default: all cores the process may run on.  set_num_threads(n) / threads(n) set the kernel
team to n and every other BLAS in the process (NumPy's) to n too; SciPy's stays pinned.
Other BLAS libraries honour ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` if set.

Counts follow scikit-learn's ``n_threads`` convention: a positive int is that many threads,
``-1`` means all cores, ``-2`` all but one, and so on (never fewer than one); ``None``
means the default (all cores).

Fork: in a child created with fork() (multiprocessing's default on Linux) the fused loops
run on one thread, because the GNU OpenMP runtime cannot start threads there; BLAS keeps
its count.  Use the "spawn" or "forkserver" start method for parallel loops in workers.

The cap is process-wide, like BLAS' own setting: the BLAS part applies to every BLAS
library loaded in the process, so NumPy matrix products made while it is in force are
capped too (SciPy's BLAS runs on one thread whenever fusedrnn.ops is loaded; a
threadpoolctl limit applied to it directly unpins it and slows the kernels down).
:func:`threads` restores the previous counts on exit; in a program whose
threads enter ``threads()`` concurrently, the innermost exit wins, so prefer one
:func:`set_num_threads` at start-up there.
"""
from __future__ import annotations

import contextlib
import numbers
import os
import sys
import threading
from typing import Iterator, Optional

from threadpoolctl import ThreadpoolController

__all__ = ["available_cores", "get_num_threads", "set_num_threads", "threads"]

_lock = threading.RLock()
_controller: Optional[ThreadpoolController] = None
_forked_child = False  # see _after_fork_in_child


def available_cores() -> int:
    """Number of CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def _resolve(n) -> int:
    """Thread count meant by n (see the module docstring for the convention)."""
    if n is None:
        return available_cores()
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n: expected an int (thread count) or None, got {type(n).__name__}")
    n = int(n)
    if n == 0:
        raise ValueError(
            "n: 0 threads is not a thread count; use a positive count, -1 for all cores "
            "(-2 for all but one, ...) or None for the default"
        )
    if n > 0:
        return n
    return max(1, available_cores() + 1 + n)


def _blas_pools():
    """threadpoolctl handles of every BLAS library in the process, the kernels' included."""
    global _controller
    with _lock:
        if _controller is None:
            # Importing cython_blas loads the BLAS the kernels call, so the controller sees it.
            import scipy.linalg.cython_blas  # noqa: F401

            _controller = ThreadpoolController()
        return _controller.select(user_api="blas")


def _kernel_blas_libraries() -> list:
    """threadpoolctl controllers of the BLAS libraries the kernels call (cached): every BLAS
    in the process except a copy private to NumPy's wheel (numpy.libs), which the kernels
    never call (they use SciPy's)."""
    global _kernel_blas_cache
    with _lock:
        if _kernel_blas_cache is None:
            import numpy

            numpy_dir = os.path.dirname(os.path.abspath(numpy.__file__))
            private = (numpy_dir + os.sep, numpy_dir + ".libs" + os.sep)
            _kernel_blas_cache = [
                lib for lib in _blas_pools().lib_controllers
                if not os.path.abspath(lib.filepath).startswith(private)
            ]
        return _kernel_blas_cache


_kernel_blas_cache = None


def _pin_kernel_blas() -> None:
    """Run the BLAS the kernels call on one thread, for good.

    The kernels split their GEMMs over their own threads and call BLAS serially from each.
    A multi-threaded BLAS call would leave OpenBLAS workers spinning for a while afterwards
    (~0.1 s), and on a 2-core machine those spinning workers stole a core from the fused
    time loop (measured: LSTM B=1, H=128 forward 8.0 ms instead of 0.9 ms).  Pinning it per
    call instead did not work: OpenBLAS 0.3.30 ignored a count set from a thread other than
    the main one (results showed a multi-threaded GEMM), so the pin is set once, at import,
    and kept by set_num_threads/threads.  With NumPy's wheels this is SciPy's OpenBLAS
    only; NumPy's own BLAS keeps its threads."""
    with _lock:
        for lib in _kernel_blas_libraries():
            if lib.num_threads != 1:
                lib.set_num_threads(1)


def _runtime():
    """The kernels' own thread setting (fusedrnn._kernels), or None in builds without it."""
    try:
        from . import _kernels as _runtime
    except ImportError:
        return None
    return _runtime


def _blas_threads() -> int:
    """Threads of the BLAS libraries now (read from them: reflects the environment)."""
    counts = [info["num_threads"] for info in _blas_pools().info()]
    return max(counts) if counts else 1


def _loop_threads() -> int:
    """Threads the kernels' fused time loops may use now (1 without OpenMP)."""
    runtime = _runtime()
    return runtime.get_kernel_threads() if runtime is not None else 1


def get_num_threads() -> int:
    """Most threads a kernel call may keep busy now: the larger of the BLAS count and the
    fused time loops' count (they are equal after set_num_threads or inside threads())."""
    return max(_blas_threads(), _loop_threads())


def _set_loop_threads(count: int) -> None:
    runtime = _runtime()
    if runtime is not None:
        runtime.set_kernel_threads(1 if _forked_child else count)


def _after_fork_in_child() -> None:
    """GNU OpenMP (libgomp) cannot start a thread team in a child forked after the parent
    ran one: the child waits forever for pool threads that were not copied by fork.  So a
    forked child runs the fused time loops on one thread from then on (BLAS keeps its
    threads: OpenBLAS handles fork itself).  Registered with os.register_at_fork."""
    global _forked_child
    _forked_child = True
    kernels = sys.modules.get(f"{__package__}._kernels")
    if kernels is not None:  # not imported: the parent never ran a parallel loop
        kernels.set_kernel_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n: Optional[int]) -> None:
    """Use at most n threads in the kernels (and every BLAS in the process) from now on.

    n: a positive count, -1 for all cores (-2 all but one, ...), or None for the default
    (all cores).  BLAS libraries may clamp very large counts; get_num_threads() tells."""
    count = _resolve(n)
    with _lock:
        _blas_pools().limit(limits=count)
        _pin_kernel_blas()
        _set_loop_threads(count)


@contextlib.contextmanager
def threads(n: Optional[int]) -> Iterator[int]:
    """Context manager: run the enclosed code with at most n kernel threads, then restore
    the previous counts.  Yields the thread count it set.

        with fusedrnn.threads(1):
            out = fusedrnn.ops.lstm_forward(x, kernel, recurrent_kernel)
    """
    count = _resolve(n)
    with _lock:
        previous_loop = _loop_threads()
        limiter = _blas_pools().limit(limits=count)
        _pin_kernel_blas()
        _set_loop_threads(count)
    try:
        yield count
    finally:
        with _lock:
            limiter.restore_original_limits()
            _pin_kernel_blas()
            _set_loop_threads(previous_loop)
