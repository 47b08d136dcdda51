/* Type-generic helpers, included once per precision with REAL, SFX(name) and GEMM set:
 * row-major GEMM on top of Fortran BLAS, activations, sequence gathers. */

/* C (m x n, row stride ldc) = alpha * op(A) * op(B) + beta * C, all row-major.
 * op(A) is m x k: A is m x k (lda >= k) or, transposed, k x m (lda >= m); likewise B.
 * Row-major C is column-major C^T, so we ask BLAS for C^T = op(B)^T op(A)^T.
 * m (rows) may exceed INT_MAX: the product is split into row blocks. */
static int SFX(gemm_rm_serial)(const frnn_blas *blas, int trans_a, int trans_b,
                        ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, REAL alpha,
                        const REAL *a, ptrdiff_t lda, const REAL *b, ptrdiff_t ldb,
                        REAL beta, REAL *c, ptrdiff_t ldc) {
    if (m == 0 || n == 0) return FRNN_OK;
    if (!frnn_fits_int(n) || !frnn_fits_int(k) || !frnn_fits_int(lda) || !frnn_fits_int(ldb)
        || !frnn_fits_int(ldc))
        return FRNN_EOVERFLOW;
    char tb = trans_a ? 'T' : 'N', ta = trans_b ? 'T' : 'N';
    int ni = (int)n, ki = (int)k;
    int ldb_i = ldb > 1 ? (int)ldb : 1, lda_i = lda > 1 ? (int)lda : 1, ldc_i = ldc > 1 ? (int)ldc : 1;
    const ptrdiff_t block = (ptrdiff_t)1 << 30;
    for (ptrdiff_t row = 0; row < m; row += block) {
        ptrdiff_t rows = m - row < block ? m - row : block;
        /* with trans_a, rows of op(A) are columns of A */
        const REAL *a_blk = trans_a ? a + row : a + row * lda;
        int mi = (int)rows;
        GEMM(&ta, &tb, &ni, &mi, &ki, &alpha, (REAL *)b, &ldb_i, (REAL *)a_blk, &lda_i, &beta,
             c + row * ldc, &ldc_i);
    }
    return FRNN_OK;
}

/* C's rows [r0, r1), columns [c0, c1) set to row[c0..c1) (C row stride ldc). */
static void SFX(fill_rows)(REAL *c, ptrdiff_t ldc, const REAL *row, ptrdiff_t r0, ptrdiff_t r1,
                           ptrdiff_t c0, ptrdiff_t c1) {
    for (ptrdiff_t r = r0; r < r1; ++r)
        memcpy(c + r * ldc + c0, row + c0, (size_t)(c1 - c0) * sizeof(REAL));
}

/* gemm_rm_serial's product split over the kernels' threads: each thread computes a band
 * of C's rows (or, when C is wider than tall, of its columns) with a serial BLAS call.
 * Why not BLAS' own threads: the Python layer runs BLAS single-threaded during kernel
 * calls (fusedrnn/_threads.py), because OpenBLAS' idle workers keep spinning for a while
 * after a call and stole a core from the fused time loops (measured up to 8x slower).
 * c_init (n values, or NULL): every row of C starts from it (C = c_init + alpha op(A)
 * op(B); beta is then ignored), each thread filling its own band just before its product
 * reads it back (see input_projection for why).
 * Call it outside parallel regions; small products run serially. */
static int SFX(gemm_rm_init)(const frnn_blas *blas, int trans_a, int trans_b,
                             ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, REAL alpha,
                             const REAL *a, ptrdiff_t lda, const REAL *b, ptrdiff_t ldb,
                             REAL beta, REAL *c, ptrdiff_t ldc, const REAL *c_init) {
    if (c_init) beta = 1;
    int nt = frnn_get_num_threads();
    if (nt < 2 || (double)m * (double)n * (double)k < (double)FRNN_GEMM_SPLIT_MIN_MACS) {
        if (c_init) SFX(fill_rows)(c, ldc, c_init, 0, m, 0, n);
        return SFX(gemm_rm_serial)(blas, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
    const int by_rows = m >= n;
    const ptrdiff_t len = by_rows ? m : n;
    if (nt > len) nt = (int)len;
    int status = FRNN_OK;
#pragma omp parallel num_threads(nt)
    {
        for (int band = frnn_thread_id(); band < nt; band += frnn_team_size()) {
            const ptrdiff_t lo = frnn_band_start(len, band, nt);
            const ptrdiff_t hi = frnn_band_start(len, band + 1, nt);
            int st = FRNN_OK;
            if (hi > lo && by_rows) {
                if (c_init) SFX(fill_rows)(c, ldc, c_init, lo, hi, 0, n);
                st = SFX(gemm_rm_serial)(blas, trans_a, trans_b, hi - lo, n, k, alpha,
                                         trans_a ? a + lo : a + lo * lda, lda, b, ldb, beta,
                                         c + lo * ldc, ldc);
            } else if (hi > lo) {
                if (c_init) SFX(fill_rows)(c, ldc, c_init, 0, m, lo, hi);
                st = SFX(gemm_rm_serial)(blas, trans_a, trans_b, m, hi - lo, k, alpha, a, lda,
                                         trans_b ? b + lo * ldb : b + lo, ldb, beta, c + lo,
                                         ldc);
            }
            if (st) {
#pragma omp atomic write
                status = st;
            }
        }
    }
    return status;
}

static int SFX(gemm_rm)(const frnn_blas *blas, int trans_a, int trans_b,
                        ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, REAL alpha,
                        const REAL *a, ptrdiff_t lda, const REAL *b, ptrdiff_t ldb,
                        REAL beta, REAL *c, ptrdiff_t ldc) {
    return SFX(gemm_rm_init)(blas, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                             ldc, NULL);
}

/* Column sums of a (rows, cols) matrix, rows ld apart, into out (overwritten). */
static void SFX(column_sums)(const REAL *m, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,
                            REAL *FRNN_RESTRICT out) {
    memset(out, 0, (size_t)cols * sizeof(REAL));
    for (ptrdiff_t r = 0; r < rows; ++r) {
        const REAL *row = m + r * ld;
        for (ptrdiff_t j = 0; j < cols; ++j) out[j] += row[j];
    }
}

/* One thread's weight gradient: C = A^T B (beta 0) or C += A^T B (beta 1), A k x m, B
 * k x n; with beta 0, b_sums (n, or NULL) = B's column sums.  The AVX2 tiles where they
 * run (they take the sums while packing B), else BLAS and a pass over B. */
static int SFX(weight_gradient_serial)(const frnn_blas *blas, ptrdiff_t m, ptrdiff_t n,
                                       ptrdiff_t k, const REAL *a, ptrdiff_t lda, const REAL *b,
                                       ptrdiff_t ldb, REAL beta, REAL *c, ptrdiff_t ldc,
                                       REAL *b_sums) {
#if FRNN_F32
    if (frnn_use_avx2()) {
        const int status = frnn_weight_gradient_tiles_f32(m, n, k, a, lda, b, ldb, beta == 1,
                                                          c, ldc, b_sums);
        if (status != FRNN_ENOMEM) return status; /* no room for its scratch: BLAS */
    }
#endif
    const int status = SFX(gemm_rm_serial)(blas, 1, 0, m, n, k, 1, a, lda, b, ldb, beta, c, ldc);
    if (status == FRNN_OK && b_sums) SFX(column_sums)(b, k, n, ldb, b_sums);
    return status;
}

/* weight_gradient_serial with the sum over k split into nt fixed bands: band 0
 * accumulates into C (and b_sums), band i > 0 into its own partial (m x n, then n sums),
 * and the partials are then added in band order (so results never depend on the team the
 * runtime grants).  For the weight gradients (k = T*B rows against a few hundred
 * columns): split by rows or columns of C, every thread packs the whole of the other
 * operand; split by k, nobody packs anything twice.  Returns FRNN_ENOMEM, having written
 * nothing, when the partials do not fit. */
static int SFX(weight_gradient_split_k)(const frnn_blas *blas, int nt, ptrdiff_t m, ptrdiff_t n,
                                        ptrdiff_t k, const REAL *a, ptrdiff_t lda, const REAL *b,
                                        ptrdiff_t ldb, REAL beta, REAL *c, ptrdiff_t ldc,
                                        REAL *b_sums) {
    const ptrdiff_t part = (m + 1) * n; /* a partial C and its sums */
    REAL *partials = frnn_alloc((size_t)(nt - 1) * (size_t)part, sizeof(REAL));
    if (!partials) return FRNN_ENOMEM;
    int status = FRNN_OK;
#pragma omp parallel num_threads(nt)
    {
        for (int band = frnn_thread_id(); band < nt; band += frnn_team_size()) {
            const ptrdiff_t lo = k * band / nt, hi = k * (band + 1) / nt;
            REAL *mine = band > 0 ? partials + (band - 1) * part : NULL;
            const int st =
                band == 0 ? SFX(weight_gradient_serial)(blas, m, n, hi - lo, a, lda, b, ldb, beta,
                                                        c, ldc, b_sums)
                          : SFX(weight_gradient_serial)(blas, m, n, hi - lo, a + lo * lda, lda,
                                                        b + lo * ldb, ldb, 0, mine, n,
                                                        b_sums ? mine + m * n : NULL);
            if (st) {
#pragma omp atomic write
                status = st;
            }
        }
    }
    if (status == FRNN_OK) {
        const ptrdiff_t rows = b_sums ? m + 1 : m; /* the sums as C's row m */
#pragma omp parallel num_threads(nt)
        for (int band = frnn_thread_id(); band < nt; band += frnn_team_size()) {
            for (ptrdiff_t i = rows * band / nt; i < rows * (band + 1) / nt; ++i)
                for (int p = 0; p < nt - 1; ++p) {
                    const REAL *FRNN_RESTRICT src = partials + p * part + i * n;
                    REAL *FRNN_RESTRICT dst = i < m ? c + i * ldc : b_sums;
                    for (ptrdiff_t j = 0; j < n; ++j) dst[j] += src[j];
                }
        }
    }
    frnn_free(partials);
    return status;
}

/* A weight gradient: C = A^T B (beta 0) or C += A^T B (beta 1), summed over the k = T*B
 * rows of A (k x m, row stride lda) and B (k x n, row stride ldb); with beta 0, b_sums
 * (n, or NULL) = B's column sums, a bias gradient, taken on the way.  With k long against
 * C the threads split the sum (weight_gradient_split_k), else C's columns (nt fixed bands,
 * as gemm_rm). */
static int SFX(weight_gradient_gemm)(const frnn_blas *blas, ptrdiff_t m, ptrdiff_t n,
                                     ptrdiff_t k, const REAL *a, ptrdiff_t lda, const REAL *b,
                                     ptrdiff_t ldb, REAL beta, REAL *c, ptrdiff_t ldc,
                                     REAL *b_sums) {
    const int nt = frnn_get_num_threads();
    if (nt < 2 || (double)m * (double)n * (double)k < (double)FRNN_GEMM_SPLIT_MIN_MACS)
        return SFX(weight_gradient_serial)(blas, m, n, k, a, lda, b, ldb, beta, c, ldc, b_sums);
    if (k >= FRNN_GEMM_SPLIT_K_RATIO * (m > n ? m : n)) {
        int status = SFX(weight_gradient_split_k)(blas, nt, m, n, k, a, lda, b, ldb, beta, c,
                                                  ldc, b_sums);
        if (status != FRNN_ENOMEM) return status; /* no room for the partials: by bands */
    }
    /* else bands of C's columns: each thread all of A, its columns of B and their sums */
    int status = FRNN_OK;
#pragma omp parallel num_threads(nt)
    for (int band = frnn_thread_id(); band < nt; band += frnn_team_size()) {
        const ptrdiff_t lo = frnn_band_start(n, band, nt), hi = frnn_band_start(n, band + 1, nt);
        const int st = hi > lo ? SFX(weight_gradient_serial)(blas, m, hi - lo, k, a, lda, b + lo,
                                                             ldb, beta, c + lo, ldc,
                                                             b_sums ? b_sums + lo : NULL)
                               : FRNN_OK;
        if (st) {
#pragma omp atomic write
            status = st;
        }
    }
    return status;
}

/* weight_gradient_gemm (beta 0) into torch's rows through a Keras-layout scratch: the
 * product's n columns, in blocks of `block`, each transposed into c (row stride m) at row
 * block rows[g] (rows NULL: in order).  b_sums as weight_gradient_gemm's. */
FRNN_UNUSED static int SFX(weight_gradient_via_scratch)(const frnn_blas *blas, ptrdiff_t m,
                                                        ptrdiff_t n, ptrdiff_t block,
                                                        const int *rows, ptrdiff_t k,
                                                        const REAL *a, ptrdiff_t lda,
                                                        const REAL *b, ptrdiff_t ldb, REAL *c,
                                                        REAL *b_sums) {
    REAL *keras = frnn_alloc((size_t)(m * n), sizeof(REAL));
    if (!keras) return FRNN_ENOMEM;
    int status = SFX(weight_gradient_gemm)(blas, m, n, k, a, lda, b, ldb, 0, keras, n, b_sums);
    for (ptrdiff_t g = 0; !status && g < n / block; ++g)
        status = SFX(frnn_transpose)(m, block, keras + g * block, n,
                                     c + (rows ? rows[g] : g) * block * m, m);
    frnn_free(keras);
    return status;
}

/* weight_gradient_gemm into a gradient of either layout: c (m, n) row stride n, Keras'
 * (w_rows = 0), or its transpose (n, m) row stride m, torch.nn's (w_rows = 1), taken as
 * the product with the operands swapped, C^T = B^T A.  b_sums (beta 0 only) are B's
 * column sums, which the swapped product does not take: that product goes through a
 * Keras-layout scratch, transposed into c. */
FRNN_UNUSED static int SFX(weight_gradient_in_layout)(const frnn_blas *blas, int w_rows,
                                                      ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                                      const REAL *a, ptrdiff_t lda,
                                                      const REAL *b, ptrdiff_t ldb, REAL beta,
                                                      REAL *c, REAL *b_sums) {
    if (!w_rows)
        return SFX(weight_gradient_gemm)(blas, m, n, k, a, lda, b, ldb, beta, c, n, b_sums);
    if (!b_sums)
        return SFX(weight_gradient_gemm)(blas, n, m, k, b, ldb, a, lda, beta, c, m, NULL);
    return SFX(weight_gradient_via_scratch)(blas, m, n, n, NULL, k, a, lda, b, ldb, c, b_sums);
}

/* Copy the input of processing steps [t0, t1) into a time-major (t1-t0, B, I) buffer.
 * Serial: split over the threads (and scatter_dx likewise) it measured 0.85-1.03 on the
 * Zen 3, within the noise (GRU and LSTM, B=1-128). */
static void SFX(gather_steps)(const frnn_dims *d, const REAL *x, frnn_seq_strides xs,
                              ptrdiff_t t0, ptrdiff_t t1, REAL *FRNN_RESTRICT out) {
    const ptrdiff_t B = d->batch, I = d->input_size;
    for (ptrdiff_t t = t0; t < t1; ++t) {
        ptrdiff_t s = frnn_input_step(d, t);
        for (ptrdiff_t b = 0; b < B; ++b)
            memcpy(out + ((t - t0) * B + b) * I, x + b * xs.stride_b + s * xs.stride_t,
                   (size_t)I * sizeof(REAL));
    }
}

/* Rows [b0, b1) of processing step t's input into the time-major cache x_cache (T, B, I)
 * for backward, masked rows (mask_tm (T, B) or NULL) zero, as gather_steps and
 * zero_masked_rows leave them. */
static void SFX(cache_step_rows)(const frnn_dims *d, const REAL *x, frnn_seq_strides xs,
                                 const uint8_t *mask_tm, ptrdiff_t t, ptrdiff_t b0,
                                 ptrdiff_t b1, REAL *FRNN_RESTRICT x_cache) {
    const ptrdiff_t B = d->batch, I = d->input_size, s = frnn_input_step(d, t);
    const size_t bytes = (size_t)I * sizeof(REAL);
    for (ptrdiff_t b = b0; b < b1; ++b) {
        REAL *row = x_cache + (t * B + b) * I;
        if (mask_tm && !mask_tm[t * B + b]) memset(row, 0, bytes);
        else memcpy(row, x + b * xs.stride_b + s * xs.stride_t, bytes);
    }
}

/* Start of every backward pass: dh0 = d_h_n (or 0), the bias gradient (bias_len,) or
 * NULL zeroed, and the weight gradients (kernel (I, cols), recurrent (H, cols)) zeroed
 * where nothing overwrites them: both for an empty problem (T = 0 or B = 0), the
 * recurrent one for a single step (its only term, from h0, is added to it, or absent).
 * Otherwise the products after the loop write them with beta 0, and zeroing them first
 * was a pass over up to 6 MiB for nothing.  dx is left alone: with T or B zero it is
 * empty, otherwise every row of every step is written later (by the in-loop input
 * gradient or scatter_dx). */
static void SFX(backward_prologue)(const frnn_dims *d, ptrdiff_t cols, ptrdiff_t bias_len,
                                   const REAL *d_h_n, REAL *d_h0, REAL *d_kernel,
                                   REAL *d_recurrent, REAL *d_bias) {
    const ptrdiff_t B = d->batch, T = d->steps, I = d->input_size, H = d->units;
    const size_t state_bytes = (size_t)(B * H) * sizeof(REAL);
    const int empty = T == 0 || B == 0;
    if (d_h_n) memcpy(d_h0, d_h_n, state_bytes);
    else memset(d_h0, 0, state_bytes);
    if (empty) memset(d_kernel, 0, (size_t)(I * cols) * sizeof(REAL));
    if (empty || T == 1) memset(d_recurrent, 0, (size_t)(H * cols) * sizeof(REAL));
    if (d_bias) memset(d_bias, 0, (size_t)bias_len * sizeof(REAL));
}

/* dx (caller's layout) from the time-major (T, B, I) dx_tm in processing order. */
static void SFX(scatter_dx)(const frnn_dims *d, const REAL *dx_tm, REAL *dx,
                            frnn_seq_strides dxs) {
    const ptrdiff_t B = d->batch, T = d->steps, I = d->input_size;
    for (ptrdiff_t t = 0; t < T; ++t) {
        ptrdiff_t s = frnn_input_step(d, t);
        for (ptrdiff_t b = 0; b < B; ++b)
            memcpy(dx + b * dxs.stride_b + s * dxs.stride_t, dx_tm + (t * B + b) * I,
                   (size_t)I * sizeof(REAL));
    }
}

/* Zero the gathered input rows of masked steps (mask_tm (T,B) in processing order, or
 * NULL): padding under a mask may hold NaN/Inf, which would otherwise reach dW = X^T dZ
 * (0 * NaN = NaN) even though the step is skipped. */
FRNN_UNUSED static void SFX(zero_masked_rows)(const frnn_dims *d, const uint8_t *mask_tm,
                                              ptrdiff_t t0, ptrdiff_t t1, REAL *x_chunk) {
    if (!mask_tm) return;
    const ptrdiff_t B = d->batch, I = d->input_size;
    for (ptrdiff_t t = t0; t < t1; ++t)
        for (ptrdiff_t b = 0; b < B; ++b)
            if (!mask_tm[t * B + b])
                memset(x_chunk + ((t - t0) * B + b) * I, 0, (size_t)I * sizeof(REAL));
}

/* Z[rows, cols] = X[rows, I] W[I, cols] + bias (bias broadcast over rows; NULL = 0);
 * w_rows: w is W's transpose (cols, I), torch.nn's weight_ih.
 * The bias goes in band by band (gemm_rm_init): filling all of Z on one thread first, as
 * until 2026-12-02, left the other thread waiting; split, inference ran 1.03-1.10x faster
 * (GRU B=32 and 128 with H=128, I=64; B=8, H=256; B=128, H=512; LSTM B=8, H=128;
 * SimpleRNN B=16, H=256), GRU training at B=32, H=128 1.04x, 0.99x at B=1 (Zen 3, 2
 * threads, T=100, alternating calls).  Own register tiles for the projection (the
 * transposed product's, W packed in 16-column blocks, the bias as the sums' start) gained
 * another 1.05x only for the GRU at B=128, H=128 and lost up to 6% from 512 columns. */
static int SFX(input_projection)(const frnn_blas *blas, ptrdiff_t rows, ptrdiff_t in, ptrdiff_t cols,
                                 const REAL *xrows, const REAL *w, int w_rows, const REAL *bias,
                                 REAL *z) {
    return SFX(gemm_rm_init)(blas, 0, w_rows, rows, cols, in, 1, xrows, in, w, w_rows ? in : cols,
                             0, z, cols, bias);
}

