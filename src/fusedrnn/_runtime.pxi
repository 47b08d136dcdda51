"""Process-wide settings of the C kernels."""

cdef extern from "fusedrnn.h" nogil:
    void frnn_set_num_threads(int n) noexcept
    int frnn_get_num_threads() noexcept
    int frnn_set_barrier_spins(int n) noexcept
    int frnn_set_team_stop_rule(int n) noexcept
    long long frnn_team_stops_so_far() noexcept
    int frnn_has_openmp() noexcept
    void frnn_set_path_overrides(int simd, int blas_steps, long long split_min_macs, int split_by,
                                 int fuse_input, int direct_step) noexcept
    int frnn_override_fuse_input() noexcept
    int frnn_override_direct_step() noexcept
    int frnn_override_split_by() noexcept
    int frnn_override_simd() noexcept
    int frnn_override_blas_steps() noexcept
    long long frnn_override_split_min_macs() noexcept
    int frnn_one_step_from_rows(Py_ssize_t batch) noexcept
    int frnn_cpu_has_avx2_fma() noexcept
    int frnn_cpu_has_avx512vl() noexcept
    int frnn_measure_peak(int threads, long long iterations, int use_f64,
                          double *flops_per_second) noexcept
    int frnn_weight_gradient_tiles_f32(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *a,
                                       Py_ssize_t lda, const float *b, Py_ssize_t ldb,
                                       int accumulate, float *c, Py_ssize_t ldc,
                                       float *b_sums) noexcept
    int frnn_transpose_f32(Py_ssize_t rows, Py_ssize_t cols, const float *src, Py_ssize_t lds,
                           float *dst, Py_ssize_t ldd) noexcept
    int frnn_transpose_f64(Py_ssize_t rows, Py_ssize_t cols, const double *src,
                           Py_ssize_t lds, double *dst, Py_ssize_t ldd) noexcept
    int frnn_scatter_add_rows_f32(Py_ssize_t n, Py_ssize_t dim, const Py_ssize_t *ids,
                                  const float *rows, Py_ssize_t ld_rows, float *table,
                                  Py_ssize_t table_rows, Py_ssize_t ld_table) noexcept
    int frnn_scatter_add_rows_f64(Py_ssize_t n, Py_ssize_t dim, const Py_ssize_t *ids,
                                  const double *rows, Py_ssize_t ld_rows, double *table,
                                  Py_ssize_t table_rows, Py_ssize_t ld_table) noexcept


cimport numpy as cnp
from cpython.pyport cimport PY_SSIZE_T_MAX
import numpy as np

cnp.import_array()


cdef class _PoolBlock:
    """Owns one block of the kernels' buffer pool (csrc/pool.c) on behalf of the arrays that
    view it, and gives it back to the pool when the last of them goes."""
    cdef void *data

    def __dealloc__(self):
        frnn_free(self.data)


cdef object pooled_empty(tuple shape, object dtype):
    """np.empty(shape, dtype) in C order, taken from the buffer pool when it is large: a
    training step's outputs, caches and gradients then reuse the previous step's memory
    instead of fresh pages that fault on first touch (csrc/pool.c says what that costs)."""
    cdef cnp.dtype descr = np.dtype(dtype)
    cdef Py_ssize_t nd = len(shape), i
    cdef cnp.npy_intp dims[8]
    nbytes = descr.itemsize
    for n in shape:
        nbytes *= n
    # small, or too large to address: NumPy allocates (and reports the error) as usual
    if nbytes < FRNN_POOL_MIN_BYTES or nd > 8 or nbytes > PY_SSIZE_T_MAX:
        return np.empty(shape, dtype=descr)
    for i in range(nd):
        dims[i] = shape[i]
    cdef _PoolBlock owner = _PoolBlock.__new__(_PoolBlock)
    owner.data = frnn_alloc(nbytes, 1)
    if owner.data == NULL:
        raise MemoryError(f"out of memory allocating an array of {nbytes} bytes")
    array = cnp.PyArray_SimpleNewFromData(<int>nd, dims, descr.type_num, owner.data)
    cnp.set_array_base(array, owner)
    return array


def pooled_array(shape, dtype):
    """pooled_empty from Python: an uninitialised C-order array, pooled when large (for
    tests of the pool)."""
    return pooled_empty(tuple(int(n) for n in shape), dtype)


def set_pool_limit(n_bytes):
    """The most bytes the buffer pool keeps for reuse (0 keeps none and frees what it
    holds).  Returns the previous limit."""
    if isinstance(n_bytes, bool) or not isinstance(n_bytes, int):
        raise TypeError(f"n_bytes: expected an int, got {type(n_bytes).__name__}")
    if n_bytes < 0:
        raise ValueError(f"n_bytes: expected a byte count >= 0, got {n_bytes}")
    previous = frnn_pool_limit()
    frnn_set_pool_limit(<size_t>min(n_bytes, <size_t>-1))
    return previous


def pool_info():
    """(bytes kept for reuse, limit) of the buffer pool."""
    return frnn_pool_retained(), frnn_pool_limit()


def set_kernel_threads(int n):
    """Threads for the fused time loops (0 = one per core).  Does not touch BLAS."""
    if n < 0:
        raise ValueError(f"n: expected a thread count >= 0, got {n}")
    frnn_set_num_threads(n)


def get_kernel_threads():
    """Threads the fused time loops may use (1 without OpenMP)."""
    return frnn_get_num_threads()


def set_barrier_spins(int n):
    """PAUSEs a thread spins at a time loop's per-step meeting before it sleeps on a futex
    (csrc/internal.h); 0 makes every wait sleep (tests of that path), -1 restores the
    default.  Returns the previous count."""
    return frnn_set_barrier_spins(n)


def set_team_stop_rule(int n):
    """When a time loop split by units stops meeting and finishes on one thread
    (csrc/internal.h's frnn_step_barrier): -1 (the default) after a few meetings at which a
    thread slept longer than it had worked, 0 never, n > 0 after the n-th step whatever the
    waits (tests of that path).  Returns the previous rule."""
    return frnn_set_team_stop_rule(n)


def team_stops():
    """How many time loops split by units have stopped meeting and finished on one thread
    in this process so far (see set_team_stop_rule)."""
    return frnn_team_stops_so_far()


def has_openmp():
    """Whether the kernels were built with OpenMP."""
    return bool(frnn_has_openmp())


def cpu_has_avx2_fma():
    """Whether the kernels run their AVX2+FMA micro-kernels on this CPU."""
    return bool(frnn_cpu_has_avx2_fma())


def cpu_has_avx512vl():
    """Whether they also run the AVX-512VL variant of the LSTM forward tiles here."""
    return bool(frnn_cpu_has_avx512vl())


def set_path_overrides(int simd=-1, int blas_steps=-1, long long split_min_macs=-1,
                       int split_by=-1, int fuse_input=-1, int direct_step=-1):
    """Force the kernels' automatic path choices, for tests and benchmarks; -1 = automatic.

    simd: 0 runs the generic C tiles even where AVX2 is available, 1 the AVX2 tiles only
    (not the 512-bit ones of AVX-512 CPUs), 2 (as automatic) every variant the CPU has.
    blas_steps: 1 computes every step's recurrent product with a BLAS GEMM, 0 with the
    packed tiles.
    split_min_macs: per-step multiply-adds from which a time loop splits its units over the
    threads (0 = always).  split_by: 1 splits time loops by batch rows (down to one row per
    thread), 0 by units.  fuse_input: 1 adds each step's input projection in the tiles
    (LSTM and SimpleRNN forward; GRU inference projects each step's input in its time loop
    where each thread owns its rows) and computes each step's input gradient in the
    backward's time loop (every cell), 0 computes them with BLAS GEMMs over many steps.
    direct_step: 1 computes a single step (time = 1) straight from the weights, 0 with the
    packed tiles of longer sequences.
    Returns the previous settings as a tuple, for restoring."""
    previous = (frnn_override_simd(), frnn_override_blas_steps(),
                frnn_override_split_min_macs(), frnn_override_split_by(),
                frnn_override_fuse_input(), frnn_override_direct_step())
    frnn_set_path_overrides(simd, blas_steps, split_min_macs, split_by, fuse_input, direct_step)
    return previous


def one_step_from_rows(Py_ssize_t batch):
    """Whether one step of `batch` rows in torch's weight layout runs forward and backward
    straight from torch's rows (csrc/fusedrnn.h: frnn_one_step_from_rows)."""
    return frnn_one_step_from_rows(batch) != 0


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


def weight_gradient_tiles(const float[:, :] a, const float[:, :] b, float[:, :] c,
                          bint accumulate, float[::1] b_sums=None):
    """c = a.T @ b, or c += a.T @ b, with the backward's weight-gradient tiles
    (csrc/weight_gradient.c), for tests: a (k, m), b (k, n) and c (m, n) float32 with
    contiguous rows (any row stride); b_sums (n,), if given, gets b's column sums (or
    they are added).  RuntimeError where this CPU has no AVX2 tiles."""
    cdef Py_ssize_t k = a.shape[0], m = a.shape[1], n = b.shape[1]
    cdef int status
    if b.shape[0] != k:
        raise ValueError(f"b: expected {k} rows like a, got {b.shape[0]}")
    if c.shape[0] != m or c.shape[1] != n:
        raise ValueError(f"c: expected shape ({m}, {n}), got ({c.shape[0]}, {c.shape[1]})")
    if b_sums is not None and b_sums.shape[0] != n:
        raise ValueError(f"b_sums: expected shape ({n},), got ({b_sums.shape[0]},)")
    for name, view in (("a", a), ("b", b), ("c", c)):
        if view.shape[1] > 1 and view.strides[1] != 4:
            raise ValueError(f"{name}: expected contiguous rows")
    # row strides in elements; empty operands are never read
    cdef const float *pa = &a[0, 0] if k and m else NULL
    cdef const float *pb = &b[0, 0] if k and n else NULL
    cdef float *pc = &c[0, 0] if m and n else NULL
    cdef float *ps = &b_sums[0] if b_sums is not None and n else NULL
    cdef Py_ssize_t lda = a.strides[0] // 4, ldb = b.strides[0] // 4, ldc = c.strides[0] // 4
    with nogil:
        status = frnn_weight_gradient_tiles_f32(m, n, k, pa, lda, pb, ldb, accumulate, pc, ldc,
                                                ps)
    if status != 0:
        raise RuntimeError(f"frnn_weight_gradient_tiles_f32 failed with status {status}")


def _float_matrices(first_name, first, second_name, second):
    """Both 2-D NumPy arrays of one dtype, float32 or float64 (TypeError/ValueError naming
    the argument otherwise)."""
    for name, array in ((first_name, first), (second_name, second)):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{name}: expected a NumPy array, got {type(array).__name__}")
        if array.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D array, got {array.ndim} dimensions")
    if first.dtype != second.dtype or first.dtype not in (np.float32, np.float64):
        raise TypeError(f"{first_name}, {second_name}: expected both float32 or both float64, "
                        f"got {first.dtype} and {second.dtype}")


cdef Py_ssize_t _row_stride(str name, object array) except -1:
    """The row stride in elements of a non-empty 2-D array with contiguous rows (any row
    stride of at least a row; a single row's is its length), ValueError otherwise."""
    cdef Py_ssize_t item = array.itemsize
    if array.shape[1] > 1 and array.strides[1] != item:
        raise ValueError(f"{name}: expected contiguous rows (a column stride of {item} "
                         f"bytes), got strides {array.strides}")
    if array.shape[0] == 1:
        return array.shape[1]
    if array.strides[0] <= 0 or array.strides[0] % item or array.strides[0] < array.shape[1] * item:
        raise ValueError(f"{name}: expected a positive row stride of at least a row, "
                         f"got strides {array.strides}")
    return array.strides[0] // item


def transpose_into(src, dst):
    """dst[...] = src.T, in cache-sized tiles on the kernel threads (csrc/transpose.c):
    NumPy's np.ascontiguousarray(src.T) reads src column by column, 5-15x slower once src
    outgrows L2.  src (r, c) and dst (c, r): NumPy arrays of one dtype, float32 or float64,
    each with contiguous rows (any row stride: column slices of a wider matrix work);
    dst writeable and not overlapping src."""
    _float_matrices("src", src, "dst", dst)
    cdef Py_ssize_t rows = src.shape[0], cols = src.shape[1]
    if dst.shape != (cols, rows):
        raise ValueError(f"dst: expected shape {(cols, rows)} (src's transposed), got "
                         f"{dst.shape}")
    if not dst.flags.writeable:
        raise ValueError("dst: expected a writeable array")
    if rows == 0 or cols == 0:
        return
    cdef Py_ssize_t lds = _row_stride("src", src), ldd = _row_stride("dst", dst)
    if np.may_share_memory(src, dst):
        raise ValueError("dst: must not overlap src")
    cdef const float[:, :] src32
    cdef float[:, :] dst32
    cdef const double[:, :] src64
    cdef double[:, :] dst64
    cdef int status
    if src.dtype == np.float32:
        src32 = src
        dst32 = dst
        with nogil:
            status = frnn_transpose_f32(rows, cols, &src32[0, 0], lds, &dst32[0, 0], ldd)
    else:
        src64 = src
        dst64 = dst
        with nogil:
            status = frnn_transpose_f64(rows, cols, &src64[0, 0], lds, &dst64[0, 0], ldd)
    if status != 0:
        raise RuntimeError(f"frnn_transpose failed with status {status}")


def scatter_add_rows(table, ids, rows):
    """table[ids[i]] += rows[i] for every i, in index order: np.add.at(table, ids, rows)
    for a 2-D table and 1-D ids, with the same sums, as one C pass (csrc/scatter.c; the
    Embedding layer's gradient).  table (V, D) and rows (n, D): NumPy arrays of one dtype,
    float32 or float64, with contiguous rows, not overlapping; table writeable.  ids: n
    integers in [0, V) (anything else raises ValueError and leaves the table as it was)."""
    _float_matrices("table", table, "rows", rows)
    index = np.asarray(ids)
    if index.dtype.kind not in "iu":
        raise TypeError(f"ids: expected integers, got dtype {index.dtype}")
    if index.ndim != 1 or index.shape[0] != rows.shape[0]:
        raise ValueError(f"ids: expected shape ({rows.shape[0]},) (one per row of rows), got "
                         f"{index.shape}")
    if rows.shape[1] != table.shape[1]:
        raise ValueError(f"rows: expected {table.shape[1]} columns like table, got "
                         f"{rows.shape[1]}")
    if not table.flags.writeable:
        raise ValueError("table: expected a writeable array")
    cdef Py_ssize_t n = rows.shape[0], dim = rows.shape[1], table_rows = table.shape[0]
    if n == 0 or dim == 0:
        return
    if table_rows == 0:
        raise ValueError(f"ids: expected values in [0, 0), got values in "
                         f"[{index.min()}, {index.max()}]")
    cdef Py_ssize_t ld_table = _row_stride("table", table), ld_rows = _row_stride("rows", rows)
    if np.may_share_memory(table, rows):
        raise ValueError("rows: must not overlap table")
    # (uint64 ids past the intp range wrap to negative ones here: refused below all the same)
    cdef const Py_ssize_t[::1] id_view = np.ascontiguousarray(index, dtype=np.intp)
    cdef const float[:, :] rows32
    cdef float[:, :] table32
    cdef const double[:, :] rows64
    cdef double[:, :] table64
    cdef int status
    if table.dtype == np.float32:
        rows32 = rows
        table32 = table
        with nogil:
            status = frnn_scatter_add_rows_f32(n, dim, &id_view[0], &rows32[0, 0], ld_rows,
                                               &table32[0, 0], table_rows, ld_table)
    else:
        rows64 = rows
        table64 = table
        with nogil:
            status = frnn_scatter_add_rows_f64(n, dim, &id_view[0], &rows64[0, 0], ld_rows,
                                               &table64[0, 0], table_rows, ld_table)
    if status == 2:
        raise ValueError(f"ids: expected values in [0, {table_rows}), got values in "
                         f"[{index.min()}, {index.max()}]")
    if status != 0:
        raise RuntimeError(f"frnn_scatter_add_rows failed with status {status}")
