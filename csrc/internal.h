/* Internal helpers shared by the kernels: not part of the public API. */
#ifndef FUSEDRNN_INTERNAL_H
#define FUSEDRNN_INTERNAL_H

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "fusedrnn.h"

/* Function multiversioning: the hot pointwise functions are compiled for AVX-512,
 * AVX2 and baseline x86-64, and the loader picks one at run time (no -march=native).
 * FRNN_NATIVE builds (a CMake option) compile once for the build machine instead. */
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__)) \
    && !defined(FRNN_NATIVE) && !defined(FRNN_NO_CLONES) && !defined(__SANITIZE_ADDRESS__)
#define FRNN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FRNN_CLONES
#endif

#if defined(__GNUC__)
#define FRNN_INLINE static inline __attribute__((always_inline))
#else
#define FRNN_INLINE static inline
#endif

#define FRNN_RESTRICT __restrict
#define FRNN_UNUSED __attribute__((unused))

/* Allocation that reports failure instead of crashing; zero size gives a valid pointer. */
static inline void *frnn_alloc(size_t count, size_t size) {
    if (count != 0 && size > ((size_t)-1) / count) return NULL;
    size_t bytes = count * size;
    if (bytes == 0) bytes = 64;
    /* 64-byte alignment keeps gate rows on cache-line boundaries when H*4 is a multiple of 16. */
    void *p = NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    p = aligned_alloc(64, rounded);
    return p;
}

static inline int frnn_fits_int(ptrdiff_t v) { return v >= 0 && v <= INT_MAX; }

/* Input step consumed at processing step t. */
static inline ptrdiff_t frnn_input_step(const frnn_dims *d, ptrdiff_t t) {
    return d->go_backwards ? d->steps - 1 - t : t;
}

static inline int frnn_check_dims(const frnn_dims *d, ptrdiff_t gates) {
    if (d->batch < 0 || d->steps < 0 || d->input_size < 1 || d->units < 1) return FRNN_EINVAL;
    if (!frnn_fits_int(d->units * gates) || !frnn_fits_int(d->input_size)) return FRNN_EOVERFLOW;
    return FRNN_OK;
}

#ifdef _OPENMP
#include <omp.h>
static inline int frnn_thread_id(void) { return omp_get_thread_num(); }
#else
static inline int frnn_thread_id(void) { return 0; }
#endif

/* Per-step multiply-adds of the recurrent product below which a fused time loop runs on
 * one thread.  Measured on this 2-vCPU machine (LSTM, T=100, nearly idle): splitting the
 * units across 2 threads with a barrier per step was slower at every size of the benchmark
 * grid, e.g. B=8, H=256: 12.0 ms on one thread, 16.1 ms on two; B=8, H=512: 41.5 vs 113 ms.
 * So the split is kept for much larger steps only; BLAS still uses every core for the big
 * GEMMs outside the time loop. */
#define FRNN_PARALLEL_MIN_MACS ((ptrdiff_t)1 << 24)

/* When the per-step recurrent product goes to BLAS' GEMM instead of the packed tiles: with
 * many rows and enough work BLAS' blocked kernels are faster (measured at B=32, H=256);
 * below that a BLAS call per step costs more than it computes, and multi-threaded BLAS on
 * tiny products collapses when the machine is busy. */
#define FRNN_BLAS_STEP_MIN_ROWS 32
#define FRNN_BLAS_STEP_MIN_MACS ((ptrdiff_t)1 << 21)
static inline int frnn_use_blas_steps(ptrdiff_t batch, ptrdiff_t macs_per_step) {
    return batch >= FRNN_BLAS_STEP_MIN_ROWS && macs_per_step >= FRNN_BLAS_STEP_MIN_MACS;
}

/* Threads for a fused time loop over nb unit blocks with `macs` multiply-adds per step. */
static inline int frnn_pick_threads(ptrdiff_t nb, ptrdiff_t macs) {
    int nt = frnn_get_num_threads();
    if (nt > nb) nt = (int)nb;
    if (macs < FRNN_PARALLEL_MIN_MACS || nt < 1) nt = 1;
    return nt;
}

#endif
