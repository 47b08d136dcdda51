/* The per-step recurrent matmul, fused with the gate pass by unit blocks.  Included once
 * per precision with REAL and SFX(name) defined.
 *
 * Why not BLAS: a step is a thin product (B rows, often 1-32) that BLAS handles poorly (a
 * call costs ~1 us, and OpenBLAS repacks U on every call).  Here U is packed once per call
 * so that each block of VW consecutive units has the G gate columns of those units side by
 * side; a thread owning a range of unit blocks computes exactly the gate pre-activations its
 * fused pointwise pass needs, so the cores split the units and meet once per step.
 *
 * The loops are plain C over fixed-size register tiles (acc[rows][G*VW]); GCC vectorises
 * them in each FRNN_CLONES variant (AVX-512, AVX2+FMA, baseline).  GCC vector extensions
 * wider than the target's registers were tried first and compiled to stack traffic
 * (~3 GFLOP/s). */

/* Units per block (REAL is read at each use): forward tiles of 4 rows x G gates x 32 bytes
 * fill the 16 AVX2 registers (measured 105 GFLOP/s per core at B=8, H=256, against 27 with
 * 64-byte blocks, whose tiles spill); backward blocks are 64 bytes (4 rows x 64 bytes). */
#ifndef VW
#define VWF ((ptrdiff_t)(32 / sizeof(REAL)))
#define VW ((ptrdiff_t)(64 / sizeof(REAL)))
#endif

FRNN_UNUSED static inline ptrdiff_t SFX(unit_blocks_fwd)(ptrdiff_t H) { return (H + VWF - 1) / VWF; }
FRNN_UNUSED static inline ptrdiff_t SFX(unit_blocks)(ptrdiff_t H) { return (H + VW - 1) / VW; }

/* pack_recurrent_blocks (below) from torch's rows: each block's gate is the transpose of its
 * `width` unit rows (transpose.c's register blocks), the units past H zeroed. */
FRNN_UNUSED static void SFX(pack_rows_blocks)(const REAL *FRNN_RESTRICT src, ptrdiff_t lds,
                                              ptrdiff_t rows, ptrdiff_t H, ptrdiff_t G,
                                              const int *gate_rows, ptrdiff_t width,
                                              REAL *FRNN_RESTRICT packed, ptrdiff_t block_rows,
                                              ptrdiff_t row0, ptrdiff_t jb0, ptrdiff_t jb1) {
    const ptrdiff_t ldp = G * width; /* packed row stride */
    for (ptrdiff_t jb = jb0; jb < jb1; ++jb) {
        const ptrdiff_t j0 = jb * width, n = H - j0 < width ? H - j0 : width;
        for (ptrdiff_t g = 0; g < G; ++g) {
            REAL *dst = packed + (jb * block_rows + row0) * ldp + g * width;
            SFX(frnn_transpose_serial)(n, rows, src + (gate_rows[g] * H + j0) * lds, lds, dst,
                                       ldp);
            if (n < width)
                for (ptrdiff_t k = 0; k < rows; ++k)
                    memset(dst + k * ldp + n, 0, (size_t)(width - n) * sizeof(REAL));
        }
    }
}

/* Forward packing of `rows` rows of a weight matrix (G*H used columns, row stride lds)
 * into blocks of `width` units, starting at row `row0` of blocks of `block_rows` rows:
 *   packed[((jb*block_rows + row0 + k)*G + g)*width + w] = src[k*lds + g*H + jb*width + w],
 *   zero where jb*width + w >= H.  packed holds ceil(H / width) * block_rows * G * width
 *   elements.
 * U alone is rows = block_rows = H, row0 = 0.  The input kernel W (I rows) and U stacked
 * in one block (block_rows = I + H, U at row0 = I) let a step's tile add x_t W and
 * h_{t-1} U in one pass.  lds > G*H packs one gate block of a wider matrix (GRU's
 * per-gate products); lds = 0 with rows = 1 packs a bias vector.
 * Blocks [jb0, jb1) only, so a team can share the work.  Full blocks copy a constant
 * `width` elements (one vector move each), and src is read a few rows at a time across all
 * blocks: a memcpy call per 32 bytes, walking U's rows block by block (a page per read),
 * took 2 ms of an 11 ms LSTM forward at B=1, H=512.
 * gate_rows non-NULL: src is the matrix's transpose in torch.nn's layout instead, G blocks
 * of H rows with `rows` used columns (row stride lds), Keras' gate g in torch's row block
 * gate_rows[g]:  packed[...] = src[(gate_rows[g]*H + jb*width + w)*lds + k].  Packing
 * straight from it saves the transpose into Keras' layout that a torch module's weights
 * otherwise took first (LSTM inference over 100 steps from torch's rows at B=1-8, H=512:
 * 1.18-1.25x; 1.05 at B=32, H=256; Xeon, build against build in one process). */
FRNN_UNUSED static void SFX(pack_recurrent_blocks)(const REAL *FRNN_RESTRICT src, ptrdiff_t lds,
                                                   ptrdiff_t rows, ptrdiff_t H, ptrdiff_t G,
                                                   const int *gate_rows, ptrdiff_t width,
                                                   REAL *FRNN_RESTRICT packed,
                                                   ptrdiff_t block_rows, ptrdiff_t row0,
                                                   ptrdiff_t jb0, ptrdiff_t jb1) {
    if (gate_rows) {
        SFX(pack_rows_blocks)(src, lds, rows, H, G, gate_rows, width, packed, block_rows, row0,
                              jb0, jb1);
        return;
    }
    const ptrdiff_t KB = 8; /* rows of src per pass: KB*G*H elements stay in L2 */
    for (ptrdiff_t k0 = 0; k0 < rows; k0 += KB)
    for (ptrdiff_t jb = jb0; jb < jb1; ++jb) {
        const ptrdiff_t j0 = jb * width, n = H - j0 < width ? H - j0 : width;
        const ptrdiff_t k1 = k0 + KB < rows ? k0 + KB : rows;
        REAL *dst = packed + (jb * block_rows + row0 + k0) * G * width;
        for (ptrdiff_t k = k0; k < k1; ++k)
            for (ptrdiff_t g = 0; g < G; ++g, dst += width) {
                const REAL *from = src + k * lds + g * H + j0;
                if (n == VW && width == VW) {
                    for (ptrdiff_t w = 0; w < VW; ++w) dst[w] = from[w];
                } else if (n == VWF && width == VWF) {
                    for (ptrdiff_t w = 0; w < VWF; ++w) dst[w] = from[w];
                } else {
                    for (ptrdiff_t w = 0; w < width; ++w) dst[w] = w < n ? from[w] : (REAL)0;
                }
            }
    }
}

/* Backward packing: the transpose, for dh[b, j] = sum_c dz[b, c] U[j, c] over K columns
 * c of U (H rows, row stride ldu):
 *   packed_t[(jb*K + c)*VW + w] = U[(jb*VW + w)*ldu + c], zero where jb*VW + w >= H.
 * Blocks [jb0, jb1) only.  Each block is the transpose of VW rows of U into rows of VW
 * (transpose.c's register blocks: a training step at T=10, batch 1, 1.05-1.07x over the
 * element-by-element copy it replaced; 1.00-1.03x at T=100).
 * gate_rows non-NULL: U comes as its transpose in torch.nn's layout (rows of H used
 * columns, row stride ldu), in gate blocks of gate_len rows, Keras' block g being torch's
 * block gate_rows[g]; each block is then a copy of VW columns:
 *   packed_t[(jb*K + c)*VW + w] = U[row(c)*ldu + jb*VW + w],
 *   row(c) = gate_rows[c / gate_len]*gate_len + c % gate_len. */
FRNN_UNUSED static void SFX(pack_recurrent_t_blocks)(const REAL *FRNN_RESTRICT U, ptrdiff_t ldu,
                                                     ptrdiff_t H, ptrdiff_t K,
                                                     const int *gate_rows, ptrdiff_t gate_len,
                                                     REAL *FRNN_RESTRICT packed_t, ptrdiff_t jb0,
                                                     ptrdiff_t jb1) {
    for (ptrdiff_t jb = jb0; jb < jb1; ++jb) {
        const ptrdiff_t j0 = jb * VW, n = H - j0 < VW ? H - j0 : VW;
        REAL *dst = packed_t + jb * K * VW;
        if (n < VW) memset(dst, 0, (size_t)(K * VW) * sizeof(REAL)); /* the units past H */
        if (!gate_rows) {
            SFX(frnn_transpose_serial)(n, K, U + j0 * ldu, ldu, dst, VW);
            continue;
        }
        for (ptrdiff_t c = 0; c < K; ++c) {
            const REAL *from =
                U + (gate_rows[c / gate_len] * gate_len + c % gate_len) * ldu + j0;
            if (n == VW) {
                for (ptrdiff_t w = 0; w < VW; ++w) dst[c * VW + w] = from[w];
            } else {
                memcpy(dst + c * VW, from, (size_t)n * sizeof(REAL));
            }
        }
    }
}

/* The packings over a team of nt threads (each packs a contiguous share of the blocks).
 * Call outside parallel regions.  pack_recurrent: U (H rows, row stride ldu) alone, or
 * with gate_rows its transpose in torch's rows (G*H rows, row stride ldu). */
FRNN_UNUSED static void SFX(pack_recurrent)(const REAL *U, ptrdiff_t ldu, ptrdiff_t H,
                                            ptrdiff_t G, const int *gate_rows, ptrdiff_t width,
                                            REAL *packed, int nt) {
    const ptrdiff_t nb = (H + width - 1) / width;
    if (nt > nb) nt = (int)nb;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const ptrdiff_t tid = frnn_thread_id(), team = frnn_team_size();
        SFX(pack_recurrent_blocks)(U, ldu, H, H, G, gate_rows, width, packed, H, 0,
                                   nb * tid / team, nb * (tid + 1) / team);
    }
}

/* The input kernel W (I rows, row stride G*H) over U (H rows, row stride G*H) in blocks of
 * I + H rows of `width` units (with gate_rows: W and U in torch's rows, (G*H, I) and
 * (G*H, H), as pack_recurrent_blocks), and the bias (G*H, or NULL for zeros) in blocks of one row
 * (packed_bias: ceil(H / width) * G * width elements): the operands of
 * input_recurrent_matmul_g4 (G = 4, width VWF) and input_recurrent_matmul_t (G = 1,
 * width VW). */
FRNN_UNUSED static void SFX(pack_input_recurrent)(const REAL *W, ptrdiff_t I, const REAL *U,
                                                  const REAL *bias, ptrdiff_t H, ptrdiff_t G,
                                                  const int *gate_rows, ptrdiff_t width,
                                                  REAL *packed, REAL *packed_bias, int nt) {
    const ptrdiff_t nb = (H + width - 1) / width;
    if (nt > nb) nt = (int)nb;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const ptrdiff_t tid = frnn_thread_id(), team = frnn_team_size();
        const ptrdiff_t jb0 = nb * tid / team, jb1 = nb * (tid + 1) / team;
        SFX(pack_recurrent_blocks)(W, gate_rows ? I : G * H, I, H, G, gate_rows, width, packed,
                                   I + H, 0, jb0, jb1);
        SFX(pack_recurrent_blocks)(U, gate_rows ? H : G * H, H, H, G, gate_rows, width, packed,
                                   I + H, I, jb0, jb1);
        if (bias) { /* one vector: Keras' gate order in either layout */
            SFX(pack_recurrent_blocks)(bias, 0, 1, H, G, NULL, width, packed_bias, 1, 0, jb0,
                                       jb1);
        } else {
            memset(packed_bias + jb0 * G * width, 0,
                   (size_t)((jb1 - jb0) * G * width) * sizeof(REAL));
        }
    }
}

FRNN_UNUSED static void SFX(pack_recurrent_t)(const REAL *U, ptrdiff_t ldu, ptrdiff_t H,
                                              ptrdiff_t K, const int *gate_rows,
                                              ptrdiff_t gate_len, REAL *packed_t, int nt) {
    const ptrdiff_t nb = SFX(unit_blocks)(H);
    if (nt > nb) nt = (int)nb;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const ptrdiff_t tid = frnn_thread_id(), team = frnn_team_size();
        SFX(pack_recurrent_t_blocks)(U, ldu, H, K, gate_rows, gate_len, packed_t,
                                     nb * tid / team, nb * (tid + 1) / team);
    }
}

/* The forward product of one step, for all rows b < B and the units j of blocks [jb0, jb1):
 *   z[b, g*H + j] (+)= bias[g*H + j] + sum_{k<I} x[b, k] W[k, g*H + j]
 *                      + sum_{k<H} h[b, k] U[k, g*H + j]
 * packed: W over U in blocks of I + H rows (pack_input_recurrent), or U alone with I = 0
 *   (pack_recurrent, width VWF).  x (B,I) row stride ldx; unread when I = 0.
 * h (B,H) contiguous.  z rows of G*H, row stride ldz, must not alias x or h.
 * packed_bias (from pack_input_recurrent) or NULL: with it z is overwritten, without it
 * the products are added to z (which then holds, say, a precomputed input projection).
 * G is a compile-time constant in each instantiation so the tiles have a fixed size. */
#define FRNN_DEFINE_RECMM(GN)                                                                  \
    FRNN_UNUSED static void SFX(recurrent_matmul_g##GN##_generic)(                           \
        const REAL *FRNN_RESTRICT packed, ptrdiff_t I, const REAL *FRNN_RESTRICT x,          \
        ptrdiff_t ldx, ptrdiff_t H, ptrdiff_t B, const REAL *FRNN_RESTRICT h,                 \
        const REAL *FRNN_RESTRICT packed_bias, REAL *FRNN_RESTRICT z, ptrdiff_t ldz,          \
        ptrdiff_t jb0, ptrdiff_t jb1) {                                                      \
        for (ptrdiff_t jb = jb0; jb < jb1; ++jb) {                                             \
            const ptrdiff_t j0 = jb * VWF, n = H - j0 < VWF ? H - j0 : VWF;                       \
            const REAL *pb = packed + jb * (I + H) * GN * VWF;                                  \
            const REAL *bb = packed_bias ? packed_bias + jb * GN * VWF : NULL;                  \
            ptrdiff_t b = 0;                                                                   \
            for (; b + 4 <= B; b += 4) { /* a 4-row tile: each weight load feeds 4 FMAs */    \
                REAL acc[4][GN * VWF];                                                          \
                for (int r = 0; r < 4; ++r)                                                    \
                    for (int q = 0; q < GN * VWF; ++q) acc[r][q] = bb ? bb[q] : (REAL)0;        \
                for (int part = 0; part < 2; ++part) { /* x_t W, then h_{t-1} U */            \
                    const REAL *ar = part ? h + b * H : x + b * ldx;                           \
                    const ptrdiff_t lda = part ? H : ldx, K = part ? H : I;                    \
                    const REAL *pp = part ? pb + I * GN * VWF : pb;                             \
                    for (ptrdiff_t k = 0; k < K; ++k) {                                        \
                        const REAL *pk = pp + k * GN * VWF;                                     \
                        const REAL a0 = ar[k], a1 = ar[lda + k], a2 = ar[2 * lda + k],         \
                                   a3 = ar[3 * lda + k];                                       \
                        for (int q = 0; q < GN * VWF; ++q) {                                    \
                            const REAL w = pk[q];                                              \
                            acc[0][q] += a0 * w;                                               \
                            acc[1][q] += a1 * w;                                               \
                            acc[2][q] += a2 * w;                                               \
                            acc[3][q] += a3 * w;                                               \
                        }                                                                      \
                    }                                                                          \
                }                                                                              \
                for (int r = 0; r < 4; ++r)                                                    \
                    for (int g = 0; g < GN; ++g) {                                             \
                        REAL *zp = z + (b + r) * ldz + g * H + j0;                             \
                        for (ptrdiff_t w = 0; w < n; ++w)                                      \
                            zp[w] = (bb ? 0 : zp[w]) + acc[r][g * VWF + w];                     \
                    }                                                                          \
            }                                                                                  \
            for (; b < B; ++b) {                                                               \
                REAL acc[GN * VWF];                                                             \
                for (int q = 0; q < GN * VWF; ++q) acc[q] = bb ? bb[q] : (REAL)0;               \
                for (int part = 0; part < 2; ++part) {                                         \
                    const REAL *ar = part ? h + b * H : x + b * ldx;                           \
                    const ptrdiff_t K = part ? H : I;                                          \
                    const REAL *pp = part ? pb + I * GN * VWF : pb;                             \
                    for (ptrdiff_t k = 0; k < K; ++k) {                                        \
                        const REAL *pk = pp + k * GN * VWF;                                     \
                        const REAL ak = ar[k];                                                 \
                        for (int q = 0; q < GN * VWF; ++q) acc[q] += ak * pk[q];                \
                    }                                                                          \
                }                                                                              \
                for (int g = 0; g < GN; ++g) {                                                 \
                    REAL *zp = z + b * ldz + g * H + j0;                                       \
                    for (ptrdiff_t w = 0; w < n; ++w)                                          \
                        zp[w] = (bb ? 0 : zp[w]) + acc[g * VWF + w];                            \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    }
FRNN_DEFINE_RECMM(3)
FRNN_DEFINE_RECMM(4)
#undef FRNN_DEFINE_RECMM

/* The transposed product, for all rows b < B and the units j of blocks [jb0, jb1):
 *   dh[b, j] += (sum_c dz[b, c] U[j, c]) * (keep ? keep[b, j] : 1), c < GH
 * (packed_t from pack_recurrent_t with K = GH).  dz (B, GH) row stride ldz; dh (B, H) row
 * stride ldh; keep (B,H) contiguous.  The same product with U's columns packed by
 * pack_recurrent(width VW) is h U, the forward of one gate block.
 * With I > 0 the packed blocks hold I + GH rows (an input kernel W over U, as
 * pack_recurrent_blocks stacks them) and x (B, I) row stride ldx is the first operand:
 *   dh[b, j] (+)= bias[j] + sum_{k<I} x[b, k] W[k, j] + sum_{c<GH} dz[b, c] U[c, j];
 * packed_bias (nb blocks of VW, or NULL) is the sums' start, and then dh is overwritten
 * (keep must be NULL).  dh must not alias x, dz or keep. */
FRNN_UNUSED static void SFX(recurrent_matmul_t_generic)(
    const REAL *FRNN_RESTRICT packed_t, ptrdiff_t I, const REAL *FRNN_RESTRICT x,
    ptrdiff_t ldx, ptrdiff_t H, ptrdiff_t GH, ptrdiff_t B, const REAL *FRNN_RESTRICT dz,
    ptrdiff_t ldz, const REAL *FRNN_RESTRICT packed_bias, const REAL *FRNN_RESTRICT keep,
    REAL *FRNN_RESTRICT dh, ptrdiff_t ldh, ptrdiff_t jb0, ptrdiff_t jb1) {
    for (ptrdiff_t jb = jb0; jb < jb1; ++jb) {
        const ptrdiff_t j0 = jb * VW, n = H - j0 < VW ? H - j0 : VW;
        const REAL *pb = packed_t + jb * (I + GH) * VW;
        const REAL *bb = packed_bias ? packed_bias + jb * VW : NULL;
        ptrdiff_t b = 0;
        for (; b + 4 <= B; b += 4) { /* a 4-row tile: 4 x 64 bytes of sums fit AVX2's registers */
            REAL acc[4][VW];
            for (int r = 0; r < 4; ++r)
                for (int w = 0; w < VW; ++w) acc[r][w] = bb ? bb[w] : (REAL)0;
            for (int part = 0; part < 2; ++part) { /* x W, then dz U */
                const REAL *ar = part ? dz + b * ldz : x + b * ldx;
                const ptrdiff_t lda = part ? ldz : ldx, K = part ? GH : I;
                const REAL *pp = part ? pb + I * VW : pb;
                for (ptrdiff_t c = 0; c < K; ++c) {
                    const REAL *pc = pp + c * VW;
                    const REAL d0 = ar[c], d1 = ar[lda + c], d2 = ar[2 * lda + c],
                               d3 = ar[3 * lda + c];
                    for (int w = 0; w < VW; ++w) {
                        const REAL wv = pc[w];
                        acc[0][w] += d0 * wv;
                        acc[1][w] += d1 * wv;
                        acc[2][w] += d2 * wv;
                        acc[3][w] += d3 * wv;
                    }
                }
            }
            for (int r = 0; r < 4; ++r) {
                REAL *dp = dh + (b + r) * ldh + j0;
                const REAL *kp = keep ? keep + (b + r) * H + j0 : NULL;
                for (ptrdiff_t w = 0; w < n; ++w)
                    dp[w] = bb ? acc[r][w] : dp[w] + (kp ? acc[r][w] * kp[w] : acc[r][w]);
            }
        }
        for (; b < B; ++b) { /* one row: four partial sums over c to hide FMA latency */
            REAL acc[4][VW] = {{0}};
            for (int part = 0; part < 2; ++part) {
                const REAL *ar = part ? dz + b * ldz : x + b * ldx;
                const ptrdiff_t K = part ? GH : I;
                const REAL *pp = part ? pb + I * VW : pb;
                ptrdiff_t c = 0;
                for (; c + 4 <= K; c += 4) {
                    const REAL d0 = ar[c], d1 = ar[c + 1], d2 = ar[c + 2], d3 = ar[c + 3];
                    const REAL *pc = pp + c * VW;
                    for (int w = 0; w < VW; ++w) {
                        acc[0][w] += d0 * pc[w];
                        acc[1][w] += d1 * pc[VW + w];
                        acc[2][w] += d2 * pc[2 * VW + w];
                        acc[3][w] += d3 * pc[3 * VW + w];
                    }
                }
                for (; c < K; ++c)
                    for (int w = 0; w < VW; ++w) acc[0][w] += ar[c] * pp[c * VW + w];
            }
            REAL *dp = dh + b * ldh + j0;
            const REAL *kp = keep ? keep + b * H + j0 : NULL;
            for (ptrdiff_t w = 0; w < n; ++w) {
                REAL s = (acc[0][w] + acc[1][w]) + (acc[2][w] + acc[3][w]);
                if (bb) dp[w] = bb[w] + s;
                else dp[w] += kp ? s * kp[w] : s;
            }
        }
    }
}

/* ---- AVX2+FMA micro-kernels (x86-64), picked at run time when the CPU has them ----
 *
 * Why hand-written: GCC vectorised the generic tiles above but kept their accumulator
 * arrays on the stack (a load, an FMA and a store per multiply-add), which capped them at
 * ~35-40 GFLOP/s per core.  Here every accumulator is a named register (arrays of vectors
 * with constant indices, fully unrolled), the weights are loaded once per k and reused by
 * every row of the tile.  Same packed layouts and contracts as the generic versions.
 *
 * AVX-512: where the CPU has it these tiles give way to 512-bit ones (the *_avx512 kernels
 * below).  On an AMD Zen 4 (2026-11-30) 512-bit FMAs did no more work per cycle than
 * 256-bit ones (117 GFLOP/s per core either way) and the AVX2 tiles built for AVX-512VL
 * measured 0.96-1.09 of these, save the LSTM forward's 4-row tiles (1.04-1.19).  On an
 * Intel Xeon with AMX (a session's machine, 2026-12-02), 512-bit FMAs do twice the work
 * (240 against 130 GFLOP/s per core), and the 512-bit tiles measured, against these
 * (A/B in one process, 2 threads, T=100, I=H/2, float32): LSTM forward 1.19-1.71 (1.03 at
 * B=1, H=512), training 1.12-1.38; GRU training 1.06-1.15 from the transposed tiles,
 * and forward 1.05-1.49 (training another 1.03-1.14) from its own on 16-unit blocks
 * (recurrent_matmul_g3_wide_avx512); SimpleRNN forward 1.16-1.57, training 1.14-1.38.
 * Back on a Zen 4 (2026-12-02), the same A/B over the benchmark grid, 512-bit tiles
 * against these (simd=1): from 8 rows LSTM 1.05-1.53, GRU 1.05-1.19, SimpleRNN
 * 1.01-1.38, though the FMAs do no more work per cycle (not profiled; half the loads
 * and broadcasts per multiply-add is the likely cause); at batch 1 0.97-1.06, but
 * 0.87-0.92 where U streams from L3 (LSTM and GRU at 512 units), which the prefetch rule
 * below mends (FRNN_ZMM_PREFETCH; with it, batch 1 at 256-512 units measured 1.01-1.08).
 * So the 512-bit tiles run wherever the CPU has them. */
#if FRNN_AVX2_KERNELS
#include <immintrin.h>
#if FRNN_F32
#define FV __m256
#define FV_LOAD _mm256_loadu_ps
#define FV_STORE _mm256_storeu_ps
#define FV_BCAST _mm256_broadcast_ss
#define FV_FMA _mm256_fmadd_ps
#define FV_ADD _mm256_add_ps
#define FV_ZERO _mm256_setzero_ps
#else
#define FV __m256d
#define FV_LOAD _mm256_loadu_pd
#define FV_STORE _mm256_storeu_pd
#define FV_BCAST _mm256_broadcast_sd
#define FV_FMA _mm256_fmadd_pd
#define FV_ADD _mm256_add_pd
#define FV_ZERO _mm256_setzero_pd
#endif
#define FV_LANES ((ptrdiff_t)(32 / sizeof(REAL))) /* == VWF: one vector per gate per block */
/* Fully unrolling the register-tile loops before GCC's scalar replacement keeps the
 * accumulators in registers; without it GCC stored every accumulator to the stack on each
 * k (measured 27 vs 64 GFLOP/s, LSTM tile, B=8, H=128). */
#define FRNN_UNROLL _Pragma("GCC unroll 16")

/* acc (R x GN vectors) into z rows [b, b+R) at gate columns g*H + j0: stored when the
 * tile started from the bias (bb != NULL), else added.  n <= FV_LANES valid units (the last
 * block of an H that is not a multiple of the lanes is partial). */
#define FRNN_STORE_TILE(R, GN)                                                            \
    FRNN_UNROLL for (int r = 0; r < (R); ++r)                                             \
        FRNN_UNROLL for (int g = 0; g < (GN); ++g) {                                      \
            REAL *zp = z + (b + r) * ldz + g * H + j0;                                  \
            if (n == FV_LANES) {                                                        \
                FV_STORE(zp, bb ? acc[r][g] : FV_ADD(FV_LOAD(zp), acc[r][g]));          \
            } else {                                                                    \
                REAL tmp[FV_LANES];                                                     \
                FV_STORE(tmp, acc[r][g]);                                               \
                for (ptrdiff_t w = 0; w < n; ++w) zp[w] = (bb ? 0 : zp[w]) + tmp[w];    \
            }                                                                           \
        }

/* acc[r][g] starts at the bias block bb (GN vectors) or at zero. */
#define FRNN_INIT_TILE(R, GN)                                                             \
    FRNN_UNROLL for (int r = 0; r < (R); ++r)                                             \
        FRNN_UNROLL for (int g = 0; g < (GN); ++g)                                        \
            acc[r][g] = bb ? FV_LOAD(bb + g * FV_LANES) : FV_ZERO();

/* acc[r][g] += sum_{k<K} A[r*LDA + k] * (gate g's vector of packed row k of PW). */
#define FRNN_TILE_PRODUCT(R, GN, A, LDA, K, PW)                                           \
    for (ptrdiff_t k = 0; k < (K); ++k) {                                               \
        const REAL *pk = (PW) + k * (GN) * FV_LANES;                                    \
        FV w[GN];                                                                       \
        FRNN_UNROLL for (int g = 0; g < (GN); ++g) w[g] = FV_LOAD(pk + g * FV_LANES);   \
        FRNN_UNROLL for (int r = 0; r < (R); ++r) {                                     \
            const FV av = FV_BCAST((A) + r * (LDA) + k);                                \
            FRNN_UNROLL for (int g = 0; g < (GN); ++g) acc[r][g] = FV_FMA(av, w[g], acc[r][g]); \
        }                                                                               \
    }

/* Forward tile: rows [b, b+R) x the GN gate vectors of one unit block (pb: its packed
 * I + H rows; bb: its bias or NULL). */
#define FRNN_DEFINE_FWD_TILE(GN, R)                                                       \
    FRNN_AVX2_TARGET FRNN_INLINE void SFX(fwd_tile_g##GN##_r##R)(                        \
        const REAL *FRNN_RESTRICT pb, ptrdiff_t I, const REAL *FRNN_RESTRICT x,         \
        ptrdiff_t ldx, ptrdiff_t H, const REAL *FRNN_RESTRICT h, const REAL *bb, ptrdiff_t b, \
        REAL *FRNN_RESTRICT z, ptrdiff_t ldz, ptrdiff_t j0, ptrdiff_t n) {               \
        FV acc[R][GN];                                                                  \
        FRNN_INIT_TILE(R, GN)                                                           \
        FRNN_TILE_PRODUCT(R, GN, x + b * ldx, ldx, I, pb)                               \
        FRNN_TILE_PRODUCT(R, GN, h + b * H, H, H, pb + I * (GN) * FV_LANES)             \
        FRNN_STORE_TILE(R, GN)                                                          \
    }

/* One row's acc[0] += sum_{k<K} A[k] * packed row k, with a second accumulator set `odd`
 * over odd k to hide the FMA latency. */
#define FRNN_ROW_PRODUCT(GN, A, K, PW)                                                    \
    {                                                                                   \
        ptrdiff_t k = 0;                                                                \
        for (; k + 2 <= (K); k += 2) {                                                  \
            const REAL *pk = (PW) + k * (GN) * FV_LANES;                                \
            const FV a0 = FV_BCAST((A) + k), a1 = FV_BCAST((A) + k + 1);                \
            FRNN_UNROLL for (int g = 0; g < (GN); ++g) {                                \
                acc[0][g] = FV_FMA(a0, FV_LOAD(pk + g * FV_LANES), acc[0][g]);          \
                odd[g] = FV_FMA(a1, FV_LOAD(pk + ((GN) + g) * FV_LANES), odd[g]);       \
            }                                                                           \
        }                                                                               \
        if (k < (K)) {                                                                  \
            const REAL *pk = (PW) + k * (GN) * FV_LANES;                                \
            const FV a0 = FV_BCAST((A) + k);                                            \
            FRNN_UNROLL for (int g = 0; g < (GN); ++g)                                  \
                acc[0][g] = FV_FMA(a0, FV_LOAD(pk + g * FV_LANES), acc[0][g]);          \
        }                                                                               \
    }

#define FRNN_DEFINE_FWD_TILE1(GN)                                                         \
    FRNN_AVX2_TARGET FRNN_INLINE void SFX(fwd_tile_g##GN##_r1)(                          \
        const REAL *FRNN_RESTRICT pb, ptrdiff_t I, const REAL *FRNN_RESTRICT x,         \
        ptrdiff_t ldx, ptrdiff_t H, const REAL *FRNN_RESTRICT h, const REAL *bb, ptrdiff_t b, \
        REAL *FRNN_RESTRICT z, ptrdiff_t ldz, ptrdiff_t j0, ptrdiff_t n) {               \
        FV acc[1][GN], odd[GN];                                                         \
        FRNN_INIT_TILE(1, GN)                                                           \
        FRNN_UNROLL for (int g = 0; g < (GN); ++g) odd[g] = FV_ZERO();                  \
        FRNN_ROW_PRODUCT(GN, x + b * ldx, I, pb)                                        \
        FRNN_ROW_PRODUCT(GN, h + b * H, H, pb + I * (GN) * FV_LANES)                    \
        FRNN_UNROLL for (int g = 0; g < (GN); ++g) acc[0][g] = FV_ADD(acc[0][g], odd[g]); \
        FRNN_STORE_TILE(1, GN)                                                          \
    }

/* Rows per forward tile: R*GN accumulators + GN weights + 1 broadcast <= 16 registers
 * (LSTM 3 rows, one weight then read from memory by its FMAs; GRU 4 rows).
 * Measured on the Zen 3 and not kept (A/B in one process, T=100, I=H/2, float32):
 *   - K-blocking, so a slice of packed rows stays in L1 across row tiles (KC = 64, 128,
 *     256): 0.87-0.92, 0.85-1.02, 0.68-1.10; the GRU lost at every size;
 *   - the LSTM's 4H columns as one matrix on the transposed product's 6-row x 16-column
 *     tiles (half the weight loads per FMA; split by rows only): 0.91-0.96 at B=32-128,
 *     1.04 at B=8 (one thread, alternating calls), so the weight stream from L2 is not
 *     what holds these tiles at about 70% of the peak;
 *   - each row tile over groups of 2, 4 or 8 unit blocks before the next rows, so a z line
 *     (two 32-byte blocks) is written whole while in L1 (2026-12-03): GRU 0.94-1.07, LSTM
 *     0.93-1.22, changing sign between repeats (within noise);
 *   - the LSTM's last 4 rows (B % 3 == 1, from B = 4) as two 2-row tiles instead of a
 *     3-row and a 1-row one (2026-12-03): 0.87-0.95 at B = 8-32, 0.99-1.01 at B = 128. */
#define FRNN_DEFINE_RECMM_AVX2(GN, RMAX)                                                  \
    FRNN_DEFINE_FWD_TILE1(GN)                                                           \
    FRNN_DEFINE_FWD_TILE(GN, 2)                                                         \
    FRNN_DEFINE_FWD_TILE(GN, 3)                                                         \
    FRNN_DEFINE_FWD_TILE(GN, 4)                                                         \
    FRNN_DEFINE_FWD_TILE(GN, 5)                                                         \
    FRNN_DEFINE_FWD_TILE(GN, 6)                                                         \
    FRNN_AVX2_TARGET static void SFX(recurrent_matmul_g##GN##_avx2)(FRNN_RECMM_PARAMS) {   \
        FRNN_RECMM_BODY(GN, RMAX, B - B % (RMAX))                                       \
    }

/* Its arguments, and its body: per unit block, tiles of RMAX rows over the first `full`
 * rows, then one tile of the rest (up to 6 rows). */
#define FRNN_RECMM_PARAMS                                                                 \
    const REAL *FRNN_RESTRICT packed, ptrdiff_t I, const REAL *FRNN_RESTRICT x, ptrdiff_t ldx, \
        ptrdiff_t H, ptrdiff_t B, const REAL *FRNN_RESTRICT h,                          \
        const REAL *FRNN_RESTRICT packed_bias, REAL *FRNN_RESTRICT z, ptrdiff_t ldz,    \
        ptrdiff_t jb0, ptrdiff_t jb1
#define FRNN_RECMM_BODY(GN, RMAX, FULL)                                                   \
    const ptrdiff_t full = (FULL);                                                      \
    for (ptrdiff_t jb = jb0; jb < jb1; ++jb) {                                          \
        const ptrdiff_t j0 = jb * VWF, n = H - j0 < VWF ? H - j0 : VWF;                \
        const REAL *pb = packed + jb * (I + H) * (GN) * VWF;                           \
        const REAL *bb = packed_bias ? packed_bias + jb * (GN) * VWF : NULL;           \
        ptrdiff_t b = 0;                                                                \
        for (; b < full; b += (RMAX))                                                   \
            SFX(fwd_tile_g##GN##_r##RMAX)(pb, I, x, ldx, H, h, bb, b, z, ldz, j0, n);   \
        switch (B - b) {                                                                \
        case 6: SFX(fwd_tile_g##GN##_r6)(pb, I, x, ldx, H, h, bb, b, z, ldz, j0, n); break; \
        case 5: SFX(fwd_tile_g##GN##_r5)(pb, I, x, ldx, H, h, bb, b, z, ldz, j0, n); break; \
        case 4: SFX(fwd_tile_g##GN##_r4)(pb, I, x, ldx, H, h, bb, b, z, ldz, j0, n); break; \
        case 3: SFX(fwd_tile_g##GN##_r3)(pb, I, x, ldx, H, h, bb, b, z, ldz, j0, n); break; \
        case 2: SFX(fwd_tile_g##GN##_r2)(pb, I, x, ldx, H, h, bb, b, z, ldz, j0, n); break; \
        case 1: SFX(fwd_tile_g##GN##_r1)(pb, I, x, ldx, H, h, bb, b, z, ldz, j0, n); break; \
        default: break;                                                                 \
        }                                                                               \
    }
FRNN_DEFINE_RECMM_AVX2(3, 4)
FRNN_DEFINE_RECMM_AVX2(4, 3)
#undef FRNN_DEFINE_RECMM_AVX2

#undef FRNN_RECMM_PARAMS
#undef FRNN_RECMM_BODY
#undef FRNN_DEFINE_FWD_TILE
#undef FRNN_DEFINE_FWD_TILE1
#undef FRNN_ROW_PRODUCT
#undef FRNN_TILE_PRODUCT
#undef FRNN_INIT_TILE
#undef FRNN_STORE_TILE

/* Transposed-product tile: rows [b, b+R) x one 64-byte unit block (2 vectors), summing
 * over x's I columns (packed rows [0, I)) then dz's GH columns (packed rows I..). */
#define FRNN_DEFINE_BWD_TILE(R)                                                           \
    FRNN_AVX2_TARGET FRNN_INLINE void SFX(bwd_tile_r##R)(                                \
        const REAL *FRNN_RESTRICT pb, ptrdiff_t I, const REAL *FRNN_RESTRICT x,         \
        ptrdiff_t ldx, ptrdiff_t GH, const REAL *FRNN_RESTRICT dz, ptrdiff_t ldz,       \
        const REAL *bb, const REAL *FRNN_RESTRICT keep, REAL *FRNN_RESTRICT dh,         \
        ptrdiff_t ldh, ptrdiff_t H, ptrdiff_t b, ptrdiff_t j0, ptrdiff_t n) {            \
        FV acc[R][2];                                                                   \
        FRNN_UNROLL for (int r = 0; r < (R); ++r) {                                     \
            acc[r][0] = bb ? FV_LOAD(bb) : FV_ZERO();                                   \
            acc[r][1] = bb ? FV_LOAD(bb + FV_LANES) : FV_ZERO();                        \
        }                                                                               \
        for (int part = 0; part < 2; ++part) { /* x W, then dz U */                     \
            const REAL *ar = part ? dz + b * ldz : x + b * ldx;                         \
            const ptrdiff_t lda = part ? ldz : ldx, K = part ? GH : I;                  \
            const REAL *pp = part ? pb + I * VW : pb;                                   \
            for (ptrdiff_t c = 0; c < K; ++c) {                                         \
                const FV w0 = FV_LOAD(pp + c * VW), w1 = FV_LOAD(pp + c * VW + FV_LANES); \
                FRNN_UNROLL for (int r = 0; r < (R); ++r) {                             \
                    const FV d = FV_BCAST(ar + r * lda + c);                            \
                    acc[r][0] = FV_FMA(d, w0, acc[r][0]);                               \
                    acc[r][1] = FV_FMA(d, w1, acc[r][1]);                               \
                }                                                                       \
            }                                                                           \
        }                                                                               \
        SFX(bwd_store)(acc, R, bb != NULL, keep, dh, ldh, H, b, j0, n);                 \
    }

/* dh rows [b, b+R) (row stride ldh) at units [j0, j0+n): = acc when overwrite, else
 * += acc (times keep, if given; keep rows are H long).  Storing full blocks straight from
 * the registers instead of through tmp measured within the noise on the Zen 3 (A/B in
 * one process, 2026-12-03: SimpleRNN forward 0.99-1.12, training 0.97-1.05, GRU forward
 * 0.99-1.01), so this one path serves every n. */
FRNN_AVX2_TARGET FRNN_INLINE void SFX(bwd_store)(FV acc[][2], int R, int overwrite,
                                                   const REAL *keep, REAL *dh, ptrdiff_t ldh,
                                                   ptrdiff_t H, ptrdiff_t b, ptrdiff_t j0,
                                                   ptrdiff_t n) {
    FRNN_UNROLL for (int r = 0; r < R; ++r) {
        REAL tmp[2 * FV_LANES];
        FV_STORE(tmp, acc[r][0]);
        FV_STORE(tmp + FV_LANES, acc[r][1]);
        REAL *dp = dh + (b + r) * ldh + j0;
        const REAL *kp = keep ? keep + (b + r) * H + j0 : NULL;
        if (overwrite) memcpy(dp, tmp, (size_t)n * sizeof(REAL));
        else for (ptrdiff_t w = 0; w < n; ++w) dp[w] += kp ? tmp[w] * kp[w] : tmp[w];
    }
}
FRNN_DEFINE_BWD_TILE(2)
FRNN_DEFINE_BWD_TILE(3)
FRNN_DEFINE_BWD_TILE(4)
FRNN_DEFINE_BWD_TILE(5)
FRNN_DEFINE_BWD_TILE(6)
#undef FRNN_DEFINE_BWD_TILE

/* One row: four accumulator pairs over c hide the FMA latency. */
FRNN_AVX2_TARGET FRNN_INLINE void SFX(bwd_tile_r1)(
    const REAL *FRNN_RESTRICT pb, ptrdiff_t I, const REAL *FRNN_RESTRICT x, ptrdiff_t ldx,
    ptrdiff_t GH, const REAL *FRNN_RESTRICT dz, ptrdiff_t ldz, const REAL *bb,
    const REAL *FRNN_RESTRICT keep, REAL *FRNN_RESTRICT dh, ptrdiff_t ldh, ptrdiff_t H,
    ptrdiff_t b, ptrdiff_t j0, ptrdiff_t n) {
    FV acc[1][2], part[3][2];
    acc[0][0] = bb ? FV_LOAD(bb) : FV_ZERO();
    acc[0][1] = bb ? FV_LOAD(bb + FV_LANES) : FV_ZERO();
    FRNN_UNROLL for (int p = 0; p < 3; ++p) part[p][0] = part[p][1] = FV_ZERO();
    for (int seg = 0; seg < 2; ++seg) { /* x W, then dz U */
        const REAL *ar = seg ? dz + b * ldz : x + b * ldx;
        const ptrdiff_t K = seg ? GH : I;
        const REAL *pp = seg ? pb + I * VW : pb;
        ptrdiff_t c = 0;
        for (; c + 4 <= K; c += 4) {
            const REAL *pc = pp + c * VW;
            const FV d0 = FV_BCAST(ar + c), d1 = FV_BCAST(ar + c + 1);
            const FV d2 = FV_BCAST(ar + c + 2), d3 = FV_BCAST(ar + c + 3);
            acc[0][0] = FV_FMA(d0, FV_LOAD(pc), acc[0][0]);
            acc[0][1] = FV_FMA(d0, FV_LOAD(pc + FV_LANES), acc[0][1]);
            part[0][0] = FV_FMA(d1, FV_LOAD(pc + VW), part[0][0]);
            part[0][1] = FV_FMA(d1, FV_LOAD(pc + VW + FV_LANES), part[0][1]);
            part[1][0] = FV_FMA(d2, FV_LOAD(pc + 2 * VW), part[1][0]);
            part[1][1] = FV_FMA(d2, FV_LOAD(pc + 2 * VW + FV_LANES), part[1][1]);
            part[2][0] = FV_FMA(d3, FV_LOAD(pc + 3 * VW), part[2][0]);
            part[2][1] = FV_FMA(d3, FV_LOAD(pc + 3 * VW + FV_LANES), part[2][1]);
        }
        for (; c < K; ++c) {
            const FV d = FV_BCAST(ar + c);
            acc[0][0] = FV_FMA(d, FV_LOAD(pp + c * VW), acc[0][0]);
            acc[0][1] = FV_FMA(d, FV_LOAD(pp + c * VW + FV_LANES), acc[0][1]);
        }
    }
    FRNN_UNROLL for (int v = 0; v < 2; ++v)
        acc[0][v] = FV_ADD(FV_ADD(acc[0][v], part[0][v]), FV_ADD(part[1][v], part[2][v]));
    SFX(bwd_store)(acc, 1, bb != NULL, keep, dh, ldh, H, b, j0, n);
}

/* Rows per transposed tile: 6 x 2 accumulators + 2 weights + 1 broadcast <= 16 registers.
 * The rest after the 6-row tiles stays one tile: ending 8 or 9 rows as 4 + 4 or 5 + 4
 * instead of 6 + 2 or 6 + 3 (2-3-row tiles have too few chains to hide the FMA latency)
 * measured 0.94-1.01 on the Zen 3 (A/B in one process, 2026-12-03, T=100, I=H/2:
 * SimpleRNN forward and training at B=16 and 64, LSTM and GRU backward at B=16-64). */
FRNN_AVX2_TARGET static void SFX(recurrent_matmul_t_avx2)(
    const REAL *FRNN_RESTRICT packed_t, ptrdiff_t I, const REAL *FRNN_RESTRICT x,
    ptrdiff_t ldx, ptrdiff_t H, ptrdiff_t GH, ptrdiff_t B, const REAL *FRNN_RESTRICT dz,
    ptrdiff_t ldz, const REAL *FRNN_RESTRICT packed_bias, const REAL *FRNN_RESTRICT keep,
    REAL *FRNN_RESTRICT dh, ptrdiff_t ldh, ptrdiff_t jb0, ptrdiff_t jb1) {
    for (ptrdiff_t jb = jb0; jb < jb1; ++jb) {
        const ptrdiff_t j0 = jb * VW, n = H - j0 < VW ? H - j0 : VW;
        const REAL *pb = packed_t + jb * (I + GH) * VW;
        const REAL *bb = packed_bias ? packed_bias + jb * VW : NULL;
#define FRNN_BWD_TILE_ARGS pb, I, x, ldx, GH, dz, ldz, bb, keep, dh, ldh, H, b, j0, n
        ptrdiff_t b = 0;
        for (; b + 6 <= B; b += 6) SFX(bwd_tile_r6)(FRNN_BWD_TILE_ARGS);
        switch (B - b) {
        case 5: SFX(bwd_tile_r5)(FRNN_BWD_TILE_ARGS); break;
        case 4: SFX(bwd_tile_r4)(FRNN_BWD_TILE_ARGS); break;
        case 3: SFX(bwd_tile_r3)(FRNN_BWD_TILE_ARGS); break;
        case 2: SFX(bwd_tile_r2)(FRNN_BWD_TILE_ARGS); break;
        case 1: SFX(bwd_tile_r1)(FRNN_BWD_TILE_ARGS); break;
        default: break;
        }
#undef FRNN_BWD_TILE_ARGS
    }
}

/* The transposed product on 512-bit registers, where the CPU has AVX-512 (frnn_use_avx512vl).
 * A unit block (VW, 64 bytes) is one vector, so a row's sums are one accumulator and a
 * weight load feeds every row of the tile.  On an Intel Xeon with AMX (two 512-bit FMA
 * units per core: 240 GFLOP/s per core against 130 with 256-bit vectors) these are what
 * lets the SimpleRNN forward and every backward's dh and dx products use that width; on an
 * AMD Zen 4 they would do the same work per cycle as the AVX2 tiles (see above).
 * Tiles of R rows keep P partial sums over c per row, so that R * P >= 8 chains hide the
 * FMA latency (4 cycles, 2 units) even for 1-3 rows. */
#if FRNN_F32
#define FZ __m512
#define FZ_MASK __mmask16
#define FZ_LOAD _mm512_loadu_ps
#define FZ_MASKZ_LOAD _mm512_maskz_loadu_ps
#define FZ_MASK_STORE _mm512_mask_storeu_ps
#define FZ_STORE _mm512_storeu_ps
#define FZ_SET1 _mm512_set1_ps
#define FZ_FMA _mm512_fmadd_ps
#define FZ_ADD _mm512_add_ps
#define FZ_MUL _mm512_mul_ps
#define FZ_ZERO _mm512_setzero_ps
#else
#define FZ __m512d
#define FZ_MASK __mmask8
#define FZ_LOAD _mm512_loadu_pd
#define FZ_MASKZ_LOAD _mm512_maskz_loadu_pd
#define FZ_MASK_STORE _mm512_mask_storeu_pd
#define FZ_STORE _mm512_storeu_pd
#define FZ_SET1 _mm512_set1_pd
#define FZ_FMA _mm512_fmadd_pd
#define FZ_ADD _mm512_add_pd
#define FZ_MUL _mm512_mul_pd
#define FZ_ZERO _mm512_setzero_pd
#endif

/* Whether a thread's packed blocks (`elems` elements) are more than half a core's L2 on an
 * Intel CPU, where the tiles then prefetch the next block into L2 (see the tiles). */
FRNN_UNUSED static int SFX(blocks_pass_half_l2)(ptrdiff_t elems) {
    if (!frnn_cpu_is_intel()) return 0;
    const long l2 = frnn_l2_cache_bytes();
    return l2 > 0 && (double)elems * sizeof(REAL) > 0.5 * (double)l2;
}

/* Where a unit block's tiles of 8 rows are `tiles` (> 1) and the thread's blocks pass half
 * its L2 (blocks_pass_half_l2), the first tile of a block streams the block from L3 and the
 * later ones, compute-bound, run from L1 and L2 with the memory path idle.  These later
 * tiles therefore ask for the next block (`next` elements on, 0 = none) into L2, a share
 * each of the `lines` 64-byte lines of a packed k-row (line_stride elements apart), at most
 * two: the offsets from the current k-row go to *pf_a and *pf_b (0 = none).  Measured on
 * the Intel Xeon (A/B in one process, 2 threads, T=100, I = H/2), LSTM forward: H=512
 * B=16-32 1.02-1.03, B=64 1.09-1.12, B=128 1.01-1.04; H=256 B=128 1.01-1.02; LSTM training
 * (with the backward's transposed tiles) H=512 B=32-128 1.02; GRU forward and training
 * H=512 B=32-128 1.015-1.023; SimpleRNN and H=256 training 1.00; but without the half-L2
 * condition H=128 B=32 0.97 (W and U in L2 anyway) and with one tile B=1 0.85, B=8 0.98
 * (streaming the weights is the tile's only work there). */
FRNN_UNUSED static inline void SFX(next_block_lines)(ptrdiff_t next, ptrdiff_t tiles,
                                                     ptrdiff_t tile, int lines,
                                                     ptrdiff_t line_stride, ptrdiff_t *pf_a,
                                                     ptrdiff_t *pf_b) {
    *pf_a = *pf_b = 0;
    if (!next || tiles < 2 || tile < 1) return;
    int got = 0;
    for (ptrdiff_t l = tile - 1; l < lines && got < 2; l += tiles - 1, ++got)
        *(got ? pf_b : pf_a) = next + l * line_stride;
}

/* Calls SFX(NAME_r<rows>)(...), the tile of `rows` (1-8) rows of a family of 512-bit tiles
 * defined for every height. */
#define FRNN_ZMM_ROWS_CALL(NAME, rows, ...)                                               \
    do {                                                                                \
        switch (rows) {                                                                 \
        case 8: SFX(NAME##_r8)(__VA_ARGS__); break;                                     \
        case 7: SFX(NAME##_r7)(__VA_ARGS__); break;                                     \
        case 6: SFX(NAME##_r6)(__VA_ARGS__); break;                                     \
        case 5: SFX(NAME##_r5)(__VA_ARGS__); break;                                     \
        case 4: SFX(NAME##_r4)(__VA_ARGS__); break;                                     \
        case 3: SFX(NAME##_r3)(__VA_ARGS__); break;                                     \
        case 2: SFX(NAME##_r2)(__VA_ARGS__); break;                                     \
        default: SFX(NAME##_r1)(__VA_ARGS__); break;                                    \
        }                                                                               \
    } while (0)

/* The next block's line `off` elements from `at` (0 = none) into L2, in tiles of more than
 * 2 rows (next_block_lines); smaller tiles (remainders) skip it without a branch. */
#define FRNN_ZMM_PREFETCH_NEXT(at, off, rows)                                              \
    do {                                                                                \
        if ((rows) > 2 && (off)) _mm_prefetch((const char *)((at) + (off)), _MM_HINT_T1); \
    } while (0)

/* The packed weights' rows a few iterations ahead (`lines` 64-byte vectors from `at`),
 * asked for L1 by tiles of more than 2 rows: the weights stream from L2 (or L3) once per
 * tile, and the hardware's own prefetch left them late.  Measured on the Intel Xeon (A/B
 * in one process, 2 threads, T=100): 1.00-1.07 for the SimpleRNN forward and the
 * backwards at 16 packed rows ahead in the transposed tiles, 1.01-1.08 for the LSTM and
 * GRU forward at 8 rows ahead; more was no better.  Tiles of 1-2 rows (a thread's rows
 * at batch 1-2) do 1-2 FMAs per weight vector and only stream the weights; where U is
 * larger than the L2s it comes from L3, and on the AMD Zen 4 (2026-12-02) these
 * prefetches slowed that stream.  Without them in 1-2-row tiles, batch 1, T=100, I=256,
 * 2 threads: LSTM forward 1.13-1.19 at 384-512 units, training 1.05-1.19; GRU forward
 * 1.10-1.17 at 512 units (1.05 at 384), training 1.09-1.17 (1.01); SimpleRNN at 1024
 * units 1.21-1.23; batch 2, 512 units: 0.99-1.19; with U in the L2s (B=1, 128-256 units)
 * 0.98-1.03.  Without any prefetch the rest of the benchmark grid measured 0.97-1.05
 * there (two noisy points of 3 rounds: 0.90, 1.23), so the Xeon's gain stays for tiles
 * of 3 rows or more. */
#define FRNN_ZMM_PREFETCH(at, lines, rows)                                                \
    do {                                                                                \
        if ((rows) > 2)                                                                 \
            FRNN_UNROLL for (int line = 0; line < (lines); ++line)                      \
                _mm_prefetch((const char *)((at) + line * VW), _MM_HINT_T0);            \
    } while (0)

/* Rows [b, b+R) x one unit block, P partial sums per row; arguments as bwd_tile_r##R, and
 * pf_a the next block's line to prefetch per k-row (0 = none; next_block_lines). */
#define FRNN_DEFINE_ZMM_TILE(R, P)                                                        \
    FRNN_AVX512VL_TARGET FRNN_INLINE void SFX(zmm_tile_r##R)(                            \
        const REAL *FRNN_RESTRICT pb, ptrdiff_t I, const REAL *FRNN_RESTRICT x,         \
        ptrdiff_t ldx, ptrdiff_t GH, const REAL *FRNN_RESTRICT dz, ptrdiff_t ldz,       \
        const REAL *bb, const REAL *FRNN_RESTRICT keep, REAL *FRNN_RESTRICT dh,         \
        ptrdiff_t ldh, ptrdiff_t H, ptrdiff_t b, ptrdiff_t j0, ptrdiff_t n,              \
        ptrdiff_t pf_a) {                                                               \
        FZ acc[P][R];                                                                   \
        FRNN_UNROLL for (int p = 0; p < (P); ++p)                                       \
            FRNN_UNROLL for (int r = 0; r < (R); ++r)                                   \
                acc[p][r] = p == 0 && bb ? FZ_LOAD(bb) : FZ_ZERO();                     \
        for (int part = 0; part < 2; ++part) { /* x W, then dz U */                     \
            const REAL *ar = part ? dz + b * ldz : x + b * ldx;                         \
            const ptrdiff_t lda = part ? ldz : ldx, K = part ? GH : I;                  \
            const REAL *pp = part ? pb + I * VW : pb;                                   \
            ptrdiff_t c = 0;                                                            \
            for (; c + (P) <= K; c += (P))                                              \
                FRNN_UNROLL for (int p = 0; p < (P); ++p) {                             \
                    FRNN_ZMM_PREFETCH(pp + (c + p + 16) * VW, 1, R);                     \
                    FRNN_ZMM_PREFETCH_NEXT(pp + (c + p) * VW, pf_a, R);                    \
                    const FZ w = FZ_LOAD(pp + (c + p) * VW);                            \
                    FRNN_UNROLL for (int r = 0; r < (R); ++r)                           \
                        acc[p][r] = FZ_FMA(FZ_SET1(ar[r * lda + c + p]), w, acc[p][r]); \
                }                                                                       \
            for (; c < K; ++c) {                                                        \
                const FZ w = FZ_LOAD(pp + c * VW);                                      \
                FRNN_UNROLL for (int r = 0; r < (R); ++r)                               \
                    acc[0][r] = FZ_FMA(FZ_SET1(ar[r * lda + c]), w, acc[0][r]);         \
            }                                                                           \
        }                                                                               \
        const FZ_MASK valid = (FZ_MASK)(n == VW ? (1u << VW) - 1 : (1u << n) - 1);      \
        FRNN_UNROLL for (int r = 0; r < (R); ++r) {                                     \
            FZ sum = acc[0][r];                                                         \
            FRNN_UNROLL for (int p = 1; p < (P); ++p) sum = FZ_ADD(sum, acc[p][r]);     \
            REAL *dp = dh + (b + r) * ldh + j0;                                         \
            if (!bb) {                                                                  \
                if (keep) sum = FZ_MUL(sum, FZ_MASKZ_LOAD(valid, keep + (b + r) * H + j0)); \
                sum = FZ_ADD(sum, FZ_MASKZ_LOAD(valid, dp));                            \
            }                                                                           \
            FZ_MASK_STORE(dp, valid, sum);                                              \
        }                                                                               \
    }
FRNN_DEFINE_ZMM_TILE(8, 1)
FRNN_DEFINE_ZMM_TILE(7, 2)
FRNN_DEFINE_ZMM_TILE(6, 2)
FRNN_DEFINE_ZMM_TILE(5, 2)
FRNN_DEFINE_ZMM_TILE(4, 2)
FRNN_DEFINE_ZMM_TILE(3, 3)
FRNN_DEFINE_ZMM_TILE(2, 4)
FRNN_DEFINE_ZMM_TILE(1, 8)
#undef FRNN_DEFINE_ZMM_TILE

/* Rows [b, b+R) x two adjacent unit blocks (pb, and pb + blk elements on: the second
 * block, its n2 units valid, the first's all VW), P partial sums per row and block: one
 * broadcast of a row's value feeds two multiply-adds, which the single-block tiles' one
 * load per multiply-add left short of an Intel core's two FMA units.  pf_a, pf_b: the
 * next pair's lines to prefetch per k-row (0 = none; next_block_lines).  Measured on the
 * Intel Xeon against single blocks (A/B in one process, 2 threads, T=100, I = H/2):
 * SimpleRNN forward B=8-128 1.10-1.16 (H=256-512), training 1.12 (B=128, H=256); LSTM
 * training (the backward's dh and dx) B=8-128 1.04-1.07, GRU training 1.03-1.04; but
 * batch 1-2 0.96-0.98 (B=4 1.02), where the weights' stream bounds the tile: pairs from
 * FRNN_ZMM_PAIR_MIN_ROWS rows.  Not measured on the AMD Zen 4, where a 512-bit FMA does
 * the work of two 256-bit ones and loads are less of a limit. */
#define FRNN_DEFINE_ZMM_TILE_PAIR(R, P)                                                   \
    FRNN_AVX512VL_TARGET FRNN_INLINE void SFX(zmm_tile_pair_r##R)(                       \
        const REAL *FRNN_RESTRICT pb, ptrdiff_t blk, ptrdiff_t I,                        \
        const REAL *FRNN_RESTRICT x, ptrdiff_t ldx, ptrdiff_t GH,                        \
        const REAL *FRNN_RESTRICT dz, ptrdiff_t ldz, const REAL *bb,                     \
        const REAL *FRNN_RESTRICT keep, REAL *FRNN_RESTRICT dh, ptrdiff_t ldh,           \
        ptrdiff_t H,                                                                    \
        ptrdiff_t b, ptrdiff_t j0, ptrdiff_t n2, ptrdiff_t pf_a, ptrdiff_t pf_b) {       \
        FZ acc[P][R][2];                                                                \
        FRNN_UNROLL for (int p = 0; p < (P); ++p)                                       \
            FRNN_UNROLL for (int r = 0; r < (R); ++r) {                                 \
                acc[p][r][0] = p == 0 && bb ? FZ_LOAD(bb) : FZ_ZERO();                  \
                acc[p][r][1] = p == 0 && bb ? FZ_LOAD(bb + VW) : FZ_ZERO();             \
            }                                                                           \
        for (int part = 0; part < 2; ++part) { /* x W, then dz U */                     \
            const REAL *ar = part ? dz + b * ldz : x + b * ldx;                         \
            const ptrdiff_t lda = part ? ldz : ldx, K = part ? GH : I;                  \
            const REAL *pp = part ? pb + I * VW : pb;                                   \
            ptrdiff_t c = 0;                                                            \
            for (; c + (P) <= K; c += (P))                                              \
                FRNN_UNROLL for (int p = 0; p < (P); ++p) {                             \
                    const REAL *pk = pp + (c + p) * VW;                                 \
                    FRNN_ZMM_PREFETCH(pk + 16 * VW, 1, R);                               \
                    FRNN_ZMM_PREFETCH(pk + blk + 16 * VW, 1, R);                         \
                    FRNN_ZMM_PREFETCH_NEXT(pk, pf_a, R);                                 \
                    FRNN_ZMM_PREFETCH_NEXT(pk, pf_b, R);                                 \
                    const FZ w0 = FZ_LOAD(pk), w1 = FZ_LOAD(pk + blk);                  \
                    FRNN_UNROLL for (int r = 0; r < (R); ++r) {                         \
                        const FZ a = FZ_SET1(ar[r * lda + c + p]);                      \
                        acc[p][r][0] = FZ_FMA(a, w0, acc[p][r][0]);                     \
                        acc[p][r][1] = FZ_FMA(a, w1, acc[p][r][1]);                     \
                    }                                                                   \
                }                                                                       \
            for (; c < K; ++c) {                                                        \
                const FZ w0 = FZ_LOAD(pp + c * VW), w1 = FZ_LOAD(pp + c * VW + blk);    \
                FRNN_UNROLL for (int r = 0; r < (R); ++r) {                             \
                    const FZ a = FZ_SET1(ar[r * lda + c]);                              \
                    acc[0][r][0] = FZ_FMA(a, w0, acc[0][r][0]);                         \
                    acc[0][r][1] = FZ_FMA(a, w1, acc[0][r][1]);                         \
                }                                                                       \
            }                                                                           \
        }                                                                               \
        const FZ_MASK valid[2] = {(FZ_MASK)((1u << VW) - 1),                            \
                                  (FZ_MASK)(n2 == VW ? (1u << VW) - 1 : (1u << n2) - 1)}; \
        FRNN_UNROLL for (int r = 0; r < (R); ++r)                                       \
            FRNN_UNROLL for (int h = 0; h < 2; ++h) {                                   \
                FZ sum = acc[0][r][h];                                                  \
                FRNN_UNROLL for (int p = 1; p < (P); ++p) sum = FZ_ADD(sum, acc[p][r][h]); \
                const ptrdiff_t j = j0 + h * VW;                                        \
                REAL *dp = dh + (b + r) * ldh + j;                                      \
                if (!bb) {                                                              \
                    if (keep)                                                           \
                        sum = FZ_MUL(sum,                                               \
                                     FZ_MASKZ_LOAD(valid[h], keep + (b + r) * H + j));  \
                    sum = FZ_ADD(sum, FZ_MASKZ_LOAD(valid[h], dp));                     \
                }                                                                       \
                FZ_MASK_STORE(dp, valid[h], sum);                                       \
            }                                                                           \
    }
FRNN_DEFINE_ZMM_TILE_PAIR(8, 1)
FRNN_DEFINE_ZMM_TILE_PAIR(7, 1)
FRNN_DEFINE_ZMM_TILE_PAIR(6, 1)
FRNN_DEFINE_ZMM_TILE_PAIR(5, 1)
FRNN_DEFINE_ZMM_TILE_PAIR(4, 1)
FRNN_DEFINE_ZMM_TILE_PAIR(3, 2)
FRNN_DEFINE_ZMM_TILE_PAIR(2, 2)
FRNN_DEFINE_ZMM_TILE_PAIR(1, 4)
#undef FRNN_DEFINE_ZMM_TILE_PAIR
#define FRNN_ZMM_PAIR_MIN_ROWS 4

/* recurrent_matmul_t_avx2 on 512-bit registers: pairs of unit blocks, the last one alone
 * where their count is odd; 8-row tiles, then one of 1-7 rows. */
FRNN_AVX512VL_TARGET static void SFX(recurrent_matmul_t_avx512)(
    const REAL *FRNN_RESTRICT packed_t, ptrdiff_t I, const REAL *FRNN_RESTRICT x,
    ptrdiff_t ldx, ptrdiff_t H, ptrdiff_t GH, ptrdiff_t B, const REAL *FRNN_RESTRICT dz,
    ptrdiff_t ldz, const REAL *FRNN_RESTRICT packed_bias, const REAL *FRNN_RESTRICT keep,
    REAL *FRNN_RESTRICT dh, ptrdiff_t ldh, ptrdiff_t jb0, ptrdiff_t jb1) {
    const int prefetch_next = SFX(blocks_pass_half_l2)((jb1 - jb0) * (I + GH) * VW);
    const ptrdiff_t tiles = (B + 7) / 8, blk = (I + GH) * VW;
    const int pairs = B >= FRNN_ZMM_PAIR_MIN_ROWS;
    for (ptrdiff_t jb = jb0; pairs && jb + 1 < jb1; jb += 2) {
        const ptrdiff_t j0 = jb * VW, n2 = H - j0 - VW < VW ? H - j0 - VW : VW;
        const REAL *pb = packed_t + jb * blk;
        const REAL *bb = packed_bias ? packed_bias + jb * VW : NULL;
        const ptrdiff_t next = jb + 3 < jb1 && prefetch_next ? 2 * blk : 0;
#define FRNN_ZMM_PAIR_ARGS pb, blk, I, x, ldx, GH, dz, ldz, bb, keep, dh, ldh, H, b, j0, n2, \
                           pf_a, pf_b
        for (ptrdiff_t b = 0, tile = 0; b < B; b += 8, ++tile) {
            ptrdiff_t pf_a, pf_b;
            SFX(next_block_lines)(next, tiles, tile, 2, blk, &pf_a, &pf_b);
            FRNN_ZMM_ROWS_CALL(zmm_tile_pair, B - b < 8 ? B - b : 8, FRNN_ZMM_PAIR_ARGS);
        }
#undef FRNN_ZMM_PAIR_ARGS
    }
    const ptrdiff_t jb_single = pairs ? jb0 + (jb1 - jb0) / 2 * 2 : jb0;
    for (ptrdiff_t jb = jb_single; jb < jb1; ++jb) {
        const ptrdiff_t j0 = jb * VW, n = H - j0 < VW ? H - j0 : VW;
        const REAL *pb = packed_t + jb * (I + GH) * VW;
        const REAL *bb = packed_bias ? packed_bias + jb * VW : NULL;
        const ptrdiff_t next = jb + 1 < jb1 && prefetch_next ? (I + GH) * VW : 0;
#define FRNN_ZMM_TILE_ARGS pb, I, x, ldx, GH, dz, ldz, bb, keep, dh, ldh, H, b, j0, n, pf_a
        for (ptrdiff_t b = 0, tile = 0; b < B; b += 8, ++tile) {
            ptrdiff_t pf_a, pf_unused; /* one line per packed k-row */
            SFX(next_block_lines)(next, tiles, tile, 1, VW, &pf_a, &pf_unused);
            FRNN_ZMM_ROWS_CALL(zmm_tile, B - b < 8 ? B - b : 8, FRNN_ZMM_TILE_ARGS);
        }
#undef FRNN_ZMM_TILE_ARGS
    }
}

/* The LSTM's forward product (recurrent_matmul_g4) on 512-bit registers, on the same
 * packing: a packed row of a unit block, 4 gates x VWF units, is two full vectors.  It
 * gains from 1 row on (B=1: 1.03-1.19 over the AVX2 tiles).  Rows [b, b+R), P partial
 * sums over k per row (R * P * 2 >= 8 chains); arguments as fwd_tile_g4_r##R, and pf_a,
 * pf_b the next block's lines to prefetch per k-row (0 = none; next_block_lines). */
#define FRNN_DEFINE_ZMM_FWD_TILE(GN, R, P)                                                \
    FRNN_AVX512VL_TARGET FRNN_INLINE void SFX(zmm_fwd_g##GN##_r##R)(                     \
        const REAL *FRNN_RESTRICT pb, ptrdiff_t I, const REAL *FRNN_RESTRICT x,         \
        ptrdiff_t ldx, ptrdiff_t H, const REAL *FRNN_RESTRICT h, const REAL *bb, ptrdiff_t b, \
        REAL *FRNN_RESTRICT z, ptrdiff_t ldz, ptrdiff_t j0, ptrdiff_t n, ptrdiff_t pf_a,  \
        ptrdiff_t pf_b) {                                                               \
        FZ acc[P][R][2];                                                                \
        FRNN_UNROLL for (int p = 0; p < (P); ++p)                                       \
            FRNN_UNROLL for (int r = 0; r < (R); ++r) {                                 \
                acc[p][r][0] = p == 0 && bb ? FZ_LOAD(bb) : FZ_ZERO();                  \
                acc[p][r][1] = p == 0 && bb ? FZ_LOAD(bb + VW) : FZ_ZERO();             \
            }                                                                           \
        for (int part = 0; part < 2; ++part) { /* x_t W, then h_{t-1} U */              \
            const REAL *ar = part ? h + b * H : x + b * ldx;                            \
            const ptrdiff_t lda = part ? H : ldx, K = part ? H : I;                     \
            const REAL *pp = part ? pb + I * (GN) * VWF : pb;                           \
            ptrdiff_t k = 0;                                                            \
            for (; k + (P) <= K; k += (P))                                              \
                FRNN_UNROLL for (int p = 0; p < (P); ++p) {                             \
                    const REAL *pk = pp + (k + p) * (GN) * VWF;                         \
                    FRNN_ZMM_PREFETCH(pk + 8 * (GN) * VWF, 2, R);                        \
                    FRNN_ZMM_PREFETCH_NEXT(pk, pf_a, R);                                   \
                    FRNN_ZMM_PREFETCH_NEXT(pk, pf_b, R);                                   \
                    const FZ w0 = FZ_LOAD(pk);                                          \
                    const FZ w1 = FZ_LOAD(pk + VW);                                     \
                    FRNN_UNROLL for (int r = 0; r < (R); ++r) {                         \
                        const FZ a = FZ_SET1(ar[r * lda + k + p]);                      \
                        acc[p][r][0] = FZ_FMA(a, w0, acc[p][r][0]);                     \
                        acc[p][r][1] = FZ_FMA(a, w1, acc[p][r][1]);                     \
                    }                                                                   \
                }                                                                       \
            for (; k < K; ++k) {                                                        \
                const REAL *pk = pp + k * (GN) * VWF;                                   \
                const FZ w0 = FZ_LOAD(pk);                                              \
                const FZ w1 = FZ_LOAD(pk + VW);                                         \
                FRNN_UNROLL for (int r = 0; r < (R); ++r) {                             \
                    const FZ a = FZ_SET1(ar[r * lda + k]);                              \
                    acc[0][r][0] = FZ_FMA(a, w0, acc[0][r][0]);                         \
                    acc[0][r][1] = FZ_FMA(a, w1, acc[0][r][1]);                         \
                }                                                                       \
            }                                                                           \
        }                                                                               \
        FRNN_UNROLL for (int r = 0; r < (R); ++r) {                                     \
            FZ sum0 = acc[0][r][0], sum1 = acc[0][r][1];                                \
            FRNN_UNROLL for (int p = 1; p < (P); ++p) {                                 \
                sum0 = FZ_ADD(sum0, acc[p][r][0]);                                      \
                sum1 = FZ_ADD(sum1, acc[p][r][1]);                                      \
            }                                                                           \
            REAL tmp[2 * VW] __attribute__((aligned(64)));                              \
            FZ_STORE(tmp, sum0);                                                        \
            FZ_STORE(tmp + VW, sum1);                                                   \
            FRNN_UNROLL for (int g = 0; g < (GN); ++g) {                                \
                REAL *zp = z + (b + r) * ldz + g * H + j0;                              \
                const REAL *src = tmp + g * VWF;                                        \
                if (n == VWF) {                                                         \
                    FV_STORE(zp, bb ? FV_LOAD(src) : FV_ADD(FV_LOAD(zp), FV_LOAD(src))); \
                } else {                                                                \
                    for (ptrdiff_t w = 0; w < n; ++w) zp[w] = (bb ? 0 : zp[w]) + src[w]; \
                }                                                                       \
            }                                                                           \
        }                                                                               \
    }
#define FRNN_DEFINE_ZMM_FWD(GN)                                                           \
    FRNN_DEFINE_ZMM_FWD_TILE(GN, 8, 1)                                                  \
    FRNN_DEFINE_ZMM_FWD_TILE(GN, 7, 1)                                                  \
    FRNN_DEFINE_ZMM_FWD_TILE(GN, 6, 1)                                                  \
    FRNN_DEFINE_ZMM_FWD_TILE(GN, 5, 1)                                                  \
    FRNN_DEFINE_ZMM_FWD_TILE(GN, 4, 1)                                                  \
    FRNN_DEFINE_ZMM_FWD_TILE(GN, 3, 2)                                                  \
    FRNN_DEFINE_ZMM_FWD_TILE(GN, 2, 2)                                                  \
    FRNN_DEFINE_ZMM_FWD_TILE(GN, 1, 4)                                                  \
    /* recurrent_matmul_g##GN##_avx2 on 512-bit registers: 8-row tiles, then 1-7 rows */ \
    FRNN_AVX512VL_TARGET static void SFX(recurrent_matmul_g##GN##_avx512)(               \
        const REAL *FRNN_RESTRICT packed, ptrdiff_t I, const REAL *FRNN_RESTRICT x,     \
        ptrdiff_t ldx, ptrdiff_t H, ptrdiff_t B, const REAL *FRNN_RESTRICT h,           \
        const REAL *FRNN_RESTRICT packed_bias, REAL *FRNN_RESTRICT z, ptrdiff_t ldz,    \
        ptrdiff_t jb0, ptrdiff_t jb1) {                                                 \
        const int prefetch_next =                                                       \
            SFX(blocks_pass_half_l2)((jb1 - jb0) * (I + H) * (GN) * VWF);               \
        for (ptrdiff_t jb = jb0; jb < jb1; ++jb) {                                      \
            const ptrdiff_t j0 = jb * VWF, n = H - j0 < VWF ? H - j0 : VWF;            \
            const REAL *pb = packed + jb * (I + H) * (GN) * VWF;                       \
            const REAL *bb = packed_bias ? packed_bias + jb * (GN) * VWF : NULL;       \
            const ptrdiff_t next =                                                      \
                jb + 1 < jb1 && prefetch_next ? (I + H) * (GN) * VWF : 0;               \
            const ptrdiff_t tiles = (B + 7) / 8;                                        \
            ptrdiff_t b = 0, tile = 0;                                                  \
            for (; b < B; b += 8, ++tile) {                                             \
                ptrdiff_t pf_a, pf_b;                                                   \
                SFX(next_block_lines)(next, tiles, tile, 2, VW, &pf_a, &pf_b);          \
                FRNN_ZMM_ROWS_CALL(zmm_fwd_g##GN, B - b < 8 ? B - b : 8, FRNN_ZMM_FWD_ARGS); \
            }                                                                           \
        }                                                                               \
    }
#define FRNN_ZMM_FWD_ARGS pb, I, x, ldx, H, h, bb, b, z, ldz, j0, n, pf_a, pf_b
FRNN_DEFINE_ZMM_FWD(4)
#undef FRNN_ZMM_FWD_ARGS
#undef FRNN_DEFINE_ZMM_FWD
#undef FRNN_DEFINE_ZMM_FWD_TILE

/* The GRU's forward product on its own packing, blocks of VW units (pack_recurrent with
 * width VW): a packed row of a block is three full vectors, one per gate.  On the usual
 * packing (3 gates x VWF units) a 512-bit tile would leave a quarter of its lanes idle:
 * measured (A/B in one process, 2 threads, T=100, I=H/2) that one ran 1.02-1.15 of the
 * AVX2 tiles from 8 rows (0.85-0.88 below), this one 1.05-1.49 forward from 1 row
 * (B=8-128: 1.25-1.49 at 128-256 units, 1.32-1.36 at 512) and 1.03-1.14 for a training
 * step.  Rows [b, b+R), P partial sums over k per row; z rows of 3H, row stride ldz,
 * overwritten from the start bb (ceil(H / VW) * 3 * VW zeros or a bias); pf_a, pf_b as
 * in the LSTM's tiles. */
#define FRNN_DEFINE_ZMM_G3_TILE(R, P)                                                     \
    FRNN_AVX512VL_TARGET FRNN_INLINE void SFX(zmm_g3_r##R)(                              \
        const REAL *FRNN_RESTRICT pb, ptrdiff_t H, const REAL *FRNN_RESTRICT h,         \
        const REAL *bb, ptrdiff_t b, REAL *FRNN_RESTRICT z, ptrdiff_t ldz, ptrdiff_t j0, \
        ptrdiff_t n, ptrdiff_t pf_a, ptrdiff_t pf_b) {                                  \
        FZ acc[P][R][3];                                                                \
        FRNN_UNROLL for (int p = 0; p < (P); ++p)                                       \
            FRNN_UNROLL for (int r = 0; r < (R); ++r)                                   \
                FRNN_UNROLL for (int g = 0; g < 3; ++g)                                 \
                    acc[p][r][g] = p == 0 ? FZ_LOAD(bb + g * VW) : FZ_ZERO();           \
        const REAL *ar = h + b * H;                                                     \
        ptrdiff_t k = 0;                                                                \
        for (; k + (P) <= H; k += (P))                                                  \
            FRNN_UNROLL for (int p = 0; p < (P); ++p) {                                 \
                const REAL *pk = pb + (k + p) * 3 * VW;                                 \
                FRNN_ZMM_PREFETCH(pk + 8 * 3 * VW, 3, R);                                \
                FRNN_ZMM_PREFETCH_NEXT(pk, pf_a, R);                                       \
                FRNN_ZMM_PREFETCH_NEXT(pk, pf_b, R);                                       \
                const FZ w0 = FZ_LOAD(pk), w1 = FZ_LOAD(pk + VW), w2 = FZ_LOAD(pk + 2 * VW); \
                FRNN_UNROLL for (int r = 0; r < (R); ++r) {                             \
                    const FZ a = FZ_SET1(ar[r * H + k + p]);                            \
                    acc[p][r][0] = FZ_FMA(a, w0, acc[p][r][0]);                         \
                    acc[p][r][1] = FZ_FMA(a, w1, acc[p][r][1]);                         \
                    acc[p][r][2] = FZ_FMA(a, w2, acc[p][r][2]);                         \
                }                                                                       \
            }                                                                           \
        for (; k < H; ++k) {                                                            \
            const REAL *pk = pb + k * 3 * VW;                                           \
            const FZ w0 = FZ_LOAD(pk), w1 = FZ_LOAD(pk + VW), w2 = FZ_LOAD(pk + 2 * VW); \
            FRNN_UNROLL for (int r = 0; r < (R); ++r) {                                 \
                const FZ a = FZ_SET1(ar[r * H + k]);                                    \
                acc[0][r][0] = FZ_FMA(a, w0, acc[0][r][0]);                             \
                acc[0][r][1] = FZ_FMA(a, w1, acc[0][r][1]);                             \
                acc[0][r][2] = FZ_FMA(a, w2, acc[0][r][2]);                             \
            }                                                                           \
        }                                                                               \
        const FZ_MASK valid = (FZ_MASK)(n == VW ? (1u << VW) - 1 : (1u << n) - 1);      \
        FRNN_UNROLL for (int r = 0; r < (R); ++r)                                       \
            FRNN_UNROLL for (int g = 0; g < 3; ++g) {                                   \
                FZ sum = acc[0][r][g];                                                  \
                FRNN_UNROLL for (int p = 1; p < (P); ++p) sum = FZ_ADD(sum, acc[p][r][g]); \
                FZ_MASK_STORE(z + (b + r) * ldz + g * H + j0, valid, sum);              \
            }                                                                           \
    }
FRNN_DEFINE_ZMM_G3_TILE(8, 1)
FRNN_DEFINE_ZMM_G3_TILE(7, 1)
FRNN_DEFINE_ZMM_G3_TILE(6, 1)
FRNN_DEFINE_ZMM_G3_TILE(5, 1)
FRNN_DEFINE_ZMM_G3_TILE(4, 1)
FRNN_DEFINE_ZMM_G3_TILE(3, 1)
FRNN_DEFINE_ZMM_G3_TILE(2, 2)
FRNN_DEFINE_ZMM_G3_TILE(1, 3)
#undef FRNN_DEFINE_ZMM_G3_TILE

/* z (B rows of 3H, row stride ldz) = start + h U for the units of blocks [jb0, jb1) of VW
 * units: U packed alone by pack_recurrent with width VW; start: ceil(H / VW) * 3 * VW. */
FRNN_AVX512VL_TARGET static void SFX(recurrent_matmul_g3_wide_avx512)(
    const REAL *FRNN_RESTRICT packed, ptrdiff_t H, ptrdiff_t B, const REAL *FRNN_RESTRICT h,
    const REAL *FRNN_RESTRICT start, REAL *FRNN_RESTRICT z, ptrdiff_t ldz, ptrdiff_t jb0,
    ptrdiff_t jb1) {
    const int prefetch_next = SFX(blocks_pass_half_l2)((jb1 - jb0) * H * 3 * VW);
    const ptrdiff_t tiles = (B + 7) / 8;
    for (ptrdiff_t jb = jb0; jb < jb1; ++jb) {
        const ptrdiff_t j0 = jb * VW, n = H - j0 < VW ? H - j0 : VW;
        const REAL *pb = packed + jb * H * 3 * VW, *bb = start + jb * 3 * VW;
        const ptrdiff_t next = jb + 1 < jb1 && prefetch_next ? H * 3 * VW : 0;
#define FRNN_ZMM_G3_ARGS pb, H, h, bb, b, z, ldz, j0, n, pf_a, pf_b
        for (ptrdiff_t b = 0, tile = 0; b < B; b += 8, ++tile) {
            ptrdiff_t pf_a, pf_b;
            SFX(next_block_lines)(next, tiles, tile, 3, VW, &pf_a, &pf_b);
            FRNN_ZMM_ROWS_CALL(zmm_g3, B - b < 8 ? B - b : 8, FRNN_ZMM_G3_ARGS);
        }
#undef FRNN_ZMM_G3_ARGS
    }
}
#undef FRNN_ZMM_PREFETCH
#undef FRNN_ZMM_PREFETCH_NEXT
#undef FRNN_ZMM_ROWS_CALL
#undef FZ
#undef FZ_MASK
#undef FZ_LOAD
#undef FZ_MASKZ_LOAD
#undef FZ_MASK_STORE
#undef FZ_STORE
#undef FZ_SET1
#undef FZ_FMA
#undef FZ_ADD
#undef FZ_MUL
#undef FZ_ZERO
#undef FV
#undef FV_LOAD
#undef FV_STORE
#undef FV_BCAST
#undef FV_FMA
#undef FV_ADD
#undef FV_ZERO
#undef FV_LANES
#undef FRNN_UNROLL
#endif /* FRNN_AVX2_KERNELS */

/* The entry points: the AVX2+FMA kernels where the CPU has them, else the generic C. */
#if FRNN_AVX2_KERNELS
#define FRNN_PICK(name, ...)                                                              \
    do {                                                                                \
        if (frnn_use_avx2()) SFX(name##_avx2)(__VA_ARGS__);                     \
        else SFX(name##_generic)(__VA_ARGS__);                                          \
    } while (0)
/* The transposed product: 512-bit tiles first (recurrent_matmul_t_avx512). */
#define FRNN_PICK_T(...)                                                                  \
    do {                                                                                \
        if (frnn_use_avx512vl()) SFX(recurrent_matmul_t_avx512)(__VA_ARGS__);           \
        else FRNN_PICK(recurrent_matmul_t, __VA_ARGS__);                                \
    } while (0)
#else
#define FRNN_PICK(name, ...) SFX(name##_generic)(__VA_ARGS__)
#define FRNN_PICK_T(...) SFX(recurrent_matmul_t_generic)(__VA_ARGS__)
#endif
/* z = h_{t-1} U, three gates (U packed alone by pack_recurrent in blocks of `width` =
 * g3_width() units; GRU): z is overwritten, the tiles starting from `zeros` (ceil(H /
 * width) * 3 * width zeros), so z needs no clearing.  The input operand of the AVX2 and
 * generic tiles is never read (I = 0); h stands in for it so no pointer arithmetic touches
 * NULL. */
FRNN_UNUSED static void SFX(recurrent_matmul_g3)(const REAL *packed, ptrdiff_t width,
                                                ptrdiff_t H, ptrdiff_t B, const REAL *h,
                                                const REAL *zeros, REAL *z, ptrdiff_t ldz,
                                                ptrdiff_t jb0, ptrdiff_t jb1) {
#if FRNN_AVX2_KERNELS
    if (width == VW) {
        SFX(recurrent_matmul_g3_wide_avx512)(packed, H, B, h, zeros, z, ldz, jb0, jb1);
        return;
    }
#endif
    FRNN_PICK(recurrent_matmul_g3, packed, 0, h, 0, H, B, h, zeros, z, ldz, jb0, jb1);
}
/* The width of recurrent_matmul_g3's unit blocks: VW for the 512-bit tiles where the CPU
 * has them, else VWF. */
FRNN_UNUSED static inline ptrdiff_t SFX(g3_width)(void) {
    return frnn_use_avx512vl() ? VW : VWF;
}
/* z = bias + x_t W + h_{t-1} U, the whole pre-activation of a step in one pass (operands
 * from pack_input_recurrent; see FRNN_DEFINE_RECMM), LSTM.  With I = 0 and no bias:
 * z += h_{t-1} U over U packed alone (pack_recurrent, width VWF). */
FRNN_UNUSED static void SFX(input_recurrent_matmul_g4)(const REAL *packed, ptrdiff_t I,
                                                      const REAL *x, ptrdiff_t ldx, ptrdiff_t H,
                                                      ptrdiff_t B, const REAL *h,
                                                      const REAL *packed_bias, REAL *z,
                                                      ptrdiff_t ldz, ptrdiff_t jb0, ptrdiff_t jb1) {
#if FRNN_AVX2_KERNELS
    if (frnn_use_avx512vl()) {
        SFX(recurrent_matmul_g4_avx512)(packed, I, x, ldx, H, B, h, packed_bias, z, ldz, jb0,
                                        jb1);
        return;
    }
#endif
    FRNN_PICK(recurrent_matmul_g4, packed, I, x, ldx, H, B, h, packed_bias, z, ldz, jb0, jb1);
}
FRNN_UNUSED static void SFX(recurrent_matmul_t)(const REAL *packed_t, ptrdiff_t H, ptrdiff_t GH,
                                               ptrdiff_t B, const REAL *dz, ptrdiff_t ldz,
                                               const REAL *keep, REAL *dh, ptrdiff_t ldh,
                                               ptrdiff_t jb0, ptrdiff_t jb1) {
    FRNN_PICK_T(packed_t, 0, dz, 0, H, GH, B, dz, ldz, NULL, keep, dh, ldh,
              jb0, jb1);
}
/* The input gradient of one step, for all rows b < B and the input columns i of blocks
 * [ib0, ib1), from one or two row-aligned parts of the gate gradients:
 *   dx[b, i] = sum_{c<K1} a1[b, c] W[i, c] + sum_{c<K2} a2[b, c] W[i, K1 + c]  (overwritten)
 * packed_wt: W (I rows of K1 + K2 columns) packed by pack_recurrent_t with K = K1 + K2.
 * a1 (B, K1) row stride ld1, unread when K1 = 0; a2 (B, K2) row stride ld2.
 * zeros: at least ib1 * VW zeros (the sums' start, which makes the tiles store).
 * dx (B, I) row stride ldx, must not alias a1 or a2. */
FRNN_UNUSED static void SFX(input_gradient_matmul)(const REAL *packed_wt, ptrdiff_t I,
                                                  ptrdiff_t K1, const REAL *a1, ptrdiff_t ld1,
                                                  ptrdiff_t K2, const REAL *a2, ptrdiff_t ld2,
                                                  ptrdiff_t B, const REAL *zeros, REAL *dx,
                                                  ptrdiff_t ldx, ptrdiff_t ib0, ptrdiff_t ib1) {
    if (K1 == 0) a1 = a2, ld1 = 0; /* never read */
    FRNN_PICK_T(packed_wt, K1, a1, ld1, I, K2, B, a2, ld2, zeros, NULL, dx,
              ldx, ib0, ib1);
}
/* SimpleRNN's whole step: z = bias + x_t W + h_{t-1} U (W over U and the bias packed in
 * blocks of VW units by pack_input_recurrent; see recurrent_matmul_t_generic).  With I = 0
 * and no bias: z += h_{t-1} U over U packed alone (pack_recurrent, width VW). */
FRNN_UNUSED static void SFX(input_recurrent_matmul_t)(const REAL *packed, ptrdiff_t I,
                                                     const REAL *x, ptrdiff_t ldx, ptrdiff_t H,
                                                     ptrdiff_t B, const REAL *h,
                                                     const REAL *packed_bias, REAL *z,
                                                     ptrdiff_t ldz, ptrdiff_t jb0, ptrdiff_t jb1) {
    FRNN_PICK_T(packed, I, x, ldx, H, H, B, h, H, packed_bias, NULL, z, ldz,
              jb0, jb1);
}
/* z[b, j] = start[j] + sum_{k<K} a[b, k] W[k, j] for all rows b < B and the columns j of
 * blocks [jb0, jb1) of VW (overwritten): one matrix W (K rows, N columns) packed in blocks
 * of VW columns by pack_recurrent_blocks with G = 1, block_rows = K.  a (B, K) row stride
 * lda; start: at least jb1 * VW values; z (B, N) row stride ldz, must not alias a.  The
 * transposed product's tiles (6 rows x 16 units with AVX2) with no second part: the GRU's
 * per-step input projection (frnn_gru_projects_in_loop). */
FRNN_UNUSED static void SFX(input_matmul_t)(const REAL *packed, ptrdiff_t K, const REAL *a,
                                           ptrdiff_t lda, ptrdiff_t N, ptrdiff_t B,
                                           const REAL *start, REAL *z, ptrdiff_t ldz,
                                           ptrdiff_t jb0, ptrdiff_t jb1) {
    FRNN_PICK_T(packed, 0, a, 0, N, K, B, a, lda, start, NULL, z, ldz, jb0, jb1);
}
#undef FRNN_PICK
#undef FRNN_PICK_T

/* dx rows [b0, b0 + rows) of processing step t, straight into the caller's layout, from
 * the step's gate gradients (a1, a2: see input_gradient_matmul, rows from b0).  Called by
 * every thread of a fused backward loop once the step's gate gradients are complete: split
 * by rows, each thread computes its rows; by units, each a share of the input columns. */
FRNN_UNUSED static void SFX(step_input_gradient)(const frnn_dims *d, frnn_split split,
                                                 const REAL *packed_wt, ptrdiff_t K1,
                                                 const REAL *a1, ptrdiff_t ld1, ptrdiff_t K2,
                                                 const REAL *a2, ptrdiff_t ld2, ptrdiff_t rows,
                                                 const REAL *zeros, ptrdiff_t t, ptrdiff_t b0,
                                                 REAL *dx, frnn_seq_strides dxs) {
    const ptrdiff_t I = d->input_size, nbx = SFX(unit_blocks)(I);
    ptrdiff_t ib0 = 0, ib1 = nbx;
    if (!split.by_rows) {
        const ptrdiff_t tid = frnn_thread_id(), team = frnn_team_size();
        ib0 = nbx * tid / team;
        ib1 = nbx * (tid + 1) / team;
    }
    REAL *dst = dx + frnn_input_step(d, t) * dxs.stride_t + b0 * dxs.stride_b;
    SFX(input_gradient_matmul)(packed_wt, I, K1, a1, ld1, K2, a2, ld2, rows, zeros, dst,
                               dxs.stride_b, ib0, ib1);
}
