/* Internal helpers shared by the kernels: not part of the public API. */
#ifndef FUSEDRNN_INTERNAL_H
#define FUSEDRNN_INTERNAL_H

#include <limits.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <x86intrin.h>
#define FRNN_CPU_RELAX() _mm_pause()
#else
#define FRNN_CPU_RELAX() ((void)0)
#endif
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
/* Tiles on 512-bit registers (AVX-512F/VL: recurrent_matmul.h's *_avx512, weight_gradient.c's
 * wg_tile2_f32_avx512), where the CPU has them. */
#define FRNN_AVX512VL_TARGET __attribute__((target("avx2,fma,avx512f,avx512vl")))
static inline int frnn_use_avx512vl(void) {
    int forced = frnn_override_simd();
    if (forced == 0 || forced == 1) return 0;
    return frnn_cpu_has_avx512vl();
}
#else
#define FRNN_AVX2_KERNELS 0
static inline int frnn_use_avx2(void) { return 0; }
static inline int frnn_use_avx512vl(void) { return 0; }
#endif

#if defined(__GNUC__)
#define FRNN_INLINE static inline __attribute__((always_inline))
#else
#define FRNN_INLINE static inline
#endif

#define FRNN_RESTRICT __restrict
#define FRNN_UNUSED __attribute__((unused))

/* Large scratch (the backward's dZ of every step: 105 MB at B=128, T=100, H=512) is
 * asked for in transparent huge pages, as NumPy does for its arrays: with 4 KiB pages
 * its first touch costs one page fault per 4 KiB. */
#define FRNN_HUGE_PAGE ((size_t)2 << 20)
#define FRNN_HUGE_ALLOC_BYTES ((size_t)2 << 20)

/* frnn_transpose_f32/f64 (fusedrnn.h) on the calling thread alone, for callers already
 * inside a parallel region (the backward's packing of U^T): valid sizes and strides only,
 * no checks. */
void frnn_transpose_serial_f32(ptrdiff_t rows, ptrdiff_t cols, const float *src, ptrdiff_t lds,
                               float *dst, ptrdiff_t ldd);
void frnn_transpose_serial_f64(ptrdiff_t rows, ptrdiff_t cols, const double *src,
                               ptrdiff_t lds, double *dst, ptrdiff_t ldd);

/* frnn_alloc / frnn_free (fusedrnn.h, csrc/pool.c): kernel scratch comes from the buffer
 * pool, which keeps freed blocks of FRNN_POOL_MIN_BYTES and more for reuse. */

static inline int frnn_fits_int(ptrdiff_t v) { return v >= 0 && v <= INT_MAX; }

/* Input step consumed at processing step t. */
static inline ptrdiff_t frnn_input_step(const frnn_dims *d, ptrdiff_t t) {
    return d->go_backwards ? d->steps - 1 - t : t;
}

static inline int frnn_check_dims(const frnn_dims *d, ptrdiff_t gates) {
    if (d->batch < 0 || d->steps < 0 || d->input_size < 1 || d->units < 1) return FRNN_EINVAL;
    if (d->weight_rows != 0 && d->weight_rows != 1) return FRNN_EINVAL;
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

/* The time loops' per-step meeting of a team (split by units, h_t needs every thread's
 * units before step t+1): a sense-reversing barrier on one shared cache line.  GOMP's
 * `#pragma omp barrier` measured 250-320 ns per meeting of two threads here, this 32 ns;
 * LSTM inference at batch 1 meets 100 times in a 0.3 ms call.  Batch 1, T=100, in-process
 * A/B over GOMP's barrier (both orders): forward LSTM 1.07-1.11x at 128 units, 1.04x at
 * 256, GRU 1.03-1.10x, SimpleRNN 1.22-1.26x; training 1.02-1.07x.  A waiter spins (PAUSE)
 * for a while, then sleeps on a futex, so a thread descheduled by other programs gets the
 * core its partner was spinning on.
 * When other programs keep the cores busy, a partner descheduled at every step still
 * costs each step a sleep and a wake-up: LSTM inference at batch 1 with 256 units took
 * 17.2 ms on two threads against 6.9 ms on one (and torch 11.5 ms) while three busy
 * processes shared the two cores.  So a waiter that slept longer than it had worked since
 * the last meeting (its partner took over twice its time for an equal share) counts the
 * meeting as late, and at the first step's meeting after FRNN_LATE_MEETINGS such
 * meetings the team stops: the loop goes on from the next step on one thread
 * (frnn_step_barrier_stops).  Split by units, every thread computes whole units the same
 * way whoever owns them, so the results stay bitwise those of the split loop.  Measured on
 * the Zen 3 with two other busy processes, 41 alternating calls each, stopping over never
 * stopping: LSTM batch 1 inference 1.35-1.51x (256 units), 1.01-1.21x (512), training
 * 1.40-1.44x (256); one thread throughout was faster still in four of those six runs (the
 * call's other parallel regions, packing and GEMMs, each wait for the descheduled thread
 * too), slower in two.
 * Use: one frnn_step_barrier per parallel region (frnn_step_barrier_init before it), each
 * thread with its own frnn_barrier_side (frnn_barrier_side_init at the region's start),
 * frnn_step_barrier_stops(...) at one meeting of each step and frnn_step_barrier_wait(...)
 * at any other: when frnn_step_barrier_stops returns 1, every thread finishes that step
 * (the same step for all) and leaves the loop, and the caller runs the rest on one thread
 * from the step frnn_step_barrier_resume gives.  Writes before a
 * meeting are seen after it (release/acquire, as an OpenMP barrier's flush). */
typedef struct {
    _Atomic int arrived;
    _Atomic int phase;    /* also the futex word the sleepers wait on (Linux) */
    _Atomic int sleepers; /* waiters that stopped spinning */
    _Atomic int late;     /* meetings a waiter slept through for longer than it had worked */
    _Atomic int steps;    /* meetings at which the team could stop, so far */
    _Atomic int stop;     /* decided at such a meeting: the team leaves after that step */
    char pad[64 - 6 * sizeof(int)]; /* alone on its cache line */
    ptrdiff_t resume;     /* the step to go on from once the team has stopped */
} frnn_step_barrier;

/* One thread's side of a frnn_step_barrier: its sense and when it last left a meeting. */
typedef struct {
    int phase;
    unsigned long long since;
} frnn_barrier_side;

#define FRNN_BARRIER_SPINS 4096 /* PAUSEs before sleeping: about 100 us on this Zen 4 */
/* Late meetings after which a team stops (see above).  One is a hiccup (an interrupt, the
 * hypervisor); three within a call, each longer than the spin and longer than a share of
 * the work, mean the partner is being descheduled. */
#define FRNN_LATE_MEETINGS 3

/* A cheap clock for comparing a waiter's work with its wait (a ratio: any unit will do). */
static inline unsigned long long frnn_ticks(void) {
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    return __rdtsc();
#else
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (unsigned long long)now.tv_sec * 1000000000ull + (unsigned long long)now.tv_nsec;
#endif
}

static inline void frnn_step_barrier_init(frnn_step_barrier *barrier) {
    atomic_init(&barrier->arrived, 0);
    atomic_init(&barrier->phase, 0);
    atomic_init(&barrier->sleepers, 0);
    atomic_init(&barrier->late, 0);
    atomic_init(&barrier->steps, 0);
    atomic_init(&barrier->stop, 0);
    barrier->resume = 0;
}

static inline frnn_barrier_side frnn_barrier_side_init(void) {
    frnn_barrier_side side = {0, frnn_ticks()};
    return side;
}

#if defined(__linux__)
static inline void frnn_futex_wait(_Atomic int *word, int value) {
    syscall(SYS_futex, (int *)word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}
static inline void frnn_futex_wake_all(_Atomic int *word) {
    syscall(SYS_futex, (int *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}
#else
static inline void frnn_futex_wait(_Atomic int *word, int value) {
    (void)word, (void)value;
    sched_yield();
}
static inline void frnn_futex_wake_all(_Atomic int *word) { (void)word; }
#endif

/* Whether a team stops at the meeting of its step number `steps` (from 1) after `late`
 * late meetings: frnn_team_stop_rule() -1 (the default) by lateness, 0 never, n > 0 at
 * the n-th step whatever the lateness (tests). */
static inline int frnn_team_stops(int steps, int late) {
    const int rule = frnn_team_stop_rule();
    return rule < 0 ? late >= FRNN_LATE_MEETINGS : rule > 0 && steps >= rule;
}

/* The meeting itself; may_stop: whether the team may stop here (see above), returned. */
static inline int frnn_step_barrier_meet(frnn_step_barrier *barrier, int team,
                                         frnn_barrier_side *side, int may_stop) {
    const int next = !side->phase;
    side->phase = next;
    if (atomic_fetch_add_explicit(&barrier->arrived, 1, memory_order_acq_rel) == team - 1) {
        atomic_store_explicit(&barrier->arrived, 0, memory_order_relaxed);
        if (may_stop) {
            const int steps =
                atomic_fetch_add_explicit(&barrier->steps, 1, memory_order_relaxed) + 1;
            if (frnn_team_stops(steps,
                                atomic_load_explicit(&barrier->late, memory_order_relaxed)))
                atomic_store_explicit(&barrier->stop, 1, memory_order_relaxed);
        }
        atomic_store(&barrier->phase, next); /* seq_cst: ordered before reading sleepers */
        if (atomic_load(&barrier->sleepers) > 0) frnn_futex_wake_all(&barrier->phase);
        side->since = frnn_ticks();
        return may_stop && atomic_load_explicit(&barrier->stop, memory_order_relaxed);
    }
    const unsigned long long arrived_at = frnn_ticks();
    const int spin_limit = frnn_barrier_spins();
    int met = 0;
    for (int spins = 0; spins < spin_limit && !met; ++spins) {
        met = atomic_load_explicit(&barrier->phase, memory_order_acquire) == next;
        if (!met) FRNN_CPU_RELAX();
    }
    if (!met) {
        /* the partner is late (descheduled by other programs): sleep until the last
         * arriver wakes us, leaving the core to whoever needs it */
        atomic_fetch_add(&barrier->sleepers, 1); /* seq_cst: before reading phase */
        while (atomic_load(&barrier->phase) != next) frnn_futex_wait(&barrier->phase, !next);
        atomic_fetch_sub(&barrier->sleepers, 1);
        const unsigned long long woke_at = frnn_ticks();
        if (woke_at - arrived_at > arrived_at - side->since) /* counts for later meetings */
            atomic_fetch_add_explicit(&barrier->late, 1, memory_order_relaxed);
    }
    side->since = frnn_ticks();
    return may_stop && atomic_load_explicit(&barrier->stop, memory_order_relaxed);
}

/* A meeting within a step (the team never stops there). */
static inline void frnn_step_barrier_wait(frnn_step_barrier *barrier, int team,
                                          frnn_barrier_side *side) {
    (void)frnn_step_barrier_meet(barrier, team, side, 0);
}

/* The meeting of a step at which the team may stop: 1 when it stops.  Every thread then
 * finishes the step and leaves its loop; next_t: the step to go on from on one thread. */
static inline int frnn_step_barrier_stops(frnn_step_barrier *barrier, int team,
                                          frnn_barrier_side *side, ptrdiff_t next_t) {
    if (!frnn_step_barrier_meet(barrier, team, side, 1)) return 0;
    if (frnn_thread_id() == 0) {
        barrier->resume = next_t;
        frnn_count_team_stop();
    }
    return 1;
}

/* After a parallel region whose team may have stopped: the step to go on from on one
 * thread, or `end` when the region ran its steps to the end. */
static inline ptrdiff_t frnn_step_barrier_resume(const frnn_step_barrier *barrier,
                                                 ptrdiff_t end) {
    return atomic_load_explicit(&barrier->stop, memory_order_relaxed) ? barrier->resume : end;
}

/* Per-step multiply-adds from which a time loop with too few rows to split by rows splits
 * its units (a barrier per step).  Measured on this 2-vCPU machine (float32, T=100, fastest
 * of 100-300 calls, one thread vs unit split): LSTM B=1 H=128 (2^16) forward 0.50 vs 0.33
 * ms, train 1.19 vs 0.82 ms; H=96 (2^15.2) forward 0.30 vs 0.22 ms; GRU B=1 H=128
 * (2^15.6) forward 0.42 vs 0.31 ms.  Below 2^15 it loses: GRU B=1 H=96 (2^14.8) forward
 * 0.29 vs 0.38 ms, LSTM B=1 H=64 (2^14) train 0.55 vs 0.71 ms.  Larger steps win more
 * (LSTM B=1 H=512 forward 12.7 vs 8.9 ms).  A barrier per step is fragile when other
 * programs keep the cores busy: the threads wait for a descheduled one (a team kept
 * waiting stops: frnn_step_barrier); set_num_threads(1) avoids it. */
#define FRNN_PARALLEL_MIN_MACS ((ptrdiff_t)1 << 15)

/* The GRU backward on torch's rows (frnn_dims.weight_rows) takes each weight gradient
 * gate block by gate block as the swapped product dZ_g^T A, straight into torch's rows,
 * below this many summed rows (T*B); from it, one product over all the blocks into a
 * Keras-layout scratch, transposed into torch's rows.  The smaller products lose where
 * the products dominate: drop-in GRU training (T=100, 2 threads, Xeon) against the
 * module converting the weights, per block / one product: B=1 H=512 1.14 / 1.03, B=8
 * H=512 1.00 / 0.98, B=32 H=256 1.00 / 1.01, B=128 H=256 0.97 / 0.99, B=128 H=512 1.00 /
 * 0.99. */
#define FRNN_GRU_SWAPPED_MAX_ROWS ((ptrdiff_t)2048)
/* Per-step multiply-adds from which GRU's gate-by-gate loop (reset_after=0 or recurrent
 * dropout) splits its units: it meets 2-3 times per step, not once, and each meeting is
 * fragile under load.  Measured on the Zen 4, T=100, reset_after=0, time on one thread
 * over time split by units: B=1, H=128 (2^15.6) forward 0.54, 1.20, 1.15, 0.98 (four
 * runs), training 1.00-1.26; B=3, H=128 (2^17.2) 1.10 and 1.36; B=1, H=256 (2^17.6)
 * forward 0.98-1.50, training 1.74; B=1, H=512 1.71 and 1.87; B=3, H=256-512 1.53-1.55 and
 * 1.30-1.73.  So from 2^17, where it wins clearly. */
#define FRNN_GATE_SPLIT_MIN_MACS ((ptrdiff_t)1 << 17)
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

/* Whether a single step (T = 1) multiplies straight from the weights
 * (csrc/direct_step.h) instead of packing U for the loops' tiles (and, from torch's rows,
 * transposing both weights first).  The tiles' register blocking pays for the packing
 * from a few rows on.  Measured (inference), 2 threads, float32, features = units = 48,
 * 128, 512, median speedup direct over tiles (noisy: a shared machine):
 *   Keras' columns: B=1-2 1.08-2.64; B=4 0.87-3.07; B=8 0.75-4.57; B=16-64 0.65-2.2,
 *     under 1 at 512 units for the LSTM and GRU;
 *   torch's rows: B=1-16 1.11-17.3; B=32 1.03-4.34; B=64 0.72-2.52.
 * The backward of such a step on torch's rows likewise (no recurrent dropout; the GRU
 * with reset_after): straight from the rows, the gradients written in torch's layout, or
 * the weights converted for the loops and the gradients transposed back.  Measured
 * (backward only, input_gradient=0, 2 threads, float32, features = units), median
 * speedup direct over converted: B=1 3.2-8.1; B=8 2.2-4.7; B=32 1.03-1.34; B=64
 * 0.73-1.10; B=128 0.60-0.76 (the register tiles of direct_step.h are no GEMM). */
#define FRNN_DIRECT_STEP_MAX_ROWS 4
#define FRNN_DIRECT_STEP_MAX_ROWS_TORCH 32
static inline int frnn_direct_step(ptrdiff_t batch, int weight_rows) {
    int forced = frnn_override_direct_step();
    if (forced >= 0) return forced;
    return batch <= (weight_rows ? FRNN_DIRECT_STEP_MAX_ROWS_TORCH : FRNN_DIRECT_STEP_MAX_ROWS);
}

/* How a fused time loop shares its work between threads.
 *   by_rows: each thread runs the whole loop for its own batch rows.  Rows never interact,
 *     so the threads never wait for each other: robust when other thread pools compete
 *     for the cores.  Needs min_rows rows per thread (frnn_row_split_min_rows).
 *   else: each thread owns a range of unit blocks for every row and the threads meet at a
 *     barrier per step (h_t needs every unit of h_{t-1}); only for few rows and big steps. */
typedef struct {
    int threads;
    int by_rows;
} frnn_split;

/* Whether a thread's share of `bytes` (all of them where the loop splits by rows or runs
 * on one thread, else a team's share) is more than `fraction` of a core's L2; 0 where
 * the L2's size is unknown.  The share of packed weights a time loop streams each step:
 * input fusion on Intel CPUs (frnn_lstm_fuses_input) and the zig-zag block order
 * (frnn_zigzag_blocks) ask it. */
static inline int frnn_share_passes_l2(double bytes, frnn_split split, double fraction) {
    const long l2 = frnn_l2_cache_bytes();
    const double share = split.by_rows || split.threads < 2 ? bytes : bytes / split.threads;
    return l2 > 0 && share > fraction * (double)l2;
}
/* Bytes of W and U (or W^T and U^T) packed: gates * units * (features + units) elements. */
static inline double frnn_packed_weights_bytes(ptrdiff_t gates, ptrdiff_t units,
                                               ptrdiff_t features, size_t real_size) {
    return (double)gates * (double)units * (double)(features + units) * (double)real_size;
}
/* On an Intel CPU, whether a thread's share of W and U packed together
 * (frnn_packed_weights_bytes) under `split` is more than `fraction` of its L2: each step
 * of a fused tile streams that share. */
static inline int frnn_fused_weights_pass_l2_intel(frnn_split split, ptrdiff_t features,
                                                   ptrdiff_t units, ptrdiff_t gates,
                                                   size_t real_size, double fraction) {
    return frnn_cpu_is_intel() &&
           frnn_share_passes_l2(frnn_packed_weights_bytes(gates, units, features, real_size),
                                split, fraction);
}
/* Whether a time loop's threads alternate their blocks' order (FRNN_BLOCKS_ZIGZAG): where
 * a thread's share of the `bytes` of packed weights a step streams passes half its L2.
 * Below that the weights stay in cache either way, and the odd steps' calls per chunk
 * only cost (SimpleRNN B=8, H=128: 0.93; LSTM B=32, H=128: 0.97).  Measured on the Intel
 * Xeon only: on the AMD Zens (0.5-1 MiB L2 per core) it applies from smaller weights. */
static inline int frnn_zigzag_blocks(double bytes, frnn_split split) {
    return frnn_share_passes_l2(bytes, split, 0.5);
}

/* Whether a forward adds each step's input projection x_t W in its recurrent tiles (over
 * W and U packed together) instead of one BLAS GEMM over many steps beforehand.  Fused,
 * inference keeps one step's pre-activations in cache instead of a chunk of steps in
 * memory, and avoids BLAS' weak small-K case (OpenBLAS: 35 GFLOP/s at K=64 vs 86 at K=256
 * on one core here); but the input's work moves onto the sequential path, which few rows
 * cannot keep busy.  Training writes its pre-activation cache either way, so it gains less.
 * Measured, 2 threads, T=100, I = H/2, median speedup fused over GEMM:
 *   LSTM inference: B=1-4 0.82-0.97; B=8 1.09-1.14 at I=64 (T=1000: 1.17-1.43), 0.97-1.02
 *     at I=128, 0.89-1.00 at I=256; B=16 1.03-1.23; B=32 1.16-1.45 (wide inputs too:
 *     I=512, H=256 1.25; I=1024, H=128 1.28); B=128 1.05-1.67.
 *     LSTM training: I=64-128 1.01-1.09 at B=32-128 (B=8, I=64: 1.00, T=1000: 1.05);
 *     I=256 0.97-0.98 on the AMD Zen 3 these numbers come from, but 1.02-1.07 at B=32
 *     (I=512, H=256: 1.04) and 0.99-1.06 at B=128 on a Zen 4 (1 MiB L2 per core), so
 *     training fuses whatever the input width, like inference (which then computes the
 *     same sums in the same order).
 *   On the Zen 4, B=8 with 512 units (inference split the units there, see
 *     frnn_row_split_min_rows): inference 1.07-1.12 at I=128-512; training 1.00-1.03;
 *     but B=8, H=256: 0.96-1.07; B=4, H=512: 1.02; B=1-2: 0.91-0.94.
 *   SimpleRNN inference: B=1 0.83-0.96; B=8 0.94-1.00; B=32 1.04-1.09 (I=1024, H=128:
 *     1.07); B=128 1.03-1.25.
 *     SimpleRNN training, with the tiles storing into the cold state cache: 0.98-1.06.
 *     With one step's z kept in cache and h_t copied to the state cache from there
 *     (Zen 4): B=8-32 0.94-1.01, B=64-128 1.04-1.06 (B=128, H=512: 1.06-1.23), so
 *     training fused from 64 rows.  On the Zen 3 (2026-12-03, A/B in one process, four
 *     runs of 15 rounds) fusing from 32 rows instead: B=32 H=128 1.03-1.07, H=256
 *     1.03-1.05, H=512 0.99-1.03; B=40-48 1.03-1.13; but B=16 0.95-0.98 (B=24 untouched
 *     measured 0.96 and 1.03: the noise).  So training fuses from 32 rows.
 *   GRU does not fuse: a fused tile (3 rows x z, r, input and recurrent parts of h, the
 *     latter apart for r) measured 0.66-0.97 at B=1-32 and 1.01-1.13 only at B=128; its
 *     inference projects in its loop on separate tiles instead (frnn_gru_projects_in_loop).
 *   Back on the Zen 4 with the 512-bit tiles (2026-12-02), LSTM, I = H/2 unless given:
 *     from 4 rows with 256-512 units fusing gains: inference B=4 1.04-1.11 (I=512: 0.99-1.04),
 *     B=6 1.09, B=8 H=256 1.03-1.07 (I=256: 1.04), training 1.02-1.07; with 128 units
 *     B=4-8 0.96-1.00; B=2 0.97.  But it streams W with U every step, and where the two
 *     packed exceed 8 MiB it loses below 32 rows: H=1024 (24 MiB) B=4 0.64, B=8 0.82
 *     (training 0.84), B=16 0.95, B=32 1.00; H=768 (13.5 MiB) B=4 1.01, B=8 0.94, B=16
 *     1.02.  Hence from 4 rows with 256 units or more, from 8 with 64 inputs or fewer,
 *     from 16 otherwise, all below 32 rows only while W and U packed fit in 8 MiB.
 *     SimpleRNN inference there: B=16 1.01-1.08 (1.06-1.07 at 256-512 units), B=8
 *     1.00-1.03, B=4 (H=512) 1.03: it fuses from 16 rows.
 *   On an Intel Xeon with AMX (2 MiB L2 per core, 2026-12-02), fused over unfused, LSTM
 *     float32, I = H/2 unless given: H=512 B=1 0.40, B=4 0.56, B=8 0.75 (training 0.85),
 *     B=16 0.85 (0.92), B=32 0.94-0.95 (I=512: 0.91; training 0.95-0.97), B=48 0.98, B=64
 *     1.00-1.01 (I=256-512), B=128 1.05; H=384 B=8-16 0.97-0.99, B=32 1.01, B=128 1.05;
 *     H=256 B=32-128 1.07-1.08, but I=512 B=16 0.78.  A step of B=4-8 at 512 units took the
 *     time of streaming the thread's share of the weights at 26-38 GB/s: fused, W with U (3
 *     MiB a thread), unfused U alone (2 MiB); the Xeon's L3 streams slower per core than
 *     the Zen 4's, where fusing those gained.  So on an Intel CPU, below 64 rows the LSTM
 *     fuses only while its thread's share of W and U packed fits the L2
 *     (frnn_fused_weights_pass_l2_intel).  SimpleRNN there: H=512 (W and U 1.5 MiB) B=16
 *     0.95, B=32 0.94-0.95, B=64 (I=512) 0.89, B=128 0.97-0.99, training B=64-128
 *     0.98-0.99; H=384 and H=256 with I=512 1.00-1.01; H=256 B=32-128 1.05-1.06, H=128
 *     B=128 1.10: on an Intel CPU it fuses only while that share fits half of the L2. */
#define FRNN_LSTM_FUSE_MAX_PACKED_BYTES ((double)(8 << 20))
static inline int frnn_lstm_fuses_input(ptrdiff_t batch, frnn_split split,
                                        ptrdiff_t features, ptrdiff_t units,
                                        size_t real_size) {
    int forced = frnn_override_fuse_input();
    if (forced >= 0) return forced;
    if (batch < 64 &&
        frnn_fused_weights_pass_l2_intel(split, features, units, 4, real_size, 1.0))
        return 0;
    const double packed_bytes = frnn_packed_weights_bytes(4, units, features, real_size);
    if (batch >= 32) return 1;
    if (packed_bytes > FRNN_LSTM_FUSE_MAX_PACKED_BYTES) return 0;
    return batch >= 16 || (batch >= 8 && features <= 64) || (batch >= 4 && units >= 256);
}
static inline int frnn_rnn_fuses_input(ptrdiff_t batch, frnn_split split,
                                       ptrdiff_t features, ptrdiff_t units, size_t real_size,
                                       int training) {
    int forced = frnn_override_fuse_input();
    if (forced >= 0) return forced;
    if (frnn_fused_weights_pass_l2_intel(split, features, units, 1, real_size, 0.5))
        return 0;
    return batch >= (training ? 32 : 16);
}
/* Whether GRU inference (reset_after, no recurrent dropout) projects each step's input in
 * its time loop, x_t W + b on W packed once (input_matmul_t, one call per gate block) into
 * one step's buffer, instead of one BLAS GEMM over a chunk of steps beforehand: that
 * chunk of pre-activations (up to 16 MiB) goes to memory and comes back for the pointwise
 * pass, and BLAS runs the small K of narrow inputs slowly.  It cannot share U's tiles as
 * the LSTM's input does (r scales only h U of the h block: see frnn_lstm_fuses_input), so
 * each step streams the packed W besides U: it pays where many rows reuse W from cache.
 * Only where each thread owns its rows (split by rows, or one thread).
 * Measured on an AMD Zen 3 (512 KiB L2 per core, 2026-12-03; A/B in one process, 2
 * threads split by rows, T=100, I = H/2 unless given; three runs of 15-21 rounds),
 * in-loop over GEMM:
 *   H=128 (W and U packed: 288 KiB): B=128 1.08-1.13 (I=256: 1.02-1.08), B=64 1.06-1.13,
 *     B=48 1.10, B=32 1.03-1.04, B=8-16 0.97-1.01;
 *   H=256 (1.1 MiB): B=128 1.05-1.07, B=64 1.00-1.01, B=32 0.99-1.00; with I=256 (1.5
 *     MiB) B=128 0.98-1.02;
 *   H=384 (2.6 MiB) B=64-128 0.97-0.98; H=512 (4.5 MiB) B=32-128 0.91-0.99.
 * So from 24 rows per thread while W and U packed take less than three L2s.
 * Training projects with the GEMM: projecting in its loop too (from x_cache, gathered
 * first, into gates) measured, same Zen 3 (2026-12-03, three runs of 11-25 rounds), training
 * step B=48-128 H=128 0.96-1.05, H=256 0.96-1.01, H=192 1.00-1.04; its forward alone
 * H=128 1.04-1.08, H=256 0.99-1.00: within the noise for the step, so not kept. */
#define FRNN_GRU_PROJECT_IN_LOOP_MIN_ROWS 24
static inline int frnn_gru_projects_in_loop(ptrdiff_t rows_per_thread, ptrdiff_t features,
                                            ptrdiff_t units, size_t real_size) {
    int forced = frnn_override_fuse_input();
    if (forced >= 0) return forced;
    const long l2 = frnn_l2_cache_bytes();
    const double packed_bytes = frnn_packed_weights_bytes(3, units, features, real_size);
    return rows_per_thread >= FRNN_GRU_PROJECT_IN_LOOP_MIN_ROWS && l2 > 0 &&
           packed_bytes < 3.0 * (double)l2;
}

/* Whether a backward computes each step's input gradient dz_t W^T in its time loop (the
 * transposed tiles over W^T packed once, while dz_t is still in cache, written straight
 * to dx) instead of one BLAS GEMM over all steps after the loop (which packs dZ again).
 * Same override as the forward's input fusion (fuse_input).  Measured on the Zen 4,
 * backward, 2 threads, T=100, in-loop over GEMM (in-process A/B):
 *   64-128 rows: LSTM 1.02-1.08, GRU 1.03-1.06, SimpleRNN 1.03-1.06;
 *   32 rows: LSTM 0.99-1.01, GRU 1.00-1.09, SimpleRNN 1.01-1.04;
 *   16 rows: GRU 0.98, SimpleRNN 0.97; 8 rows: LSTM 0.97-1.03; 1 row: LSTM 0.92.
 * So from 16 rows per thread.  But the in-loop product streams W^T with U^T every step,
 * and on the Intel Xeon (see frnn_lstm_fuses_input) it lost where their thread's share
 * passes the L2: GEMM over in-loop, training step, I = H/2: LSTM H=512 B=32-128
 * 1.01-1.03, GRU H=512 B=32-128 1.01-1.03 (H=256 B=32 1.00, LSTM H=384 B=128 0.99); so
 * there it stays out of the loop.  On the AMD Zen 3 (512 KiB L2 per core, 2026-12-03, A/B
 * in one process, T=100, I = H/2) the GEMM also won where that share passes six L2s
 * (3 MiB; the Zen 4's 6 MiB keeps its grid as measured above), below 64 rows per thread:
 * training step LSTM H=512 B=32 1.04-1.05 (three runs), B=64 1.02, H=384 B=32-48
 * 1.02-1.03; GRU H=512 B=32 1.04-1.06 (three runs), B=64 1.06; backward alone LSTM H=512
 * B=32-64 1.01-1.09, GRU 1.03-1.06.  At 128 rows it measured 0.96-1.05 (the in-loop
 * product reuses each streamed block over more rows), and under 3 MiB it kept the loop
 * (GRU H=384 0.99, H=256 0.97-1.00 for the GEMM). */
#define FRNN_INPUT_GRADIENT_MAX_L2S 6.0
static inline int frnn_fuses_input_gradient(ptrdiff_t batch, int threads, frnn_split split,
                                            ptrdiff_t features, ptrdiff_t units,
                                            ptrdiff_t gates, size_t real_size) {
    int forced = frnn_override_fuse_input();
    if (forced >= 0) return forced;
    if (frnn_fused_weights_pass_l2_intel(split, features, units, gates, real_size, 1.0))
        return 0;
    if (batch < 64 * (ptrdiff_t)threads &&
        frnn_share_passes_l2(frnn_packed_weights_bytes(gates, units, features, real_size),
                             split, FRNN_INPUT_GRADIENT_MAX_L2S))
        return 0;
    return batch >= 16 * (ptrdiff_t)threads;
}

/* Row stride for a scratch matrix of `cols` columns whose rows a tile reads side by side
 * (the backward's dZ: 6 rows broadcast in one loop).  A stride that is a multiple
 * of 2 KiB puts those rows in a few L1 sets (4 KiB apart map to the same one of an 8-way
 * cache), so they evict each other; one cache line more spreads them.  Found with 12-row
 * tiles (an AVX-512VL experiment, see recurrent_matmul.h), where the LSTM backward at
 * B=32, T=100 took 134 ms at H=512 (dZ rows 8 KiB apart) against 111 ms at H=496 (3%
 * fewer FLOPs), and 118 ms with this stride.  With the 6-row AVX2 tiles it matters less
 * (Zen 4, median of 5 runs of 6 calls): LSTM backward B=32, H=256 34.9 -> 33.0 ms; H=512
 * and SimpleRNN H=512 within the noise (fastest runs 112.0 -> 108.4 and 30.3 -> 29.5 ms). */
static inline ptrdiff_t frnn_spread_stride(ptrdiff_t cols, size_t elem_size) {
    const size_t bytes = (size_t)cols * elem_size;
    return bytes % 2048 == 0 ? cols + (ptrdiff_t)(64 / elem_size) : cols;
}

/* Start of band `band` of nt fixed bands over len rows or columns (band nt: len).  Bands
 * start on multiples of 16 elements so column bands stay cache-line aligned; a band may be
 * empty.  nt fixed bands whatever team the runtime grants (it may grant fewer threads when
 * several Python threads run kernels at once): results never depend on timing. */
static inline ptrdiff_t frnn_band_start(ptrdiff_t len, int band, int nt) {
    return band >= nt ? len : (len * band / nt) & ~(ptrdiff_t)15;
}

/* Multiply-adds below which a GEMM outside the time loop stays on one thread (~5 us). */
#define FRNN_GEMM_SPLIT_MIN_MACS ((ptrdiff_t)1 << 18)
/* A weight gradient splits its sum over k between the threads (weight_gradient_split_k)
 * when k is at least this many times C's longer side, else C's columns or rows.  With
 * the AVX2 tiles, which also take the bias gradient while packing B, split by k the whole
 * way down from 4 (BLAS' ratio) to 1 measured 1.01-1.08x faster backward (Zen 4, 2
 * threads: LSTM B=8 H=128 and 512, B=32 H=256 and 512, GRU B=8 H=256, SimpleRNN B=8
 * H=512). */
#define FRNN_GEMM_SPLIT_K_RATIO 1

/* Batch rows per thread below which a time loop is not split by rows, and per-step
 * multiply-adds below which it is not split by rows (a parallel region costs a few us). */
#define FRNN_ROW_SPLIT_MIN_ROWS 2
#define FRNN_ROW_SPLIT_MIN_MACS ((ptrdiff_t)1 << 16)

/* Rows per thread a time loop needs to split by rows.  Split by rows, every thread streams
 * all of U each step; split by units, half of it, at the price of a barrier per step; so
 * the row count grows with U's size (gates * units^2 elements).  Measured on an AMD Zen 4
 * (1 MiB L2 per core), 2 threads, T=100, I = H/2, time split by rows over split by units:
 *   B=4, H=256 and 512: LSTM forward 1.01-1.11, training 1.09-1.11; GRU forward
 *     1.16-1.32, training 1.12-1.15; SimpleRNN forward 1.07-1.27, training 1.03-1.06;
 *   B=4, H=128: LSTM forward 0.94-1.00 (rows stay);
 *   B=8: LSTM forward H=512 1.06-1.20 (three runs) but training 0.95, H=256 0.95-1.10,
 *     H=128 0.94-0.95; GRU and SimpleRNN forward 0.81-0.97; B=16 LSTM forward 0.81-1.05.
 * So from 256 units rows need 4 per thread.  On the Intel Xeon (2 MiB L2 per core, and
 * 512-bit tiles that wait on memory sooner), time split by units over split by rows
 * (> 1: rows faster; inference, training forward, backward), float32:
 *   U of 1 MiB or less: LSTM H=256 B=8-32 1.01-1.18; SimpleRNN H=512 B=8-32 1.08-1.22,
 *     H=256 B=4 0.94-1.01; every cell at H=128 from B=4 0.98-1.96;
 *   U of 1-2 MiB (GRU H=384): B=8 0.81-0.95, B=16 0.99-1.07;
 *   U over 2 MiB: LSTM H=512 B=8 0.52-0.71, B=16 0.78-0.89, B=32 0.86-0.94, B=64
 *     0.95-1.02, B=128 1.01-1.04; LSTM H=384 B=32 0.91-0.97, B=64 0.98-1.03; GRU H=512
 *     B=8 0.63-0.74, B=32 0.94-0.98, B=64 1.01-1.04.
 * Half of a U over 2 MiB still fits a core's L2 with room, all of it does not.  Back on an
 * AMD Zen 3 (512 KiB L2 per core, AVX2 tiles; 2026-12-02) the same A/B, units over rows:
 * LSTM H=512 B=8-16 0.93-0.98, B=32 1.00-1.01, B=64 1.08-1.09; LSTM H=256 B=8-16
 * 0.85-1.00; LSTM H=128 B=8 0.94-1.00; GRU H=512 B=8-32 1.00-1.04, H=256 B=8 1.03-1.04;
 * SimpleRNN H=512 B=8 1.17-1.21, B=4 0.76: the rule's choice within 7% of the faster split
 * (one noisy 15%), so it stays.  Float64 counts its bytes the same way; on the Zen 3 it
 * picked the faster split at 9 of 15 points (LSTM H=128-512, GRU H=256, SimpleRNN
 * H=256-512, B=8-64) and lost 1-12% at five others, 27% once (GRU H=256 B=8, rounds
 * 0.89-1.57).  Back on the Zen 4 with the 512-bit tiles (2026-12-02), U over 2 MiB, rows
 * over units (> 1: rows faster): LSTM H=512 B=8 forward 0.91, training 1.00; B=16
 * 1.00-1.02; B=24 forward 0.995 (twice), training 1.11-1.13; B=32 forward 1.02-1.15,
 * training 1.00-1.04; LSTM H=384 B=32 1.03-1.06 forward, 1.05-1.15 training; GRU H=512
 * B=8 0.96-0.98, B=16 1.00-1.03, B=32 1.01-1.21.  There half of U is larger than a
 * core's L2 (1 MiB), so splitting by units does not keep it there; on the Xeon it did
 * (2 MiB).  So where half of U exceeds the L2, rows from 12 per thread. */
#define FRNN_ROW_SPLIT_MIN_ROWS_PAST_L2 12
static inline ptrdiff_t frnn_row_split_min_rows(ptrdiff_t units, ptrdiff_t gates,
                                                size_t real_size) {
    const double u_bytes = (double)gates * (double)units * (double)units * (double)real_size;
    if (u_bytes > (double)(2 << 20)) {
        const long l2 = frnn_l2_cache_bytes();
        return l2 > 0 && u_bytes / 2 > (double)l2 ? FRNN_ROW_SPLIT_MIN_ROWS_PAST_L2 : 32;
    }
    if (u_bytes > (double)(1 << 20)) return 8;
    return units >= 256 ? 4 : FRNN_ROW_SPLIT_MIN_ROWS;
}

/* Runs `call` over a thread's unit blocks [jb0, jb1) with zb0, zb1 bound to the range it
 * covers: the whole range on even steps, chunks of FRNN_ZIGZAG_CHUNK blocks from the top
 * down on odd ones.  A time loop streams the same packed weights every step; where they
 * are a little larger than the cache, the same order every step evicts each block just
 * before it is needed again, while alternating orders starts each step on the blocks the
 * last one left in cache.  Blocks are independent, so the results do not change.  Chunks
 * of two keep the transposed tiles' pairs of blocks.  Measured on the Intel Xeon (2 MiB L2
 * per core; A/B in one process, 2 threads, T=100, I = H/2) against always ascending: LSTM
 * forward H=512 B=1 1.25-1.31, B=8 1.05-1.07 (one run 0.97), B=32 1.02-1.03, H=1024 B=1
 * 1.19; LSTM training H=512 B=1 1.11, B=8 1.01; SimpleRNN forward H=1024 B=1 1.23; where
 * the weights fit the L2s (GRU H=512, a thread's share 1.5 MiB; LSTM H=256)
 * 0.97-1.01. */
#define FRNN_ZIGZAG_CHUNK 2
#define FRNN_BLOCKS_ZIGZAG(step, jb0, jb1, call)                                          \
    do {                                                                                \
        if ((step) & 1) {                                                               \
            for (ptrdiff_t zb1 = (jb1); zb1 > (jb0); zb1 -= FRNN_ZIGZAG_CHUNK) {         \
                const ptrdiff_t zb0 =                                                   \
                    zb1 - FRNN_ZIGZAG_CHUNK > (jb0) ? zb1 - FRNN_ZIGZAG_CHUNK : (jb0);   \
                call;                                                                   \
            }                                                                           \
        } else {                                                                        \
            const ptrdiff_t zb0 = (jb0), zb1 = (jb1);                                   \
            call;                                                                       \
        }                                                                               \
    } while (0)


/* The split of a time loop of `batch` rows, nb unit blocks and `macs` multiply-adds per
 * step: by rows from min_rows rows per thread (frnn_row_split_min_rows), else by units
 * from unit_min_macs per step (FRNN_PARALLEL_MIN_MACS; FRNN_GATE_SPLIT_MIN_MACS for loops
 * that meet more than once per step), else one thread. */
static inline frnn_split frnn_pick_split(ptrdiff_t batch, ptrdiff_t nb, ptrdiff_t macs,
                                         ptrdiff_t min_rows, ptrdiff_t unit_min_macs) {
    frnn_split s = {frnn_get_num_threads(), 1};
    const int forced_by = frnn_override_split_by();
    const long long forced_min = frnn_override_split_min_macs();
    s.by_rows = forced_by >= 0 ? forced_by : batch >= 2 * min_rows;
    const ptrdiff_t most = s.by_rows ? batch / (forced_by == 1 ? 1 : min_rows) : nb;
    if (s.threads > most) s.threads = (int)most;
    const long long min_macs = forced_min >= 0 ? forced_min
                               : s.by_rows ? FRNN_ROW_SPLIT_MIN_MACS : unit_min_macs;
    if (macs < min_macs || s.threads < 1) s.threads = 1;
    return s;
}

/* The share of thread tid (of team) under split s: rows [b0, b1) and unit blocks
 * [jb0, jb1) of nb. */
typedef struct {
    ptrdiff_t b0, b1, jb0, jb1;
} frnn_share;

static inline frnn_share frnn_thread_share(frnn_split s, ptrdiff_t batch, ptrdiff_t nb, int tid,
                                           int team) {
    frnn_share p = {0, batch, 0, nb};
    if (s.by_rows) {
        p.b0 = batch * tid / team;
        p.b1 = batch * (tid + 1) / team;
    } else {
        p.jb0 = nb * tid / team;
        p.jb1 = nb * (tid + 1) / team;
    }
    return p;
}

/* Whether a backward pass must compute d_h0: not without h0 (nobody reads it) nor when
 * the caller said so (d->no_initial_gradient); skipping it spares a single step a pass over
 * weight_hh. */
static inline int frnn_initial_gradient(const frnn_dims *d, const void *h0) {
    return h0 != NULL && !d->no_initial_gradient;
}

/* The calling thread's part of a time loop split by s over d's batch and nb unit blocks of
 * `width` units: rows [b0, b1), blocks [jb0, jb1), their units [j0, j1), and `rows`, d with
 * the batch cut to the thread's rows (every (B, .) array is then offset by b0). */
typedef struct {
    ptrdiff_t b0, b1, jb0, jb1, j0, j1;
    frnn_dims rows;
} frnn_part;

static inline frnn_part frnn_thread_part(const frnn_dims *d, frnn_split s, ptrdiff_t nb,
                                         ptrdiff_t width) {
    const frnn_share share =
        frnn_thread_share(s, d->batch, nb, frnn_thread_id(), frnn_team_size());
    frnn_part p = {share.b0, share.b1, share.jb0, share.jb1, share.jb0 * width,
                   share.jb1 * width < d->units ? share.jb1 * width : d->units, *d};
    p.rows.batch = share.b1 - share.b0;
    return p;
}

#endif
