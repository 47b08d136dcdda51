/* GRU forward and BPTT for one precision.  Included by gru.c with REAL, SFX(name), GEMM,
 * ACTIVATE, ACTIVATION_GRAD and the one-element SIGMOID1, TANH1 defined.  See fusedrnn.h for the argument contract.
 *
 * Gate blocks z, r, h side by side (3H columns).  Per processing step, with hp = h_{t-1}:
 *   reset_after=1:  R = hp U (+ b_rec),  z = ra(xz + Rz),  r = ra(xr + Rr),
 *                   hh = a(xh + r * Rh)
 *   reset_after=0:  z = ra(xz + hp Uz),  r = ra(xr + hp Ur),  hh = a(xh + (r*hp) Uh)
 *   h = z*hp + (1-z)*hh
 * where x? = x W? + b_in?.  The "hr" cache holds, per step and row, the H values backward
 * needs besides the gates: Rh (reset_after=1) or q = r*hp (reset_after=0).
 *
 * Recurrent dropout (Keras 3, GRUCell implementation 1): rec_mask holds one (B,H) mask per
 * gate, m_z, m_r, m_h; hp is replaced by hp*m_g wherever it is multiplied by U's gate-g
 * block (and in q = r*(hp*m_h)), while the update h = z*hp + (1-z)*hh uses hp itself.
 * Different masks per gate split the one recurrent GEMM into one per gate block. */

/* dst (B,H) = h (B,H) * m (B,H), the dropped-out state one gate block sees. */
static void SFX(gru_drop)(ptrdiff_t n, const REAL *FRNN_RESTRICT h, const REAL *FRNN_RESTRICT m,
                          REAL *FRNN_RESTRICT dst) {
    for (ptrdiff_t k = 0; k < n; ++k) dst[k] = h[k] * m[k];
}

/* c[:, g-blocks g0..g1) (+)= (h*m_g) U[:, g-block] per gate block, each (B x H x H);
 * ld = 3H for c and U.  beta as in GEMM.  scratch (B,H). */
static int SFX(gru_masked_recurrent_gemm)(const frnn_blas *blas, ptrdiff_t B, ptrdiff_t H,
                                          int g0, int g1, const REAL *h, const REAL *rec_mask,
                                          const REAL *recurrent, REAL beta, REAL *c,
                                          REAL *scratch) {
    for (int g = g0; g < g1; ++g) {
        SFX(gru_drop)(B * H, h, rec_mask + g * B * H, scratch);
        int status = SFX(gemm_rm)(blas, 0, 0, B, H, H, 1, scratch, H, recurrent + g * H, 3 * H,
                                  beta, c + g * H, 3 * H);
        if (status) return status;
    }
    return FRNN_OK;
}

/* dh (B,H) += sum over gate blocks g0..g1) of m_g * (dz[:, g-block] U[:, g-block]^T).
 * scratch (B,H). */
static int SFX(gru_masked_recurrent_grad)(const frnn_blas *blas, ptrdiff_t B, ptrdiff_t H,
                                          int g0, int g1, const REAL *dz, const REAL *rec_mask,
                                          const REAL *recurrent, REAL *FRNN_RESTRICT dh,
                                          REAL *FRNN_RESTRICT scratch) {
    for (int g = g0; g < g1; ++g) {
        int status = SFX(gemm_rm)(blas, 0, 1, B, H, H, 1, dz + g * H, 3 * H, recurrent + g * H,
                                  3 * H, 0, scratch, H);
        if (status) return status;
        const REAL *FRNN_RESTRICT m = rec_mask + g * B * H;
        for (ptrdiff_t k = 0; k < B * H; ++k) dh[k] += m[k] * scratch[k];
    }
    return FRNN_OK;
}

/* Steps of input projection computed at once during inference (bounded scratch). */
#define FRNN_GRU_INFER_CHUNK_ELEMS ((ptrdiff_t)1 << 22)

/* The gates of one row's units in a reset_after=1 step with sigmoid and tanh: z, r and hh
 * into gz, gr and gh; rh + brh into hrb (training).  Called with brh and hrb either NULL
 * literally or known non-NULL, so that after inlining no test stays in the loop: with
 * a test GCC loaded brh and stored hrb with masked moves even when NULL, and on an AMD
 * Zen 3 the masked-out NULL addresses made GRU inference without bias 1.32-1.41x slower
 * than with it (B=32-128, H=128-256; now 0.96-1.02). */
FRNN_INLINE void SFX(gru_gates_after)(ptrdiff_t n, REAL *FRNN_RESTRICT gz,
                                      REAL *FRNN_RESTRICT gr, REAL *FRNN_RESTRICT gh,
                                      const REAL *FRNN_RESTRICT rz, const REAL *FRNN_RESTRICT rr,
                                      const REAL *FRNN_RESTRICT rh,
                                      const REAL *FRNN_RESTRICT brh, REAL *FRNN_RESTRICT hrb) {
    for (ptrdiff_t j = 0; j < n; ++j) {
        const REAL zj = SIGMOID1(gz[j] + rz[j]), rj = SIGMOID1(gr[j] + rr[j]);
        const REAL rhj = rh[j] + (brh ? brh[j] : (REAL)0);
        if (hrb) hrb[j] = rhj;
        gz[j] = zj;
        gr[j] = rj;
        gh[j] = TANH1(gh[j] + rj * rhj);
    }
}

/* gh += r * (rh + brh), and rh + brh into hrb (training), for any activations; NULL
 * literally or known non-NULL as in gru_gates_after. */
FRNN_INLINE void SFX(gru_reset_product)(ptrdiff_t n, REAL *FRNN_RESTRICT gh,
                                        const REAL *FRNN_RESTRICT gr,
                                        const REAL *FRNN_RESTRICT rh,
                                        const REAL *FRNN_RESTRICT brh, REAL *FRNN_RESTRICT hrb) {
    for (ptrdiff_t j = 0; j < n; ++j) {
        const REAL rhj = rh[j] + (brh ? brh[j] : (REAL)0);
        if (hrb) hrb[j] = rhj;
        gh[j] += gr[j] * rhj;
    }
}

/* Pointwise pass of one reset_after=1 step over the batch, for units [j0, j1).
 *   z      (B,3H): x W + b_in (+ b_rec for z, r); activated in place into z, r, hh.
 *   rec    (B,3H): hp U for this step (without bias), read only.
 *   b_rec_h (H,) or NULL: recurrent bias of the h block.
 *   h_prev, h_next (B,H): state before and after this step; may be the same array (the
 *     serial path updates in place; the split path double-buffers, since another thread
 *     still reads h_prev for its own units' product).   mask_t (B,) or NULL.
 *   out:   row b at out + b*out_stride_b, or NULL.
 *   hr_save, h_save (B,H) or NULL: Rh and the state after this step, for backward. */
FRNN_CLONES static void SFX(gru_step_after_pointwise)(
    const frnn_dims *d, REAL *FRNN_RESTRICT z, const REAL *FRNN_RESTRICT rec,
    const REAL *FRNN_RESTRICT b_rec_h, const REAL *h_prev, REAL *h_next, const uint8_t *mask_t,
    REAL *out, ptrdiff_t out_stride_b, REAL *hr_save, REAL *h_save, ptrdiff_t j0, ptrdiff_t j1) {
    const ptrdiff_t B = d->batch, H = d->units, n = j1 - j0;
    const size_t bytes = (size_t)n * sizeof(REAL);
    const int sigmoid_tanh =
        d->recurrent_activation == FRNN_ACT_SIGMOID && d->activation == FRNN_ACT_TANH;
    for (ptrdiff_t b = 0; b < B; ++b) {
        const REAL *hp = h_prev + b * H + j0;
        REAL *hn = h_next + b * H + j0;
        REAL *FRNN_RESTRICT ob = out ? out + b * out_stride_b + j0 : NULL;
        REAL *FRNN_RESTRICT hrb = hr_save ? hr_save + b * H + j0 : NULL;
        if (mask_t && !mask_t[b]) { /* masked: carry the state */
            if (hn != hp) memcpy(hn, hp, bytes);
            if (ob) {
                if (d->zero_output_for_mask) memset(ob, 0, bytes);
                else memcpy(ob, hn, bytes);
            }
            /* backward multiplies cached rows of masked steps by zero: keep them finite */
            if (hrb) memset(hrb, 0, bytes);
        } else {
            REAL *FRNN_RESTRICT gz = z + b * 3 * H + j0, *FRNN_RESTRICT gr = gz + H;
            REAL *FRNN_RESTRICT gh = gz + 2 * H;
            const REAL *FRNN_RESTRICT rz = rec + b * 3 * H + j0, *FRNN_RESTRICT rr = rz + H;
            const REAL *FRNN_RESTRICT rh = rz + 2 * H;
            const REAL *FRNN_RESTRICT brh = b_rec_h ? b_rec_h + j0 : NULL;
            if (sigmoid_tanh) { /* the usual activations: one pass over the gates */
                if (brh && hrb) SFX(gru_gates_after)(n, gz, gr, gh, rz, rr, rh, brh, hrb);
                else if (brh) SFX(gru_gates_after)(n, gz, gr, gh, rz, rr, rh, brh, NULL);
                else if (hrb) SFX(gru_gates_after)(n, gz, gr, gh, rz, rr, rh, NULL, hrb);
                else SFX(gru_gates_after)(n, gz, gr, gh, rz, rr, rh, NULL, NULL);
                /* apart: hp and hn may be one array (in place), which kept GCC from
                 * vectorising the fused loop (measured scalar, 20% slower at B=128, H=512).
                 * Inference without the gate stores measured slower on the Zen 3: one
                 * fused pass 0.84-1.00, the gates into 256-unit L1 scratch 0.85-1.01. */
                for (ptrdiff_t j = 0; j < n; ++j)
                    hn[j] = gz[j] * hp[j] + ((REAL)1 - gz[j]) * gh[j];
            } else { /* any activations: one pass per activation */
                for (ptrdiff_t j = 0; j < n; ++j) {
                    gz[j] += rz[j];
                    gr[j] += rr[j];
                }
                ACTIVATE(d->recurrent_activation, gz, n);
                ACTIVATE(d->recurrent_activation, gr, n);
                if (brh && hrb) SFX(gru_reset_product)(n, gh, gr, rh, brh, hrb);
                else if (brh) SFX(gru_reset_product)(n, gh, gr, rh, brh, NULL);
                else if (hrb) SFX(gru_reset_product)(n, gh, gr, rh, NULL, hrb);
                else SFX(gru_reset_product)(n, gh, gr, rh, NULL, NULL);
                ACTIVATE(d->activation, gh, n); /* hh */
                for (ptrdiff_t j = 0; j < n; ++j)
                    hn[j] = gz[j] * hp[j] + ((REAL)1 - gz[j]) * gh[j];
            }
            if (ob) memcpy(ob, hn, bytes);
        }
        if (h_save) memcpy(h_save + b * H + j0, hn, bytes);
    }
}

/* First pointwise pass of a reset_after=0 step, for units [j0, j1) of every batch row:
 * activate z and r (z already holds x W + b + hp [Uz Ur] in its first 2H columns) and write
 * q = r*hp, or r*hp*m_h with recurrent dropout (m_h (B,H) or NULL); q is zero on masked
 * rows. */
FRNN_CLONES static void SFX(gru_step_before_gates)(const frnn_dims *d, REAL *FRNN_RESTRICT z,
                                                   const REAL *FRNN_RESTRICT h,
                                                   const REAL *FRNN_RESTRICT m_h,
                                                   const uint8_t *mask_t, REAL *FRNN_RESTRICT q,
                                                   ptrdiff_t j0, ptrdiff_t j1) {
    const ptrdiff_t B = d->batch, H = d->units, n = j1 - j0;
    for (ptrdiff_t b = 0; b < B; ++b) {
        REAL *FRNN_RESTRICT qb = q + b * H + j0;
        if (mask_t && !mask_t[b]) {
            memset(qb, 0, (size_t)n * sizeof(REAL));
            continue;
        }
        REAL *FRNN_RESTRICT gz = z + b * 3 * H + j0, *FRNN_RESTRICT gr = gz + H;
        const REAL *FRNN_RESTRICT hb = h + b * H + j0;
        ACTIVATE(d->recurrent_activation, gz, n);
        ACTIVATE(d->recurrent_activation, gr, n);
        if (m_h) {
            const REAL *FRNN_RESTRICT mb = m_h + b * H + j0;
            for (ptrdiff_t j = 0; j < n; ++j) qb[j] = gr[j] * hb[j] * mb[j];
        } else {
            for (ptrdiff_t j = 0; j < n; ++j) qb[j] = gr[j] * hb[j];
        }
    }
}

/* Second pointwise pass of a reset_after=0 step, for units [j0, j1) of every batch row:
 * z's h block holds xh + q Uh; activate it and update the state in place (masked rows
 * carry it). */
FRNN_CLONES static void SFX(gru_step_before_update)(const frnn_dims *d, REAL *FRNN_RESTRICT z,
                                                    REAL *FRNN_RESTRICT h, const uint8_t *mask_t,
                                                    REAL *out, ptrdiff_t out_stride_b,
                                                    REAL *h_save, ptrdiff_t j0, ptrdiff_t j1) {
    const ptrdiff_t B = d->batch, H = d->units, n = j1 - j0;
    const size_t bytes = (size_t)n * sizeof(REAL);
    for (ptrdiff_t b = 0; b < B; ++b) {
        REAL *FRNN_RESTRICT hb = h + b * H + j0;
        REAL *FRNN_RESTRICT ob = out ? out + b * out_stride_b + j0 : NULL;
        if (mask_t && !mask_t[b]) {
            if (ob) {
                if (d->zero_output_for_mask) memset(ob, 0, bytes);
                else memcpy(ob, hb, bytes);
            }
        } else {
            const REAL *FRNN_RESTRICT gz = z + b * 3 * H + j0;
            REAL *FRNN_RESTRICT gh = z + b * 3 * H + 2 * H + j0;
            ACTIVATE(d->activation, gh, n);
            for (ptrdiff_t j = 0; j < n; ++j) hb[j] = gz[j] * hb[j] + ((REAL)1 - gz[j]) * gh[j];
            if (ob) memcpy(ob, hb, bytes);
        }
        if (h_save) memcpy(h_save + b * H + j0, hb, bytes);
    }
}

/* One reset_after=1 step (T = 1) straight from the weights in either layout
 * (direct_step.h): z = x W + b_in (+ b_rec for z, r), R = h0 U, then the pointwise pass.
 * bias: (2, 3H) [b_in; b_rec] in the weights' gate order, or NULL.  h_n holds h0 on
 * entry.  Training (x_cache non-NULL) writes forward's cache as the loops do: x with
 * masked rows zeroed, the activated gates (z itself), Rh, the state and the mask. */
static int SFX(gru_direct_step)(const frnn_dims *d, const REAL *x, frnn_seq_strides xs,
                                const REAL *kernel, const REAL *recurrent, const REAL *bias,
                                const uint8_t *mask, frnn_seq_strides ms, const REAL *h0,
                                REAL *outputs, frnn_seq_strides os, REAL *h_n, REAL *x_cache,
                                REAL *gates, REAL *hr_cache, REAL *h_states,
                                uint8_t *mask_cache) {
    const ptrdiff_t B = d->batch, I = d->input_size, H = d->units, G3 = 3 * H;
    const int training = x_cache != NULL;
    int status;
    uint8_t *mask_t = SFX(first_step_mask)(B, mask, ms, mask_cache, &status);
    REAL *z = training ? gates : frnn_alloc((size_t)(B * G3), sizeof(REAL));
    REAL *rec = frnn_alloc((size_t)(B * G3), sizeof(REAL));
    if (status || !z || !rec) {
        status = FRNN_ENOMEM;
        goto done;
    }
    ptrdiff_t ldx;
    const REAL *x_rows = SFX(direct_step_input)(d, x, xs, mask_t, x_cache, &ldx);
    const int *gate_rows = d->weight_rows ? SFX(gru_gate_rows) : SFX(same_gate_rows);
    SFX(direct_step_products)(B, I, H, 3, d->weight_rows, gate_rows, x_rows, ldx, kernel, h0,
                              recurrent, z, rec);
    if (bias)
        for (ptrdiff_t g = 0; g < 3; ++g) {
            const REAL *b_in = bias + gate_rows[g] * H, *b_rec = b_in + G3;
            for (ptrdiff_t b = 0; b < B; ++b)
                for (ptrdiff_t j = 0; j < H; ++j)
                    z[b * G3 + g * H + j] += b_in[j] + (g < 2 ? b_rec[j] : (REAL)0);
        }
    SFX(gru_step_after_pointwise)(d, z, rec, bias ? bias + G3 + 2 * H : NULL, h_n, h_n, mask_t,
                                  outputs, os.stride_b, hr_cache, h_states, 0, H);
done:
    if (mask_t != mask_cache) frnn_free(mask_t);
    if (!training) frnn_free(z);
    frnn_free(rec);
    return status;
}

/* The input projection z = x W + bias (input_projection), with W as Keras' kernel
 * (I, 3H) when gate_rows is NULL, or as torch's weight_ih (3H, I), whose row block
 * gate_rows[g] is Keras' gate g: then one GEMM per gate block, each writing its columns
 * of z (row stride 3H). */
static int SFX(gru_input_projection)(const frnn_blas *blas, ptrdiff_t rows, ptrdiff_t I,
                                     ptrdiff_t H, const REAL *x, const REAL *kernel,
                                     const int *gate_rows, const REAL *bias, REAL *z) {
    if (!gate_rows) return SFX(input_projection)(blas, rows, I, 3 * H, x, kernel, 0, bias, z);
    for (int g = 0; g < 3; ++g) {
        const int status = SFX(gemm_rm_init)(blas, 0, 1, rows, H, I, 1, x, I,
                                             kernel + gate_rows[g] * H * I, I, 0, z + g * H,
                                             3 * H, bias ? bias + g * H : NULL);
        if (status) return status;
    }
    return FRNN_OK;
}

/* The operands of gru_step_input_projection (inference with frnn_gru_projects_in_loop):
 * gate block g of W (Keras' columns g*H.. of (I, 3H), or torch's row block gate_rows[g])
 * packed in blocks of VW units at packed_kernel + g * nbg * I * VW (3 * nbg * I * VW
 * elements), and its start, the input bias of the block zero-padded (zeros without
 * in_bias), at kernel_start + g * nbg * VW (3 * nbg * VW elements); nbg = unit_blocks(H). */
static void SFX(gru_pack_step_input_kernel)(const frnn_dims *d, const REAL *kernel,
                                            const int *gate_rows, const REAL *in_bias,
                                            REAL *packed_kernel, REAL *kernel_start) {
    const ptrdiff_t I = d->input_size, H = d->units, nbg = SFX(unit_blocks)(H);
    memset(kernel_start, 0, (size_t)(3 * nbg * VW) * sizeof(REAL));
    for (int g = 0; g < 3; ++g) {
        REAL *packed_g = packed_kernel + g * nbg * I * VW;
        if (gate_rows)
            SFX(pack_recurrent_blocks)(kernel + gate_rows[g] * H * I, I, I, H, 1,
                                       SFX(same_gate_rows), VW, packed_g, I, 0, 0, nbg);
        else
            SFX(pack_recurrent_blocks)(kernel + g * H, 3 * H, I, H, 1, NULL, VW, packed_g, I,
                                       0, 0, nbg);
        if (in_bias)
            memcpy(kernel_start + g * nbg * VW, in_bias + g * H, (size_t)H * sizeof(REAL));
    }
}

/* z (rows, 3H; row stride 3H) = x_t W + b for rows [b0, b0 + rows) of processing step t,
 * read where the caller keeps them (x with strides xs; masked rows too, whose z the
 * pointwise pass never reads): gate block by gate block on the operands of
 * gru_pack_step_input_kernel. */
static void SFX(gru_step_input_projection)(const frnn_dims *d, const REAL *x,
                                           frnn_seq_strides xs, ptrdiff_t t, ptrdiff_t b0,
                                           ptrdiff_t rows, const REAL *packed_kernel,
                                           const REAL *kernel_start, REAL *z) {
    const ptrdiff_t I = d->input_size, H = d->units, nbg = SFX(unit_blocks)(H);
    const REAL *x_rows = x + b0 * xs.stride_b + frnn_input_step(d, t) * xs.stride_t;
    for (int g = 0; g < 3; ++g)
        SFX(input_matmul_t)(packed_kernel + g * nbg * I * VW, I, x_rows, xs.stride_b, H, rows,
                            kernel_start + g * nbg * VW, z + g * H, 3 * H, 0, nbg);
}

int SFX(frnn_gru_forward)(const frnn_blas *blas, const frnn_dims *d, int reset_after,
                          const REAL *x, frnn_seq_strides xs,
                          const REAL *kernel, const REAL *recurrent, const REAL *bias,
                          const uint8_t *mask, frnn_seq_strides ms,
                          const REAL *h0,
                          REAL *outputs, frnn_seq_strides os,
                          REAL *h_n, const REAL *rec_mask,
                          REAL *x_cache, REAL *gates, REAL *hr_cache, REAL *h_states,
                          uint8_t *mask_cache) {
    int status = frnn_check_dims(d, 3);
    if (status) return status;
    const ptrdiff_t B = d->batch, T = d->steps, I = d->input_size, H = d->units, G3 = 3 * H;
    const int training = gates != NULL;
    if (training && (!x_cache || !hr_cache || !h_states || (mask && !mask_cache)))
        return FRNN_EINVAL;

    if (h0) memcpy(h_n, h0, (size_t)(B * H) * sizeof(REAL));
    else memset(h_n, 0, (size_t)(B * H) * sizeof(REAL));
    if (T == 0 || B == 0) return FRNN_OK;
    if (T == 1 && !rec_mask && reset_after && frnn_direct_step(B, d->weight_rows))
        return SFX(gru_direct_step)(d, x, xs, kernel, recurrent, bias, mask, ms, h0, outputs, os,
                                    h_n, x_cache, gates, hr_cache, h_states, mask_cache);
    /* Torch's layout: the tiles' packings and the input projection read the rows (gate
     * block by gate block, torch's r, z, n into Keras' z, r, h), the bias is reordered
     * into a copy.  The BLAS products per step (no AVX2, many rows) run on a Keras-layout
     * copy of the weights instead. */
    const int tiles_ok = !frnn_use_blas_steps(B, B * H * G3);
    if (d->weight_rows && !tiles_ok) {
        frnn_dims keras = *d;
        keras.weight_rows = 0;
        const ptrdiff_t bias_rows = reset_after ? 2 : 1;
        REAL *kernel_k = NULL, *recurrent_k = NULL;
        REAL *bias_k = bias ? frnn_alloc((size_t)(bias_rows * G3), sizeof(REAL)) : NULL;
        status = SFX(keras_weights_from_rows)(I, H, 3, SFX(gru_gate_rows), kernel, recurrent,
                                              &kernel_k, &recurrent_k);
        if (!status && bias && !bias_k) status = FRNN_ENOMEM;
        if (!status) {
            if (bias) SFX(reorder_gate_blocks)(bias_rows, H, 3, SFX(gru_gate_rows), 0, bias, bias_k);
            status = SFX(frnn_gru_forward)(blas, &keras, reset_after, x, xs, kernel_k,
                                           recurrent_k, bias_k, mask, ms, h0, outputs, os, h_n,
                                           rec_mask, x_cache, gates, hr_cache, h_states,
                                           mask_cache);
        }
        frnn_free(kernel_k);
        frnn_free(recurrent_k);
        frnn_free(bias_k);
        return status;
    }

    const int *gate_rows = d->weight_rows ? SFX(gru_gate_rows) : NULL;
    REAL *bias_k = NULL; /* the bias in Keras' gate order, from torch's */
    if (gate_rows && bias) {
        const ptrdiff_t bias_rows = reset_after ? 2 : 1;
        bias_k = frnn_alloc((size_t)(bias_rows * G3), sizeof(REAL));
        if (!bias_k) return FRNN_ENOMEM;
        SFX(reorder_gate_blocks)(bias_rows, H, 3, gate_rows, 0, bias, bias_k);
        bias = bias_k;
    }
    /* reset_after=1: the recurrent biases of z and r are folded into the input projection's
     * bias once; only b_rec_h (multiplied by r) stays in the step. */
    REAL *in_bias = NULL;
    const REAL *b_rec_h = NULL;
    uint8_t *mask_tm = NULL;
    REAL *rec = frnn_alloc((size_t)(B * (reset_after ? G3 : H)), sizeof(REAL)); /* hp U, or q */
    /* h*m_g for the gate blocks (the gate-by-gate loop keeps all three at once) */
    REAL *h_dropped = rec_mask ? frnn_alloc((size_t)(3 * B * H), sizeof(REAL)) : NULL;
    if (mask) mask_tm = training ? mask_cache : frnn_alloc((size_t)(T * B), 1);
    if (bias && reset_after) in_bias = frnn_alloc((size_t)G3, sizeof(REAL));
    /* The per-step products run on U packed once: reset_after without dropout, the three
     * gates in one tile pass (use_tiles); otherwise gate block by gate block (gate_tiles),
     * since reset_after=0 multiplies Uh by r*hp and recurrent dropout gives each block its
     * own input h*m_g.  Both split by rows or by units (gate_tiles then meet after h*m_g,
     * after q and after h).  BLAS per step only without AVX2 and with many rows.  The
     * tiles' unit blocks are fwd_width wide (VW for the 512-bit tiles, else VWF). */
    const ptrdiff_t fwd_width = SFX(g3_width)();
    const ptrdiff_t nb = (H + fwd_width - 1) / fwd_width, nbg = SFX(unit_blocks)(H);
    const int use_tiles = tiles_ok && reset_after && !rec_mask;
    const int gate_tiles = tiles_ok && !use_tiles;
    /* the gate-by-gate loop meets 2-3 times per step */
    const frnn_split split = frnn_pick_split(
        B, use_tiles ? nb : nbg, B * H * G3, frnn_row_split_min_rows(H, 3, sizeof(REAL)),
        gate_tiles ? FRNN_GATE_SPLIT_MIN_MACS : FRNN_PARALLEL_MIN_MACS);
    const int nt = tiles_ok ? split.threads : 1;
    int loop_threads = nt; /* 1 once a team has stopped (frnn_step_barrier) */
    const int zigzag =
        frnn_zigzag_blocks(3.0 * H * H * sizeof(REAL), split);
    /* inference: each step's x_t W + b in the loop, into one step's buffer, or a GEMM per
     * chunk of steps (training keeps them all for backward) */
    const ptrdiff_t rows_per_thread = split.by_rows ? (B + nt - 1) / nt : B;
    const int project_in_loop = !training && use_tiles && (nt == 1 || split.by_rows)
                                && frnn_gru_projects_in_loop(rows_per_thread, I, H, sizeof(REAL));
    ptrdiff_t chunk = T;
    if (!training && !project_in_loop) {
        ptrdiff_t per_step = B * (G3 + I);
        chunk = FRNN_GRU_INFER_CHUNK_ELEMS / (per_step > 0 ? per_step : 1);
        if (chunk < 1) chunk = 1;
        if (chunk > T) chunk = T;
    }
    /* in the loop: W and the bias packed by gru_pack_step_input_kernel */
    REAL *packed_kernel =
        project_in_loop ? frnn_alloc((size_t)(3 * nbg * I * VW), sizeof(REAL)) : NULL;
    REAL *kernel_start =
        project_in_loop ? frnn_alloc((size_t)(3 * nbg * VW), sizeof(REAL)) : NULL;
    const ptrdiff_t buffered_steps = project_in_loop ? 1 : chunk;
    REAL *z_buf =
        training ? gates : frnn_alloc((size_t)(buffered_steps * B * G3), sizeof(REAL));
    REAL *x_buf = training    ? x_cache
                  : project_in_loop ? NULL /* read where the caller keeps it */
                                    : frnn_alloc((size_t)(chunk * B * I), sizeof(REAL));
    REAL *packed = use_tiles ? frnn_alloc((size_t)(nb * H * 3 * fwd_width), sizeof(REAL)) : NULL;
    /* the tiles' start (zeros): they store h U into rec instead of adding it */
    REAL *tile_zeros = use_tiles ? frnn_alloc((size_t)(nb * 3 * fwd_width), sizeof(REAL)) : NULL;
    /* gate block g's columns in blocks of VW units, at packed_gates + g * gate_stride */
    const ptrdiff_t gate_stride = nbg * H * VW;
    REAL *packed_gates = gate_tiles ? frnn_alloc((size_t)(3 * gate_stride), sizeof(REAL)) : NULL;
    /* the fused split loop double-buffers h: h_{t-1} stays readable while h_t is written */
    const int double_buffer = use_tiles && nt > 1;
    REAL *h_alt = double_buffer ? frnn_alloc((size_t)(B * H), sizeof(REAL)) : NULL;
    if (!rec || !z_buf || (!x_buf && !project_in_loop) || (mask && !mask_tm)
        || (bias && reset_after && !in_bias) || (rec_mask && !h_dropped)
        || (use_tiles && (!packed || !tile_zeros)) || (gate_tiles && !packed_gates)
        || (double_buffer && !h_alt)
        || (project_in_loop && (!packed_kernel || !kernel_start))) {
        status = FRNN_ENOMEM;
        goto done;
    }
    if (tile_zeros) memset(tile_zeros, 0, (size_t)(nb * 3 * fwd_width) * sizeof(REAL));
    if (packed)
        SFX(pack_recurrent)(recurrent, gate_rows ? H : G3, H, 3, gate_rows, fwd_width, packed,
                            nt);
    for (int g = 0; gate_tiles && g < 3; ++g) { /* gate g alone: one block of rows */
        if (gate_rows)
            SFX(pack_recurrent)(recurrent + gate_rows[g] * H * H, H, H, 1, SFX(same_gate_rows),
                                VW, packed_gates + g * gate_stride, nt);
        else
            SFX(pack_recurrent)(recurrent + g * H, G3, H, 1, NULL, VW,
                                packed_gates + g * gate_stride, nt);
    }
    if (in_bias) {
        for (ptrdiff_t j = 0; j < G3; ++j) in_bias[j] = bias[j] + (j < 2 * H ? bias[G3 + j] : (REAL)0);
        b_rec_h = bias + G3 + 2 * H;
    }
    if (project_in_loop)
        SFX(gru_pack_step_input_kernel)(d, kernel, gate_rows, in_bias, packed_kernel,
                                        kernel_start);
    if (mask) {
        for (ptrdiff_t t = 0; t < T; ++t) {
            ptrdiff_t s = frnn_input_step(d, t);
            for (ptrdiff_t b = 0; b < B; ++b)
                mask_tm[t * B + b] = mask[b * ms.stride_b + s * ms.stride_t] != 0;
        }
    }

    for (ptrdiff_t t0 = 0; t0 < T; t0 += chunk) {
        ptrdiff_t t1 = t0 + chunk < T ? t0 + chunk : T;
        REAL *x_chunk = training ? x_buf + t0 * B * I : x_buf;
        REAL *z_chunk = training ? z_buf + t0 * B * G3 : z_buf;
        if (!project_in_loop) {
            SFX(gather_steps)(d, x, xs, t0, t1, x_chunk);
            SFX(zero_masked_rows)(d, mask ? mask_tm : NULL, t0, t1, x_chunk);
            status = SFX(gru_input_projection)(blas, (t1 - t0) * B, I, H, x_chunk, kernel,
                                               gate_rows, reset_after ? in_bias : bias, z_chunk);
            if (status) goto done;
        }
        if (gate_tiles) { /* gate block by gate block; h updated in place */
            /* split by units, a team that other programs keep waiting stops
             * (csrc/internal.h's frnn_step_barrier) and the rest of the steps run on one
             * thread */
            for (ptrdiff_t t_from = t0; t_from < t1; loop_threads = 1) {
                frnn_step_barrier step_barrier;
                frnn_step_barrier_init(&step_barrier);
#pragma omp parallel num_threads(loop_threads) if (loop_threads > 1)
                {
                    frnn_barrier_side side = frnn_barrier_side_init();
                    /* split by rows: the whole loop for the thread's rows, no barrier; by units:
                     * its units of every row, meeting where a product needs every unit */
                    const frnn_part p = frnn_thread_part(d, split, nbg, VW);
                    const ptrdiff_t b0 = p.b0, R = p.b1 - p.b0, j0 = p.j0, j1 = p.j1;
                    const ptrdiff_t n = j1 - j0;
                    const int meet = frnn_team_size() > 1 && !split.by_rows;
                    REAL *h_rows = h_n + b0 * H;
                    for (ptrdiff_t t = t_from; t < t1; ++t) {
                        REAL *z_t = z_chunk + ((t - t0) * B + b0) * G3;
                        const uint8_t *mask_t = mask ? mask_tm + t * B + b0 : NULL;
                        REAL *out_t = outputs ? outputs + t * os.stride_t + b0 * os.stride_b : NULL;
                        REAL *h_save = training ? h_states + (t * B + b0) * H : NULL;
                        /* block g's recurrent part out[:, g] (+)= (h*m_g) U_g, row stride 3H */
                        REAL *out = reset_after ? rec + b0 * G3 : z_t;
                        const int blocks = reset_after ? 3 : 2;
                        if (rec_mask) { /* h*m_g, the input of block g's product, for my units */
                            for (int g = 0; g < blocks; ++g)
                                for (ptrdiff_t b = 0; b < R; ++b)
                                    SFX(gru_drop)(n, h_rows + b * H + j0,
                                                  rec_mask + (g * B + b0 + b) * H + j0,
                                                  h_dropped + (g * B + b0 + b) * H + j0);
                            if (meet) frnn_step_barrier_wait(&step_barrier, frnn_team_size(), &side);
                        }
                        for (int g = 0; g < blocks; ++g) {
                            const REAL *h_in = rec_mask ? h_dropped + (g * B + b0) * H : h_rows;
                            if (reset_after) /* rec holds the product alone: r scales Rh */
                                for (ptrdiff_t b = 0; b < R; ++b)
                                    memset(out + b * G3 + g * H + j0, 0, (size_t)n * sizeof(REAL));
                            FRNN_BLOCKS_ZIGZAG(zigzag & t, p.jb0, p.jb1,
                                SFX(recurrent_matmul_t)(packed_gates + g * gate_stride, H, H, R,
                                    h_in, H, NULL, out + g * H, G3, zb0, zb1));
                        }
                        if (reset_after) {
                            /* in place: the products above read h*m_g, not h */
                            SFX(gru_step_after_pointwise)(
                                &p.rows, z_t, out, b_rec_h, h_rows, h_rows, mask_t, out_t, os.stride_b,
                                training ? hr_cache + (t * B + b0) * H : NULL, h_save, j0, j1);
                        } else { /* the h block: xh + q Uh with q = r*hp(*m_h) */
                            REAL *q = (training ? hr_cache + t * B * H : rec) + b0 * H;
                            SFX(gru_step_before_gates)(&p.rows, z_t, h_rows,
                                                       rec_mask ? rec_mask + (2 * B + b0) * H : NULL,
                                                       mask_t, q, j0, j1);
                            if (meet) /* q Uh needs every unit of q */
                                frnn_step_barrier_wait(&step_barrier, frnn_team_size(), &side);
                            FRNN_BLOCKS_ZIGZAG(zigzag & t, p.jb0, p.jb1,
                                SFX(recurrent_matmul_t)(packed_gates + 2 * gate_stride, H, H, R,
                                    q, H, NULL, z_t + 2 * H, G3, zb0, zb1));
                            /* in place: past the barrier nobody reads h this step */
                            SFX(gru_step_before_update)(&p.rows, z_t, h_rows, mask_t, out_t,
                                                        os.stride_b, h_save, j0, j1);
                        }
                        /* h_t (and the h*m_g, q read above) complete for the next step */
                        if (meet
                            && frnn_step_barrier_stops(&step_barrier, frnn_team_size(), &side, t + 1))
                            break;
                    }
                }
                t_from = frnn_step_barrier_resume(&step_barrier, t1);
            }
            continue;
        }
        if (nt > 1) { /* each thread owns a range of unit blocks; one barrier per step */
            REAL *h_buf[2] = {h_n, h_alt};
            /* split by units, a team that other programs keep waiting stops
             * (csrc/internal.h's frnn_step_barrier) and the rest of the steps run on one
             * thread (here, not in the loop below: h_t alternates between h_n and h_alt) */
            for (ptrdiff_t t_from = t0; t_from < t1; loop_threads = 1) {
                frnn_step_barrier step_barrier;
                frnn_step_barrier_init(&step_barrier);
#pragma omp parallel num_threads(loop_threads)
                {
                    frnn_barrier_side side = frnn_barrier_side_init();
                    const frnn_part p = frnn_thread_part(d, split, nb, fwd_width);
                    const ptrdiff_t b0 = p.b0, j0 = p.j0, j1 = p.j1;
                    for (ptrdiff_t t = t_from; t < t1; ++t) {
                        REAL *z_t = project_in_loop ? z_chunk + b0 * G3
                                                    : z_chunk + ((t - t0) * B + b0) * G3;
                        if (project_in_loop) /* split by rows: this thread's rows */
                            SFX(gru_step_input_projection)(d, x, xs, t, b0, p.rows.batch,
                                                           packed_kernel, kernel_start, z_t);
                        FRNN_BLOCKS_ZIGZAG(zigzag & t, p.jb0, p.jb1,
                            SFX(recurrent_matmul_g3)(packed, fwd_width, H, p.rows.batch,
                                h_buf[t & 1] + b0 * H, tile_zeros, rec + b0 * G3, G3, zb0, zb1));
                        SFX(gru_step_after_pointwise)(
                            &p.rows, z_t, rec + b0 * G3, b_rec_h,
                            h_buf[t & 1] + b0 * H, h_buf[(t + 1) & 1] + b0 * H,
                            mask ? mask_tm + t * B + b0 : NULL,
                            outputs ? outputs + t * os.stride_t + b0 * os.stride_b : NULL,
                            os.stride_b, training ? hr_cache + (t * B + b0) * H : NULL,
                            training ? h_states + (t * B + b0) * H : NULL, j0, j1);
                        /* split by units: h_t needs every thread's units before the next step */
                        if (!split.by_rows && frnn_team_size() > 1
                            && frnn_step_barrier_stops(&step_barrier, frnn_team_size(), &side, t + 1))
                            break;
                    }
                }
                t_from = frnn_step_barrier_resume(&step_barrier, t1);
            }
            continue;
        }
        for (ptrdiff_t t = t0; t < t1; ++t) {
            REAL *z_t = project_in_loop ? z_chunk : z_chunk + (t - t0) * B * G3;
            if (project_in_loop)
                SFX(gru_step_input_projection)(d, x, xs, t, 0, B, packed_kernel, kernel_start,
                                               z_t);
            const uint8_t *mask_t = mask ? mask_tm + t * B : NULL;
            REAL *out_t = outputs ? outputs + t * os.stride_t : NULL;
            REAL *h_save = training ? h_states + t * B * H : NULL;
            if (reset_after) {
                /* all three gates' recurrent parts in one GEMM, kept apart from z because
                 * r multiplies only the recurrent part of the h block */
                if (rec_mask)
                    status = SFX(gru_masked_recurrent_gemm)(blas, B, H, 0, 3, h_n, rec_mask,
                                                            recurrent, 0, rec, h_dropped);
                else if (packed)
                    SFX(recurrent_matmul_g3)(packed, fwd_width, H, B, h_n, tile_zeros, rec, G3, 0,
                                             nb);
                else
                    status = SFX(gemm_rm)(blas, 0, 0, B, G3, H, 1, h_n, H, recurrent, G3, 0, rec, G3);
                if (status) goto done;
                SFX(gru_step_after_pointwise)(d, z_t, rec, b_rec_h, h_n, h_n, mask_t, out_t,
                                              os.stride_b, training ? hr_cache + t * B * H : NULL,
                                              h_save, 0, H);
            } else {
                /* z, r first; the h block needs r*hp, hence a second (B x H x H) GEMM */
                REAL *q = training ? hr_cache + t * B * H : rec;
                if (rec_mask)
                    status = SFX(gru_masked_recurrent_gemm)(blas, B, H, 0, 2, h_n, rec_mask,
                                                            recurrent, 1, z_t, h_dropped);
                else
                    status = SFX(gemm_rm)(blas, 0, 0, B, 2 * H, H, 1, h_n, H, recurrent, G3, 1,
                                          z_t, G3);
                if (status) goto done;
                SFX(gru_step_before_gates)(d, z_t, h_n, rec_mask ? rec_mask + 2 * B * H : NULL,
                                           mask_t, q, 0, H);
                status = SFX(gemm_rm)(blas, 0, 0, B, H, H, 1, q, H, recurrent + 2 * H, G3, 1,
                                      z_t + 2 * H, G3);
                if (status) goto done;
                SFX(gru_step_before_update)(d, z_t, h_n, mask_t, out_t, os.stride_b, h_save, 0, H);
            }
        }
    }
    if (double_buffer && (T & 1)) memcpy(h_n, h_alt, (size_t)(B * H) * sizeof(REAL)); /* h_T */
done:
    frnn_free(rec);
    frnn_free(packed_kernel);
    frnn_free(kernel_start);
    frnn_free(packed);
    frnn_free(tile_zeros);
    frnn_free(packed_gates);
    frnn_free(h_alt);
    frnn_free(h_dropped);
    frnn_free(in_bias);
    frnn_free(bias_k);
    if (!training) {
        frnn_free(z_buf);
        frnn_free(x_buf);
        frnn_free(mask_tm);
    }
    return status;
}

/* Backward pointwise pass of one reset_after=1 step for the whole batch.
 *   gates_t (B,3H): z, r, hh.  hr_t (B,H): Rh.  h_prev (B,H) or NULL (zeros).
 *   dh (B,H): gradient w.r.t. the state after this step; on return the part of the
 *     gradient w.r.t. the state before it that does not flow through U (the recurrent
 *     GEMM adds dR U^T afterwards).  Masked rows pass dh through unchanged.
 *   dr (B,3H): written, gradient w.r.t. R = hp U + b_rec (zero on masked rows).
 *   dxh (B,H): written, gradient w.r.t. xh = (x W + b_in)_h (zero on masked rows).
 *   The gradient w.r.t. (x W + b_in)_{z,r} equals dr's z, r blocks. */
FRNN_CLONES static void SFX(gru_step_after_backward_pointwise)(
    const frnn_dims *d, const REAL *FRNN_RESTRICT gates_t, const REAL *FRNN_RESTRICT hr_t,
    const REAL *FRNN_RESTRICT h_prev, const uint8_t *mask_t, const REAL *dout,
    ptrdiff_t dout_stride_b, REAL *FRNN_RESTRICT dh, REAL *FRNN_RESTRICT dr,
    REAL *FRNN_RESTRICT dxh, ptrdiff_t j0, ptrdiff_t j1) {
    const ptrdiff_t B = d->batch, H = d->units, n = j1 - j0;
    const int sigmoid_tanh =
        d->recurrent_activation == FRNN_ACT_SIGMOID && d->activation == FRNN_ACT_TANH;
    for (ptrdiff_t b = 0; b < B; ++b) {
        REAL *FRNN_RESTRICT dhb = dh + b * H + j0;
        REAL *FRNN_RESTRICT drz = dr + b * 3 * H + j0, *FRNN_RESTRICT drr = drz + H;
        REAL *FRNN_RESTRICT drh = drz + 2 * H;
        REAL *FRNN_RESTRICT dxhb = dxh + b * H + j0;
        const int masked = mask_t && !mask_t[b];
        if (dout && !(masked && d->zero_output_for_mask)) {
            const REAL *db = dout + b * dout_stride_b + j0;
            for (ptrdiff_t j = 0; j < n; ++j) dhb[j] += db[j];
        }
        if (masked) {
            for (int g = 0; g < 3; ++g) memset(drz + g * H, 0, (size_t)n * sizeof(REAL));
            memset(dxhb, 0, (size_t)n * sizeof(REAL));
            continue;
        }
        const REAL *FRNN_RESTRICT gz = gates_t + b * 3 * H + j0;
        const REAL *FRNN_RESTRICT gr = gz + H, *FRNN_RESTRICT gh = gz + 2 * H;
        const REAL *FRNN_RESTRICT hpb = h_prev ? h_prev + b * H + j0 : NULL;
        const REAL *FRNN_RESTRICT rhb = hr_t + b * H + j0;
        if (sigmoid_tanh) { /* the usual activations: one pass, each value read once */
            for (ptrdiff_t j = 0; j < n; ++j) {
                const REAL hp = hpb ? hpb[j] : (REAL)0, z = gz[j], r = gr[j], hh = gh[j];
                const REAL dhh = (dhb[j] * ((REAL)1 - z)) * ((REAL)1 - hh * hh); /* d hh */
                drz[j] = (dhb[j] * (hp - hh)) * (z * ((REAL)1 - z));             /* d z */
                dhb[j] *= z; /* direct path h = z*hp + ... */
                dxhb[j] = dhh;
                drr[j] = (dhh * rhb[j]) * (r * ((REAL)1 - r)); /* d r */
                drh[j] = dhh * r;                              /* d Rh */
            }
            continue;
        }
        for (ptrdiff_t j = 0; j < n; ++j) {
            REAL hp = hpb ? hpb[j] : (REAL)0;
            dxhb[j] = dhb[j] * ((REAL)1 - gz[j]); /* d hh */
            drz[j] = dhb[j] * (hp - gh[j]);       /* d z */
            dhb[j] *= gz[j];                      /* direct path h = z*hp + ... */
        }
        ACTIVATION_GRAD(d->activation, gh, dxhb, n);
        ACTIVATION_GRAD(d->recurrent_activation, gz, drz, n);
        for (ptrdiff_t j = 0; j < n; ++j) {
            drr[j] = dxhb[j] * rhb[j]; /* d r */
            drh[j] = dxhb[j] * gr[j];  /* d Rh */
        }
        ACTIVATION_GRAD(d->recurrent_activation, gr, drr, n);
    }
}

/* First backward pass of a reset_after=0 step, for units [j0, j1) of every batch row:
 * dz's z and h blocks (gradients w.r.t. the pre-activations), and dh <- dh*z (direct
 * path).  dz's r block is filled by the second pass once dq = dz_h Uh^T is known.  Masked
 * rows: dz = 0, dh passes through. */
FRNN_CLONES static void SFX(gru_step_before_backward_zh)(
    const frnn_dims *d, const REAL *FRNN_RESTRICT gates_t, const REAL *FRNN_RESTRICT h_prev,
    const uint8_t *mask_t, const REAL *dout, ptrdiff_t dout_stride_b, REAL *FRNN_RESTRICT dh,
    REAL *FRNN_RESTRICT dz, ptrdiff_t j0, ptrdiff_t j1) {
    const ptrdiff_t B = d->batch, H = d->units, n = j1 - j0;
    const int sigmoid_tanh =
        d->recurrent_activation == FRNN_ACT_SIGMOID && d->activation == FRNN_ACT_TANH;
    for (ptrdiff_t b = 0; b < B; ++b) {
        REAL *FRNN_RESTRICT dhb = dh + b * H + j0;
        REAL *FRNN_RESTRICT dzz = dz + b * 3 * H + j0, *FRNN_RESTRICT dzh = dzz + 2 * H;
        const int masked = mask_t && !mask_t[b];
        if (dout && !(masked && d->zero_output_for_mask)) {
            const REAL *db = dout + b * dout_stride_b + j0;
            for (ptrdiff_t j = 0; j < n; ++j) dhb[j] += db[j];
        }
        if (masked) {
            for (int g = 0; g < 3; ++g) memset(dzz + g * H, 0, (size_t)n * sizeof(REAL));
            continue;
        }
        const REAL *FRNN_RESTRICT gz = gates_t + b * 3 * H + j0, *FRNN_RESTRICT gh = gz + 2 * H;
        const REAL *FRNN_RESTRICT hpb = h_prev ? h_prev + b * H + j0 : NULL;
        if (sigmoid_tanh) { /* the usual activations: one pass */
            for (ptrdiff_t j = 0; j < n; ++j) {
                const REAL hp = hpb ? hpb[j] : (REAL)0, z = gz[j], hh = gh[j];
                dzh[j] = (dhb[j] * ((REAL)1 - z)) * ((REAL)1 - hh * hh);
                dzz[j] = (dhb[j] * (hp - hh)) * (z * ((REAL)1 - z));
                dhb[j] *= z;
            }
            continue;
        }
        for (ptrdiff_t j = 0; j < n; ++j) {
            REAL hp = hpb ? hpb[j] : (REAL)0;
            dzh[j] = dhb[j] * ((REAL)1 - gz[j]);
            dzz[j] = dhb[j] * (hp - gh[j]);
            dhb[j] *= gz[j];
        }
        ACTIVATION_GRAD(d->activation, gh, dzh, n);
        ACTIVATION_GRAD(d->recurrent_activation, gz, dzz, n);
    }
}

/* Second backward pass of a reset_after=0 step, for units [j0, j1) of every batch row:
 * with dq = d q (B,H), q = r*hp*m_h (m_h (B,H) or NULL for ones), fill dz's r block and
 * add dq*r*m_h to dh (valid rows only). */
FRNN_CLONES static void SFX(gru_step_before_backward_r)(
    const frnn_dims *d, const REAL *FRNN_RESTRICT gates_t, const REAL *FRNN_RESTRICT h_prev,
    const REAL *FRNN_RESTRICT m_h, const uint8_t *mask_t, const REAL *FRNN_RESTRICT dq,
    REAL *FRNN_RESTRICT dh, REAL *FRNN_RESTRICT dz, ptrdiff_t j0, ptrdiff_t j1) {
    const ptrdiff_t B = d->batch, H = d->units, n = j1 - j0;
    for (ptrdiff_t b = 0; b < B; ++b) {
        if (mask_t && !mask_t[b]) continue;
        REAL *FRNN_RESTRICT dhb = dh + b * H + j0;
        REAL *FRNN_RESTRICT dzr = dz + b * 3 * H + H + j0;
        const REAL *FRNN_RESTRICT gr = gates_t + b * 3 * H + H + j0;
        const REAL *FRNN_RESTRICT dqb = dq + b * H + j0;
        const REAL *FRNN_RESTRICT hpb = h_prev ? h_prev + b * H + j0 : NULL;
        const REAL *FRNN_RESTRICT mb = m_h ? m_h + b * H + j0 : NULL;
        if (d->recurrent_activation == FRNN_ACT_SIGMOID) { /* the usual case: one pass */
            for (ptrdiff_t j = 0; j < n; ++j) {
                const REAL dqm = mb ? dqb[j] * mb[j] : dqb[j], r = gr[j]; /* d(r*hp) */
                dzr[j] = (hpb ? dqm * hpb[j] : (REAL)0) * (r * ((REAL)1 - r));
                dhb[j] += dqm * r;
            }
            continue;
        }
        for (ptrdiff_t j = 0; j < n; ++j) {
            REAL dqm = mb ? dqb[j] * mb[j] : dqb[j]; /* d(r*hp) */
            dzr[j] = hpb ? dqm * hpb[j] : (REAL)0;
            dhb[j] += dqm * gr[j];
        }
        ACTIVATION_GRAD(d->recurrent_activation, gr, dzr, n);
    }
}

/* Backward of one reset_after=1 step (T = 1) from torch's rows (d->weight_rows), without
 * recurrent dropout: the pointwise pass gives dR (B, 3H), the gradient w.r.t. h0 U + b_rec,
 * and dxh (B, H); the input projection's gradient is dR's z, r blocks and dxh.  Then dh0
 * += dR weight_hh, dx = [dR_z dR_r dxh] weight_ih, and the gradients in torch's layout
 * (d_kernel (3H, I), d_recurrent (3H, H), d_bias (2, 3H) [bias_ih; bias_hh], gate rows
 * r, z, n) straight from them (direct_step.h).  Arguments as for frnn_gru_backward. */
static int SFX(gru_direct_step_backward)(const frnn_dims *d, const REAL *kernel,
                                         const REAL *recurrent, const REAL *h0,
                                         const REAL *x_cache, const REAL *gates,
                                         const REAL *hr_cache, const uint8_t *mask_cache,
                                         const REAL *d_outputs, frnn_seq_strides dos,
                                         const REAL *d_h_n, REAL *dx, frnn_seq_strides dxs,
                                         REAL *d_kernel, REAL *d_recurrent, REAL *d_bias,
                                         REAL *d_h0) {
    const ptrdiff_t B = d->batch, I = d->input_size, H = d->units, G3 = 3 * H;
    int status = FRNN_OK;
    REAL *dr = frnn_alloc((size_t)(B * G3), sizeof(REAL));
    REAL *dxh = frnn_alloc((size_t)(B * H), sizeof(REAL));
    REAL *blocks_t = frnn_alloc((size_t)(B * G3), sizeof(REAL));
    if (!dr || !dxh || !blocks_t) {
        status = FRNN_ENOMEM;
        goto done;
    }
    if (d_h_n) memcpy(d_h0, d_h_n, (size_t)(B * H) * sizeof(REAL));
    else memset(d_h0, 0, (size_t)(B * H) * sizeof(REAL));
    SFX(gru_step_after_backward_pointwise)(d, gates, hr_cache, h0, mask_cache, d_outputs,
                                           dos.stride_b, d_h0, dr, dxh, 0, H);
    const REAL *rec[3] = {dr, dr + H, dr + 2 * H}, *in[3] = {dr, dr + H, dxh};
    const ptrdiff_t rec_ld[3] = {G3, G3, G3}, in_ld[3] = {G3, G3, H};
    SFX(direct_step_backward_products)(B, I, H, 3, SFX(gru_gate_rows), in, in_ld, rec, rec_ld,
                                       kernel, recurrent, x_cache, h0, dx, dxs.stride_b,
                                       d_kernel, d_recurrent, d_bias, d_bias ? d_bias + G3 : NULL,
                                       frnn_initial_gradient(d, h0) ? d_h0 : NULL, blocks_t);
done:
    frnn_free(dr);
    frnn_free(dxh);
    frnn_free(blocks_t);
    return status;
}

/* A GRU weight gradient over gate blocks [g0, g1): C's blocks (+)= A^T B_g as
 * weight_gradient_gemm, A (k x m, row stride lda), B_g = b + (g - g0) * H (k x H, row
 * stride ldb).  C is Keras' (m, 3H) with block g at columns g*H (gate_rows NULL), or
 * torch's (3H, m) with Keras' block g at row block gate_rows[g]: one block at a time
 * (weight_gradient_in_layout) below FRNN_GRU_SWAPPED_MAX_ROWS rows, else all blocks in
 * one product through a scratch.  sums (beta 0 only, or NULL): B's column sums for the
 * blocks, in Keras' order. */
static int SFX(gru_weight_gradient)(const frnn_blas *blas, const int *gate_rows, ptrdiff_t m,
                                    ptrdiff_t H, int g0, int g1, ptrdiff_t k, const REAL *a,
                                    ptrdiff_t lda, const REAL *b, ptrdiff_t ldb, REAL beta,
                                    REAL *c, REAL *sums) {
    if (!gate_rows)
        return SFX(weight_gradient_gemm)(blas, m, (g1 - g0) * H, k, a, lda, b, ldb, beta,
                                         c + g0 * H, 3 * H, sums);
    if (beta == 0 && k >= FRNN_GRU_SWAPPED_MAX_ROWS) /* many rows: the blocks at once */
        return SFX(weight_gradient_via_scratch)(blas, m, (g1 - g0) * H, H, gate_rows + g0, k,
                                                a, lda, b, ldb, c, sums);
    for (int g = g0; g < g1; ++g) {
        const int status = SFX(weight_gradient_in_layout)(
            blas, 1, m, H, k, a, lda, b + (g - g0) * H, ldb, beta, c + gate_rows[g] * H * m,
            sums ? sums + (g - g0) * H : NULL);
        if (status) return status;
    }
    return FRNN_OK;
}

int SFX(frnn_gru_backward)(const frnn_blas *blas, const frnn_dims *d, int reset_after,
                           const REAL *kernel, const REAL *recurrent, const REAL *h0,
                           const REAL *x_cache, const REAL *gates, const REAL *hr_cache,
                           const REAL *h_states, const uint8_t *mask_cache,
                           const REAL *rec_mask,
                           const REAL *d_outputs, frnn_seq_strides dos, const REAL *d_h_n,
                           REAL *dx, frnn_seq_strides dxs,
                           REAL *d_kernel, REAL *d_recurrent, REAL *d_bias, REAL *d_h0) {
    int status = frnn_check_dims(d, 3);
    if (status) return status;
    const ptrdiff_t B = d->batch, T = d->steps, I = d->input_size, H = d->units, G3 = 3 * H;
    if (d->weight_rows && T == 1 && B > 0 && !rec_mask && reset_after
        && frnn_direct_step(B, 1))
        return SFX(gru_direct_step_backward)(d, kernel, recurrent, h0, x_cache, gates, hr_cache,
                                             mask_cache, d_outputs, dos, d_h_n, dx, dxs,
                                             d_kernel, d_recurrent, d_bias, d_h0);
    /* Torch's layout: the packings and the products after the loop read the rows and write
     * the weight gradients in torch's layout gate block by gate block (gru_weight_gradient,
     * the bias gradient through a Keras-ordered copy).  The BLAS products per step (no
     * AVX2, many rows) run on Keras-layout copies instead, the gradients transposed back. */
    const int tiles_ok = !frnn_use_blas_steps(B, B * H * G3);
    if (d->weight_rows && !tiles_ok) {
        frnn_dims keras = *d;
        keras.weight_rows = 0;
        const ptrdiff_t bias_rows = reset_after ? 2 : 1;
        const int *rows = SFX(gru_gate_rows);
        SFX(keras_copies) k;
        REAL *d_bias_k = d_bias ? frnn_alloc((size_t)(bias_rows * G3), sizeof(REAL)) : NULL;
        status = SFX(keras_copies_for_backward)(I, H, 3, rows, kernel, recurrent, &k);
        if (!status && d_bias && !d_bias_k) status = FRNN_ENOMEM;
        if (!status)
            status = SFX(frnn_gru_backward)(blas, &keras, reset_after, k.kernel, k.recurrent, h0,
                                            x_cache, gates, hr_cache, h_states, mask_cache,
                                            rec_mask, d_outputs, dos, d_h_n, dx, dxs, k.d_kernel,
                                            k.d_recurrent, d_bias_k, d_h0);
        if (!status && d_bias)
            SFX(reorder_gate_blocks)(bias_rows, H, 3, rows, 1, d_bias_k, d_bias);
        frnn_free(d_bias_k);
        return SFX(gradients_to_rows)(status, I, H, 3, rows, &k, d_kernel, d_recurrent);
    }
    SFX(backward_prologue)(d, G3, (reset_after ? 2 : 1) * G3, d_h_n, d_h0, d_kernel, d_recurrent,
                           d_bias);
    if (T == 0 || B == 0) return FRNN_OK;
    const int *gate_rows = d->weight_rows ? SFX(gru_gate_rows) : NULL;
    const ptrdiff_t ldk = gate_rows ? I : G3; /* row stride of the kernel's rows or columns */

    /* dz: gradient w.r.t. the recurrent projection R (reset_after=1) or w.r.t. all gate
     * pre-activations (reset_after=0), (T,B,3H).  dxh (reset_after=1 only): gradient w.r.t.
     * the input projection's h block, which differs from R's by the factor r. */
    REAL *dz = frnn_alloc((size_t)(T * B * G3), sizeof(REAL));
    REAL *dxh = reset_after ? frnn_alloc((size_t)(T * B * H), sizeof(REAL)) : NULL;
    REAL *dq = reset_after ? NULL : frnn_alloc((size_t)(B * H), sizeof(REAL));
    /* recurrent dropout: per-step scratch, and h_{t-1}*m_g for all steps (dU, gate by gate) */
    REAL *dh_step = rec_mask ? frnn_alloc((size_t)(B * H), sizeof(REAL)) : NULL;
    REAL *hp_dropped = rec_mask ? frnn_alloc((size_t)(T * B * H), sizeof(REAL)) : NULL;
    /* As in the forward: the three gates at once (use_tiles), or gate block by gate block
     * (gate_tiles: reset_after=0 or recurrent dropout), on U^T packed once, split by rows or
     * by units; BLAS per step only without AVX2 and with many rows. */
    const ptrdiff_t nb = SFX(unit_blocks)(H);
    const int use_tiles = tiles_ok && reset_after && !rec_mask;
    const int gate_tiles = tiles_ok && !use_tiles;
    REAL *packed_t = use_tiles ? frnn_alloc((size_t)(nb * G3 * VW), sizeof(REAL)) : NULL;
    /* gate block g's U_g^T at packed_gates_t + g * gate_stride */
    const ptrdiff_t gate_stride = nb * H * VW;
    REAL *packed_gates_t = gate_tiles ? frnn_alloc((size_t)(3 * gate_stride), sizeof(REAL)) : NULL;
    /* the gate-by-gate loop meets twice per step */
    const frnn_split split = frnn_pick_split(
        B, nb, B * H * G3, frnn_row_split_min_rows(H, 3, sizeof(REAL)),
        gate_tiles ? FRNN_GATE_SPLIT_MIN_MACS : FRNN_PARALLEL_MIN_MACS);
    const int nt = tiles_ok ? split.threads : 1;
    /* dx_t = d(x_t W) W^T in the time loop while the step's gradients are in cache, or
     * GEMMs after it.  d(x_t W) is dz_t (reset_after=0), or dz_t's z, r blocks and dxh_t. */
    const int fuse_dx =
        dx && tiles_ok && frnn_fuses_input_gradient(B, nt, split, I, H, 3, sizeof(REAL));
    const int zigzag =
        frnn_zigzag_blocks(3.0 * H * (H + (fuse_dx ? I : 0)) * sizeof(REAL), split);
    const ptrdiff_t nbx = SFX(unit_blocks)(I);
    const ptrdiff_t zr_cols = reset_after ? 2 * H : G3; /* columns of dz that are d(xW) */
    REAL *dx_tm = dx && !fuse_dx ? frnn_alloc((size_t)(T * B * I), sizeof(REAL)) : NULL;
    /* the bias gradient in Keras' gate order (d_bias itself in Keras' layout) */
    const ptrdiff_t bias_len = (reset_after ? 2 : 1) * G3;
    REAL *d_bias_k = d_bias && gate_rows ? frnn_alloc((size_t)bias_len, sizeof(REAL)) : d_bias;
    REAL *packed_wt = fuse_dx ? frnn_alloc((size_t)(nbx * G3 * VW), sizeof(REAL)) : NULL;
    REAL *zeros = fuse_dx ? frnn_alloc((size_t)(nbx * VW), sizeof(REAL)) : NULL;
    if (!dz || (dx && !fuse_dx && !dx_tm) || (fuse_dx && (!packed_wt || !zeros))
        || (reset_after ? !dxh : !dq) || (rec_mask && (!dh_step || !hp_dropped))
        || (use_tiles && !packed_t) || (gate_tiles && !packed_gates_t) || (d_bias && !d_bias_k)) {
        status = FRNN_ENOMEM;
        goto done;
    }
    if (fuse_dx) {
        SFX(pack_recurrent_t)(kernel, ldk, I, G3, gate_rows, H, packed_wt, nt);
        memset(zeros, 0, (size_t)(nbx * VW) * sizeof(REAL));
    }
/* dx_t for rows [b0, b0 + rows) from dz_t (row stride G3) and dxh_t (row stride H), both
 * starting at row b0 */
#define FRNN_GRU_STEP_DX(t, b0, rows, dz_t, dxh_t)                                          \
    SFX(step_input_gradient)(d, split, packed_wt, zr_cols, dz_t, G3, reset_after ? H : 0,    \
                             reset_after ? (dxh_t) : (dz_t), H, rows, zeros, t, b0, dx, dxs)
    if (packed_t)
        SFX(pack_recurrent_t)(recurrent, gate_rows ? H : G3, H, G3, gate_rows, H, packed_t, nt);
    for (int g = 0; gate_tiles && g < 3; ++g) { /* gate g alone: one block of rows */
        if (gate_rows)
            SFX(pack_recurrent_t)(recurrent + gate_rows[g] * H * H, H, H, H, SFX(same_gate_rows),
                                  H, packed_gates_t + g * gate_stride, nt);
        else
            SFX(pack_recurrent_t)(recurrent + g * H, G3, H, H, NULL, H,
                                  packed_gates_t + g * gate_stride, nt);
    }
    int loop_threads = nt; /* 1 once a team has stopped (frnn_step_barrier) */
    if (gate_tiles) { /* gate block by gate block */
        /* split by units, a team that other programs keep waiting stops (csrc/internal.h's
         * frnn_step_barrier) and the rest of the steps run on one thread */
        for (ptrdiff_t t_from = T - 1; t_from >= 0; loop_threads = 1) {
            frnn_step_barrier step_barrier;
            frnn_step_barrier_init(&step_barrier);
#pragma omp parallel num_threads(loop_threads) if (loop_threads > 1)
            {
                frnn_barrier_side side = frnn_barrier_side_init();
                /* split by rows: the whole loop for the thread's rows, no barrier; by units: its
                 * units of every row, meeting where a product needs every column of dz */
                const frnn_part p = frnn_thread_part(d, split, nb, VW);
                const ptrdiff_t b0 = p.b0, R = p.b1 - p.b0, j0 = p.j0, j1 = p.j1;
                const int meet = frnn_team_size() > 1 && !split.by_rows;
                REAL *dh = d_h0 + b0 * H;
                for (ptrdiff_t t = t_from; t >= 0; --t) {
                    const REAL *h_prev = t > 0 ? h_states + (t - 1) * B * H : h0;
                    const REAL *hp_rows = h_prev ? h_prev + b0 * H : NULL;
                    const REAL *gates_t = gates + (t * B + b0) * G3;
                    const uint8_t *mask_t = mask_cache ? mask_cache + t * B + b0 : NULL;
                    const REAL *dout_t =
                        d_outputs ? d_outputs + t * dos.stride_t + b0 * dos.stride_b : NULL;
                    REAL *dz_t = dz + (t * B + b0) * G3;
                    if (reset_after) {
                        SFX(gru_step_after_backward_pointwise)(
                            &p.rows, gates_t, hr_cache + (t * B + b0) * H, hp_rows, mask_t, dout_t,
                            dos.stride_b, dh, dz_t, dxh + (t * B + b0) * H, j0, j1);
                    } else { /* z, h blocks; then r's needs dq = dz_h Uh^T */
                        SFX(gru_step_before_backward_zh)(&p.rows, gates_t, hp_rows, mask_t, dout_t,
                                                         dos.stride_b, dh, dz_t, j0, j1);
                        if (meet) /* dq needs every column of dz_h */
                            frnn_step_barrier_wait(&step_barrier, frnn_team_size(), &side);
                        REAL *dq_rows = dq + b0 * H;
                        for (ptrdiff_t b = 0; b < R; ++b)
                            memset(dq_rows + b * H + j0, 0, (size_t)(j1 - j0) * sizeof(REAL));
                        FRNN_BLOCKS_ZIGZAG(zigzag & t, p.jb0, p.jb1,
                            SFX(recurrent_matmul_t)(packed_gates_t + 2 * gate_stride, H, H, R,
                                dz_t + 2 * H, G3, NULL, dq_rows, H, zb0, zb1));
                        SFX(gru_step_before_backward_r)(&p.rows, gates_t, hp_rows,
                                                        rec_mask ? rec_mask + (2 * B + b0) * H : NULL,
                                                        mask_t, dq_rows, dh, dz_t, j0, j1);
                    }
                    /* the products below need every column of dz_t */
                    const int stop = meet
                        && frnn_step_barrier_stops(&step_barrier, frnn_team_size(), &side, t - 1);
                    /* dh_{t-1} += m_g * (dz_g U_g^T) for the blocks that multiply hp; the next
                     * step writes dz_{t-1} elsewhere and only its own units of dh and dq */
                    for (int g = 0; g < (reset_after ? 3 : 2); ++g)
                        FRNN_BLOCKS_ZIGZAG(zigzag & t, p.jb0, p.jb1,
                            SFX(recurrent_matmul_t)(packed_gates_t + g * gate_stride, H, H, R,
                                dz_t + g * H, G3, rec_mask ? rec_mask + (g * B + b0) * H : NULL, dh,
                                H, zb0, zb1));
                    if (fuse_dx)
                        FRNN_GRU_STEP_DX(t, b0, R, dz_t, reset_after ? dxh + (t * B + b0) * H : NULL);
                    if (stop) break;
                }
            }
            t_from = frnn_step_barrier_resume(&step_barrier, -1);
        }
    } else if (nt > 1) { /* pointwise for the owned share, (barrier,) dR_t U^T for it */
        /* split by units, a team that other programs keep waiting stops (csrc/internal.h's
         * frnn_step_barrier) and the rest of the steps run on one thread */
        for (ptrdiff_t t_from = T - 1; t_from >= 0; loop_threads = 1) {
            frnn_step_barrier step_barrier;
            frnn_step_barrier_init(&step_barrier);
#pragma omp parallel num_threads(loop_threads)
            {
                frnn_barrier_side side = frnn_barrier_side_init();
                const frnn_part p = frnn_thread_part(d, split, nb, VW);
                const ptrdiff_t b0 = p.b0, j0 = p.j0, j1 = p.j1;
                for (ptrdiff_t t = t_from; t >= 0; --t) {
                    REAL *dz_t = dz + (t * B + b0) * G3;
                    const REAL *h_prev = t > 0 ? h_states + (t - 1) * B * H : h0;
                    SFX(gru_step_after_backward_pointwise)(
                        &p.rows, gates + (t * B + b0) * G3, hr_cache + (t * B + b0) * H,
                        h_prev ? h_prev + b0 * H : NULL, mask_cache ? mask_cache + t * B + b0 : NULL,
                        d_outputs ? d_outputs + t * dos.stride_t + b0 * dos.stride_b : NULL,
                        dos.stride_b, d_h0 + b0 * H, dz_t, dxh + (t * B + b0) * H, j0, j1);
                    /* split by units: dh_{t-1} needs every column of dR_t */
                    const int stop = !split.by_rows && frnn_team_size() > 1
                        && frnn_step_barrier_stops(&step_barrier, frnn_team_size(), &side, t - 1);
                    FRNN_BLOCKS_ZIGZAG(zigzag & t, p.jb0, p.jb1,
                        SFX(recurrent_matmul_t)(packed_t, H, G3, p.rows.batch, dz_t, G3, NULL,
                            d_h0 + b0 * H, H, zb0, zb1));
                    if (fuse_dx)
                        FRNN_GRU_STEP_DX(t, b0, p.rows.batch, dz_t, dxh + (t * B + b0) * H);
                    if (stop) break;
                }
            }
            t_from = frnn_step_barrier_resume(&step_barrier, -1);
        }
    } else { /* one thread */
        for (ptrdiff_t t = T - 1; t >= 0; --t) {
            const REAL *h_prev = t > 0 ? h_states + (t - 1) * B * H : h0;
            const REAL *gates_t = gates + t * B * G3;
            const uint8_t *mask_t = mask_cache ? mask_cache + t * B : NULL;
            const REAL *dout_t = d_outputs ? d_outputs + t * dos.stride_t : NULL;
            REAL *dz_t = dz + t * B * G3;
            if (reset_after) {
                SFX(gru_step_after_backward_pointwise)(d, gates_t, hr_cache + t * B * H, h_prev,
                                                       mask_t, dout_t, dos.stride_b, d_h0, dz_t,
                                                       dxh + t * B * H, 0, H);
                /* dh_{t-1} += dR_t U^T: one GEMM for the three gates (one each with dropout) */
                if (rec_mask)
                    status = SFX(gru_masked_recurrent_grad)(blas, B, H, 0, 3, dz_t, rec_mask,
                                                            recurrent, d_h0, dh_step);
                else if (packed_t)
                    SFX(recurrent_matmul_t)(packed_t, H, G3, B, dz_t, G3, NULL, d_h0, H, 0, nb);
                else
                    status = SFX(gemm_rm)(blas, 0, 1, B, H, G3, 1, dz_t, G3, recurrent, G3, 1, d_h0, H);
                if (status) goto done;
            } else {
                SFX(gru_step_before_backward_zh)(d, gates_t, h_prev, mask_t, dout_t, dos.stride_b,
                                                 d_h0, dz_t, 0, H);
                /* dq = dz_h Uh^T, then r's gradient needs it */
                status = SFX(gemm_rm)(blas, 0, 1, B, H, H, 1, dz_t + 2 * H, G3, recurrent + 2 * H,
                                      G3, 0, dq, H);
                if (status) goto done;
                SFX(gru_step_before_backward_r)(d, gates_t, h_prev,
                                                rec_mask ? rec_mask + 2 * B * H : NULL, mask_t, dq,
                                                d_h0, dz_t, 0, H);
                if (rec_mask)
                    status = SFX(gru_masked_recurrent_grad)(blas, B, H, 0, 2, dz_t, rec_mask,
                                                            recurrent, d_h0, dh_step);
                else
                    status = SFX(gemm_rm)(blas, 0, 1, B, H, 2 * H, 1, dz_t, G3, recurrent, G3, 1,
                                          d_h0, H);
                if (status) goto done;
            }
            if (fuse_dx) FRNN_GRU_STEP_DX(t, 0, B, dz_t, reset_after ? dxh + t * B * H : NULL);
        }
    }
#undef FRNN_GRU_STEP_DX

    /* Weight gradients: large GEMMs over all T*B rows.  h_{t-1} for t >= 1 is
     * h_states[t-1]; the t = 0 term uses h0 and vanishes without it. */
    const ptrdiff_t TB = T * B;
    /* the bias gradients are column sums of dz and dxh, taken while the products read them:
     * reset_after=1: the recurrent row's z, r blocks (copied to the input row below) and the
     * input row's h block; else all of the one bias */
    REAL *zr_sums = d_bias_k ? (reset_after ? d_bias_k + G3 : d_bias_k) : NULL;
    status = SFX(gru_weight_gradient)(blas, gate_rows, I, H, 0, zr_cols / H, TB, x_cache, I, dz,
                                      G3, 0, d_kernel, zr_sums);
    if (status) goto done;
    if (reset_after) {
        status = SFX(gru_weight_gradient)(blas, gate_rows, I, H, 2, 3, TB, x_cache, I, dxh, H, 0,
                                          d_kernel, d_bias_k ? d_bias_k + 2 * H : NULL);
        if (status) goto done;
    }
    /* dU: rows of hp against dR (reset_after=1: all 3H columns; else z, r only) */
    const ptrdiff_t hp_cols = reset_after ? G3 : 2 * H;
    if (rec_mask) { /* block g sees h_{t-1}*m_g: one GEMM per gate block over all steps */
        for (int g = 0; g < (reset_after ? 3 : 2); ++g) {
            const REAL *m = rec_mask + g * B * H;
            for (ptrdiff_t t = 0; t < T; ++t) {
                const REAL *hp = t > 0 ? h_states + (t - 1) * B * H : h0;
                REAL *dst = hp_dropped + t * B * H;
                if (hp) SFX(gru_drop)(B * H, hp, m, dst);
                else memset(dst, 0, (size_t)(B * H) * sizeof(REAL));
            }
            status = SFX(gru_weight_gradient)(blas, gate_rows, H, H, g, g + 1, TB, hp_dropped,
                                              H, dz + g * H, G3, 0, d_recurrent, NULL);
            if (status) goto done;
        }
    } else if (T > 1) {
        status = SFX(gru_weight_gradient)(blas, gate_rows, H, H, 0, hp_cols / H, (T - 1) * B,
                                          h_states, H, dz + B * G3, G3, 0, d_recurrent, NULL);
        if (status) goto done;
    }
    if (h0 && !rec_mask) {
        status = SFX(gru_weight_gradient)(blas, gate_rows, H, H, 0, hp_cols / H, B, h0, H, dz,
                                          G3, 1, d_recurrent, NULL);
        if (status) goto done;
    }
    if (!reset_after) { /* dUh = q^T dz_h, q = r*hp cached per step */
        status = SFX(gru_weight_gradient)(blas, gate_rows, H, H, 2, 3, TB, hr_cache, H,
                                          dz + 2 * H, G3, 0, d_recurrent, NULL);
        if (status) goto done;
    }
    if (d_bias && reset_after) { /* recurrent row h: dR_h's sums; input row z, r: as recurrent */
        SFX(column_sums)(dz + 2 * H, TB, H, G3, d_bias_k + G3 + 2 * H);
        memcpy(d_bias_k, d_bias_k + G3, (size_t)(2 * H) * sizeof(REAL));
    }
    if (d_bias && gate_rows)
        SFX(reorder_gate_blocks)(reset_after ? 2 : 1, H, 3, gate_rows, 1, d_bias_k, d_bias);
    if (dx && !fuse_dx) {
        /* dx = dZ_zr W_zr^T (+ dxh W_h^T): Keras' columns at once, torch's rows block by
         * block */
        for (int g = 0; g < (gate_rows ? zr_cols / H : 1); ++g) {
            const ptrdiff_t cols = gate_rows ? H : zr_cols;
            const REAL *w = gate_rows ? kernel + gate_rows[g] * H * I : kernel;
            status = SFX(gemm_rm)(blas, 0, !gate_rows, TB, I, cols, 1, dz + g * H, G3, w, ldk,
                                  g > 0, dx_tm, I);
            if (status) goto done;
        }
        if (reset_after) {
            const REAL *w = gate_rows ? kernel + gate_rows[2] * H * I : kernel + 2 * H;
            status = SFX(gemm_rm)(blas, 0, !gate_rows, TB, I, H, 1, dxh, H, w, ldk, 1, dx_tm, I);
            if (status) goto done;
        }
        SFX(scatter_dx)(d, dx_tm, dx, dxs);
    }
done:
    if (d_bias_k != d_bias) frnn_free(d_bias_k);
    frnn_free(dz);
    frnn_free(dxh);
    frnn_free(dq);
    frnn_free(dx_tm);
    frnn_free(packed_wt);
    frnn_free(zeros);
    frnn_free(dh_step);
    frnn_free(hp_dropped);
    frnn_free(packed_t);
    frnn_free(packed_gates_t);
    return status;
}
