/* The weight gradients' GEMM, C = A^T B or C += A^T B, summed over the k = T*B rows that
 * A (the layer inputs or h_{t-1}, k x m) and B (dZ, k x n) share: one thread's band of
 * that sum (real_impl.h splits it between the threads).
 *
 * Why not BLAS: SciPy's OpenBLAS (0.3.30, the one the kernels call) runs this transposed
 * product slower than its plain one.  Measured on an AMD Zen 4, one thread, k = 6400, in
 * GFLOP/s, SciPy's sgemm / NumPy's (OpenBLAS 0.3.31) / these tiles:
 *   m x n = 128 x 256: 63 / 82 / 79;  256 x 256: 71 / 86 / 85;  64 x 384: 51 / 71 / 66;
 *   128 x 1024: 71 / 87 / 83;  256 x 1024: 80 / 93 / 90;  512 x 2048: 97 / 99 / 82-89.
 * Half of a backward's FLOPs are in these products.
 *
 * Blocking: KC rows of the sum at a time; of A, MC columns (MC x KC floats, 384 KiB, stay
 * in L2) repacked as 6-column strips; of B, one 16-column panel (16 KiB, stays in L1)
 * repacked contiguously, then every strip of the A block runs a 6 x 16 register tile down
 * that panel (with AVX-512: 128 rows of the sum, 32-column panels, and 12 x 32 tiles over
 * two strips).  The repacks also take A's and B's rows off their row strides, which are
 * often multiples of 1-4 KiB and would map a panel's rows onto a few L1 sets.
 * Measured on an AMD Zen 3 (512 KiB L2 per core; 2026-12-03, one thread, A/B in one
 * process, m x n x k = 384 x 1024 x 3200 to 768 x 2048 x 800): these tiles 64-75 GFLOP/s
 * against NumPy's OpenBLAS 68-81 (the peak is 101-103); A blocks of 96-192 columns
 * instead of 384: 0.84-0.98 (B's panels packed more often), of 576-1152: 0.97-1.02;
 * prefetching the strips ahead in the tile loop: 0.79-0.87.  Alone in L1, the 6 x 16 tile
 * reaches the peak at best but a median 73-88% of it on this shared machine. */
#include "internal.h"

#if FRNN_AVX2_KERNELS
#include <immintrin.h>

enum { WG_MR = 6, WG_NR = 16, WG_KC = 256, WG_MC = 64 * WG_MR };
/* the 32-column panels of wg_tile2x2_f32_avx512, and their blocks of the sum (a panel of
 * 128 x 32 floats, 16 KiB, stays in L1, also a Zen 4's 32 KiB) */
enum { WG_NR2 = 32, WG_KC2 = 128 };

/* c (rows x cols, row stride ldc; rows <= 6, cols <= 16) = the tile, or c + the tile.
 * strip: kc x 6 (strip[kk*6 + i] = A[kk, i]); panel: kc x 16, 32-byte aligned. */
FRNN_AVX2_TARGET static void wg_tile_f32(const float *FRNN_RESTRICT strip,
                                         const float *FRNN_RESTRICT panel, ptrdiff_t kc,
                                         float *FRNN_RESTRICT c, ptrdiff_t ldc, int rows,
                                         int cols, int accumulate) {
    /* twelve named accumulators: indexed as an array, GCC kept them on the stack */
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00,
           c21 = c00, c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    /* C outgrows L2 at 512 x 2048: its tile, needed after the loop, is fetched meanwhile */
    if (accumulate)
        for (int i = 0; i < rows; ++i) {
            _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + i * ldc + cols - 1), _MM_HINT_T0);
        }
    for (ptrdiff_t kk = 0; kk < kc; ++kk) {
        const __m256 b0 = _mm256_load_ps(panel + kk * WG_NR);
        const __m256 b1 = _mm256_load_ps(panel + kk * WG_NR + 8);
        const float *a = strip + kk * WG_MR;
#define WG_ROW(i)                                                                         \
    do {                                                                                  \
        const __m256 t = _mm256_broadcast_ss(a + i);                                      \
        c##i##0 = _mm256_fmadd_ps(t, b0, c##i##0);                                        \
        c##i##1 = _mm256_fmadd_ps(t, b1, c##i##1);                                        \
    } while (0)
        WG_ROW(0); WG_ROW(1); WG_ROW(2); WG_ROW(3); WG_ROW(4); WG_ROW(5);
#undef WG_ROW
    }
    float tile[WG_MR][WG_NR] __attribute__((aligned(32)));
#define WG_SPILL(i) _mm256_store_ps(tile[i], c##i##0), _mm256_store_ps(tile[i] + 8, c##i##1)
    WG_SPILL(0); WG_SPILL(1); WG_SPILL(2); WG_SPILL(3); WG_SPILL(4); WG_SPILL(5);
#undef WG_SPILL
    for (int i = 0; i < rows; ++i) {
        float *ci = c + i * ldc;
        if (cols == WG_NR) {
            __m256 v0 = _mm256_load_ps(tile[i]), v1 = _mm256_load_ps(tile[i] + 8);
            if (accumulate) {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(ci));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(ci + 8));
            }
            _mm256_storeu_ps(ci, v0);
            _mm256_storeu_ps(ci + 8, v1);
        } else {
            for (int j = 0; j < cols; ++j) ci[j] = accumulate ? ci[j] + tile[i][j] : tile[i][j];
        }
    }
}

/* The same product on AVX-512, for two adjacent strips (12 columns of A) and a panel of 32
 * columns (kc x 32, 64-byte aligned) at once: two 64-byte loads of the panel and 12
 * broadcasts feed 24 multiply-adds.  rows <= 12, cols <= 32: c's rows and columns stored;
 * the strips and panel are zero past them.  Where 512-bit multiply-adds do twice the work of
 * 256-bit ones per cycle (an Intel Xeon with AMX: 240 against 130 GFLOP/s per core), the
 * earlier 12 x 16 tiles (one panel load and 12 broadcasts for 12 multiply-adds) ran these
 * products at 121-131 GFLOP/s on one core against 98-101 for the AVX2 ones (k = 800-12800,
 * m x n = 64 x 512 to 512 x 2048; alone, with their operands in L1, 160-190).  These 12 x
 * 32 ones, on 128-row blocks of the sum, measured 1.02-1.14x over them there (one thread,
 * A/B in one process: 150-181 against 139-171 GFLOP/s; one point 0.97-0.99, m x n = 384 x
 * 1536, k = 6400; 256-row blocks measured alike) and 1.00-1.06x on training steps.  On an
 * AMD Zen 4 the 512-bit tiles would only match the AVX2 ones (not measured); the CPU's SIMD
 * choice (frnn_use_avx512vl) picks them. */
FRNN_AVX512VL_TARGET static void wg_tile2x2_f32_avx512(const float *FRNN_RESTRICT strip0,
                                                       const float *FRNN_RESTRICT strip1,
                                                       const float *FRNN_RESTRICT panel,
                                                       ptrdiff_t kc, float *FRNN_RESTRICT c,
                                                       ptrdiff_t ldc, int rows, int cols,
                                                       int accumulate) {
    __m512 acc[2 * WG_MR][2];
    _Pragma("GCC unroll 12") for (int i = 0; i < 2 * WG_MR; ++i) {
        acc[i][0] = _mm512_setzero_ps();
        acc[i][1] = _mm512_setzero_ps();
    }
    if (accumulate)
        for (int i = 0; i < rows; ++i) {
            _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + i * ldc + cols - 1), _MM_HINT_T0);
        }
    for (ptrdiff_t kk = 0; kk < kc; ++kk) {
        const __m512 b0 = _mm512_load_ps(panel + kk * WG_NR2);
        const __m512 b1 = _mm512_load_ps(panel + kk * WG_NR2 + 16);
        const float *a0 = strip0 + kk * WG_MR, *a1 = strip1 + kk * WG_MR;
        _Pragma("GCC unroll 6") for (int i = 0; i < WG_MR; ++i) {
            const __m512 t0 = _mm512_set1_ps(a0[i]), t1 = _mm512_set1_ps(a1[i]);
            acc[i][0] = _mm512_fmadd_ps(t0, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(t0, b1, acc[i][1]);
            acc[WG_MR + i][0] = _mm512_fmadd_ps(t1, b0, acc[WG_MR + i][0]);
            acc[WG_MR + i][1] = _mm512_fmadd_ps(t1, b1, acc[WG_MR + i][1]);
        }
    }
    float tile[2 * WG_MR][WG_NR2] __attribute__((aligned(64)));
    _Pragma("GCC unroll 12") for (int i = 0; i < 2 * WG_MR; ++i) {
        _mm512_store_ps(tile[i], acc[i][0]);
        _mm512_store_ps(tile[i] + 16, acc[i][1]);
    }
    const __mmask16 valid0 = (__mmask16)(cols >= 16 ? 0xFFFF : (1u << cols) - 1);
    const __mmask16 valid1 =
        (__mmask16)(cols >= 32 ? 0xFFFF : cols > 16 ? (1u << (cols - 16)) - 1 : 0);
    for (int i = 0; i < rows; ++i) {
        float *ci = c + i * ldc;
        __m512 v0 = _mm512_load_ps(tile[i]);
        if (accumulate) v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(valid0, ci));
        _mm512_mask_storeu_ps(ci, valid0, v0);
        if (valid1) {
            __m512 v1 = _mm512_load_ps(tile[i] + 16);
            if (accumulate) v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(valid1, ci + 16));
            _mm512_mask_storeu_ps(ci + 16, valid1, v1);
        }
    }
}

/* C (m x n, row stride ldc) = A^T B, or C += A^T B with accumulate; A is k x m (row
 * stride lda), B k x n (row stride ldb); C must not overlap A or B.  b_sums (n, or NULL)
 * = B's column sums, or += with accumulate.  One thread.
 * Returns FRNN_ENOMEM, having written nothing, when its 400 KiB of scratch is not there. */
FRNN_AVX2_TARGET static int wg_avx2_f32(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                        const float *a, ptrdiff_t lda, const float *b,
                                        ptrdiff_t ldb, int accumulate, float *c, ptrdiff_t ldc,
                                        float *b_sums) {
    /* A's columns in blocks of equal size: two of 258 and 254, not 384 and 128 */
    const ptrdiff_t m_blocks = (m + WG_MC - 1) / WG_MC;
    const ptrdiff_t m_block = ((m + m_blocks - 1) / m_blocks + WG_MR - 1) / WG_MR * WG_MR;
    /* AVX-512: 12 x 32 tiles (wg_tile2x2_f32_avx512) on 32-column panels of 128-row
     * blocks; AVX2: 6 x 16 tiles on 16-column panels of 256-row blocks */
    const int wide = frnn_use_avx512vl();
    const ptrdiff_t nr = wide ? WG_NR2 : WG_NR, kc_max = wide ? WG_KC2 : WG_KC;
    /* a strip is kc x 6 floats and 8 more, so that the packing's 8-float stores of a row's
     * 6 values stay inside it (the next row's store overwrites the extra 2); one strip
     * more, zero, pairs with the last strip of an odd count */
    const ptrdiff_t strip_len = kc_max * WG_MR + 8, n_strip_max = m_block / WG_MR + 1;
    float *strips = frnn_alloc((size_t)(n_strip_max * strip_len + kc_max * nr + 16),
                               sizeof(float));
    if (!strips) return FRNN_ENOMEM;
    /* 64-byte aligned for the tiles' aligned loads (frnn_alloc aligns to 64) */
    float *panel = strips + (n_strip_max * strip_len + 15) / 16 * 16;
    if (k == 0 && !accumulate)
        for (ptrdiff_t i = 0; i < m; ++i) memset(c + i * ldc, 0, (size_t)n * sizeof(float));
    if (b_sums && !accumulate) memset(b_sums, 0, (size_t)n * sizeof(float));
    for (ptrdiff_t k0 = 0; k0 < k; k0 += kc_max) {
        const ptrdiff_t kc = k - k0 < kc_max ? k - k0 : kc_max;
        const int add = accumulate || k0 > 0;
        for (ptrdiff_t m0 = 0; m0 < m; m0 += m_block) {
            const ptrdiff_t mc = m - m0 < m_block ? m - m0 : m_block;
            const ptrdiff_t n_strips = (mc + WG_MR - 1) / WG_MR;
            /* strips[s*strip_len + kk*6 + i] = A[k0 + kk, m0 + s*6 + i], zero past column
             * m; 8-float moves while the source row has 8 values left */
            const ptrdiff_t vector_strips = mc >= 8 ? (mc - 8) / WG_MR + 1 : 0;
            for (ptrdiff_t kk = 0; kk < kc; ++kk) {
                const float *src = a + (k0 + kk) * lda + m0;
                ptrdiff_t s = 0;
                for (; s < vector_strips; ++s)
                    _mm256_storeu_ps(strips + s * strip_len + kk * WG_MR,
                                     _mm256_loadu_ps(src + s * WG_MR));
                for (; s < n_strips; ++s) {
                    float *dst = strips + s * strip_len + kk * WG_MR;
                    for (ptrdiff_t i = s * WG_MR; i < s * WG_MR + WG_MR; ++i)
                        dst[i - s * WG_MR] = i < mc ? src[i] : 0.0f;
                }
            }
            if (n_strips % 2) /* the zero partner of the last strip */
                memset(strips + n_strips * strip_len, 0, (size_t)strip_len * sizeof(float));
            for (ptrdiff_t n0 = 0; n0 < n; n0 += nr) {
                const int cols = n - n0 < nr ? (int)(n - n0) : (int)nr;
                /* panel[kk*nr + j] = B[k0 + kk, n0 + j], zero past column n; B's column
                 * sums (the bias gradient) on the way, once (in the first block of A) */
                __m256 sum[WG_NR2 / 8];
                for (int v = 0; v < WG_NR2 / 8; ++v) sum[v] = _mm256_setzero_ps();
                for (ptrdiff_t kk = 0; kk < kc; ++kk) {
                    const float *src = b + (k0 + kk) * ldb + n0;
                    float *dst = panel + kk * nr;
                    if (cols == nr) {
                        for (int v = 0; v < nr / 8; ++v) {
                            const __m256 x = _mm256_loadu_ps(src + 8 * v);
                            _mm256_store_ps(dst + 8 * v, x);
                            sum[v] = _mm256_add_ps(sum[v], x);
                        }
                    } else {
                        for (int j = 0; j < nr; ++j) dst[j] = j < cols ? src[j] : 0.0f;
                    }
                }
                if (b_sums && m0 == 0) {
                    if (cols == nr) {
                        for (int v = 0; v < nr / 8; ++v)
                            _mm256_storeu_ps(b_sums + n0 + 8 * v,
                                             _mm256_add_ps(_mm256_loadu_ps(b_sums + n0 + 8 * v),
                                                           sum[v]));
                    } else {
                        for (ptrdiff_t kk = 0; kk < kc; ++kk)
                            for (int j = 0; j < cols; ++j) b_sums[n0 + j] += panel[kk * nr + j];
                    }
                }
                /* the rows of the next panel (or of the next block's first one) come from
                 * memory: each strip's tiles first ask for their share of them */
                const float *next = n0 + nr < n ? b + k0 * ldb + n0 + nr
                                  : k0 + kc_max < k ? b + (k0 + kc_max) * ldb : NULL;
                const ptrdiff_t next_kc = n0 + nr < n ? kc
                                        : k - k0 - kc_max < kc_max ? k - k0 - kc_max : kc_max;
                for (ptrdiff_t s = 0; s < n_strips; s += 1 + wide) {
                    const ptrdiff_t tile_strips = wide ? 2 : 1;
                    const ptrdiff_t left = mc - s * WG_MR;
                    const int rows = (int)(left < tile_strips * WG_MR ? left
                                                                      : tile_strips * WG_MR);
                    if (next) {
                        const ptrdiff_t s1 = s + tile_strips < n_strips ? s + tile_strips
                                                                         : n_strips;
                        for (ptrdiff_t kk = next_kc * s / n_strips; kk < next_kc * s1 / n_strips;
                             ++kk) {
                            _mm_prefetch((const char *)(next + kk * ldb), _MM_HINT_T0);
                            if (wide) /* a 32-column panel's row: two lines */
                                _mm_prefetch((const char *)(next + kk * ldb + 16), _MM_HINT_T0);
                        }
                    }
                    if (wide)
                        wg_tile2x2_f32_avx512(strips + s * strip_len, strips + (s + 1) * strip_len,
                                              panel, kc, c + (m0 + s * WG_MR) * ldc + n0, ldc,
                                              rows, cols, add);
                    else
                        wg_tile_f32(strips + s * strip_len, panel, kc,
                                    c + (m0 + s * WG_MR) * ldc + n0, ldc, rows, cols, add);
                }
            }
        }
    }
    frnn_free(strips);
    return FRNN_OK;
}
#endif /* FRNN_AVX2_KERNELS */

int frnn_weight_gradient_tiles_f32(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a,
                                   ptrdiff_t lda, const float *b, ptrdiff_t ldb, int accumulate,
                                   float *c, ptrdiff_t ldc, float *b_sums) {
    if (m < 1 || n < 0 || k < 0) return FRNN_EINVAL;
#if FRNN_AVX2_KERNELS
    if (frnn_use_avx2())
        return n == 0 ? FRNN_OK
                      : wg_avx2_f32(m, n, k, a, lda, b, ldb, accumulate, c, ldc, b_sums);
#else
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)b; (void)ldb; (void)accumulate;
    (void)c; (void)ldc; (void)b_sums;
#endif
    return FRNN_EINVAL; /* no AVX2 tiles here: callers check frnn_use_avx2() first */
}
