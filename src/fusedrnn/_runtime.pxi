"""Process-wide settings of the C kernels."""

cdef extern from "fusedrnn.h" nogil:
    void frnn_set_num_threads(int n) noexcept
    int frnn_get_num_threads() noexcept
    int frnn_has_openmp() noexcept


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
