/* SimpleRNN forward and BPTT for one precision.  Included by rnn.c with REAL, SFX(name),
 * GEMM, ACTIVATE, ACTIVATE_INTO and ACTIVATION_GRAD defined.  See fusedrnn.h for the
 * argument contract.
 *
 * Per processing step: h = a(x W + b + h_{t-1} U).  The activated output is the new state,
 * so training needs no gate cache: the per-step pre-activations are computed directly in
 * h_states[t] and activated in place (masked rows get the carried state instead).
 * x W + b comes from one BLAS GEMM over many steps, or, with enough rows
 * (frnn_rnn_fuses_input), from each step's tiles over W and U packed together.
 * Recurrent dropout (Keras 3): rec_mask (B,H) multiplies h_{t-1} where it enters the GEMM. */

#define FRNN_RNN_INFER_CHUNK_ELEMS ((ptrdiff_t)1 << 22)

/* Pointwise pass of one step for units [j0, j1) of every batch row.
 *   z (B,H): x W + b + h_{t-1} U; activated in place on valid rows.  With carry_into_z,
 *     masked rows of z receive the carried state (training: z is h_states[t]).
 *   h_prev (B,H): h_{t-1}, read.  h_next (B,H): h_t, written for the units; a different
 *     array, since with the units split another thread still reads h_prev.
 *   mask_t (B,) or NULL.   out: row b at out + b*out_stride_b, or NULL.
 *   h_save (B,H) or NULL: h_t, for backward, when z is not itself the cache.
 *   rec_mask, h_next_dropped (B,H) or NULL: recurrent dropout; h_next * rec_mask is what
 *     the next step's product reads. */
FRNN_CLONES static void SFX(rnn_step_pointwise)(const frnn_dims *d, REAL *FRNN_RESTRICT z,
                                                const REAL *FRNN_RESTRICT h_prev,
                                                REAL *FRNN_RESTRICT h_next, const uint8_t *mask_t,
                                                REAL *out, ptrdiff_t out_stride_b,
                                                int carry_into_z, REAL *h_save,
                                                const REAL *rec_mask, REAL *h_next_dropped,
                                                ptrdiff_t j0, ptrdiff_t j1) {
    const ptrdiff_t B = d->batch, H = d->units, n = j1 - j0;
    const size_t bytes = (size_t)n * sizeof(REAL);
    for (ptrdiff_t b = 0; b < B; ++b) {
        const REAL *FRNN_RESTRICT hp = h_prev + b * H + j0;
        REAL *FRNN_RESTRICT hn = h_next + b * H + j0;
        REAL *FRNN_RESTRICT zb = z + b * H + j0;
        REAL *FRNN_RESTRICT ob = out ? out + b * out_stride_b + j0 : NULL;
        if (mask_t && !mask_t[b]) {
            memcpy(hn, hp, bytes);
            if (ob) {
                if (d->zero_output_for_mask) memset(ob, 0, bytes);
                else memcpy(ob, hp, bytes);
            }
            if (carry_into_z) memcpy(zb, hp, bytes);
        } else if (carry_into_z) { /* z is the state cache: activated in place */
            ACTIVATE(d->activation, zb, n);
            memcpy(hn, zb, bytes);
            if (ob) memcpy(ob, zb, bytes);
        } else {
            ACTIVATE_INTO(d->activation, zb, hn, ob, n);
        }
        if (h_save) memcpy(h_save + b * H + j0, hn, bytes);
        if (rec_mask) {
            const REAL *FRNN_RESTRICT m = rec_mask + b * H + j0;
            REAL *FRNN_RESTRICT hd = h_next_dropped + b * H + j0;
            for (ptrdiff_t j = 0; j < n; ++j) hd[j] = hn[j] * m[j];
        }
    }
}

/* One step (T = 1) straight from the weights in either layout (direct_step.h):
 * z = b + x W + h0 U, then the pointwise pass.  h_n holds h0 on entry.  Training (x_cache
 * non-NULL) writes forward's cache as the loops do: x with masked rows zeroed, the state
 * (computed in place in h_states) and the mask. */
static int SFX(rnn_direct_step)(const frnn_dims *d, const REAL *x, frnn_seq_strides xs,
                                const REAL *kernel, const REAL *recurrent, const REAL *bias,
                                const uint8_t *mask, frnn_seq_strides ms, const REAL *h0,
                                REAL *outputs, frnn_seq_strides os, REAL *h_n, REAL *x_cache,
                                REAL *h_states, uint8_t *mask_cache) {
    const ptrdiff_t B = d->batch, I = d->input_size, H = d->units;
    const int training = x_cache != NULL;
    int status;
    uint8_t *mask_t = SFX(first_step_mask)(B, mask, ms, mask_cache, &status);
    REAL *z = training ? h_states : frnn_alloc((size_t)(B * H), sizeof(REAL));
    REAL *h_next = frnn_alloc((size_t)(B * H), sizeof(REAL)); /* h_n is read meanwhile */
    if (status || !z || !h_next) {
        status = FRNN_ENOMEM;
        goto done;
    }
    ptrdiff_t ldx;
    const REAL *x_rows = SFX(direct_step_input)(d, x, xs, mask_t, x_cache, &ldx);
    SFX(direct_step_products)(B, I, H, 1, d->weight_rows, SFX(same_gate_rows), x_rows, ldx,
                              kernel, h0, recurrent, z, NULL);
    SFX(add_bias_rows)(B, H, bias, z);
    /* training: z is the state cache, masked rows receive the carried state */
    SFX(rnn_step_pointwise)(d, z, h_n, h_next, mask_t, outputs, os.stride_b, training, NULL,
                            NULL, NULL, 0, H);
    memcpy(h_n, h_next, (size_t)(B * H) * sizeof(REAL));
done:
    if (mask_t != mask_cache) frnn_free(mask_t);
    if (!training) frnn_free(z);
    frnn_free(h_next);
    return status;
}

int SFX(frnn_rnn_forward)(const frnn_blas *blas, const frnn_dims *d,
                          const REAL *x, frnn_seq_strides xs,
                          const REAL *kernel, const REAL *recurrent, const REAL *bias,
                          const uint8_t *mask, frnn_seq_strides ms,
                          const REAL *h0,
                          REAL *outputs, frnn_seq_strides os,
                          REAL *h_n, const REAL *rec_mask,
                          REAL *x_cache, REAL *h_states, uint8_t *mask_cache) {
    int status = frnn_check_dims(d, 1);
    if (status) return status;
    const ptrdiff_t B = d->batch, T = d->steps, I = d->input_size, H = d->units;
    const int training = h_states != NULL;
    if (training && (!x_cache || (mask && !mask_cache))) return FRNN_EINVAL;

    if (h0) memcpy(h_n, h0, (size_t)(B * H) * sizeof(REAL));
    else memset(h_n, 0, (size_t)(B * H) * sizeof(REAL));
    if (T == 0 || B == 0) return FRNN_OK;
    if (T == 1 && !rec_mask && frnn_direct_step(B, d->weight_rows))
        return SFX(rnn_direct_step)(d, x, xs, kernel, recurrent, bias, mask, ms, h0, outputs, os,
                                    h_n, x_cache, h_states, mask_cache);
    /* torch's layout is read where the weights are packed or multiplied (no transposes) */
    const int w_rows = d->weight_rows;
    const int *gate_rows = w_rows ? SFX(same_gate_rows) : NULL;

    const ptrdiff_t nb = SFX(unit_blocks)(H);
    const int use_tiles = !frnn_use_blas_steps(B, B * H * H);
    /* fused: each step's tile computes bias + x_t W + h_{t-1} U; no projection pass */
    const frnn_split split = frnn_pick_split(B, nb, B * H * H,
                                             frnn_row_split_min_rows(H, 1, sizeof(REAL)),
                                             FRNN_PARALLEL_MIN_MACS);
    const int fuse_input =
        use_tiles && frnn_rnn_fuses_input(B, split, I, H, sizeof(REAL), training);
    ptrdiff_t chunk = T;
    if (!training && !fuse_input) { /* fused inference buffers no steps */
        ptrdiff_t per_step = B * (H + I);
        chunk = FRNN_RNN_INFER_CHUNK_ELEMS / (per_step > 0 ? per_step : 1);
        if (chunk < 1) chunk = 1;
        if (chunk > T) chunk = T;
    }
    uint8_t *mask_tm = NULL;
    /* the pre-activations of one step when fused (training copies h_t to its cache from
     * there); unfused, training projects every step into the cache and activates it in
     * place, and inference projects a chunk of steps at once */
    const int z_in_cache = training && !fuse_input;
    REAL *z_buf = z_in_cache ? h_states
                             : frnn_alloc((size_t)((fuse_input ? 1 : chunk) * B * H),
                                          sizeof(REAL));
    REAL *x_buf = training ? x_cache
                  : fuse_input ? NULL : frnn_alloc((size_t)(chunk * B * I), sizeof(REAL));
    /* h is double-buffered (h_n, h_alt): with the units split, h_{t-1} must stay readable
     * while h_t is written; likewise h*rec_mask. */
    REAL *h_alt = frnn_alloc((size_t)(B * H), sizeof(REAL));
    REAL *h_dropped = rec_mask ? frnn_alloc((size_t)(2 * B * H), sizeof(REAL)) : NULL;
    /* the per-step product runs on U packed once (recurrent_matmul.h), not BLAS.  With a
     * single gate, h U = h (U^T)^T is the backward kernel's product on U^T, whose 4-row x
     * 64-byte tiles measured 41 GFLOP/s against 11 for the one-gate forward tiles. */
    const int nt = use_tiles ? split.threads : 1;
    int loop_threads = nt; /* 1 once a team has stopped (frnn_step_barrier) */
    const int zigzag =
        frnn_zigzag_blocks((double)H * (H + (fuse_input ? I : 0)) * sizeof(REAL), split);
    REAL *packed = use_tiles ? frnn_alloc((size_t)(nb * (fuse_input ? I + H : H) * VW), sizeof(REAL))
                             : NULL;
    REAL *packed_bias = fuse_input ? frnn_alloc((size_t)(nb * VW), sizeof(REAL)) : NULL;
    if (mask) mask_tm = training ? mask_cache : frnn_alloc((size_t)(T * B), 1);
    if (!z_buf || (!x_buf && !fuse_input) || !h_alt || (mask && !mask_tm)
        || (rec_mask && !h_dropped) || (use_tiles && !packed) || (fuse_input && !packed_bias)) {
        status = FRNN_ENOMEM;
        goto done;
    }
    /* U's columns in blocks of VW units: the layout of the transposed product's packing */
    if (fuse_input) SFX(pack_input_recurrent)(kernel, I, recurrent, bias, H, 1, gate_rows, VW,
                                              packed, packed_bias, nt);
    else if (packed) SFX(pack_recurrent)(recurrent, H, H, 1, gate_rows, VW, packed, nt);
    if (mask) {
        for (ptrdiff_t t = 0; t < T; ++t) {
            ptrdiff_t s = frnn_input_step(d, t);
            for (ptrdiff_t b = 0; b < B; ++b)
                mask_tm[t * B + b] = mask[b * ms.stride_b + s * ms.stride_t] != 0;
        }
    }

    REAL *h_buf[2] = {h_n, h_alt};
    REAL *hd_buf[2] = {h_dropped, h_dropped ? h_dropped + B * H : NULL};
    if (rec_mask)
        for (ptrdiff_t k = 0; k < B * H; ++k) h_dropped[k] = h_n[k] * rec_mask[k];

    for (ptrdiff_t t0 = 0; t0 < T; t0 += chunk) {
        ptrdiff_t t1 = t0 + chunk < T ? t0 + chunk : T;
        REAL *x_chunk = training ? x_buf + t0 * B * I : x_buf;
        REAL *z_chunk = z_in_cache ? z_buf + t0 * B * H : z_buf;
        if (!fuse_input) {
            SFX(gather_steps)(d, x, xs, t0, t1, x_chunk);
            SFX(zero_masked_rows)(d, mask ? mask_tm : NULL, t0, t1, x_chunk);
            status = SFX(input_projection)(blas, (t1 - t0) * B, I, H, x_chunk, kernel, w_rows,
                                           bias, z_chunk);
            if (status) goto done;
        }
        if (!use_tiles) { /* many rows without AVX2: BLAS' GEMM per step */
            for (ptrdiff_t t = t0; t < t1; ++t) {
                REAL *z_t = z_chunk + (t - t0) * B * H;
                const REAL *h_prev = h_buf[t & 1];
                status = SFX(gemm_rm)(blas, 0, w_rows, B, H, H, 1,
                                      rec_mask ? hd_buf[t & 1] : h_prev, H, recurrent, H, 1, z_t,
                                      H);
                if (status) goto done;
                SFX(rnn_step_pointwise)(d, z_t, h_prev, h_buf[(t + 1) & 1],
                                        mask ? mask_tm + t * B : NULL,
                                        outputs ? outputs + t * os.stride_t : NULL, os.stride_b,
                                        training, NULL, rec_mask, hd_buf[(t + 1) & 1], 0, H);
            }
            continue;
        }
        /* split by units, a team that other programs keep waiting stops (csrc/internal.h's
         * frnn_step_barrier) and the rest of the steps run on one thread */
        for (ptrdiff_t t_from = t0; t_from < t1; loop_threads = 1) {
            frnn_step_barrier step_barrier;
            frnn_step_barrier_init(&step_barrier);
#pragma omp parallel num_threads(loop_threads) if (loop_threads > 1)
            {
                frnn_barrier_side side = frnn_barrier_side_init();
                const frnn_part p = frnn_thread_part(d, split, nb, VW);
                const ptrdiff_t b0 = p.b0, j0 = p.j0, j1 = p.j1;
                for (ptrdiff_t t = t_from; t < t1; ++t) {
                    /* fused, one step's z is reused: each thread rewrites only the rows and
                     * units it reads back itself */
                    REAL *z_t = z_chunk + ((fuse_input ? 0 : t - t0) * B + b0) * H;
                    const REAL *h_prev = h_buf[t & 1] + b0 * H;
                    const REAL *h_read = rec_mask ? hd_buf[t & 1] + b0 * H : h_prev;
                    /* fused, the tiles read the step's input rows where the caller keeps
                     * them (row stride xs.stride_b), not from a time-major copy that one
                     * thread gathered while the other waited, and training caches them step
                     * by step, each thread its share of the rows.  Measured on the AMD Zen 4,
                     * A/B in one process: inference 1.04-1.13x (LSTM B=8-128, SimpleRNN
                     * B=16-128; LSTM B=32, H=512 1.00), training 1.00-1.07x. */
                    const REAL *x_t = fuse_input
                        ? x + frnn_input_step(d, t) * xs.stride_t + b0 * xs.stride_b
                        : x_chunk + ((t - t0) * B + b0) * I;
                    const ptrdiff_t ldx = fuse_input ? xs.stride_b : I;
                    if (training && fuse_input) {
                        const int tid = frnn_thread_id(), team = frnn_team_size();
                        SFX(cache_step_rows)(d, x, xs, mask_tm, t,
                                             split.by_rows ? b0 : B * tid / team,
                                             split.by_rows ? p.b1 : B * (tid + 1) / team, x_cache);
                    }
                    /* unfused: no input rows and no bias, so z_t += h U over its projection */
                    FRNN_BLOCKS_ZIGZAG(zigzag & t, p.jb0, p.jb1,
                        SFX(input_recurrent_matmul_t)(packed, fuse_input ? I : 0, x_t, ldx, H,
                            p.rows.batch, h_read, packed_bias, z_t, H, zb0, zb1));
                    SFX(rnn_step_pointwise)(
                        &p.rows, z_t, h_prev, h_buf[(t + 1) & 1] + b0 * H,
                        mask ? mask_tm + t * B + b0 : NULL,
                        outputs ? outputs + t * os.stride_t + b0 * os.stride_b : NULL, os.stride_b,
                        z_in_cache, training && !z_in_cache ? h_states + (t * B + b0) * H : NULL,
                        rec_mask ? rec_mask + b0 * H : NULL,
                        rec_mask ? hd_buf[(t + 1) & 1] + b0 * H : NULL, j0, j1);
                    /* split by units: h_t needs every thread's units before the next step */
                    if (!split.by_rows && frnn_team_size() > 1
                        && frnn_step_barrier_stops(&step_barrier, frnn_team_size(), &side, t + 1))
                        break;
                }
            }
            t_from = frnn_step_barrier_resume(&step_barrier, t1);
        }
    }
    if (T & 1) memcpy(h_n, h_alt, (size_t)(B * H) * sizeof(REAL)); /* h_T landed in h_alt */
done:
    frnn_free(h_alt);
    frnn_free(h_dropped);
    frnn_free(packed);
    frnn_free(packed_bias);
    if (!z_in_cache) frnn_free(z_buf);
    if (!training) {
        frnn_free(x_buf);
        frnn_free(mask_tm);
    }
    return status;
}

/* Backward pointwise pass of one step for units [j0, j1) of every batch row:
 * dz = dh * a'(h_t) on valid rows (then dh = 0, the recurrent product adds dz U^T);
 * masked rows get dz = 0 and pass dh through.  h_t, dh (B,H); dz (B,H) row stride ldz.
 * Prefetching the next step's h_t and dout rows into L2 before each step's product
 * measured 0.98-0.99 for the backward alone and 0.97-1.03 for training (Zen 3, A/B in one
 * process, 2026-12-03, B=32-128, H=128-512): the hardware prefetchers follow these rows. */
FRNN_CLONES static void SFX(rnn_step_backward_pointwise)(
    const frnn_dims *d, const REAL *FRNN_RESTRICT h_t, const uint8_t *mask_t, const REAL *dout,
    ptrdiff_t dout_stride_b, REAL *FRNN_RESTRICT dh, REAL *FRNN_RESTRICT dz, ptrdiff_t ldz,
    ptrdiff_t j0, ptrdiff_t j1) {
    const ptrdiff_t B = d->batch, H = d->units, n = j1 - j0;
    const size_t bytes = (size_t)n * sizeof(REAL);
    for (ptrdiff_t b = 0; b < B; ++b) {
        REAL *FRNN_RESTRICT dhb = dh + b * H + j0;
        REAL *FRNN_RESTRICT dzb = dz + b * ldz + j0;
        const int masked = mask_t && !mask_t[b];
        if (!masked && d->activation == FRNN_ACT_TANH) { /* the usual case: one pass */
            const REAL *FRNN_RESTRICT hb = h_t + b * H + j0;
            const REAL *FRNN_RESTRICT db = dout ? dout + b * dout_stride_b + j0 : NULL;
            for (ptrdiff_t j = 0; j < n; ++j) {
                dzb[j] = (db ? dhb[j] + db[j] : dhb[j]) * ((REAL)1 - hb[j] * hb[j]);
                dhb[j] = 0;
            }
            continue;
        }
        if (dout && !(masked && d->zero_output_for_mask)) {
            const REAL *db = dout + b * dout_stride_b + j0;
            for (ptrdiff_t j = 0; j < n; ++j) dhb[j] += db[j];
        }
        if (masked) {
            memset(dzb, 0, bytes);
            continue;
        }
        memcpy(dzb, dhb, bytes);
        memset(dhb, 0, bytes);
        ACTIVATION_GRAD(d->activation, h_t + b * H + j0, dzb, n);
    }
}

/* Backward of one step (T = 1) from torch's rows (d->weight_rows), without recurrent
 * dropout: the pointwise pass gives dz (B, H), then dh0 += dz weight_hh, dx = dz weight_ih
 * and the gradients in torch's layout (d_kernel (H, I), d_recurrent (H, H), d_bias (H,),
 * the summed bias's) straight from dz (direct_step.h).  Arguments as for
 * frnn_rnn_backward. */
static int SFX(rnn_direct_step_backward)(const frnn_dims *d, const REAL *kernel,
                                         const REAL *recurrent, const REAL *h0,
                                         const REAL *x_cache, const REAL *h_states,
                                         const uint8_t *mask_cache, const REAL *d_outputs,
                                         frnn_seq_strides dos, const REAL *d_h_n, REAL *dx,
                                         frnn_seq_strides dxs, REAL *d_kernel,
                                         REAL *d_recurrent, REAL *d_bias, REAL *d_h0) {
    const ptrdiff_t B = d->batch, I = d->input_size, H = d->units;
    int status = FRNN_OK;
    REAL *dz = frnn_alloc((size_t)(B * H), sizeof(REAL));
    REAL *dz_t = frnn_alloc((size_t)(B * H), sizeof(REAL));
    if (!dz || !dz_t) {
        status = FRNN_ENOMEM;
        goto done;
    }
    if (d_h_n) memcpy(d_h0, d_h_n, (size_t)(B * H) * sizeof(REAL));
    else memset(d_h0, 0, (size_t)(B * H) * sizeof(REAL));
    SFX(rnn_step_backward_pointwise)(d, h_states, mask_cache, d_outputs, dos.stride_b, d_h0, dz,
                                     H, 0, H);
    const REAL *blocks[1] = {dz};
    const ptrdiff_t ld[1] = {H};
    SFX(direct_step_backward_products)(B, I, H, 1, SFX(same_gate_rows), blocks, ld, blocks, ld,
                                       kernel, recurrent, x_cache, h0, dx, dxs.stride_b,
                                       d_kernel, d_recurrent, d_bias, NULL,
                                       frnn_initial_gradient(d, h0) ? d_h0 : NULL, dz_t);
done:
    frnn_free(dz);
    frnn_free(dz_t);
    return status;
}

int SFX(frnn_rnn_backward)(const frnn_blas *blas, const frnn_dims *d,
                           const REAL *kernel, const REAL *recurrent, const REAL *h0,
                           const REAL *x_cache, const REAL *h_states, const uint8_t *mask_cache,
                           const REAL *rec_mask, const REAL *d_outputs, frnn_seq_strides dos, const REAL *d_h_n,
                           REAL *dx, frnn_seq_strides dxs,
                           REAL *d_kernel, REAL *d_recurrent, REAL *d_bias, REAL *d_h0) {
    int status = frnn_check_dims(d, 1);
    if (status) return status;
    const ptrdiff_t B = d->batch, T = d->steps, I = d->input_size, H = d->units;
    if (d->weight_rows && T == 1 && B > 0 && !rec_mask && frnn_direct_step(B, 1))
        return SFX(rnn_direct_step_backward)(d, kernel, recurrent, h0, x_cache, h_states,
                                             mask_cache, d_outputs, dos, d_h_n, dx, dxs,
                                             d_kernel, d_recurrent, d_bias, d_h0);
    /* torch's layout is read where the weights are packed or multiplied, and the weight
     * gradients are written in it */
    const int w_rows = d->weight_rows;
    const int *gate_rows = w_rows ? SFX(same_gate_rows) : NULL;
    const ptrdiff_t ldk = w_rows ? I : H; /* kernel's row stride */
    SFX(backward_prologue)(d, H, H, d_h_n, d_h0, d_kernel, d_recurrent, d_bias);
    if (T == 0 || B == 0) return FRNN_OK;

    /* dz of every step, rows ldz apart (frnn_spread_stride: the transposed tiles read
     * many rows at once) */
    const ptrdiff_t ldz = frnn_spread_stride(H, sizeof(REAL));
    REAL *dz = frnn_alloc((size_t)(T * B * ldz), sizeof(REAL));
    const ptrdiff_t nb = SFX(unit_blocks)(H), nbx = SFX(unit_blocks)(I);
    const int use_tiles = !frnn_use_blas_steps(B, B * H * H);
    const frnn_split split = frnn_pick_split(B, nb, B * H * H,
                                             frnn_row_split_min_rows(H, 1, sizeof(REAL)),
                                             FRNN_PARALLEL_MIN_MACS);
    const int nt = use_tiles ? split.threads : 1;
    /* dx_t = dz_t W^T in the time loop while dz_t is in cache, or one GEMM after it */
    const int fuse_dx =
        dx && use_tiles && frnn_fuses_input_gradient(B, nt, split, I, H, 1, sizeof(REAL));
    const int zigzag =
        frnn_zigzag_blocks((double)H * (H + (fuse_dx ? I : 0)) * sizeof(REAL), split);
    REAL *dx_tm = dx && !fuse_dx ? frnn_alloc((size_t)(T * B * I), sizeof(REAL)) : NULL;
    REAL *packed_wt = fuse_dx ? frnn_alloc((size_t)(nbx * H * VW), sizeof(REAL)) : NULL;
    REAL *zeros = fuse_dx ? frnn_alloc((size_t)(nbx * VW), sizeof(REAL)) : NULL;
    /* recurrent dropout: per-step scratch, and h_{t-1}*m for all steps (for dU) */
    REAL *dh_step = rec_mask ? frnn_alloc((size_t)(B * H), sizeof(REAL)) : NULL;
    REAL *hp_dropped = rec_mask ? frnn_alloc((size_t)(T * B * H), sizeof(REAL)) : NULL;
    REAL *packed_t = use_tiles ? frnn_alloc((size_t)(nb * H * VW), sizeof(REAL)) : NULL;
    if (!dz || (dx && !fuse_dx && !dx_tm) || (fuse_dx && (!packed_wt || !zeros))
        || (rec_mask && (!dh_step || !hp_dropped)) || (use_tiles && !packed_t)) {
        status = FRNN_ENOMEM;
        goto done;
    }
    if (packed_t) SFX(pack_recurrent_t)(recurrent, H, H, H, gate_rows, H, packed_t, nt);
    if (fuse_dx) {
        SFX(pack_recurrent_t)(kernel, ldk, I, H, gate_rows, H, packed_wt, nt);
        memset(zeros, 0, (size_t)(nbx * VW) * sizeof(REAL));
    }
    if (packed_t) {
        /* split by units, a team that other programs keep waiting stops (csrc/internal.h's
         * frnn_step_barrier) and the rest of the steps run on one thread */
        int loop_threads = nt; /* 1 once a team has stopped (frnn_step_barrier) */
        for (ptrdiff_t t_from = T - 1; t_from >= 0; loop_threads = 1) {
            frnn_step_barrier step_barrier;
            frnn_step_barrier_init(&step_barrier);
#pragma omp parallel num_threads(loop_threads) if (loop_threads > 1)
            {
                frnn_barrier_side side = frnn_barrier_side_init();
                const frnn_part p = frnn_thread_part(d, split, nb, VW);
                const ptrdiff_t b0 = p.b0, j0 = p.j0, j1 = p.j1;
                for (ptrdiff_t t = t_from; t >= 0; --t) {
                    REAL *dz_t = dz + (t * B + b0) * ldz;
                    SFX(rnn_step_backward_pointwise)(
                        &p.rows, h_states + (t * B + b0) * H, mask_cache ? mask_cache + t * B + b0 : NULL,
                        d_outputs ? d_outputs + t * dos.stride_t + b0 * dos.stride_b : NULL,
                        dos.stride_b, d_h0 + b0 * H, dz_t, ldz, j0, j1);
                    /* split by units: dh_{t-1} needs every unit of dz_t */
                    const int stop = !split.by_rows && frnn_team_size() > 1
                        && frnn_step_barrier_stops(&step_barrier, frnn_team_size(), &side, t - 1);
                    /* dh_{t-1} += (dz_t U^T) * m for the owned rows and units; the next step
                     * writes dz_{t-1} elsewhere */
                    FRNN_BLOCKS_ZIGZAG(zigzag & t, p.jb0, p.jb1,
                        SFX(recurrent_matmul_t)(packed_t, H, H, p.rows.batch, dz_t, ldz,
                            rec_mask ? rec_mask + b0 * H : NULL, d_h0 + b0 * H, H, zb0, zb1));
                    if (fuse_dx) SFX(step_input_gradient)(d, split, packed_wt, 0, NULL, 0, H, dz_t,
                                                          ldz, p.rows.batch, zeros, t, b0, dx, dxs);
                    if (stop) break;
                }
            }
            t_from = frnn_step_barrier_resume(&step_barrier, -1);
        }
    } else { /* many rows without AVX2: BLAS' GEMM per step, one thread */
        for (ptrdiff_t t = T - 1; t >= 0; --t) {
            REAL *dz_t = dz + t * B * ldz;
            SFX(rnn_step_backward_pointwise)(d, h_states + t * B * H,
                                             mask_cache ? mask_cache + t * B : NULL,
                                             d_outputs ? d_outputs + t * dos.stride_t : NULL,
                                             dos.stride_b, d_h0, dz_t, ldz, 0, H);
            if (rec_mask) { /* dh_{t-1} += m * (dz_t U^T) */
                status = SFX(gemm_rm)(blas, 0, !w_rows, B, H, H, 1, dz_t, ldz, recurrent, H, 0,
                                      dh_step, H);
                for (ptrdiff_t k = 0; k < B * H; ++k) d_h0[k] += rec_mask[k] * dh_step[k];
            } else {
                status = SFX(gemm_rm)(blas, 0, !w_rows, B, H, H, 1, dz_t, ldz, recurrent, H, 1,
                                      d_h0, H);
            }
            if (status) goto done;
        }
    }
    const ptrdiff_t TB = T * B;
    /* d_bias = dz's column sums, taken while the first product reads dz */
    status = SFX(weight_gradient_in_layout)(blas, w_rows, I, H, TB, x_cache, I, dz, ldz, 0,
                                            d_kernel, d_bias);
    if (status) goto done;
    if (rec_mask) { /* dU = sum_t (h_{t-1}*m)^T dz_t */
        for (ptrdiff_t t = 0; t < T; ++t) {
            const REAL *hp = t > 0 ? h_states + (t - 1) * B * H : h0;
            REAL *dst = hp_dropped + t * B * H;
            for (ptrdiff_t k = 0; k < B * H; ++k) dst[k] = hp ? hp[k] * rec_mask[k] : (REAL)0;
        }
        status = SFX(weight_gradient_in_layout)(blas, w_rows, H, H, TB, hp_dropped, H, dz, ldz,
                                                0, d_recurrent, NULL);
        if (status) goto done;
    } else if (T > 1) { /* dU = sum_t h_{t-1}^T dz_t, t >= 1 ... */
        status = SFX(weight_gradient_in_layout)(blas, w_rows, H, H, (T - 1) * B, h_states, H,
                                                dz + B * ldz, ldz, 0, d_recurrent, NULL);
        if (status) goto done;
    }
    if (h0 && !rec_mask) { /* ... plus the t = 0 term */
        status = SFX(weight_gradient_in_layout)(blas, w_rows, H, H, B, h0, H, dz, ldz, 1,
                                                d_recurrent, NULL);
        if (status) goto done;
    }
    if (dx && !fuse_dx) {
        status = SFX(gemm_rm)(blas, 0, !w_rows, TB, I, H, 1, dz, ldz, kernel, ldk, 0, dx_tm, I);
        if (status) goto done;
        SFX(scatter_dx)(d, dx_tm, dx, dxs);
    }
done:
    frnn_free(dz);
    frnn_free(dx_tm);
    frnn_free(packed_wt);
    frnn_free(zeros);
    frnn_free(dh_step);
    frnn_free(hp_dropped);
    frnn_free(packed_t);
    return status;
}
