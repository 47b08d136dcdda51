/* fusedrnn: fused CPU kernels for recurrent layers (public C API).
 *
 * Conventions shared by every kernel in this header:
 *  - Row-major arrays.  B = batch, T = steps, I = input features, H = units,
 *    G = gates per cell (LSTM 4, GRU 3, SimpleRNN 1).
 *  - Weights are in Keras' get_weights() layout: kernel (I, G*H), recurrent kernel
 *    (H, G*H), gate blocks side by side along the last axis; forward passes also take
 *    torch.nn's (frnn_dims.weight_rows).
 *  - Inputs x and the per-step outputs are addressed through explicit strides (in
 *    elements) for the batch and time axes; the feature axis must be contiguous.  This
 *    lets the caller pass (B,T,F) batch-major or (T,B,F) time-major views without copies.
 *  - Everything saved for backward ("cache" buffers) is indexed in *processing order*:
 *    step t of the cache is the t-th step the cell consumed, which is input step
 *    s = T-1-t when go_backwards is set.  Outputs are also written in processing order,
 *    as Keras does for go_backwards.
 *  - Kernels never take the GIL, never call back into Python, and return a status code.
 *    BLAS comes from the caller through frnn_blas (scipy's Fortran BLAS in practice), so
 *    nothing is linked at build time.
 */
#ifndef FUSEDRNN_H
#define FUSEDRNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    FRNN_OK = 0,
    FRNN_ENOMEM = 1,     /* an allocation failed */
    FRNN_EINVAL = 2,     /* a dimension or argument is out of range */
    FRNN_EOVERFLOW = 3   /* a dimension does not fit BLAS' 32-bit integers */
} frnn_status;

/* Fortran BLAS ?gemm, exactly scipy.linalg.cython_blas' signature (column-major). */
typedef void (*frnn_sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                              float *alpha, float *a, int *lda, float *b, int *ldb,
                              float *beta, float *c, int *ldc);
typedef void (*frnn_dgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                              double *alpha, double *a, int *lda, double *b, int *ldb,
                              double *beta, double *c, int *ldc);

typedef struct {
    frnn_sgemm_fn sgemm;
    frnn_dgemm_fn dgemm;
} frnn_blas;

/* Element-wise activations.  The value stored is the activated output y; every
 * derivative is computed from y alone, so backward needs no pre-activations. */
typedef enum {
    FRNN_ACT_TANH = 0,
    FRNN_ACT_SIGMOID = 1,
    FRNN_ACT_RELU = 2,
    FRNN_ACT_LINEAR = 3,
    FRNN_ACT_HARD_SIGMOID = 4   /* Keras 3: relu6(x + 3) / 6 */
} frnn_activation;

/* Shapes and options of one layer, one direction. */
typedef struct {
    ptrdiff_t batch;        /* B >= 0 */
    ptrdiff_t steps;        /* T >= 0 */
    ptrdiff_t input_size;   /* I >= 1 */
    ptrdiff_t units;        /* H >= 1 */
    int go_backwards;       /* consume input steps T-1 .. 0 */
    int zero_output_for_mask; /* masked steps output zeros instead of the carried h */
    frnn_activation activation;           /* candidate / cell activation (tanh) */
    frnn_activation recurrent_activation; /* gate activation (sigmoid) */
    /* 0: kernel and recurrent in Keras' layout (above).  1: torch.nn's layout, weight_ih
     * (G*H, I) and weight_hh (G*H, H) contiguous, gate blocks stacked along the rows in
     * torch's order (LSTM i, f, g, o; GRU r, z, n; SimpleRNN one block), and the bias
     * likewise in torch's gate order: LSTM and SimpleRNN (G*H,) = bias_ih + bias_hh; GRU
     * reset_after=1 (2, 3H) = [bias_ih; bias_hh], reset_after=0 (3H,).  Backward passes
     * then take the same weights and write d_kernel, d_recurrent and d_bias in that
     * layout too.  A single step (T = 1) is computed straight from the rows, forward and
     * backward (csrc/direct_step.h).  Longer inputs: the loops pack and multiply the rows
     * themselves in both passes (no transposes; the GRU gate block by gate block), except
     * the GRU's with BLAS products per step (no AVX2, many rows), which convert the
     * weights to Keras' layout once per call, and the gradients back. */
    int weight_rows;
    /* Backward passes only.  0: d_h0 (and the LSTM's d_c0) computed.  1: the caller does
     * not want them and their contents are unspecified, which spares a single step (T = 1,
     * torch's layout) its product with weight_hh, as when h0 is NULL. */
    int no_initial_gradient;
} frnn_dims;

/* Strided view of a (B, T, F) sequence array: element (b, s, f) is at
 * data[b * stride_b + s * stride_t + f]. */
typedef struct {
    ptrdiff_t stride_b;
    ptrdiff_t stride_t;
} frnn_seq_strides;

/* Threads used by the kernels' fused time loops (0 = one per core; without OpenMP always
 * 1).  Small problems run on one thread whatever this says: a barrier per step costs more
 * than they gain. */
void frnn_set_num_threads(int n);
int frnn_get_num_threads(void);

/* Overrides of the kernels' automatic path choices, for tests and benchmarks (-1 = auto):
 *   simd: 0 runs the generic C tiles even on an AVX2 CPU, 1 the AVX2 tiles only, 2 (as
 *     automatic) also the AVX-512VL ones where the CPU has them;
 *   blas_steps: 1 computes each step's recurrent product with a BLAS GEMM, 0 with the tiles;
 *   split_min_macs: per-step multiply-adds from which a time loop is split over the threads;
 *   split_by: 1 splits time loops by batch rows, 0 by units;
 *   fuse_input: 1 adds each step's input projection x_t W in the recurrent tiles (LSTM
 *     and SimpleRNN forward) and computes each step's input gradient dz_t W^T in the
 *     backward's time loop (every cell), 0 computes them for many steps at once with BLAS
 *     GEMMs.
 *   direct_step: 1 computes a single step (T = 1, no recurrent dropout) straight from
 *     the weights (csrc/direct_step.h), 0 with the loops' packed tiles.
 *   Process-wide, like the thread count. */
void frnn_set_path_overrides(int simd, int blas_steps, long long split_min_macs, int split_by,
                             int fuse_input, int direct_step);
int frnn_override_fuse_input(void);
int frnn_override_direct_step(void);
int frnn_override_split_by(void);
int frnn_override_simd(void);
int frnn_override_blas_steps(void);
long long frnn_override_split_min_macs(void);
/* 1 when a single step (T = 1) of `batch` rows on torch's rows (frnn_dims.weight_rows)
 * runs forward and backward straight from them (csrc/direct_step.h), 0 when it runs the
 * loops' packed tiles (which read torch's rows too). */
int frnn_one_step_from_rows(ptrdiff_t batch);
/* PAUSEs a thread spins at a time loop's per-step meeting before it sleeps on a futex
 * (csrc/internal.h's frnn_step_barrier; default FRNN_BARRIER_SPINS).  Tests set 0 to make
 * every wait sleep.  Returns the previous count; n < 0 restores the default. */
int frnn_set_barrier_spins(int n);
int frnn_barrier_spins(void);
/* When a time loop split by units stops meeting and goes on on one thread (csrc/internal.h's
 * frnn_step_barrier): -1 (the default) after FRNN_LATE_MEETINGS meetings at which a thread
 * slept longer than it had worked (other programs keep descheduling its partner), 0 never,
 * n > 0 after the n-th step's meeting whatever the waits (tests).  Returns the previous rule;
 * n < -1 is taken as -1. */
int frnn_set_team_stop_rule(int n);
int frnn_team_stop_rule(void);
/* How many teams have stopped so far in this process (all rules), and one more. */
long long frnn_team_stops_so_far(void);
void frnn_count_team_stop(void);
/* The buffer pool (csrc/pool.c).  frnn_alloc: count*size bytes (a valid pointer for
 * zero), 64-byte aligned, uninitialised, or NULL when out of memory or on overflow; from
 * the pool's kept blocks when one fits.  frnn_free: gives back a pointer from frnn_alloc
 * (NULL is ignored); blocks of FRNN_POOL_MIN_BYTES and more are kept for reuse while the
 * pool retains at most its limit.  frnn_set_pool_limit: the most bytes the pool keeps
 * (0: none; lowering it releases the excess at once).  Thread-safe. */
#define FRNN_POOL_MIN_BYTES ((size_t)256 << 10)
void *frnn_alloc(size_t count, size_t size);
void frnn_free(void *ptr);
void frnn_set_pool_limit(size_t bytes);
size_t frnn_pool_limit(void);
size_t frnn_pool_retained(void);

/* 1 when this CPU runs the AVX2+FMA kernels (the build has them and CPUID reports both). */
int frnn_cpu_has_avx2_fma(void);
/* 1 when it also runs the 512-bit tiles (CPUID: AVX-512F and VL). */
int frnn_cpu_has_avx512vl(void);
/* 1 on an Intel CPU (CPUID's vendor). */
int frnn_cpu_is_intel(void);
/* Bytes of one core's L2 cache as the C library reports it (sysconf), or 0 if unknown. */
long frnn_l2_cache_bytes(void);

/* The floating-point peak as the kernels' SIMD path reaches it: `threads` threads each run
 * `iterations` rounds of independent multiply-adds on registers (float64 if use_f64).
 * *flops_per_second: the sum over the threads of each one's FLOPs over its own CPU time
 * (time descheduled does not count).  Returns FRNN_EINVAL for threads or iterations < 1,
 * a NULL output, or no thread CPU clock. */
int frnn_measure_peak(int threads, long long iterations, int use_f64,
                      double *flops_per_second);
int frnn_has_openmp(void);

/* C (m x n, row stride ldc) = A^T B, or C += A^T B with accumulate, over the k rows of A
 * (k x m, row stride lda) and B (k x n, row stride ldb), on the calling thread with the
 * AVX2 tiles of weight_gradient.c (the weight gradients' product); C must not overlap A
 * or B.  b_sums (n floats, or NULL): B's column sums (a bias gradient), likewise stored or
 * added.  FRNN_ENOMEM (nothing written) without its scratch; FRNN_EINVAL for m < 1, other
 * negative sizes, or where the AVX2 kernels are off (no AVX2, or the simd override):
 * callers use BLAS there. */
int frnn_weight_gradient_tiles_f32(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a,
                                   ptrdiff_t lda, const float *b, ptrdiff_t ldb, int accumulate,
                                   float *c, ptrdiff_t ldc, float *b_sums);

/* dst (cols x rows, row stride ldd) = src^T for src (rows x cols, row stride lds), in
 * cache-sized tiles, split over the kernel threads when large (fusedrnn.torch's weight
 * layouts).  dst must not overlap src.  FRNN_EINVAL for negative sizes, a NULL array or
 * a row stride shorter than its row; nothing to do for an empty matrix. */
int frnn_transpose_f32(ptrdiff_t rows, ptrdiff_t cols, const float *src, ptrdiff_t lds,
                       float *dst, ptrdiff_t ldd);
int frnn_transpose_f64(ptrdiff_t rows, ptrdiff_t cols, const double *src, ptrdiff_t lds,
                       double *dst, ptrdiff_t ldd);

/* table[ids[i], :dim] += rows[i, :dim] for i < n, in index order (the Embedding layer's
 * weight gradient; the same sums as NumPy's np.add.at).  rows: n x dim, row stride ld_rows;
 * table: table_rows x dim, row stride ld_table; they must not overlap.  FRNN_EINVAL, with
 * the table untouched, for an id outside [0, table_rows), negative sizes, a NULL array or
 * a row stride shorter than dim. */
int frnn_scatter_add_rows_f32(ptrdiff_t n, ptrdiff_t dim, const ptrdiff_t *ids, const float *rows,
                              ptrdiff_t ld_rows, float *table, ptrdiff_t table_rows,
                              ptrdiff_t ld_table);
int frnn_scatter_add_rows_f64(ptrdiff_t n, ptrdiff_t dim, const ptrdiff_t *ids,
                              const double *rows, ptrdiff_t ld_rows, double *table,
                              ptrdiff_t table_rows, ptrdiff_t ld_table);

/* In-place activation of n contiguous values, and dv[k] *= act'(y[k]). */
void frnn_activate_f32(frnn_activation act, float *v, ptrdiff_t n);
void frnn_activate_f64(frnn_activation act, double *v, ptrdiff_t n);
void frnn_activation_grad_f32(frnn_activation act, const float *y, float *dv, ptrdiff_t n);
void frnn_activation_grad_f64(frnn_activation act, const double *y, double *dv, ptrdiff_t n);

/* ---------------------------------------------------------------- LSTM ----------
 * Gate order i, f, c, o (Keras and torch agree).  Per step, with z = x W + h U + b:
 *   i = ra(z_i), f = ra(z_f), g = a(z_c), o = ra(z_o)
 *   c' = f*c + i*g,  h' = o*a(c')        (a = activation, ra = recurrent_activation)
 * A masked step (mask[b,s] == 0) keeps h and c; its output is the carried h, or zeros
 * when zero_output_for_mask is set.
 *
 * lstm_forward arguments:
 *   x         (B,T,I) via x_strides, read only.
 *   kernel    (I,4H) contiguous, read only.      recurrent (H,4H) contiguous, read only.
 *   bias      (4H,) or NULL.
 *   mask      (B,T) uint8 via mask_strides, nonzero = valid step; NULL = all valid.
 *   h0, c0    (B,H) contiguous or NULL (zeros).
 *   outputs   (B,T,H) via out_strides, written in processing order; may be NULL.
 *   h_n, c_n  (B,H) contiguous, written; must not alias h0/c0.
 *   rec_mask  (B,H) or NULL: recurrent dropout, multiplies h_{t-1} where it enters the
 *             recurrent GEMM (Keras 3's rule: one mask per sequence, every step).
 *   Training cache (all NULL for inference; all non-NULL for training), written:
 *   x_cache   (T,B,I): the input in processing order (time-major), for dW in backward.
 *   gates     (T,B,4H): activated gates i, f, g, o.
 *   c_states  (T,B,H): cell state after each step (carried through masked steps).
 *   h_states  (T,B,H): hidden state after each step (carried through masked steps).
 *   mask_cache (T,B) uint8 in processing order, written when mask != NULL.
 */
int frnn_lstm_forward_f32(const frnn_blas *blas, const frnn_dims *d,
                          const float *x, frnn_seq_strides x_strides,
                          const float *kernel, const float *recurrent, const float *bias,
                          const uint8_t *mask, frnn_seq_strides mask_strides,
                          const float *h0, const float *c0,
                          float *outputs, frnn_seq_strides out_strides,
                          float *h_n, float *c_n, const float *rec_mask,
                          float *x_cache, float *gates, float *c_states, float *h_states,
                          uint8_t *mask_cache);
int frnn_lstm_forward_f64(const frnn_blas *blas, const frnn_dims *d,
                          const double *x, frnn_seq_strides x_strides,
                          const double *kernel, const double *recurrent, const double *bias,
                          const uint8_t *mask, frnn_seq_strides mask_strides,
                          const double *h0, const double *c0,
                          double *outputs, frnn_seq_strides out_strides,
                          double *h_n, double *c_n, const double *rec_mask,
                          double *x_cache, double *gates, double *c_states, double *h_states,
                          uint8_t *mask_cache);

/* lstm_backward arguments (the cache is read only; it may be used again):
 *   kernel, recurrent  as in forward.      h0, c0: (B,H) or NULL, as in forward.
 *   x_cache, gates, c_states, h_states, mask_cache (NULL = no mask): forward's cache.
 *   rec_mask  (B,H) or NULL: the recurrent dropout mask forward used.
 *   d_outputs (B,T,H) via dout_strides in processing order, or NULL (zero).
 *   d_h_n, d_c_n (B,H) or NULL (zero).
 *   Gradients, all written (overwritten, not accumulated):
 *   dx (B,T,I) via dx_strides in input order, or NULL (not computed: one GEMM less);
 *   d_kernel (I,4H); d_recurrent (H,4H); d_bias (4H,) or NULL; d_h0, d_c0 (B,H).
 *   Without h0 (NULL) or with d->no_initial_gradient, d_h0's contents are unspecified.
 */
int frnn_lstm_backward_f32(const frnn_blas *blas, const frnn_dims *d,
                           const float *kernel, const float *recurrent,
                           const float *h0, const float *c0,
                           const float *x_cache, const float *gates, const float *c_states,
                           const float *h_states, const uint8_t *mask_cache,
                           const float *rec_mask, const float *d_outputs, frnn_seq_strides dout_strides,
                           const float *d_h_n, const float *d_c_n,
                           float *dx, frnn_seq_strides dx_strides,
                           float *d_kernel, float *d_recurrent, float *d_bias,
                           float *d_h0, float *d_c0);
int frnn_lstm_backward_f64(const frnn_blas *blas, const frnn_dims *d,
                           const double *kernel, const double *recurrent,
                           const double *h0, const double *c0,
                           const double *x_cache, const double *gates, const double *c_states,
                           const double *h_states, const uint8_t *mask_cache,
                           const double *rec_mask, const double *d_outputs, frnn_seq_strides dout_strides,
                           const double *d_h_n, const double *d_c_n,
                           double *dx, frnn_seq_strides dx_strides,
                           double *d_kernel, double *d_recurrent, double *d_bias,
                           double *d_h0, double *d_c0);

/* ---------------------------------------------------------------- GRU -----------
 * Gate order z, r, h (Keras).  With hp = h_{t-1} and x? = x W? + b_in?:
 *   reset_after=1 (torch's form):  R = hp U + b_rec,  z = ra(xz + Rz),  r = ra(xr + Rr),
 *                                  hh = a(xh + r*Rh)
 *   reset_after=0:                 z = ra(xz + hp Uz),  r = ra(xr + hp Ur),
 *                                  hh = a(xh + (r*hp) Uh)
 *   h = z*hp + (1-z)*hh
 * Masks, go_backwards and zero_output_for_mask as for the LSTM.
 *
 * gru_forward arguments:
 *   reset_after  nonzero selects the first form.
 *   x (B,T,I) via x_strides; kernel (I,3H); recurrent (H,3H), contiguous, read only.
 *   bias      reset_after=1: (2,3H) [input row; recurrent row]; reset_after=0: (3H,);
 *             or NULL.
 *   mask      (B,T) uint8 via mask_strides, or NULL.     h0 (B,H) or NULL (zeros).
 *   outputs   (B,T,H) via out_strides, processing order, or NULL.   h_n (B,H), written.
 *   rec_mask  (3,B,H) or NULL: recurrent dropout masks m_z, m_r, m_h (Keras 3's GRUCell
 *             implementation 1): h_{t-1}*m_g replaces h_{t-1} where it multiplies U's
 *             gate-g block (and in r*h_{t-1}); the update z*h_{t-1} uses h_{t-1} itself.
 *   Training cache (all NULL for inference; all non-NULL for training), written:
 *   x_cache   (T,B,I) input in processing order.   gates (T,B,3H): activated z, r, hh.
 *   hr_cache  (T,B,H): reset_after=1: Rh = (hp*m_h) Uh + b_rec_h; reset_after=0:
 *             r*hp*m_h (m_h = 1 without dropout; zero on masked rows).
 *   h_states  (T,B,H): state after each step.   mask_cache (T,B) when mask != NULL.
 */
int frnn_gru_forward_f32(const frnn_blas *blas, const frnn_dims *d, int reset_after,
                         const float *x, frnn_seq_strides x_strides,
                         const float *kernel, const float *recurrent, const float *bias,
                         const uint8_t *mask, frnn_seq_strides mask_strides,
                         const float *h0,
                         float *outputs, frnn_seq_strides out_strides,
                         float *h_n, const float *rec_mask,
                         float *x_cache, float *gates, float *hr_cache, float *h_states,
                         uint8_t *mask_cache);
int frnn_gru_forward_f64(const frnn_blas *blas, const frnn_dims *d, int reset_after,
                         const double *x, frnn_seq_strides x_strides,
                         const double *kernel, const double *recurrent, const double *bias,
                         const uint8_t *mask, frnn_seq_strides mask_strides,
                         const double *h0,
                         double *outputs, frnn_seq_strides out_strides,
                         double *h_n, const double *rec_mask,
                         double *x_cache, double *gates, double *hr_cache, double *h_states,
                         uint8_t *mask_cache);

/* gru_backward arguments (the cache is read only; it may be used again):
 *   reset_after, kernel, recurrent, h0 as in forward.
 *   x_cache, gates, hr_cache, h_states, mask_cache (NULL = no mask): forward's cache.
 *   rec_mask  (3,B,H) or NULL: the recurrent dropout masks forward used.
 *   d_outputs (B,T,H) via dout_strides in processing order, or NULL.  d_h_n (B,H) or NULL.
 *   Gradients, all written: dx (B,T,I) via dx_strides in input order, or NULL (not
 *   computed); d_kernel (I,3H); d_recurrent (H,3H); d_bias with the forward bias' shape,
 *   or NULL; d_h0 (B,H), contents unspecified without h0 (NULL) or with
 *   d->no_initial_gradient.
 */
int frnn_gru_backward_f32(const frnn_blas *blas, const frnn_dims *d, int reset_after,
                          const float *kernel, const float *recurrent, const float *h0,
                          const float *x_cache, const float *gates, const float *hr_cache,
                          const float *h_states, const uint8_t *mask_cache,
                          const float *rec_mask,
                          const float *d_outputs, frnn_seq_strides dout_strides,
                          const float *d_h_n,
                          float *dx, frnn_seq_strides dx_strides,
                          float *d_kernel, float *d_recurrent, float *d_bias, float *d_h0);
int frnn_gru_backward_f64(const frnn_blas *blas, const frnn_dims *d, int reset_after,
                          const double *kernel, const double *recurrent, const double *h0,
                          const double *x_cache, const double *gates, const double *hr_cache,
                          const double *h_states, const uint8_t *mask_cache,
                          const double *rec_mask,
                          const double *d_outputs, frnn_seq_strides dout_strides,
                          const double *d_h_n,
                          double *dx, frnn_seq_strides dx_strides,
                          double *d_kernel, double *d_recurrent, double *d_bias, double *d_h0);

/* ----------------------------------------------------------- SimpleRNN ----------
 * h = a(x W + b + h_{t-1} U), a = d->activation (recurrent_activation unused).
 * Masks, go_backwards and zero_output_for_mask as for the LSTM.
 *
 * rnn_forward arguments: x (B,T,I) via x_strides; kernel (I,H); recurrent (H,H); bias (H,)
 *   or NULL; mask (B,T) or NULL; h0 (B,H) or NULL; outputs (B,T,H) or NULL; h_n (B,H).
 *   Training cache (all NULL for inference; all non-NULL for training), written:
 *   rec_mask (B,H) or NULL: recurrent dropout, multiplies h_{t-1} where it enters the GEMM.
 *   x_cache (T,B,I); h_states (T,B,H): state after each step (which is the activation's
 *   output on valid rows, so no gate cache is needed); mask_cache (T,B) when mask != NULL.
 * rnn_backward: as gru_backward without reset_after/gates/hr_cache; rec_mask (B,H) or NULL;
 *   d_bias (H,) or NULL.
 */
int frnn_rnn_forward_f32(const frnn_blas *blas, const frnn_dims *d,
                         const float *x, frnn_seq_strides x_strides,
                         const float *kernel, const float *recurrent, const float *bias,
                         const uint8_t *mask, frnn_seq_strides mask_strides,
                         const float *h0,
                         float *outputs, frnn_seq_strides out_strides,
                         float *h_n, const float *rec_mask,
                         float *x_cache, float *h_states, uint8_t *mask_cache);
int frnn_rnn_forward_f64(const frnn_blas *blas, const frnn_dims *d,
                         const double *x, frnn_seq_strides x_strides,
                         const double *kernel, const double *recurrent, const double *bias,
                         const uint8_t *mask, frnn_seq_strides mask_strides,
                         const double *h0,
                         double *outputs, frnn_seq_strides out_strides,
                         double *h_n, const double *rec_mask,
                         double *x_cache, double *h_states, uint8_t *mask_cache);
int frnn_rnn_backward_f32(const frnn_blas *blas, const frnn_dims *d,
                          const float *kernel, const float *recurrent, const float *h0,
                          const float *x_cache, const float *h_states, const uint8_t *mask_cache,
                          const float *rec_mask,
                          const float *d_outputs, frnn_seq_strides dout_strides,
                          const float *d_h_n,
                          float *dx, frnn_seq_strides dx_strides,
                          float *d_kernel, float *d_recurrent, float *d_bias, float *d_h0);
int frnn_rnn_backward_f64(const frnn_blas *blas, const frnn_dims *d,
                          const double *kernel, const double *recurrent, const double *h0,
                          const double *x_cache, const double *h_states,
                          const uint8_t *mask_cache,
                          const double *rec_mask,
                          const double *d_outputs, frnn_seq_strides dout_strides,
                          const double *d_h_n,
                          double *dx, frnn_seq_strides dx_strides,
                          double *d_kernel, double *d_recurrent, double *d_bias, double *d_h0);

#ifdef __cplusplus
}
#endif
#endif /* FUSEDRNN_H */
