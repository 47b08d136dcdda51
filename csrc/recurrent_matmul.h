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
 * (~3 GFLOP/s).  Note this machine's CPU has AVX2, not AVX-512. */

/* Units per block (REAL is read at each use): forward tiles of 4 rows x G gates x 32 bytes
 * fill the 16 AVX2 registers (measured 105 GFLOP/s per core at B=8, H=256, against 27 with
 * 64-byte blocks, whose tiles spill); backward blocks are 64 bytes (4 rows x 64 bytes). */
#ifndef VW
#define VWF ((ptrdiff_t)(32 / sizeof(REAL)))
#define VW ((ptrdiff_t)(64 / sizeof(REAL)))
#endif

FRNN_UNUSED static inline ptrdiff_t SFX(unit_blocks_fwd)(ptrdiff_t H) { return (H + VWF - 1) / VWF; }
FRNN_UNUSED static inline ptrdiff_t SFX(unit_blocks)(ptrdiff_t H) { return (H + VW - 1) / VW; }

/* Forward packing of U (H, G*H) row-major:
 *   packed[((jb*H + k)*G + g)*VWF + w] = U[k, g*H + jb*VWF + w], zero where jb*VWF + w >= H.
 * packed holds unit_blocks(H) * H * G * VWF elements. */
FRNN_UNUSED static void SFX(pack_recurrent)(const REAL *U, ptrdiff_t H, ptrdiff_t G, REAL *packed) {
    const ptrdiff_t nb = SFX(unit_blocks_fwd)(H);
    for (ptrdiff_t jb = 0; jb < nb; ++jb) {
        const ptrdiff_t j0 = jb * VWF, n = H - j0 < VWF ? H - j0 : VWF;
        for (ptrdiff_t k = 0; k < H; ++k)
            for (ptrdiff_t g = 0; g < G; ++g) {
                REAL *dst = packed + ((jb * H + k) * G + g) * VWF;
                memcpy(dst, U + k * G * H + g * H + j0, (size_t)n * sizeof(REAL));
                for (ptrdiff_t w = n; w < VWF; ++w) dst[w] = 0;
            }
    }
}

/* Backward packing: the transpose, for dh[b, j] = sum_c dz[b, c] U[j, c]:
 *   packed_t[(jb*G*H + c)*VW + w] = U[jb*VW + w, c], zero where jb*VW + w >= H. */
FRNN_UNUSED static void SFX(pack_recurrent_t)(const REAL *U, ptrdiff_t H, ptrdiff_t G, REAL *packed_t) {
    const ptrdiff_t nb = SFX(unit_blocks)(H), GH = G * H;
    for (ptrdiff_t jb = 0; jb < nb; ++jb)
        for (ptrdiff_t c = 0; c < GH; ++c) {
            REAL *dst = packed_t + (jb * GH + c) * VW;
            for (ptrdiff_t w = 0; w < VW; ++w) {
                ptrdiff_t j = jb * VW + w;
                dst[w] = j < H ? U[j * GH + c] : (REAL)0;
            }
        }
}

/* z[b, g*H + j] += sum_k h[b, k] U[k, g*H + j] for all rows b < B and the units j of blocks
 * [jb0, jb1).  h (B,H) contiguous; z rows of G*H, row stride ldz.  G is a compile-time
 * constant in each instantiation so the tiles have a fixed size. */
#define FRNN_DEFINE_RECMM(GN)                                                                  \
    FRNN_CLONES FRNN_UNUSED static void SFX(recurrent_matmul_g##GN)(                           \
        const REAL *FRNN_RESTRICT packed, ptrdiff_t H, ptrdiff_t B, const REAL *FRNN_RESTRICT h, \
        REAL *FRNN_RESTRICT z, ptrdiff_t ldz, ptrdiff_t jb0, ptrdiff_t jb1) {                   \
        for (ptrdiff_t jb = jb0; jb < jb1; ++jb) {                                             \
            const ptrdiff_t j0 = jb * VWF, n = H - j0 < VWF ? H - j0 : VWF;                       \
            const REAL *pb = packed + jb * H * GN * VWF;                                        \
            ptrdiff_t b = 0;                                                                   \
            for (; b + 4 <= B; b += 4) { /* a 4-row tile: each weight load feeds 4 FMAs */    \
                REAL acc[4][GN * VWF] = {{0}};                                                  \
                const REAL *hr = h + b * H;                                                    \
                for (ptrdiff_t k = 0; k < H; ++k) {                                            \
                    const REAL *pk = pb + k * GN * VWF;                                         \
                    const REAL h0 = hr[k], h1 = hr[H + k], h2 = hr[2 * H + k],                 \
                               h3 = hr[3 * H + k];                                             \
                    for (int q = 0; q < GN * VWF; ++q) {                                        \
                        const REAL w = pk[q];                                                  \
                        acc[0][q] += h0 * w;                                                   \
                        acc[1][q] += h1 * w;                                                   \
                        acc[2][q] += h2 * w;                                                   \
                        acc[3][q] += h3 * w;                                                   \
                    }                                                                          \
                }                                                                              \
                for (int r = 0; r < 4; ++r)                                                    \
                    for (int g = 0; g < GN; ++g) {                                             \
                        REAL *zp = z + (b + r) * ldz + g * H + j0;                             \
                        for (ptrdiff_t w = 0; w < n; ++w) zp[w] += acc[r][g * VWF + w];          \
                    }                                                                          \
            }                                                                                  \
            for (; b < B; ++b) {                                                               \
                REAL acc[GN * VWF] = {0};                                                       \
                const REAL *hr = h + b * H;                                                    \
                for (ptrdiff_t k = 0; k < H; ++k) {                                            \
                    const REAL *pk = pb + k * GN * VWF;                                         \
                    const REAL hk = hr[k];                                                     \
                    for (int q = 0; q < GN * VWF; ++q) acc[q] += hk * pk[q];                    \
                }                                                                              \
                for (int g = 0; g < GN; ++g) {                                                 \
                    REAL *zp = z + b * ldz + g * H + j0;                                       \
                    for (ptrdiff_t w = 0; w < n; ++w) zp[w] += acc[g * VWF + w];                \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    }
FRNN_DEFINE_RECMM(3)
FRNN_DEFINE_RECMM(4)
#undef FRNN_DEFINE_RECMM

/* dh[b, j] += (sum_c dz[b, c] U[j, c]) * (keep ? keep[b, j] : 1) for all rows and the units
 * of blocks [jb0, jb1).  dz (B, GH) row stride ldz; dh and keep (B,H) contiguous. */
FRNN_CLONES FRNN_UNUSED static void SFX(recurrent_matmul_t)(
    const REAL *FRNN_RESTRICT packed_t, ptrdiff_t H, ptrdiff_t GH, ptrdiff_t B,
    const REAL *FRNN_RESTRICT dz, ptrdiff_t ldz, const REAL *FRNN_RESTRICT keep,
    REAL *FRNN_RESTRICT dh, ptrdiff_t jb0, ptrdiff_t jb1) {
    for (ptrdiff_t jb = jb0; jb < jb1; ++jb) {
        const ptrdiff_t j0 = jb * VW, n = H - j0 < VW ? H - j0 : VW;
        const REAL *pb = packed_t + jb * GH * VW;
        ptrdiff_t b = 0;
        for (; b + 4 <= B; b += 4) { /* a 4-row tile: 4 x 64 bytes of sums fit AVX2's registers */
            REAL acc[4][VW] = {{0}};
            const REAL *dzr = dz + b * ldz;
            for (ptrdiff_t c = 0; c < GH; ++c) {
                const REAL *pc = pb + c * VW;
                const REAL d0 = dzr[c], d1 = dzr[ldz + c], d2 = dzr[2 * ldz + c],
                           d3 = dzr[3 * ldz + c];
                for (int w = 0; w < VW; ++w) {
                    const REAL wv = pc[w];
                    acc[0][w] += d0 * wv;
                    acc[1][w] += d1 * wv;
                    acc[2][w] += d2 * wv;
                    acc[3][w] += d3 * wv;
                }
            }
            for (int r = 0; r < 4; ++r) {
                REAL *dp = dh + (b + r) * H + j0;
                const REAL *kp = keep ? keep + (b + r) * H + j0 : NULL;
                for (ptrdiff_t w = 0; w < n; ++w) dp[w] += kp ? acc[r][w] * kp[w] : acc[r][w];
            }
        }
        for (; b < B; ++b) { /* one row: four partial sums over c to hide FMA latency */
            REAL acc[4][VW] = {{0}};
            const REAL *dzr = dz + b * ldz;
            ptrdiff_t c = 0;
            for (; c + 4 <= GH; c += 4) {
                const REAL d0 = dzr[c], d1 = dzr[c + 1], d2 = dzr[c + 2], d3 = dzr[c + 3];
                const REAL *pc = pb + c * VW;
                for (int w = 0; w < VW; ++w) {
                    acc[0][w] += d0 * pc[w];
                    acc[1][w] += d1 * pc[VW + w];
                    acc[2][w] += d2 * pc[2 * VW + w];
                    acc[3][w] += d3 * pc[3 * VW + w];
                }
            }
            for (; c < GH; ++c)
                for (int w = 0; w < VW; ++w) acc[0][w] += dzr[c] * pb[c * VW + w];
            REAL *dp = dh + b * H + j0;
            const REAL *kp = keep ? keep + b * H + j0 : NULL;
            for (ptrdiff_t w = 0; w < n; ++w) {
                REAL s = (acc[0][w] + acc[1][w]) + (acc[2][w] + acc[3][w]);
                dp[w] += kp ? s * kp[w] : s;
            }
        }
    }
}
