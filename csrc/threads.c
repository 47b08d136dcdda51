/* Process-wide thread count for the kernels' own parallel loops (BLAS threads are set by
 * the Python layer through threadpoolctl). */
#include "internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* 0 = one per core (the default); see frnn_pick_split for when a time loop uses them. */
static _Atomic int frnn_requested_threads = 0;

void frnn_set_num_threads(int n) { frnn_requested_threads = n > 0 ? n : 0; }

int frnn_get_num_threads(void) {
#ifdef _OPENMP
    int n = frnn_requested_threads;
    return n > 0 ? n : omp_get_num_procs();
#else
    return 1;
#endif
}

int frnn_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

static _Atomic int frnn_simd_choice = -1, frnn_blas_steps_choice = -1, frnn_split_by_choice = -1,
                   frnn_fuse_input_choice = -1, frnn_direct_step_choice = -1;
static _Atomic long long frnn_split_min_choice = -1;

void frnn_set_path_overrides(int simd, int blas_steps, long long split_min_macs, int split_by,
                             int fuse_input, int direct_step) {
    frnn_direct_step_choice = direct_step < 0 ? -1 : direct_step != 0;
    frnn_fuse_input_choice = fuse_input < 0 ? -1 : fuse_input != 0;
    frnn_split_by_choice = split_by < 0 ? -1 : split_by != 0;
    frnn_simd_choice = simd < 0 ? -1 : simd > 2 ? 2 : simd;
    frnn_blas_steps_choice = blas_steps < 0 ? -1 : blas_steps != 0;
    frnn_split_min_choice = split_min_macs < 0 ? -1 : split_min_macs;
}
int frnn_override_simd(void) { return frnn_simd_choice; }
int frnn_override_fuse_input(void) { return frnn_fuse_input_choice; }
int frnn_override_direct_step(void) { return frnn_direct_step_choice; }
int frnn_override_split_by(void) { return frnn_split_by_choice; }
int frnn_override_blas_steps(void) { return frnn_blas_steps_choice; }
int frnn_one_step_from_rows(ptrdiff_t batch) { return frnn_direct_step(batch, 1); }
long long frnn_override_split_min_macs(void) { return frnn_split_min_choice; }

static _Atomic int frnn_barrier_spin_count = FRNN_BARRIER_SPINS;
int frnn_set_barrier_spins(int n) {
    const int previous = frnn_barrier_spin_count;
    frnn_barrier_spin_count = n < 0 ? FRNN_BARRIER_SPINS : n;
    return previous;
}
int frnn_barrier_spins(void) { return frnn_barrier_spin_count; }

static _Atomic int frnn_team_stop_choice = -1;
int frnn_set_team_stop_rule(int n) {
    const int previous = frnn_team_stop_choice;
    frnn_team_stop_choice = n < -1 ? -1 : n;
    return previous;
}
int frnn_team_stop_rule(void) { return frnn_team_stop_choice; }
static _Atomic long long frnn_team_stop_count = 0;
long long frnn_team_stops_so_far(void) { return frnn_team_stop_count; }
void frnn_count_team_stop(void) { ++frnn_team_stop_count; }

/* The CPUID features the kernels dispatch on, probed once: bit 0 AVX2 and FMA, bit 1
 * also AVX-512F and VL, bit 2 an Intel CPU (its L3 streams slower per core: see
 * frnn_lstm_fuses_input). */
static int frnn_cpu_features(void) {
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(FRNN_NO_SIMD)
    static _Atomic int cached = -1;
    int features = cached;
    if (features < 0) {
        __builtin_cpu_init();
        const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        const int avx512vl =
            avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
        features = avx2 | avx512vl << 1 | (__builtin_cpu_is("intel") ? 4 : 0);
        cached = features;
    }
    return features;
#else
    return 0;
#endif
}

int frnn_cpu_has_avx2_fma(void) { return frnn_cpu_features() & 1; }
int frnn_cpu_has_avx512vl(void) { return frnn_cpu_features() >> 1 & 1; }
int frnn_cpu_is_intel(void) { return frnn_cpu_features() >> 2 & 1; }

long frnn_l2_cache_bytes(void) {
    static _Atomic long cached = -1;
    long bytes = cached;
    if (bytes < 0) {
#if defined(_SC_LEVEL2_CACHE_SIZE)
        bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
        if (bytes < 0) bytes = 0;
        cached = bytes;
    }
    return bytes;
}
