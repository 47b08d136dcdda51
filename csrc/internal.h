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

/* Hand-written AVX2+FMA micro-kernels (recurrent_matmul.h) for x86-64 GCC/clang builds,
 * chosen at run time by CPUID; other CPUs and compilers run the generic C tiles. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(FRNN_NO_SIMD)
#define FRNN_AVX2_KERNELS 1
#define FRNN_AVX2_TARGET __attribute__((target("avx2,fma")))
static inline int frnn_use_avx2(void) {
    int forced = frnn_override_simd();
    if (forced == 0) return 0;
    return frnn_cpu_has_avx2_fma();
}
#else
#define FRNN_AVX2_KERNELS 0
static inline int frnn_use_avx2(void) { return 0; }
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
static inline int frnn_team_size(void) { return omp_get_num_threads(); }
#else
static inline int frnn_thread_id(void) { return 0; }
static inline int frnn_team_size(void) { return 1; }
#endif


/* Per-step multiply-adds of the recurrent product below which a fused time loop runs on
 * one thread (the split is opt-in: the default thread count is 1, see threads.c).
 * Measured on this 2-vCPU machine with the AVX2 tiles (LSTM float32, T=100), forced split vs
 * one thread with BLAS serial and nothing else running: 2^17 (B=8, H=64) 1.80 vs 1.45 ms
 * loses; 2^18 (B=1, H=256) 2.77 vs 3.26 ms and B=8, H=512 38.8 vs 46.7 ms gain.  But with
 * another thread pool spinning on the machine (OpenBLAS' idle workers after a
 * multi-threaded call, or torch's OpenMP pool in the same process) a per-step barrier
 * waits for a descheduled thread: whole scheduler slices per step (SimpleRNN B=8 forward
 * 8.0 ms instead of 0.9 ms in the benchmark), hence one thread by default. */
#define FRNN_PARALLEL_MIN_MACS ((ptrdiff_t)1 << 18)
/* When the per-step recurrent product goes to BLAS' GEMM instead of the packed tiles: on
 * CPUs without AVX2, many rows with enough work (measured at B=32, H=256 with the generic
 * tiles).  The AVX2 tiles beat the per-step GEMM at every grid size measured (LSTM B=32,
 * H=256 one thread: 46.7 ms tiles vs 55.4 ms GEMM; B=128, H=512: 643 vs 700 ms). */
#define FRNN_BLAS_STEP_MIN_ROWS 32
#define FRNN_BLAS_STEP_MIN_MACS ((ptrdiff_t)1 << 21)
static inline int frnn_use_blas_steps(ptrdiff_t batch, ptrdiff_t macs_per_step) {
    int forced = frnn_override_blas_steps();
    if (forced >= 0) return forced;
    if (frnn_use_avx2()) return 0; /* the AVX2 tiles beat per-step GEMMs at every size measured */
    return batch >= FRNN_BLAS_STEP_MIN_ROWS && macs_per_step >= FRNN_BLAS_STEP_MIN_MACS;
}

/* Threads for a fused time loop over nb unit blocks with `macs` multiply-adds per step. */
static inline int frnn_pick_threads(ptrdiff_t nb, ptrdiff_t macs) {
    int nt = frnn_get_num_threads();
    if (nt > nb) nt = (int)nb;
    long long min_macs = frnn_override_split_min_macs();
    if (min_macs < 0) min_macs = FRNN_PARALLEL_MIN_MACS;
    if (macs < min_macs || nt < 1) nt = 1;
    return nt;
}

#endif
