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
 * that panel.  The repacks also take A's and B's rows off their row strides, which are
 * often multiples of 1-4 KiB and would map a panel's rows onto a few L1 sets. */
#include "internal.h"

#if FRNN_AVX2_KERNELS
#include <immintrin.h>

enum { WG_MR = 6, WG_NR = 16, WG_KC = 256, WG_MC = 64 * WG_MR };

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

/* The same product on AVX-512, for two adjacent strips (12 columns of A) at once: 12
 * accumulators of 16 floats, one per row, so one 64-byte load of the panel feeds 12
 * multiply-adds.  rows <= 12 (c's rows, the second strip's zero padding is not stored),
 * strip1 = the second strip.  Where 512-bit multiply-adds do twice the work of 256-bit
 * ones per cycle (an Intel Xeon with AMX: 240 against 130 GFLOP/s per core), these tiles
 * ran the products above at 121-131 GFLOP/s on one core against 98-101 for the AVX2 ones
 * (k = 800-12800, m x n = 64 x 512 to 512 x 2048).  Alone, with their operands in L1,
 * they reach 160-190: the rest goes to streaming the strips from L2 and to the packing
 * (KC of 64-128 measured no better).  On an AMD Zen 4 they would only match the AVX2
 * tiles (not measured); the CPU's SIMD choice (frnn_use_avx512vl) picks them. */
FRNN_AVX512VL_TARGET static void wg_tile2_f32_avx512(const float *FRNN_RESTRICT strip0,
                                                     const float *FRNN_RESTRICT strip1,
                                                     const float *FRNN_RESTRICT panel,
                                                     ptrdiff_t kc, float *FRNN_RESTRICT c,
                                                     ptrdiff_t ldc, int rows, int cols,
                                                     int accumulate) {
    __m512 acc[2 * WG_MR];
    _Pragma("GCC unroll 12") for (int i = 0; i < 2 * WG_MR; ++i) acc[i] = _mm512_setzero_ps();
    if (accumulate)
        for (int i = 0; i < rows; ++i) {
            _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + i * ldc + cols - 1), _MM_HINT_T0);
        }
    for (ptrdiff_t kk = 0; kk < kc; ++kk) {
        const __m512 b = _mm512_loadu_ps(panel + kk * WG_NR);
        const float *a0 = strip0 + kk * WG_MR, *a1 = strip1 + kk * WG_MR;
        _Pragma("GCC unroll 6") for (int i = 0; i < WG_MR; ++i) {
            acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(a0[i]), b, acc[i]);
            acc[WG_MR + i] = _mm512_fmadd_ps(_mm512_set1_ps(a1[i]), b, acc[WG_MR + i]);
        }
    }
    float tile[2 * WG_MR][WG_NR] __attribute__((aligned(64)));
    _Pragma("GCC unroll 12") for (int i = 0; i < 2 * WG_MR; ++i) _mm512_store_ps(tile[i], acc[i]);
    const __mmask16 valid = (__mmask16)(cols == WG_NR ? 0xFFFF : (1u << cols) - 1);
    for (int i = 0; i < rows; ++i) {
        __m512 v = _mm512_load_ps(tile[i]);
        if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(valid, c + i * ldc));
        _mm512_mask_storeu_ps(c + i * ldc, valid, v);
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
    /* a strip is kc x 6 floats and 8 more, so that the packing's 8-float stores of a row's
     * 6 values stay inside it (the next row's store overwrites the extra 2) */
    const ptrdiff_t strip_len = WG_KC * WG_MR + 8;
    float *strips = frnn_alloc((size_t)(m_block / WG_MR * strip_len + WG_KC * WG_NR + 16),
                               sizeof(float));
    if (!strips) return FRNN_ENOMEM;
    /* 32-byte aligned for the tiles' aligned loads (frnn_alloc aligns to 64) */
    float *panel = strips + (m_block / WG_MR * strip_len + 7) / 8 * 8;
    if (k == 0 && !accumulate)
        for (ptrdiff_t i = 0; i < m; ++i) memset(c + i * ldc, 0, (size_t)n * sizeof(float));
    if (b_sums && !accumulate) memset(b_sums, 0, (size_t)n * sizeof(float));
    const int pairs = frnn_use_avx512vl(); /* two strips per tile (wg_tile2_f32_avx512) */
    for (ptrdiff_t k0 = 0; k0 < k; k0 += WG_KC) {
        const ptrdiff_t kc = k - k0 < WG_KC ? k - k0 : WG_KC;
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
            for (ptrdiff_t n0 = 0; n0 < n; n0 += WG_NR) {
                const int cols = n - n0 < WG_NR ? (int)(n - n0) : WG_NR;
                /* panel[kk*16 + j] = B[k0 + kk, n0 + j], zero past column n; B's column
                 * sums (the bias gradient) on the way, once (in the first block of A) */
                __m256 sum0 = _mm256_setzero_ps(), sum1 = sum0;
                for (ptrdiff_t kk = 0; kk < kc; ++kk) {
                    const float *src = b + (k0 + kk) * ldb + n0;
                    float *dst = panel + kk * WG_NR;
                    if (cols == WG_NR) {
                        const __m256 v0 = _mm256_loadu_ps(src), v1 = _mm256_loadu_ps(src + 8);
                        _mm256_store_ps(dst, v0);
                        _mm256_store_ps(dst + 8, v1);
                        sum0 = _mm256_add_ps(sum0, v0);
                        sum1 = _mm256_add_ps(sum1, v1);
                    } else {
                        for (int j = 0; j < WG_NR; ++j) dst[j] = j < cols ? src[j] : 0.0f;
                    }
                }
                if (b_sums && m0 == 0) {
                    if (cols == WG_NR) {
                        _mm256_storeu_ps(b_sums + n0, _mm256_add_ps(_mm256_loadu_ps(b_sums + n0), sum0));
                        _mm256_storeu_ps(b_sums + n0 + 8,
                                         _mm256_add_ps(_mm256_loadu_ps(b_sums + n0 + 8), sum1));
                    } else {
                        for (ptrdiff_t kk = 0; kk < kc; ++kk)
                            for (int j = 0; j < cols; ++j) b_sums[n0 + j] += panel[kk * WG_NR + j];
                    }
                }
                /* the rows of the next panel (or of the next block's first one) come from
                 * memory: each strip's tiles first ask for their share of them */
                const float *next = n0 + WG_NR < n ? b + k0 * ldb + n0 + WG_NR
                                  : k0 + WG_KC < k ? b + (k0 + WG_KC) * ldb : NULL;
                const ptrdiff_t next_kc = n0 + WG_NR < n ? kc
                                        : k - k0 - WG_KC < WG_KC ? k - k0 - WG_KC : WG_KC;
                for (ptrdiff_t s = 0; s < n_strips; s += 1 + pairs) {
                    const ptrdiff_t tile_strips = pairs && s + 1 < n_strips ? 2 : 1;
                    const ptrdiff_t left = mc - s * WG_MR;
                    const int rows = (int)(left < tile_strips * WG_MR ? left
                                                                      : tile_strips * WG_MR);
                    if (next)
                        for (ptrdiff_t kk = next_kc * s / n_strips;
                             kk < next_kc * (s + tile_strips) / n_strips; ++kk)
                            _mm_prefetch((const char *)(next + kk * ldb), _MM_HINT_T0);
                    if (tile_strips == 2)
                        wg_tile2_f32_avx512(strips + s * strip_len, strips + (s + 1) * strip_len,
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
