/* LSTM forward and BPTT for one precision.  Included by lstm.c with REAL, SFX(name),
 * GEMM, ACTIVATE and ACTIVATION_GRAD defined.  See fusedrnn.h for the argument contract. */

/* Steps of input projection computed at once during inference: bounds the scratch to
 * about 4M elements however long the sequence, while keeping the GEMM large. */
#define FRNN_INFER_CHUNK_ELEMS ((ptrdiff_t)1 << 22)

/* One step of the fused pointwise pass over the batch.
 *   z      (B,4H): pre-activations for this step (input + recurrent + bias); activated in place.
 *   h, c   (B,H): state, read and updated in place.
 *   mask_t (B,) or NULL.   out: row b written at out + b*out_stride_b, or NULL.
 *   c_save, h_save (B,H) or NULL: states after this step for backward.
 *   scratch (H,): per-call temporary. */
FRNN_CLONES static void SFX(lstm_step_pointwise)(const frnn_dims *d, REAL *FRNN_RESTRICT z,
                                                 REAL *FRNN_RESTRICT h, REAL *FRNN_RESTRICT c,
                                                 const uint8_t *mask_t, REAL *out,
                                                 ptrdiff_t out_stride_b, REAL *c_save,
                                                 REAL *h_save, REAL *FRNN_RESTRICT scratch) {
    const ptrdiff_t B = d->batch, H = d->units;
    for (ptrdiff_t b = 0; b < B; ++b) {
        REAL *FRNN_RESTRICT hb = h + b * H;
        REAL *FRNN_RESTRICT cb = c + b * H;
        REAL *FRNN_RESTRICT ob = out ? out + b * out_stride_b : NULL;
        if (mask_t && !mask_t[b]) { /* masked: carry the state */
            if (ob) {
                if (d->zero_output_for_mask) memset(ob, 0, (size_t)H * sizeof(REAL));
                else memcpy(ob, hb, (size_t)H * sizeof(REAL));
            }
        } else {
            REAL *FRNN_RESTRICT zb = z + b * 4 * H;
            ACTIVATE(d->recurrent_activation, zb, 2 * H);     /* i, f */
            ACTIVATE(d->activation, zb + 2 * H, H);           /* g */
            ACTIVATE(d->recurrent_activation, zb + 3 * H, H); /* o */
            const REAL *FRNN_RESTRICT gi = zb, *FRNN_RESTRICT gf = zb + H;
            const REAL *FRNN_RESTRICT gg = zb + 2 * H, *FRNN_RESTRICT go = zb + 3 * H;
            for (ptrdiff_t j = 0; j < H; ++j) {
                REAL cn = gf[j] * cb[j] + gi[j] * gg[j];
                cb[j] = cn;
                scratch[j] = cn;
            }
            ACTIVATE(d->activation, scratch, H);
            for (ptrdiff_t j = 0; j < H; ++j) hb[j] = go[j] * scratch[j];
            if (ob) memcpy(ob, hb, (size_t)H * sizeof(REAL));
        }
        if (c_save) memcpy(c_save + b * H, cb, (size_t)H * sizeof(REAL));
        if (h_save) memcpy(h_save + b * H, hb, (size_t)H * sizeof(REAL));
    }
}

int SFX(frnn_lstm_forward)(const frnn_blas *blas, const frnn_dims *d,
                           const REAL *x, frnn_seq_strides xs,
                           const REAL *kernel, const REAL *recurrent, const REAL *bias,
                           const uint8_t *mask, frnn_seq_strides ms,
                           const REAL *h0, const REAL *c0,
                           REAL *outputs, frnn_seq_strides os,
                           REAL *h_n, REAL *c_n, const REAL *rec_mask,
                           REAL *x_cache, REAL *gates, REAL *c_states, REAL *h_states,
                           uint8_t *mask_cache) {
    int status = frnn_check_dims(d, 4);
    if (status) return status;
    const ptrdiff_t B = d->batch, T = d->steps, I = d->input_size, H = d->units, G4 = 4 * H;
    const int training = gates != NULL;
    if (training && (!x_cache || !c_states || !h_states || (mask && !mask_cache))) return FRNN_EINVAL;

    if (h0) memcpy(h_n, h0, (size_t)(B * H) * sizeof(REAL));
    else memset(h_n, 0, (size_t)(B * H) * sizeof(REAL));
    if (c0) memcpy(c_n, c0, (size_t)(B * H) * sizeof(REAL));
    else memset(c_n, 0, (size_t)(B * H) * sizeof(REAL));
    if (T == 0 || B == 0) return FRNN_OK;

    /* Training projects every step at once into the gate cache; inference works in
     * chunks of steps so its scratch stays bounded (and warm in cache). */
    ptrdiff_t chunk = T;
    if (!training) {
        ptrdiff_t per_step = B * (G4 + I);
        chunk = FRNN_INFER_CHUNK_ELEMS / (per_step > 0 ? per_step : 1);
        if (chunk < 1) chunk = 1;
        if (chunk > T) chunk = T;
    }
    REAL *scratch = frnn_alloc((size_t)H, sizeof(REAL));
    REAL *h_dropped = rec_mask ? frnn_alloc((size_t)(B * H), sizeof(REAL)) : NULL;
    uint8_t *mask_tm = NULL;
    REAL *z_buf = training ? gates : frnn_alloc((size_t)(chunk * B * G4), sizeof(REAL));
    REAL *x_buf = training ? x_cache : frnn_alloc((size_t)(chunk * B * I), sizeof(REAL));
    if (mask) mask_tm = training ? mask_cache : frnn_alloc((size_t)(T * B), 1);
    if (!scratch || !z_buf || !x_buf || (mask && !mask_tm) || (rec_mask && !h_dropped)) {
        status = FRNN_ENOMEM;
        goto done;
    }
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
        REAL *z_chunk = training ? z_buf + t0 * B * G4 : z_buf;
        SFX(gather_steps)(d, x, xs, t0, t1, x_chunk);
        status = SFX(input_projection)(blas, (t1 - t0) * B, I, G4, x_chunk, kernel, bias, z_chunk);
        if (status) goto done;
        for (ptrdiff_t t = t0; t < t1; ++t) {
            REAL *z_t = z_chunk + (t - t0) * B * G4;
            /* z_t += h_{t-1} U: all four gates in one GEMM (h dropped out per sequence when
             * recurrent dropout is on: Keras 3 masks h only where it enters the matmul) */
            const REAL *h_in = h_n;
            if (rec_mask) {
                for (ptrdiff_t k = 0; k < B * H; ++k) h_dropped[k] = h_n[k] * rec_mask[k];
                h_in = h_dropped;
            }
            status = SFX(gemm_rm)(blas, 0, 0, B, G4, H, 1, h_in, H, recurrent, G4, 1, z_t, G4);
            if (status) goto done;
            SFX(lstm_step_pointwise)(d, z_t, h_n, c_n, mask ? mask_tm + t * B : NULL,
                                     outputs ? outputs + t * os.stride_t : NULL, os.stride_b,
                                     training ? c_states + t * B * H : NULL,
                                     training ? h_states + t * B * H : NULL, scratch);
        }
    }
done:
    free(scratch);
    free(h_dropped);
    if (!training) {
        free(z_buf);
        free(x_buf);
        free(mask_tm);
    }
    return status;
}

/* Gate gradients of one step for the whole batch (see lstm_backward in fusedrnn.h).
 *   dh, dc (B,H): gradient w.r.t. the state after this step; on return dc holds the
 *     gradient w.r.t. the state before it, and dh holds the carried part only (rows of
 *     masked steps), zero elsewhere: the recurrent GEMM adds dZ U^T afterwards.
 *   dz (B,4H): written. */
FRNN_CLONES static void SFX(lstm_step_backward_pointwise)(
    const frnn_dims *d, const REAL *FRNN_RESTRICT gates_t, const REAL *FRNN_RESTRICT c_t,
    const REAL *FRNN_RESTRICT c_prev, const uint8_t *mask_t, const REAL *dout,
    ptrdiff_t dout_stride_b, REAL *FRNN_RESTRICT dh, REAL *FRNN_RESTRICT dc,
    REAL *FRNN_RESTRICT dz, REAL *FRNN_RESTRICT tc, REAL *FRNN_RESTRICT dtc) {
    const ptrdiff_t B = d->batch, H = d->units;
    for (ptrdiff_t b = 0; b < B; ++b) {
        REAL *FRNN_RESTRICT dhb = dh + b * H, *FRNN_RESTRICT dcb = dc + b * H;
        REAL *FRNN_RESTRICT dzb = dz + b * 4 * H;
        const int masked = mask_t && !mask_t[b];
        if (dout && !(masked && d->zero_output_for_mask)) {
            const REAL *db = dout + b * dout_stride_b;
            for (ptrdiff_t j = 0; j < H; ++j) dhb[j] += db[j];
        }
        if (masked) {
            memset(dzb, 0, (size_t)(4 * H) * sizeof(REAL));
            continue;
        }
        const REAL *FRNN_RESTRICT gb = gates_t + b * 4 * H;
        const REAL *FRNN_RESTRICT gi = gb, *FRNN_RESTRICT gf = gb + H;
        const REAL *FRNN_RESTRICT gg = gb + 2 * H, *FRNN_RESTRICT go = gb + 3 * H;
        const REAL *FRNN_RESTRICT cb = c_t + b * H;
        const REAL *FRNN_RESTRICT cpb = c_prev ? c_prev + b * H : NULL;
        memcpy(tc, cb, (size_t)H * sizeof(REAL));
        ACTIVATE(d->activation, tc, H); /* a(c_t), recomputed rather than stored */
        for (ptrdiff_t j = 0; j < H; ++j) {
            dzb[3 * H + j] = dhb[j] * tc[j]; /* d o */
            dtc[j] = dhb[j] * go[j];         /* d a(c) */
        }
        ACTIVATION_GRAD(d->activation, tc, dtc, H);
        for (ptrdiff_t j = 0; j < H; ++j) {
            REAL dct = dcb[j] + dtc[j];
            dzb[j] = dct * gg[j];                       /* d i */
            dzb[H + j] = cpb ? dct * cpb[j] : (REAL)0;  /* d f */
            dzb[2 * H + j] = dct * gi[j];               /* d g */
            dcb[j] = dct * gf[j];
            dhb[j] = 0;
        }
        ACTIVATION_GRAD(d->recurrent_activation, gb, dzb, 2 * H);
        ACTIVATION_GRAD(d->activation, gg, dzb + 2 * H, H);
        ACTIVATION_GRAD(d->recurrent_activation, go, dzb + 3 * H, H);
    }
}

int SFX(frnn_lstm_backward)(const frnn_blas *blas, const frnn_dims *d,
                            const REAL *kernel, const REAL *recurrent,
                            const REAL *h0, const REAL *c0,
                            const REAL *x_cache, const REAL *gates, const REAL *c_states,
                            const REAL *h_states, const uint8_t *mask_cache,
                            const REAL *rec_mask,
                            const REAL *d_outputs, frnn_seq_strides dos,
                            const REAL *d_h_n, const REAL *d_c_n,
                            REAL *dx, frnn_seq_strides dxs,
                            REAL *d_kernel, REAL *d_recurrent, REAL *d_bias,
                            REAL *d_h0, REAL *d_c0) {
    int status = frnn_check_dims(d, 4);
    if (status) return status;
    const ptrdiff_t B = d->batch, T = d->steps, I = d->input_size, H = d->units, G4 = 4 * H;
    const size_t state_bytes = (size_t)(B * H) * sizeof(REAL);

    if (d_h_n) memcpy(d_h0, d_h_n, state_bytes);
    else memset(d_h0, 0, state_bytes);
    if (d_c_n) memcpy(d_c0, d_c_n, state_bytes);
    else memset(d_c0, 0, state_bytes);
    memset(d_kernel, 0, (size_t)(I * G4) * sizeof(REAL));
    memset(d_recurrent, 0, (size_t)(H * G4) * sizeof(REAL));
    if (d_bias) memset(d_bias, 0, (size_t)G4 * sizeof(REAL));
    for (ptrdiff_t s = 0; s < T; ++s)
        for (ptrdiff_t b = 0; b < B; ++b)
            memset(dx + b * dxs.stride_b + s * dxs.stride_t, 0, (size_t)I * sizeof(REAL));
    if (T == 0 || B == 0) return FRNN_OK;

    REAL *dz = frnn_alloc((size_t)(T * B * G4), sizeof(REAL));
    REAL *dx_tm = frnn_alloc((size_t)(T * B * I), sizeof(REAL));
    REAL *tc = frnn_alloc((size_t)H, sizeof(REAL));
    REAL *dtc = frnn_alloc((size_t)H, sizeof(REAL));
    /* with recurrent dropout: dh scratch per step, and the dropped h_{t-1} for dU */
    REAL *dh_step = rec_mask ? frnn_alloc((size_t)(B * H), sizeof(REAL)) : NULL;
    REAL *h_prev_dropped = rec_mask ? frnn_alloc((size_t)(T * B * H), sizeof(REAL)) : NULL;
    if (!dz || !dx_tm || !tc || !dtc || (rec_mask && (!dh_step || !h_prev_dropped))) {
        status = FRNN_ENOMEM;
        goto done;
    }

    for (ptrdiff_t t = T - 1; t >= 0; --t) {
        const REAL *c_prev = t > 0 ? c_states + (t - 1) * B * H : c0;
        REAL *dz_t = dz + t * B * G4;
        SFX(lstm_step_backward_pointwise)(d, gates + t * B * G4, c_states + t * B * H, c_prev,
                                          mask_cache ? mask_cache + t * B : NULL,
                                          d_outputs ? d_outputs + t * dos.stride_t : NULL,
                                          dos.stride_b, d_h0, d_c0, dz_t, tc, dtc);
        /* dh_{t-1} += dZ_t U^T (times the recurrent dropout mask, if any) */
        if (rec_mask) {
            status = SFX(gemm_rm)(blas, 0, 1, B, H, G4, 1, dz_t, G4, recurrent, G4, 0, dh_step, H);
            for (ptrdiff_t k = 0; k < B * H; ++k) d_h0[k] += dh_step[k] * rec_mask[k];
        } else {
            status = SFX(gemm_rm)(blas, 0, 1, B, H, G4, 1, dz_t, G4, recurrent, G4, 1, d_h0, H);
        }
        if (status) goto done;
    }
    /* h_{t-1} as the recurrent GEMM saw it: h0 then h_states[0..T-2], dropped out if on */
    const REAL *h_prev_from_step1 = h_states; /* h_{t-1} for t = 1 .. T-1 */
    const REAL *h0_used = h0;
    if (rec_mask) {
        for (ptrdiff_t t = 0; t < T; ++t) {
            const REAL *src = t == 0 ? h0 : h_states + (t - 1) * B * H;
            REAL *dst = h_prev_dropped + t * B * H;
            for (ptrdiff_t k = 0; k < B * H; ++k) dst[k] = src ? src[k] * rec_mask[k] : (REAL)0;
        }
        h_prev_from_step1 = h_prev_dropped + B * H;
        h0_used = h_prev_dropped;
    }

    /* Weight gradients: a few large GEMMs over all T*B rows. */
    status = SFX(gemm_rm)(blas, 1, 0, I, G4, T * B, 1, x_cache, I, dz, G4, 0, d_kernel, G4);
    if (status) goto done;
    if (T > 1) { /* dU = sum_t h_{t-1}^T dZ_t over t >= 1 */
        status = SFX(gemm_rm)(blas, 1, 0, H, G4, (T - 1) * B, 1, h_prev_from_step1, H,
                              dz + B * G4, G4, 0, d_recurrent, G4);
        if (status) goto done;
    }
    if (h0) { /* ... plus the t = 0 term */
        status = SFX(gemm_rm)(blas, 1, 0, H, G4, B, 1, h0_used, H, dz, G4, 1, d_recurrent, G4);
        if (status) goto done;
    }
    if (d_bias) SFX(column_sums)(dz, T * B, G4, d_bias);
    status = SFX(gemm_rm)(blas, 0, 1, T * B, I, G4, 1, dz, G4, kernel, G4, 0, dx_tm, I);
    if (status) goto done;
    for (ptrdiff_t t = 0; t < T; ++t) {
        ptrdiff_t s = frnn_input_step(d, t);
        for (ptrdiff_t b = 0; b < B; ++b)
            memcpy(dx + b * dxs.stride_b + s * dxs.stride_t, dx_tm + (t * B + b) * I,
                   (size_t)I * sizeof(REAL));
    }
done:
    free(dz);
    free(dx_tm);
    free(tc);
    free(dtc);
    free(dh_step);
    free(h_prev_dropped);
    return status;
}
