/* Out-of-place matrix transposes, dst = src^T: what fusedrnn.torch does to torch's weights
 * (weight_ih is (4H, I); the kernels take the Keras layout (I, 4H)) on every forward, and
 * to the weight gradients on every backward.
 *
 * Why not NumPy: np.ascontiguousarray(w.T) walks the source column by column, so each
 * element read is a cache miss once the matrix outgrows L2.  Measured on an AMD Zen 4, one
 * thread, float32: 2048 x 512 (4 MiB) 3.7 ms with NumPy, 0.68 ms with torch's
 * .t().contiguous(), 0.5 ms in 8 x 8 register blocks; 2048 x 256 0.9 / 0.32 / 0.23 ms.
 * With a 512-unit LSTM that was 9 ms of transposes per training step in the drop-in module.
 *
 * Blocking: 32 x 32 tiles (4 KiB of float32 each way, both in L1), each as 8 x 8 (float64:
 * 4 x 4) register transposes where AVX2 is on; ragged edges go element by element.  Large
 * matrices split their source rows (dst columns) between the kernel threads. */
#include "internal.h"

#if FRNN_AVX2_KERNELS
#include <immintrin.h>

/* dst rows 0-7 (stride ldd), columns 0-7 = src rows 0-7 (stride lds), columns 0-7, transposed */
FRNN_AVX2_TARGET FRNN_INLINE void transpose_8x8_f32(const float *src, ptrdiff_t lds, float *dst,
                                                     ptrdiff_t ldd) {
    const __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds),
                 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds),
                 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds),
                 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    /* pairs of rows interleaved, then pairs of pairs, then the 128-bit halves swapped */
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1),
                 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3),
                 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
                 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
                 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
                 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
                 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* dst rows 0-3, columns 0-3 = src rows 0-3, columns 0-3 transposed (float64) */
FRNN_AVX2_TARGET FRNN_INLINE void transpose_4x4_f64(const double *src, ptrdiff_t lds,
                                                     double *dst, ptrdiff_t ldd) {
    const __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + lds),
                  r2 = _mm256_loadu_pd(src + 2 * lds), r3 = _mm256_loadu_pd(src + 3 * lds);
    const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1),
                  t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
}

/* One tile of rows x cols (<= 32 each) in V x V register blocks; the ragged rest element
 * by element. */
#define FRNN_DEFINE_TRANSPOSE_TILE(REAL, SFX, V)                                               \
    FRNN_AVX2_TARGET static void transpose_tile_avx2_##SFX(                                   \
        ptrdiff_t rows, ptrdiff_t cols, const REAL *FRNN_RESTRICT src, ptrdiff_t lds,         \
        REAL *FRNN_RESTRICT dst, ptrdiff_t ldd) {                                             \
        const ptrdiff_t rows_v = rows - rows % V, cols_v = cols - cols % V;                   \
        for (ptrdiff_t i = 0; i < rows_v; i += V)                                             \
            for (ptrdiff_t j = 0; j < cols_v; j += V)                                         \
                transpose_##V##x##V##_##SFX(src + i * lds + j, lds, dst + j * ldd + i, ldd);  \
        for (ptrdiff_t i = 0; i < rows; ++i)                                                  \
            for (ptrdiff_t j = i < rows_v ? cols_v : 0; j < cols; ++j)                        \
                dst[j * ldd + i] = src[i * lds + j];                                          \
    }
FRNN_DEFINE_TRANSPOSE_TILE(float, f32, 8)
FRNN_DEFINE_TRANSPOSE_TILE(double, f64, 4)
#undef FRNN_DEFINE_TRANSPOSE_TILE
#endif

enum { TRANSPOSE_TILE = 32 };
/* Elements per thread below which a transpose stays on the calling thread (256 KiB of
 * float32: a team costs a few microseconds to wake). */
#define FRNN_TRANSPOSE_MIN_ELEMS_PER_THREAD ((ptrdiff_t)1 << 16)

#define FRNN_DEFINE_TRANSPOSE(REAL, SFX, TILE_KERNEL)                                          \
    static void transpose_rows_##SFX(ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t cols,              \
                                     const REAL *FRNN_RESTRICT src, ptrdiff_t lds,            \
                                     REAL *FRNN_RESTRICT dst, ptrdiff_t ldd) {                \
        for (ptrdiff_t i0 = r0; i0 < r1; i0 += TRANSPOSE_TILE)                                \
            for (ptrdiff_t j0 = 0; j0 < cols; j0 += TRANSPOSE_TILE) {                         \
                const ptrdiff_t rows = r1 - i0 < TRANSPOSE_TILE ? r1 - i0 : TRANSPOSE_TILE;   \
                const ptrdiff_t n = cols - j0 < TRANSPOSE_TILE ? cols - j0 : TRANSPOSE_TILE;  \
                const REAL *s = src + i0 * lds + j0;                                          \
                REAL *d = dst + j0 * ldd + i0;                                                \
                TILE_KERNEL                                                                   \
                for (ptrdiff_t i = 0; i < rows; ++i)                                          \
                    for (ptrdiff_t j = 0; j < n; ++j) d[j * ldd + i] = s[i * lds + j];        \
            }                                                                                 \
    }                                                                                         \
    int frnn_transpose_##SFX(ptrdiff_t rows, ptrdiff_t cols, const REAL *src, ptrdiff_t lds,  \
                             REAL *dst, ptrdiff_t ldd) {                                      \
        if (rows < 0 || cols < 0) return FRNN_EINVAL;                                         \
        if (rows == 0 || cols == 0) return FRNN_OK;                                           \
        if (!src || !dst || lds < cols || ldd < rows) return FRNN_EINVAL;                     \
        ptrdiff_t nt = frnn_get_num_threads();                                                \
        const ptrdiff_t most = rows * cols / FRNN_TRANSPOSE_MIN_ELEMS_PER_THREAD;             \
        if (nt > most) nt = most > 1 ? most : 1;                                              \
        /* bands of whole tiles, so every tile but the last band's is full */                 \
        const ptrdiff_t tiles = (rows + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE;                 \
        if (nt > tiles) nt = tiles;                                                           \
        _Pragma("omp parallel num_threads(nt) if (nt > 1)")                                   \
        {                                                                                     \
            const ptrdiff_t tid = frnn_thread_id(), team = frnn_team_size();                 \
            const ptrdiff_t r0 = tiles * tid / team * TRANSPOSE_TILE;                         \
            const ptrdiff_t r1e = tiles * (tid + 1) / team * TRANSPOSE_TILE;                  \
            transpose_rows_##SFX(r0, r1e < rows ? r1e : rows, cols, src, lds, dst, ldd);      \
        }                                                                                     \
        return FRNN_OK;                                                                       \
    }                                                                                         \
    void frnn_transpose_serial_##SFX(ptrdiff_t rows, ptrdiff_t cols, const REAL *src,         \
                                     ptrdiff_t lds, REAL *dst, ptrdiff_t ldd) {               \
        transpose_rows_##SFX(0, rows, cols, src, lds, dst, ldd);                              \
    }

#if FRNN_AVX2_KERNELS
/* the tile in register blocks (and its ragged rest), instead of the element loop */
#define FRNN_TRANSPOSE_TILE(SFX)                                                              \
    if (frnn_use_avx2()) {                                                                    \
        transpose_tile_avx2_##SFX(rows, n, s, lds, d, ldd);                                   \
        continue;                                                                             \
    }
#else
#define FRNN_TRANSPOSE_TILE(SFX)
#endif
FRNN_DEFINE_TRANSPOSE(float, f32, FRNN_TRANSPOSE_TILE(f32))
FRNN_DEFINE_TRANSPOSE(double, f64, FRNN_TRANSPOSE_TILE(f64))
#undef FRNN_DEFINE_TRANSPOSE
#undef FRNN_TRANSPOSE_TILE
