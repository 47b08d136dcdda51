"""Process-wide settings of the C kernels."""

cdef extern from "fusedrnn.h" nogil:
    void frnn_set_num_threads(int n) noexcept
    int frnn_get_num_threads() noexcept
    int frnn_has_openmp() noexcept
    void frnn_set_path_overrides(int simd, int blas_steps, long long split_min_macs, int split_by,
                                 int fuse_input) noexcept
    int frnn_override_fuse_input() noexcept
    int frnn_override_split_by() noexcept
    int frnn_override_simd() noexcept
    int frnn_override_blas_steps() noexcept
    long long frnn_override_split_min_macs() noexcept
    int frnn_cpu_has_avx2_fma() noexcept
    int frnn_measure_peak(int threads, long long iterations, int use_f64,
                          double *flops_per_second) noexcept


def set_kernel_threads(int n):
    """Threads for the fused time loops (0 = one per core).  Does not touch BLAS."""
    if n < 0:
        raise ValueError(f"n: expected a thread count >= 0, got {n}")
    frnn_set_num_threads(n)


def get_kernel_threads():
    """Threads the fused time loops may use (1 without OpenMP)."""
    return frnn_get_num_threads()


def has_openmp():
    """Whether the kernels were built with OpenMP."""
    return bool(frnn_has_openmp())


def cpu_has_avx2_fma():
    """Whether the kernels run their AVX2+FMA micro-kernels on this CPU."""
    return bool(frnn_cpu_has_avx2_fma())


def set_path_overrides(int simd=-1, int blas_steps=-1, long long split_min_macs=-1,
                       int split_by=-1, int fuse_input=-1):
    """Force the kernels' automatic path choices, for tests and benchmarks; -1 = automatic.

    simd: 0 runs the generic C tiles even where AVX2 is available.  blas_steps: 1 computes
    every step's recurrent product with a BLAS GEMM, 0 with the packed tiles.
    split_min_macs: per-step multiply-adds from which a time loop splits its units over the
    threads (0 = always).  split_by: 1 splits time loops by batch rows (down to one row per
    thread), 0 by units.  fuse_input: 1 adds each step's input projection in the tiles
    (LSTM and SimpleRNN forward) and computes each step's input gradient in the backward's
    time loop (every cell), 0 computes them with BLAS GEMMs over many steps.
    Returns the previous settings as a tuple, for restoring."""
    previous = (frnn_override_simd(), frnn_override_blas_steps(),
                frnn_override_split_min_macs(), frnn_override_split_by(),
                frnn_override_fuse_input())
    frnn_set_path_overrides(simd, blas_steps, split_min_macs, split_by, fuse_input)
    return previous


def measure_peak(int threads, long long iterations, bint float64=False):
    """Run the peak loop (see frnn_measure_peak in csrc/fusedrnn.h): `threads` threads each
    do `iterations` rounds of independent register multiply-adds with the kernels' SIMD
    path.  Returns FLOP/s: the sum of each thread's FLOPs over its own CPU time."""
    cdef double rate = 0
    cdef int status
    if threads < 1:
        raise ValueError(f"threads: expected a count >= 1, got {threads}")
    if iterations < 1:
        raise ValueError(f"iterations: expected a count >= 1, got {iterations}")
    with nogil:
        status = frnn_measure_peak(threads, iterations, float64, &rate)
    if status != 0:
        raise RuntimeError(f"frnn_measure_peak failed with status {status}")
    return rate
