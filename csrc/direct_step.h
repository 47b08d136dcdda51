/* A single step straight from the weights, and torch.nn's weight layout
 * (frnn_dims.weight_rows), for one precision.  Included by lstm.c, gru.c and rnn.c after
 * real_impl.h, with REAL and SFX(name) defined.
 *
 * A single step (T = 1: a decoding loop feeding each output back, one call per token)
 * uses each weight once.  The loops' way, packing U for reuse over many steps, then
 * reads and writes it once more than the step itself reads it (and torch's rows would need
 * a transpose before that, another read and write), so such a step multiplies straight
 * from the weights instead (direct_step_products): dot products of torch's contiguous
 * gate rows with x or h, or Keras' columns scaled by each x[k] and summed.
 *
 * torch keeps a cell's weights as rows: weight_ih (G*H, I) and weight_hh (G*H, H), gate
 * blocks stacked along the rows in torch's gate order; Keras' are columns (I, G*H) and
 * (H, G*H).  On longer inputs the LSTM and SimpleRNN loops read torch's rows where they
 * pack or multiply the weights (recurrent_matmul.h's packings, BLAS with the other
 * transpose flag) and write the weight gradients in torch's layout
 * (weight_gradient_in_layout).  The GRU's do the same gate block by gate block (its gate
 * order differs from torch's; gru_input_projection, gru_weight_gradient).  Only the GRU's
 * BLAS products per step (no AVX2, many rows) run on a Keras-layout copy made once per
 * call (keras_weights_from_rows), the backward's gradients transposed back
 * (rows_from_keras).
 *
 * A single step's backward on torch's rows likewise works straight from them (the
 * direct_step_*_gradient functions at the end): the state and input gradients as sums of
 * the weight rows scaled by the gate gradients, the weight gradients as outer products
 * written in torch's layout, so that a training step of a decoding loop reads each weight
 * once and writes each gradient once, with no packing or transposes. */

/* Keras' gate block kb of a cell comes from torch's row block gate_rows[kb]: the same
 * block for the LSTM (i, f, g, o in both) and SimpleRNN, and in Keras' own layout. */
static const int SFX(same_gate_rows)[4] = {0, 1, 2, 3};
static const int SFX(gru_gate_rows)[3] = {1, 0, 2}; /* Keras z, r, h = torch's z, r, n */

/* out[b, c] (+)= sum_k a[b, k] * rows[c, k] for b < B, c < N.
 *   a     (B, K), row stride lda.      rows (N, K), row stride ldr (weight rows).
 *   out   (B, N), row stride ldo; must not overlap a or rows.  accumulate: add to out
 *         instead of storing.
 * Serial.  Four weight rows at a time are read from memory once and reused from L1 for
 * every row of a. */
FRNN_UNUSED static void SFX(rows_product_generic)(ptrdiff_t B, ptrdiff_t K, const REAL *a,
                                                  ptrdiff_t lda, const REAL *rows,
                                                  ptrdiff_t ldr, ptrdiff_t N, REAL *out,
                                                  ptrdiff_t ldo, int accumulate) {
    for (ptrdiff_t c = 0; c < N; ++c) {
        const REAL *w = rows + c * ldr;
        for (ptrdiff_t b = 0; b < B; ++b) {
            const REAL *ab = a + b * lda;
            REAL sum = 0;
            for (ptrdiff_t k = 0; k < K; ++k) sum += ab[k] * w[k];
            out[b * ldo + c] = accumulate ? out[b * ldo + c] + sum : sum;
        }
    }
}

/* out[b, c] (+)= sum_k a[b, k] * w[k, c] for b < B, c < N: the same product from Keras'
 * columns.  w (K, N) row stride ldw; otherwise as rows_product_generic. */
FRNN_UNUSED static void SFX(columns_product_generic)(ptrdiff_t B, ptrdiff_t K, const REAL *a,
                                                     ptrdiff_t lda, const REAL *w,
                                                     ptrdiff_t ldw, ptrdiff_t N, REAL *out,
                                                     ptrdiff_t ldo, int accumulate) {
    for (ptrdiff_t b = 0; b < B; ++b) {
        REAL *FRNN_RESTRICT ob = out + b * ldo;
        if (!accumulate) memset(ob, 0, (size_t)N * sizeof(REAL));
        for (ptrdiff_t k = 0; k < K; ++k) {
            const REAL ak = a[b * lda + k];
            const REAL *FRNN_RESTRICT wk = w + k * ldw;
            for (ptrdiff_t c = 0; c < N; ++c) ob[c] += ak * wk[c];
        }
    }
}

#if FRNN_AVX2_KERNELS
#include <immintrin.h>
#if FRNN_F32
#define RV __m256
#define RV_LOAD _mm256_loadu_ps
#define RV_STORE _mm256_storeu_ps
#define RV_FMA _mm256_fmadd_ps
#define RV_ZERO _mm256_setzero_ps
#define RV_BCAST _mm256_broadcast_ss
#else
#define RV __m256d
#define RV_LOAD _mm256_loadu_pd
#define RV_STORE _mm256_storeu_pd
#define RV_FMA _mm256_fmadd_pd
#define RV_ZERO _mm256_setzero_pd
#define RV_BCAST _mm256_broadcast_sd
#endif
#define RV_LANES ((ptrdiff_t)(32 / sizeof(REAL)))

/* sums[r] = the sum of s[r]'s lanes, r < 4: pairwise adds across the four registers
 * (a store and a scalar sum per register cost a quarter of a 256-long dot product). */
FRNN_AVX2_TARGET FRNN_INLINE void SFX(rows_sum4)(const RV s[4], REAL sums[4]) {
#if FRNN_F32
    const __m256 pairs = _mm256_hadd_ps(_mm256_hadd_ps(s[0], s[1]), _mm256_hadd_ps(s[2], s[3]));
    _mm_storeu_ps(sums, _mm_add_ps(_mm256_castps256_ps128(pairs),
                                   _mm256_extractf128_ps(pairs, 1)));
#else
    const __m256d t01 = _mm256_hadd_pd(s[0], s[1]), t23 = _mm256_hadd_pd(s[2], s[3]);
    _mm256_storeu_pd(sums, _mm256_add_pd(_mm256_permute2f128_pd(t01, t23, 0x20),
                                         _mm256_permute2f128_pd(t01, t23, 0x31)));
#endif
}

/* 4 weight rows x NB (1, 2 or 3) rows of a: the NB * 4 dot products out[b0 + i, c0 + r].
 * Three rows of a give 12 independent accumulators (7 loads per 12 FMAs; two rows: 6 per
 * 8, whose chains barely cover the FMA latency): a GRU step at batch 32 with 512 units ran
 * 1.2-1.35x faster forward, 1.1-1.4x backward (which uses the column tiles below, also
 * three rows) than with two-row tiles.  One row (batch 1) is bound by reading the weights
 * anyway. */
#define FRNN_ROWS_TILE(NB)                                                                  \
    FRNN_AVX2_TARGET FRNN_INLINE void SFX(rows_tile_##NB)(                                  \
        ptrdiff_t K, const REAL *a, ptrdiff_t lda, const REAL *w, ptrdiff_t ldr, REAL *out, \
        ptrdiff_t ldo, int accumulate) {                                                    \
        const ptrdiff_t K_vec = K - K % RV_LANES;                                           \
        RV s[NB][4];                                                                        \
        for (int i = 0; i < NB; ++i)                                                        \
            for (int r = 0; r < 4; ++r) s[i][r] = RV_ZERO();                                \
        for (ptrdiff_t k = 0; k < K_vec; k += RV_LANES) {                                   \
            RV wv[4];                                                                       \
            for (int r = 0; r < 4; ++r) wv[r] = RV_LOAD(w + r * ldr + k);                   \
            for (int i = 0; i < NB; ++i) {                                                  \
                const RV av = RV_LOAD(a + i * lda + k);                                     \
                for (int r = 0; r < 4; ++r) s[i][r] = RV_FMA(wv[r], av, s[i][r]);           \
            }                                                                               \
        }                                                                                   \
        for (int i = 0; i < NB; ++i) {                                                      \
            REAL sums[4];                                                                   \
            SFX(rows_sum4)(s[i], sums);                                                     \
            for (int r = 0; r < 4; ++r) {                                                   \
                for (ptrdiff_t k = K_vec; k < K; ++k)                                       \
                    sums[r] += a[i * lda + k] * w[r * ldr + k];                             \
                REAL *o = out + i * ldo + r;                                                \
                *o = accumulate ? *o + sums[r] : sums[r];                                   \
            }                                                                               \
        }                                                                                   \
    }
FRNN_ROWS_TILE(1)
FRNN_ROWS_TILE(2)
FRNN_ROWS_TILE(3)
#undef FRNN_ROWS_TILE

/* rows_product_generic's contract on the tiles above. */
FRNN_AVX2_TARGET static void SFX(rows_product_avx2)(ptrdiff_t B, ptrdiff_t K, const REAL *a,
                                                    ptrdiff_t lda, const REAL *rows,
                                                    ptrdiff_t ldr, ptrdiff_t N, REAL *out,
                                                    ptrdiff_t ldo, int accumulate) {
    ptrdiff_t c = 0;
    for (; c + 4 <= N; c += 4) {
        ptrdiff_t b = 0;
        for (; b + 3 <= B; b += 3)
            SFX(rows_tile_3)(K, a + b * lda, lda, rows + c * ldr, ldr, out + b * ldo + c, ldo,
                             accumulate);
        for (; b + 2 <= B; b += 2)
            SFX(rows_tile_2)(K, a + b * lda, lda, rows + c * ldr, ldr, out + b * ldo + c, ldo,
                             accumulate);
        if (b < B)
            SFX(rows_tile_1)(K, a + b * lda, lda, rows + c * ldr, ldr, out + b * ldo + c, ldo,
                             accumulate);
    }
    if (c < N) SFX(rows_product_generic)(B, K, a, lda, rows + c * ldr, ldr, N - c, out + c, ldo,
                                         accumulate);
}

/* out[b, c..c + 4 vectors) for NB (1, 2 or 3) rows of a over K rows of W (w: those rows'
 * first column of the tile, row stride ldw), added to out's values when add_out, else
 * stored; the rows of a share each load of W. */
#define FRNN_COLUMNS_TILE(NB)                                                               \
    FRNN_AVX2_TARGET FRNN_INLINE void SFX(columns_tile_##NB)(                               \
        ptrdiff_t K, const REAL *a, ptrdiff_t lda, const REAL *w, ptrdiff_t ldw, REAL *out, \
        ptrdiff_t ldo, int add_out) {                                                       \
        RV s[NB][4];                                                                        \
        for (int i = 0; i < NB; ++i)                                                        \
            for (int v = 0; v < 4; ++v)                                                     \
                s[i][v] = add_out ? RV_LOAD(out + i * ldo + v * RV_LANES) : RV_ZERO();      \
        for (ptrdiff_t k = 0; k < K; ++k) {                                                 \
            RV wv[4];                                                                       \
            for (int v = 0; v < 4; ++v) wv[v] = RV_LOAD(w + k * ldw + v * RV_LANES);        \
            for (int i = 0; i < NB; ++i) {                                                  \
                const RV av = RV_BCAST(a + i * lda + k);                                    \
                for (int v = 0; v < 4; ++v) s[i][v] = RV_FMA(wv[v], av, s[i][v]);           \
            }                                                                               \
        }                                                                                   \
        for (int i = 0; i < NB; ++i)                                                        \
            for (int v = 0; v < 4; ++v) RV_STORE(out + i * ldo + v * RV_LANES, s[i][v]);    \
    }
FRNN_COLUMNS_TILE(1)
FRNN_COLUMNS_TILE(2)
FRNN_COLUMNS_TILE(3)
#undef FRNN_COLUMNS_TILE

/* columns_product_generic's contract on the tiles above, KC rows of W at a time: walking
 * all K rows down one narrow tile touched a new page per row (measured 3x slower at batch
 * 1 with 512 units); KC rows across the whole width read KC streams sequentially.  The
 * last columns, fewer than 4 vectors, go to the C loop. */
FRNN_AVX2_TARGET static void SFX(columns_product_avx2)(ptrdiff_t B, ptrdiff_t K, const REAL *a,
                                                       ptrdiff_t lda, const REAL *w,
                                                       ptrdiff_t ldw, ptrdiff_t N, REAL *out,
                                                       ptrdiff_t ldo, int accumulate) {
    const ptrdiff_t tile = 4 * RV_LANES, KC = 16, N_tiles = N - N % tile;
    for (ptrdiff_t k0 = 0; k0 < K; k0 += KC) {
        const ptrdiff_t kc = K - k0 < KC ? K - k0 : KC;
        const int add_out = accumulate || k0 > 0;
        for (ptrdiff_t c = 0; c < N_tiles; c += tile) {
            ptrdiff_t b = 0;
            for (; b + 3 <= B; b += 3)
                SFX(columns_tile_3)(kc, a + b * lda + k0, lda, w + k0 * ldw + c, ldw,
                                    out + b * ldo + c, ldo, add_out);
            for (; b + 2 <= B; b += 2)
                SFX(columns_tile_2)(kc, a + b * lda + k0, lda, w + k0 * ldw + c, ldw,
                                    out + b * ldo + c, ldo, add_out);
            if (b < B)
                SFX(columns_tile_1)(kc, a + b * lda + k0, lda, w + k0 * ldw + c, ldw,
                                    out + b * ldo + c, ldo, add_out);
        }
    }
    if (N_tiles < N)
        SFX(columns_product_generic)(B, K, a, lda, w + N_tiles, ldw, N - N_tiles,
                                     out + N_tiles, ldo, accumulate);
}

/* outer_rows' product on the column tiles: two rows of s and four vectors of out per
 * tile, every k at once (a is the step's few rows, cache-resident; out is written once,
 * unlike in columns_product's passes of KC rows). */
FRNN_AVX2_TARGET static void SFX(outer_rows_avx2)(ptrdiff_t R, ptrdiff_t K, const REAL *s,
                                                  const REAL *a, ptrdiff_t lda, ptrdiff_t N,
                                                  REAL *out) {
    const ptrdiff_t tile = 4 * RV_LANES, N_tiles = N - N % tile;
    ptrdiff_t r = 0;
    for (; r + 3 <= R; r += 3)
        for (ptrdiff_t c = 0; c < N_tiles; c += tile)
            SFX(columns_tile_3)(K, s + r * K, K, a + c, lda, out + r * N + c, N, 0);
    for (; r + 2 <= R; r += 2)
        for (ptrdiff_t c = 0; c < N_tiles; c += tile)
            SFX(columns_tile_2)(K, s + r * K, K, a + c, lda, out + r * N + c, N, 0);
    if (r < R)
        for (ptrdiff_t c = 0; c < N_tiles; c += tile)
            SFX(columns_tile_1)(K, s + r * K, K, a + c, lda, out + r * N + c, N, 0);
    if (N_tiles < N)
        SFX(columns_product_generic)(R, K, s, K, a + N_tiles, lda, N - N_tiles, out + N_tiles, N,
                                     0);
}
#undef RV
#undef RV_LOAD
#undef RV_STORE
#undef RV_FMA
#undef RV_ZERO
#undef RV_BCAST
#undef RV_LANES
#endif /* FRNN_AVX2_KERNELS */

FRNN_UNUSED static void SFX(rows_product)(ptrdiff_t B, ptrdiff_t K, const REAL *a, ptrdiff_t lda,
                                          const REAL *rows, ptrdiff_t ldr, ptrdiff_t N,
                                          REAL *out, ptrdiff_t ldo, int accumulate) {
#if FRNN_AVX2_KERNELS
    if (frnn_use_avx2()) {
        SFX(rows_product_avx2)(B, K, a, lda, rows, ldr, N, out, ldo, accumulate);
        return;
    }
#endif
    SFX(rows_product_generic)(B, K, a, lda, rows, ldr, N, out, ldo, accumulate);
}

FRNN_UNUSED static void SFX(columns_product)(ptrdiff_t B, ptrdiff_t K, const REAL *a,
                                             ptrdiff_t lda, const REAL *w, ptrdiff_t ldw,
                                             ptrdiff_t N, REAL *out, ptrdiff_t ldo,
                                             int accumulate) {
#if FRNN_AVX2_KERNELS
    if (frnn_use_avx2()) {
        SFX(columns_product_avx2)(B, K, a, lda, w, ldw, N, out, ldo, accumulate);
        return;
    }
#endif
    SFX(columns_product_generic)(B, K, a, lda, w, ldw, N, out, ldo, accumulate);
}

/* out (R, N) contiguous = s (R, K) contiguous times a (K, N) row stride lda: a step's
 * weight gradient, out[r, :] = sum_k s[r, k] a[k, :] with s the step's pre-activation
 * gradients transposed (K = batch rows).  Serial. */
FRNN_UNUSED static void SFX(outer_rows)(ptrdiff_t R, ptrdiff_t K, const REAL *s, const REAL *a,
                                        ptrdiff_t lda, ptrdiff_t N, REAL *out) {
#if FRNN_AVX2_KERNELS
    if (frnn_use_avx2()) {
        SFX(outer_rows_avx2)(R, K, s, a, lda, N, out);
        return;
    }
#endif
    SFX(columns_product_generic)(R, K, s, K, a, lda, N, out, N, 0);
}

/* Keras' columns [c0, c1) of a (B, G*H) product from torch's rows:
 *   out[b, c] (+)= sum_k a[b, k] * rows[(gate_rows[c / H] * H + c % H) * K + k]
 * for rows (G*H, K) contiguous (a torch weight); a (B, K) row stride lda; out (B, G*H)
 * row stride ldo. */
FRNN_UNUSED static void SFX(gate_rows_product)(ptrdiff_t B, ptrdiff_t K, const REAL *a,
                                               ptrdiff_t lda, const REAL *rows, ptrdiff_t H,
                                               const int *gate_rows, ptrdiff_t c0, ptrdiff_t c1,
                                               REAL *out, ptrdiff_t ldo, int accumulate) {
    while (c0 < c1) {
        const ptrdiff_t block = c0 / H, j = c0 % H;
        const ptrdiff_t n = c1 - c0 < H - j ? c1 - c0 : H - j;
        SFX(rows_product)(B, K, a, lda, rows + (gate_rows[block] * H + j) * K, K, n, out + c0,
                          ldo, accumulate);
        c0 += n;
    }
}

/* One step's products straight from the weights, in Keras' gate columns, split over the
 * kernel threads by bands of columns (call outside parallel regions):
 *   zx = x W                                  (B, G*H), overwritten
 *   zh = h U, or zx += h U when zh is NULL    (skipped, zh zeroed, when h is NULL)
 * x (B, I) row stride ldx; h (B, H) contiguous or NULL (zeros); zx, zh (B, G*H)
 * contiguous.  weight_rows = 0: kernel (I, G*H) and recurrent (H, G*H), Keras' layout;
 * 1: torch's rows (G*H, I) and (G*H, H), Keras' gate block g in torch's row block
 * gate_rows[g]. */
FRNN_UNUSED static void SFX(direct_step_products)(ptrdiff_t B, ptrdiff_t I, ptrdiff_t H,
                                                  ptrdiff_t G, int weight_rows,
                                                  const int *gate_rows, const REAL *x,
                                                  ptrdiff_t ldx, const REAL *kernel,
                                                  const REAL *h, const REAL *recurrent, REAL *zx,
                                                  REAL *zh) {
    const ptrdiff_t GH = G * H;
    int nt = frnn_get_num_threads();
    if ((double)B * (double)(I + H) * (double)GH < (double)FRNN_PARALLEL_MIN_MACS) nt = 1;
    if (nt > GH) nt = (int)GH;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int team = frnn_team_size();
        for (int band = frnn_thread_id(); band < team; band += team) {
            const ptrdiff_t c0 = frnn_band_start(GH, band, team);
            const ptrdiff_t c1 = frnn_band_start(GH, band + 1, team);
            REAL *zh_out = zh ? zh : zx;
            if (weight_rows) {
                SFX(gate_rows_product)(B, I, x, ldx, kernel, H, gate_rows, c0, c1, zx, GH, 0);
                if (h)
                    SFX(gate_rows_product)(B, H, h, H, recurrent, H, gate_rows, c0, c1, zh_out,
                                           GH, zh == NULL);
            } else {
                SFX(columns_product)(B, I, x, ldx, kernel + c0, GH, c1 - c0, zx + c0, GH, 0);
                if (h)
                    SFX(columns_product)(B, H, h, H, recurrent + c0, GH, c1 - c0, zh_out + c0,
                                         GH, zh == NULL);
            }
            if (!h && zh)
                for (ptrdiff_t b = 0; b < B; ++b)
                    memset(zh + b * GH + c0, 0, (size_t)(c1 - c0) * sizeof(REAL));
        }
    }
}

/* *kernel (I, G*H) and *recurrent (H, G*H) in Keras' layout, newly allocated (the caller
 * frees both, also on failure), from torch's kernel_rows (G*H, I) and recurrent_rows
 * (G*H, H): one transpose per gate block.  FRNN_ENOMEM without the memory. */
FRNN_UNUSED static int SFX(keras_weights_from_rows)(ptrdiff_t I, ptrdiff_t H, ptrdiff_t G,
                                                    const int *gate_rows,
                                                    const REAL *kernel_rows,
                                                    const REAL *recurrent_rows, REAL **kernel,
                                                    REAL **recurrent) {
    *kernel = frnn_alloc((size_t)(I * G * H), sizeof(REAL));
    *recurrent = frnn_alloc((size_t)(H * G * H), sizeof(REAL));
    if (!*kernel || !*recurrent) return FRNN_ENOMEM;
    for (ptrdiff_t g = 0; g < G; ++g) {
        const ptrdiff_t from = gate_rows[g] * H;
        /* sizes and strides are valid here, so the transposes cannot fail */
        (void)SFX(frnn_transpose)(H, I, kernel_rows + from * I, I, *kernel + g * H, G * H);
        (void)SFX(frnn_transpose)(H, H, recurrent_rows + from * H, H, *recurrent + g * H,
                                  G * H);
    }
    return FRNN_OK;
}

/* The step's input rows for direct_step_products: x itself (row stride xs.stride_b), or
 * in training its copy in x_cache with masked rows zeroed, as the loops keep it for the
 * weight gradient (row stride I); *ld receives the row stride. */
FRNN_UNUSED static const REAL *SFX(direct_step_input)(const frnn_dims *d, const REAL *x,
                                                      frnn_seq_strides xs,
                                                      const uint8_t *mask_t, REAL *x_cache,
                                                      ptrdiff_t *ld) {
    if (!x_cache) {
        *ld = xs.stride_b;
        return x;
    }
    SFX(gather_steps)(d, x, xs, 0, 1, x_cache);
    SFX(zero_masked_rows)(d, mask_t, 0, 1, x_cache);
    *ld = d->input_size;
    return x_cache;
}

/* z[b, :] += bias for the B rows of z (B, n) contiguous; nothing without a bias. */
FRNN_UNUSED static void SFX(add_bias_rows)(ptrdiff_t B, ptrdiff_t n, const REAL *bias,
                                           REAL *z) {
    if (!bias) return;
    for (ptrdiff_t b = 0; b < B; ++b)
        for (ptrdiff_t c = 0; c < n; ++c) z[b * n + c] += bias[c];
}

/* The step's mask (B,) as 0/1 from the (B, T) mask at input step 0 (T = 1), written into
 * `into` (training's mask cache) or, when NULL, a new buffer the caller frees; NULL
 * without a mask or, with *status = FRNN_ENOMEM, when the buffer cannot be had. */
FRNN_UNUSED static uint8_t *SFX(first_step_mask)(ptrdiff_t B, const uint8_t *mask,
                                                 frnn_seq_strides ms, uint8_t *into,
                                                 int *status) {
    *status = FRNN_OK;
    if (!mask) return NULL;
    uint8_t *mask_t = into ? into : frnn_alloc((size_t)B, 1);
    if (!mask_t) {
        *status = FRNN_ENOMEM;
        return NULL;
    }
    for (ptrdiff_t b = 0; b < B; ++b) mask_t[b] = mask[b * ms.stride_b] != 0;
    return mask_t;
}

/* ---- One step's backward (T = 1) in torch's layout ------------------------------------
 * A step's gradients w.r.t. its gate pre-activations come as G blocks in Keras' gate order,
 * block g (B, H) at blocks[g] with row stride ld[g]; torch keeps gate g's weights in row
 * block gate_rows[g].  With them:
 *   the state or input gradient  out = sum_g block_g rows_g            (direct_step_rows_gradient)
 *   the weight gradient          rows_g' = block_g^T a                 (direct_step_weight_gradient)
 *   the bias gradient            column sums of each block             (direct_step_bias_gradient)
 * each read or written once, where the loops' backward would pack U^T first and the
 * caller transpose the gradients back. */

/* out[b, :] (+)= sum_g blocks[g][b, :] rows[gate_rows[g] * H .. + H, :] for b < B.
 *   rows (G*H, N) contiguous: weight_hh (N = H) or weight_ih (N = I).
 *   out (B, N) row stride ldo, not overlapping blocks or rows; accumulate: add to it.
 * Split over the kernel threads by bands of out's columns (call outside parallel
 * regions). */
FRNN_UNUSED static void SFX(direct_step_rows_gradient)(ptrdiff_t B, ptrdiff_t H, ptrdiff_t G,
                                                       const REAL *const *blocks,
                                                       const ptrdiff_t *ld, const int *gate_rows,
                                                       const REAL *rows, ptrdiff_t N, REAL *out,
                                                       ptrdiff_t ldo, int accumulate) {
    int nt = frnn_get_num_threads();
    if ((double)B * (double)(G * H) * (double)N < (double)FRNN_PARALLEL_MIN_MACS) nt = 1;
    if (nt > N) nt = (int)N;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int team = frnn_team_size();
        for (int band = frnn_thread_id(); band < team; band += team) {
            const ptrdiff_t c0 = frnn_band_start(N, band, team);
            const ptrdiff_t c1 = frnn_band_start(N, band + 1, team);
            for (ptrdiff_t g = 0; g < G && c0 < c1; ++g)
                SFX(columns_product)(B, H, blocks[g], ld[g], rows + gate_rows[g] * H * N + c0, N,
                                     c1 - c0, out + c0, ldo, accumulate || g > 0);
        }
    }
}

/* The blocks transposed into torch's row order: blocks_t[(gate_rows[g] * H + j) * B + b]
 * = blocks[g][b * ld[g] + j], (G*H, B) contiguous, for direct_step_weight_gradient. */
FRNN_UNUSED static void SFX(direct_step_blocks_t)(ptrdiff_t B, ptrdiff_t H, ptrdiff_t G,
                                                  const REAL *const *blocks, const ptrdiff_t *ld,
                                                  const int *gate_rows, REAL *blocks_t) {
    for (ptrdiff_t g = 0; g < G; ++g) {
        REAL *to = blocks_t + gate_rows[g] * H * B;
        for (ptrdiff_t b = 0; b < B; ++b)
            for (ptrdiff_t j = 0; j < H; ++j) to[j * B + b] = blocks[g][b * ld[g] + j];
    }
}

/* out (G*H, N) contiguous, torch's layout: out = blocks_t a, the step's weight gradient
 * (weight_ih with a = x's rows, weight_hh with a = h0).  blocks_t (G*H, B) from
 * direct_step_blocks_t; a (B, N) row stride lda, or NULL for zeros.  Split over the
 * kernel threads by bands of out's rows (call outside parallel regions), zeros too: one
 * core's stores fill a 1 MiB gradient at half the speed of two. */
FRNN_UNUSED static void SFX(direct_step_weight_gradient)(ptrdiff_t B, ptrdiff_t GH,
                                                         const REAL *blocks_t, const REAL *a,
                                                         ptrdiff_t lda, ptrdiff_t N, REAL *out) {
    int nt = frnn_get_num_threads();
    if ((double)(a ? B : 1) * (double)GH * (double)N < (double)FRNN_PARALLEL_MIN_MACS) nt = 1;
    if (nt > GH) nt = (int)GH;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int team = frnn_team_size();
        for (int band = frnn_thread_id(); band < team; band += team) {
            const ptrdiff_t r0 = frnn_band_start(GH, band, team);
            const ptrdiff_t r1 = frnn_band_start(GH, band + 1, team);
            if (r0 >= r1) continue;
            if (a) SFX(outer_rows)(r1 - r0, B, blocks_t + r0 * B, a, lda, N, out + r0 * N);
            else memset(out + r0 * N, 0, (size_t)((r1 - r0) * N) * sizeof(REAL));
        }
    }
}

/* out[gate_rows[g] * H + j] = sum_b blocks[g][b, j]: a bias gradient in torch's order. */
FRNN_UNUSED static void SFX(direct_step_bias_gradient)(ptrdiff_t B, ptrdiff_t H, ptrdiff_t G,
                                                       const REAL *const *blocks,
                                                       const ptrdiff_t *ld, const int *gate_rows,
                                                       REAL *out) {
    for (ptrdiff_t g = 0; g < G; ++g)
        SFX(column_sums)(blocks[g], B, H, ld[g], out + gate_rows[g] * H);
}

/* Everything of a step's backward on torch's rows after its pointwise pass, from the gate
 * gradients w.r.t. the input projection (in[g], row stride in_ld[g]) and w.r.t. the
 * recurrent one (rec[g], rec_ld[g]), the same for the LSTM and SimpleRNN, not for the GRU
 * (r scales the recurrent part of its candidate):
 *   d_h0 (B, H) += sum_g rec_g weight_hh_g (d_h0 NULL: skipped, frnn_initial_gradient);
 *   dx (B, I) row stride ldx = sum_g in_g weight_ih_g (dx NULL: skipped);
 *   d_kernel (G*H, I) = in^T x_rows;  d_recurrent (G*H, H) = rec^T h0 (zeros without h0);
 *   d_bias_in (G*H,) = in's column sums, d_bias_rec likewise from rec (either NULL: skipped).
 * x_rows (B, I) contiguous: the step's input with masked rows zeroed (forward's cache).
 * blocks_t: scratch of G*H*B values.  Call outside parallel regions. */
FRNN_UNUSED static void SFX(direct_step_backward_products)(
    ptrdiff_t B, ptrdiff_t I, ptrdiff_t H, ptrdiff_t G, const int *gate_rows,
    const REAL *const *in, const ptrdiff_t *in_ld, const REAL *const *rec,
    const ptrdiff_t *rec_ld, const REAL *kernel, const REAL *recurrent, const REAL *x_rows,
    const REAL *h0, REAL *dx, ptrdiff_t ldx, REAL *d_kernel, REAL *d_recurrent,
    REAL *d_bias_in, REAL *d_bias_rec, REAL *d_h0, REAL *blocks_t) {
    if (d_h0)
        SFX(direct_step_rows_gradient)(B, H, G, rec, rec_ld, gate_rows, recurrent, H, d_h0, H, 1);
    if (dx) SFX(direct_step_rows_gradient)(B, H, G, in, in_ld, gate_rows, kernel, I, dx, ldx, 0);
    SFX(direct_step_blocks_t)(B, H, G, in, in_ld, gate_rows, blocks_t);
    SFX(direct_step_weight_gradient)(B, G * H, blocks_t, x_rows, I, I, d_kernel);
    if (rec != in) SFX(direct_step_blocks_t)(B, H, G, rec, rec_ld, gate_rows, blocks_t);
    SFX(direct_step_weight_gradient)(B, G * H, blocks_t, h0, H, H, d_recurrent);
    if (d_bias_in) SFX(direct_step_bias_gradient)(B, H, G, in, in_ld, gate_rows, d_bias_in);
    if (d_bias_rec) SFX(direct_step_bias_gradient)(B, H, G, rec, rec_ld, gate_rows, d_bias_rec);
}

/* ---- Longer backward passes in torch's layout ---------------------------------------- */

/* Torch's rows (G*H, N) from Keras' columns (N, G*H), both contiguous: one transpose per
 * gate block (the inverse of keras_weights_from_rows, for gradients). */
FRNN_UNUSED static void SFX(rows_from_keras)(ptrdiff_t N, ptrdiff_t H, ptrdiff_t G,
                                             const int *gate_rows, const REAL *columns,
                                             REAL *rows) {
    for (ptrdiff_t g = 0; g < G; ++g) /* valid sizes and strides: cannot fail */
        (void)SFX(frnn_transpose)(N, H, columns + g * H, G * H, rows + gate_rows[g] * H * N, N);
}

/* A longer GRU backward pass on torch's rows with BLAS products per step runs the loops on
 * Keras' layout: the weights
 * converted (keras_weights_from_rows) and the gradients computed there, then transposed
 * back.  Each pointer NULL or allocated; the caller's backward runs between
 * keras_copies_for_backward and gradients_to_rows, which frees them all. */
typedef struct {
    REAL *kernel, *recurrent;     /* (I, G*H), (H, G*H) */
    REAL *d_kernel, *d_recurrent; /* the gradients, same shapes */
} SFX(keras_copies);

/* FRNN_OK, or FRNN_ENOMEM (copies still to be freed by gradients_to_rows). */
FRNN_UNUSED static int SFX(keras_copies_for_backward)(ptrdiff_t I, ptrdiff_t H, ptrdiff_t G,
                                                      const int *gate_rows,
                                                      const REAL *kernel_rows,
                                                      const REAL *recurrent_rows,
                                                      SFX(keras_copies) *copies) {
    copies->d_kernel = frnn_alloc((size_t)(I * G * H), sizeof(REAL));
    copies->d_recurrent = frnn_alloc((size_t)(H * G * H), sizeof(REAL));
    int status = SFX(keras_weights_from_rows)(I, H, G, gate_rows, kernel_rows, recurrent_rows,
                                              &copies->kernel, &copies->recurrent);
    if (!status && (!copies->d_kernel || !copies->d_recurrent)) status = FRNN_ENOMEM;
    return status;
}

/* When status is FRNN_OK, d_kernel (G*H, I) and d_recurrent (G*H, H) in torch's layout from
 * the copies' gradients; frees the copies either way and returns status. */
FRNN_UNUSED static int SFX(gradients_to_rows)(int status, ptrdiff_t I, ptrdiff_t H, ptrdiff_t G,
                                              const int *gate_rows, SFX(keras_copies) *copies,
                                              REAL *d_kernel, REAL *d_recurrent) {
    if (!status) {
        SFX(rows_from_keras)(I, H, G, gate_rows, copies->d_kernel, d_kernel);
        SFX(rows_from_keras)(H, H, G, gate_rows, copies->d_recurrent, d_recurrent);
    }
    frnn_free(copies->kernel);
    frnn_free(copies->recurrent);
    frnn_free(copies->d_kernel);
    frnn_free(copies->d_recurrent);
    return status;
}

/* Gate blocks reordered for `count` rows of G*H values: to_torch = 1 moves Keras' block g
 * to torch's block gate_rows[g], 0 back.  from and to must not overlap. */
FRNN_UNUSED static void SFX(reorder_gate_blocks)(ptrdiff_t count, ptrdiff_t H, ptrdiff_t G,
                                                 const int *gate_rows, int to_torch,
                                                 const REAL *from, REAL *to) {
    for (ptrdiff_t row = 0; row < count; ++row)
        for (ptrdiff_t g = 0; g < G; ++g) {
            const ptrdiff_t keras = row * G * H + g * H, torch = row * G * H + gate_rows[g] * H;
            memcpy(to + (to_torch ? torch : keras), from + (to_torch ? keras : torch),
                   (size_t)H * sizeof(REAL));
        }
}
