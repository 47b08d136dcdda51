/* The per-step recurrent matmul, fused with the gate pass by unit blocks.  Included once
 * per precision with REAL and SFX(name) defined.
 *
 * Why not BLAS: a step is a thin product (B rows, often 1-32) that BLAS handles poorly (a
 * call costs ~1 us, and OpenBLAS repacks U on every call).  Here U is packed once per call
 * so that each block of VW consecutive units has the G gate columns of those units side by
 * side; a thread owning a range of unit blocks computes exactly the gate pre-activations its
 * fused pointwise pass needs, so the two cores split the units and meet once per step.
 *
 * Vectors are GCC vector extensions of 64 bytes: one AVX-512 register, two AVX2 registers,
 * four SSE registers; the FRNN_CLONES dispatch picks the widest the CPU has. */

typedef REAL SFX(vec) __attribute__((vector_size(64)));
#ifndef VW
#define VW ((ptrdiff_t)(64 / sizeof(REAL))) /* lanes per vector; REAL is read at each use */
#endif

FRNN_INLINE SFX(vec) SFX(vload)(const REAL *p) {
    SFX(vec) v;
    memcpy(&v, p, sizeof v);
    return v;
}
FRNN_INLINE void SFX(vstore)(REAL *p, SFX(vec) v) { memcpy(p, &v, sizeof v); }
/* first n (< VW allowed) lanes, the rest zero */
FRNN_INLINE SFX(vec) SFX(vload_part)(const REAL *p, ptrdiff_t n) {
    SFX(vec) v = {0};
    memcpy(&v, p, (size_t)n * sizeof(REAL));
    return v;
}
FRNN_INLINE void SFX(vstore_part)(REAL *p, SFX(vec) v, ptrdiff_t n) {
    memcpy(p, &v, (size_t)n * sizeof(REAL));
}

FRNN_UNUSED static inline ptrdiff_t SFX(unit_blocks)(ptrdiff_t H) { return (H + VW - 1) / VW; }

/* Forward packing of U (H, G*H) row-major:
 *   packed[((jb*H + k)*G + g)*VW + w] = U[k, g*H + jb*VW + w], zero where jb*VW + w >= H.
 * packed holds unit_blocks(H) * H * G * VW elements. */
FRNN_UNUSED static void SFX(pack_recurrent)(const REAL *U, ptrdiff_t H, ptrdiff_t G, REAL *packed) {
    const ptrdiff_t nb = SFX(unit_blocks)(H);
    for (ptrdiff_t jb = 0; jb < nb; ++jb) {
        const ptrdiff_t j0 = jb * VW, n = H - j0 < VW ? H - j0 : VW;
        for (ptrdiff_t k = 0; k < H; ++k)
            for (ptrdiff_t g = 0; g < G; ++g) {
                REAL *dst = packed + ((jb * H + k) * G + g) * VW;
                memcpy(dst, U + k * G * H + g * H + j0, (size_t)n * sizeof(REAL));
                for (ptrdiff_t w = n; w < VW; ++w) dst[w] = 0;
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
 * constant in each instantiation so the accumulators stay in registers. */
#define FRNN_DEFINE_RECMM(GN)                                                                  \
    FRNN_CLONES FRNN_UNUSED static void SFX(recurrent_matmul_g##GN)(                                     \
        const REAL *FRNN_RESTRICT packed, ptrdiff_t H, ptrdiff_t B, const REAL *FRNN_RESTRICT h, \
        REAL *FRNN_RESTRICT z, ptrdiff_t ldz, ptrdiff_t jb0, ptrdiff_t jb1) {                   \
        for (ptrdiff_t jb = jb0; jb < jb1; ++jb) {                                             \
            const ptrdiff_t j0 = jb * VW, n = H - j0 < VW ? H - j0 : VW;                       \
            const REAL *pb = packed + jb * H * GN * VW;                                        \
            ptrdiff_t b = 0;                                                                   \
            for (; b + 4 <= B; b += 4) { /* 4 rows x GN gates of accumulators */               \
                SFX(vec) acc[4][GN];                                                           \
                for (int r = 0; r < 4; ++r)                                                    \
                    for (int g = 0; g < GN; ++g) acc[r][g] = (SFX(vec)){0};                    \
                const REAL *h0r = h + b * H;                                                   \
                for (ptrdiff_t k = 0; k < H; ++k) {                                            \
                    const REAL *pk = pb + k * GN * VW;                                         \
                    for (int g = 0; g < GN; ++g) {                                             \
                        SFX(vec) wv = SFX(vload)(pk + g * VW);                                 \
                        for (int r = 0; r < 4; ++r) acc[r][g] += h0r[r * H + k] * wv;          \
                    }                                                                          \
                }                                                                              \
                for (int r = 0; r < 4; ++r)                                                    \
                    for (int g = 0; g < GN; ++g) {                                             \
                        REAL *zp = z + (b + r) * ldz + g * H + j0;                             \
                        if (n == VW) SFX(vstore)(zp, SFX(vload)(zp) + acc[r][g]);              \
                        else SFX(vstore_part)(zp, SFX(vload_part)(zp, n) + acc[r][g], n);      \
                    }                                                                          \
            }                                                                                  \
            for (; b < B; ++b) { /* one row: split k in two chains to hide FMA latency */     \
                SFX(vec) acc[2][GN];                                                           \
                for (int g = 0; g < GN; ++g) acc[0][g] = acc[1][g] = (SFX(vec)){0};            \
                const REAL *hr = h + b * H;                                                    \
                ptrdiff_t k = 0;                                                               \
                for (; k + 2 <= H; k += 2)                                                     \
                    for (int g = 0; g < GN; ++g) {                                             \
                        acc[0][g] += hr[k] * SFX(vload)(pb + (k * GN + g) * VW);               \
                        acc[1][g] += hr[k + 1] * SFX(vload)(pb + ((k + 1) * GN + g) * VW);     \
                    }                                                                          \
                for (; k < H; ++k)                                                             \
                    for (int g = 0; g < GN; ++g)                                               \
                        acc[0][g] += hr[k] * SFX(vload)(pb + (k * GN + g) * VW);               \
                for (int g = 0; g < GN; ++g) {                                                 \
                    REAL *zp = z + b * ldz + g * H + j0;                                       \
                    SFX(vec) sum = acc[0][g] + acc[1][g];                                      \
                    if (n == VW) SFX(vstore)(zp, SFX(vload)(zp) + sum);                        \
                    else SFX(vstore_part)(zp, SFX(vload_part)(zp, n) + sum, n);                \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    }
FRNN_DEFINE_RECMM(1)
FRNN_DEFINE_RECMM(3)
FRNN_DEFINE_RECMM(4)
#undef FRNN_DEFINE_RECMM

/* dh[b, j] += (sum_c dz[b, c] U[j, c]) * (keep ? keep[b, j] : 1) for all rows and the units
 * of blocks [jb0, jb1).  dz (B, GH) row stride ldz; dh and keep (B,H) contiguous. */
FRNN_UNUSED FRNN_CLONES static void SFX(recurrent_matmul_t)(const REAL *FRNN_RESTRICT packed_t, ptrdiff_t H,
                                                ptrdiff_t GH, ptrdiff_t B,
                                                const REAL *FRNN_RESTRICT dz, ptrdiff_t ldz,
                                                const REAL *FRNN_RESTRICT keep,
                                                REAL *FRNN_RESTRICT dh, ptrdiff_t jb0,
                                                ptrdiff_t jb1) {
    for (ptrdiff_t jb = jb0; jb < jb1; ++jb) {
        const ptrdiff_t j0 = jb * VW, n = H - j0 < VW ? H - j0 : VW;
        const REAL *pb = packed_t + jb * GH * VW;
        ptrdiff_t b = 0;
        for (; b + 8 <= B; b += 8) {
            SFX(vec) acc[8];
            for (int r = 0; r < 8; ++r) acc[r] = (SFX(vec)){0};
            const REAL *dzr = dz + b * ldz;
            for (ptrdiff_t c = 0; c < GH; ++c) {
                SFX(vec) wv = SFX(vload)(pb + c * VW);
                for (int r = 0; r < 8; ++r) acc[r] += dzr[r * ldz + c] * wv;
            }
            for (int r = 0; r < 8; ++r) {
                REAL *dp = dh + (b + r) * H + j0;
                SFX(vec) a = acc[r];
                if (keep) a *= SFX(vload_part)(keep + (b + r) * H + j0, n);
                if (n == VW) SFX(vstore)(dp, SFX(vload)(dp) + a);
                else SFX(vstore_part)(dp, SFX(vload_part)(dp, n) + a, n);
            }
        }
        for (; b < B; ++b) { /* one row: four chains over c */
            SFX(vec) acc[4] = {{0}, {0}, {0}, {0}};
            const REAL *dzr = dz + b * ldz;
            ptrdiff_t c = 0;
            for (; c + 4 <= GH; c += 4)
                for (int q = 0; q < 4; ++q) acc[q] += dzr[c + q] * SFX(vload)(pb + (c + q) * VW);
            for (; c < GH; ++c) acc[0] += dzr[c] * SFX(vload)(pb + c * VW);
            SFX(vec) a = (acc[0] + acc[1]) + (acc[2] + acc[3]);
            REAL *dp = dh + b * H + j0;
            if (keep) a *= SFX(vload_part)(keep + b * H + j0, n);
            if (n == VW) SFX(vstore)(dp, SFX(vload)(dp) + a);
            else SFX(vstore_part)(dp, SFX(vload_part)(dp, n) + a, n);
        }
    }
}
