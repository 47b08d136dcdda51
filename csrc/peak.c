/* The machine's floating-point peak as the kernels can reach it: every thread of a team
 * runs a loop of independent multiply-adds on registers (no memory traffic), with the same
 * SIMD path the recurrent tiles use (512-bit AVX-512 where the CPU has it, else AVX2+FMA,
 * else whatever the compiler makes of the generic loop).  Benchmarks report GFLOP/s
 * against this measured number instead of a datasheet figure (clock, SIMD width and FMA
 * units vary by CPU and VM). */
#include "internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#include <time.h>

/* Independent accumulators per thread: FMA latency (4-5 cycles) times two FMA units needs
 * at least 10 in flight; 12 leaves room and still fits 16 registers. */
#define FRNN_PEAK_CHAINS 12

/* Every thread's result lands here, so no loop is dead code. */
static double frnn_peak_sink;

/* CPU time of the calling thread, or -1 where the clock is unavailable. */
static double frnn_thread_cpu_seconds(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return -1;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#if FRNN_AVX2_KERNELS
#include <immintrin.h>
/* FLOPs done: iterations * FRNN_PEAK_CHAINS * lanes * 2.  The result is written to *sink so
 * the compiler keeps the loop. */
#define FRNN_DEFINE_FMA_LOOP(TARGET, NAME, REAL, VEC, SET1, FMADD, ADD, STOREU)                \
    TARGET static void NAME(long long iterations, REAL *sink) {                                \
        VEC acc[FRNN_PEAK_CHAINS];                                                             \
        const VEC a = SET1((REAL)0.999999), b = SET1((REAL)1e-7);                              \
        for (int c = 0; c < FRNN_PEAK_CHAINS; ++c) acc[c] = SET1((REAL)c);                     \
        for (long long i = 0; i < iterations; ++i) {                                           \
            _Pragma("GCC unroll 16") for (int c = 0; c < FRNN_PEAK_CHAINS; ++c)                \
                acc[c] = FMADD(acc[c], a, b);                                                  \
        }                                                                                      \
        VEC s = acc[0];                                                                        \
        for (int c = 1; c < FRNN_PEAK_CHAINS; ++c) s = ADD(s, acc[c]);                         \
        STOREU(sink, s);                                                                       \
    }
FRNN_DEFINE_FMA_LOOP(FRNN_AVX2_TARGET, frnn_fma_loop_avx2_f32, float, __m256, _mm256_set1_ps,
                      _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps)
FRNN_DEFINE_FMA_LOOP(FRNN_AVX2_TARGET, frnn_fma_loop_avx2_f64, double, __m256d, _mm256_set1_pd,
                      _mm256_fmadd_pd, _mm256_add_pd, _mm256_storeu_pd)
/* 512-bit: on an Intel Xeon with AMX 240 against 130 GFLOP/s per core for 256-bit */
FRNN_DEFINE_FMA_LOOP(FRNN_AVX512VL_TARGET, frnn_fma_loop_avx512_f32, float, __m512,
                      _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps)
FRNN_DEFINE_FMA_LOOP(FRNN_AVX512VL_TARGET, frnn_fma_loop_avx512_f64, double, __m512d,
                      _mm512_set1_pd, _mm512_fmadd_pd, _mm512_add_pd, _mm512_storeu_pd)
#undef FRNN_DEFINE_FMA_LOOP
#endif

/* Generic fallback: 8 lanes per chain (the compiler vectorises what it can). */
#define FRNN_GENERIC_LANES 8
#define FRNN_DEFINE_GENERIC_LOOP(REAL, SUFFIX)                                               \
    static void frnn_fma_loop_generic_##SUFFIX(long long iterations, REAL *sink) {           \
        REAL acc[FRNN_PEAK_CHAINS][FRNN_GENERIC_LANES];                                      \
        for (int c = 0; c < FRNN_PEAK_CHAINS; ++c)                                           \
            for (int w = 0; w < FRNN_GENERIC_LANES; ++w) acc[c][w] = (REAL)(c + w);          \
        for (long long i = 0; i < iterations; ++i)                                           \
            for (int c = 0; c < FRNN_PEAK_CHAINS; ++c)                                       \
                for (int w = 0; w < FRNN_GENERIC_LANES; ++w)                                 \
                    acc[c][w] = acc[c][w] * (REAL)0.999999 + (REAL)1e-7;                     \
        for (int w = 0; w < FRNN_GENERIC_LANES; ++w) {                                       \
            REAL s = 0;                                                                      \
            for (int c = 0; c < FRNN_PEAK_CHAINS; ++c) s += acc[c][w];                       \
            sink[w] = s;                                                                     \
        }                                                                                    \
    }
FRNN_DEFINE_GENERIC_LOOP(float, f32)
FRNN_DEFINE_GENERIC_LOOP(double, f64)
#undef FRNN_DEFINE_GENERIC_LOOP

int frnn_measure_peak(int threads, long long iterations, int use_f64,
                      double *flops_per_second) {
    if (threads < 1 || iterations < 1 || !flops_per_second) return FRNN_EINVAL;
#ifndef _OPENMP
    threads = 1;
#endif
    const int avx2 = frnn_use_avx2(), avx512 = frnn_use_avx512vl();
    const int lanes = avx512 ? (use_f64 ? 8 : 16) : avx2 ? (use_f64 ? 4 : 8) : FRNN_GENERIC_LANES;
    const double flops_per_thread = (double)iterations * FRNN_PEAK_CHAINS * lanes * 2.0;
    double rate_sum = 0;
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1) reduction(+ : rate_sum, failed)
    {
        double sink64[16];
        float sink32[16]; /* the widest vector's lanes */
        /* each thread's own CPU time: time spent descheduled (other programs on a shared
         * machine) does not count, so the result is what the cores do when they run */
        const double start = frnn_thread_cpu_seconds();
#if FRNN_AVX2_KERNELS
        if (avx512) {
            if (use_f64) frnn_fma_loop_avx512_f64(iterations, sink64);
            else frnn_fma_loop_avx512_f32(iterations, sink32);
        } else if (avx2) {
            if (use_f64) frnn_fma_loop_avx2_f64(iterations, sink64);
            else frnn_fma_loop_avx2_f32(iterations, sink32);
        } else
#endif
        {
            if (use_f64) frnn_fma_loop_generic_f64(iterations, sink64);
            else frnn_fma_loop_generic_f32(iterations, sink32);
        }
        const double elapsed = frnn_thread_cpu_seconds() - start;
        const double kept = use_f64 ? sink64[0] : (double)sink32[0];
        (void)kept; /* GCC 12 counts the atomic store below as no use (-Wunused-but-set) */
#pragma omp atomic write
        frnn_peak_sink = kept;
        if (start < 0 || elapsed <= 0) failed += 1;
        else rate_sum += flops_per_thread / elapsed;
    }
    if (failed) return FRNN_EINVAL;
    *flops_per_second = rate_sum;
    return FRNN_OK;
}
