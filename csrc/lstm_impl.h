/* LSTM forward and BPTT for one precision.  Included by lstm.c with REAL, SFX(name),
 * GEMM, ACTIVATE, ACTIVATION_GRAD and the one-element SIGMOID1, TANH1 defined (and
 * real_impl.h, recurrent_matmul.h before).
 * See fusedrnn.h for the argument contract.
 *
 * Forward: one BLAS GEMM projects the input of many steps at once (bias included); then
 * per step each thread, owning a range of unit blocks, adds h_{t-1} U for its units'
 * four gates (input_recurrent_matmul_g4 over U packed once) and runs the fused pointwise
 * pass for the same units; the threads meet at one barrier per step.  With enough rows
 * (frnn_lstm_fuses_input) there is no projection pass: W and U are packed together
 * and each step's tile computes bias + x_t W + h_{t-1} U at once, into one step's buffer
 * that stays in cache (training writes the activated gates to its cache from there:
 * 1.01-1.10x over tiles storing into the cold cache and activating it in place).  h is
 * double-buffered so nobody overwrites the h_{t-1} another thread is still reading.
 * Backward: per step the fused gate-gradient pass for the owned units, a barrier, then
 * dh_{t-1} += dZ_t U^T for the owned units and, with enough rows, dx_t = dZ_t W^T while
 * dZ_t is in cache (frnn_fuses_input_gradient); the weight gradients are large BLAS GEMMs
 * after the loop. */

/* Steps of input projection computed at once during inference: bounds the scratch to
 * about 4M elements however long the sequence, while keeping the GEMM large. */
#define FRNN_INFER_CHUNK_ELEMS ((ptrdiff_t)1 << 22)

/* The fused cell update for the usual activations over n units of one row: reads the
 * pre-activations zi..zo, updates c in place, writes h, and stores the activated gates
 * i, f, g, o where SAVE_GATES(j) says.  Instantiated as functions whose every array is a
 * restrict parameter: with the pointers declared in the caller's block GCC left the loop
 * that saves the gates elsewhere scalar. */
#define FRNN_LSTM_CELL_LOOP(SAVE_GATES)                                                   \
    for (ptrdiff_t j = 0; j < n; ++j) {                                                 \
        const REAL i = SIGMOID1(zi[j]), f = SIGMOID1(zf[j]);                            \
        const REAL g = TANH1(zg[j]), o = SIGMOID1(zo[j]);                               \
        const REAL cn = f * cb[j] + i * g;                                              \
        SAVE_GATES(j);                                                                  \
        cb[j] = cn;                                                                     \
        hn[j] = o * TANH1(cn);                                                          \
    }
/* gates activated in place */
FRNN_INLINE void SFX(lstm_cell_in_place)(ptrdiff_t n, REAL *FRNN_RESTRICT zi,
                                         REAL *FRNN_RESTRICT zf, REAL *FRNN_RESTRICT zg,
                                         REAL *FRNN_RESTRICT zo, REAL *FRNN_RESTRICT cb,
                                         REAL *FRNN_RESTRICT hn) {
#define FRNN_GATES_IN_PLACE(j) (zi[j] = i, zf[j] = f, zg[j] = g, zo[j] = o)
    FRNN_LSTM_CELL_LOOP(FRNN_GATES_IN_PLACE)
#undef FRNN_GATES_IN_PLACE
}
/* gates into si..so */
FRNN_INLINE void SFX(lstm_cell_saving)(ptrdiff_t n, const REAL *FRNN_RESTRICT zi,
                                       const REAL *FRNN_RESTRICT zf, const REAL *FRNN_RESTRICT zg,
                                       const REAL *FRNN_RESTRICT zo, REAL *FRNN_RESTRICT si,
                                       REAL *FRNN_RESTRICT sf, REAL *FRNN_RESTRICT sg,
                                       REAL *FRNN_RESTRICT so, REAL *FRNN_RESTRICT cb,
                                       REAL *FRNN_RESTRICT hn) {
#define FRNN_GATES_TO_SAVE(j) (si[j] = i, sf[j] = f, sg[j] = g, so[j] = o)
    FRNN_LSTM_CELL_LOOP(FRNN_GATES_TO_SAVE)
#undef FRNN_GATES_TO_SAVE
}
/* gates not kept (inference) */
FRNN_INLINE void SFX(lstm_cell_discarding)(ptrdiff_t n, const REAL *FRNN_RESTRICT zi,
                                           const REAL *FRNN_RESTRICT zf,
                                           const REAL *FRNN_RESTRICT zg,
                                           const REAL *FRNN_RESTRICT zo, REAL *FRNN_RESTRICT cb,
                                           REAL *FRNN_RESTRICT hn) {
    FRNN_LSTM_CELL_LOOP((void))
}
#undef FRNN_LSTM_CELL_LOOP

/* Fused pointwise pass of one step for units [j0, j1) of every batch row.
 *   z       (B,4H): pre-activations of this step.
 *   gates_out (B,4H), z itself, or NULL: where the activated gates go (the training gate
 *     cache; z itself activates in place; inference keeps none).  Otherwise disjoint
 *     from z.
 *   h_prev  (B,H): h_{t-1}, read.  h_next (B,H): h_t, written for units [j0, j1).
 *   c       (B,H): cell state, updated in place.
 *   mask_t  (B,) or NULL.  out: row b at out + b*out_stride_b, or NULL.
 *   c_save, h_save (B,H) or NULL: states after this step, for backward.
 *   rec_mask, h_next_dropped (B,H) or NULL: recurrent dropout; h_next * rec_mask is what
 *     the next step's matmul reads.
 *   scratch (j1-j0,): this thread's temporary. */
FRNN_CLONES static void SFX(lstm_step_pointwise)(
    const frnn_dims *d, REAL *z, REAL *gates_out, const REAL *FRNN_RESTRICT h_prev,
    REAL *FRNN_RESTRICT h_next, REAL *FRNN_RESTRICT c, const uint8_t *mask_t, REAL *out,
    ptrdiff_t out_stride_b, REAL *c_save, REAL *h_save, const REAL *rec_mask,
    REAL *h_next_dropped, REAL *FRNN_RESTRICT scratch, ptrdiff_t j0, ptrdiff_t j1) {
    const ptrdiff_t B = d->batch, H = d->units, n = j1 - j0;
    const size_t bytes = (size_t)n * sizeof(REAL);
    const int sigmoid_tanh =
        d->recurrent_activation == FRNN_ACT_SIGMOID && d->activation == FRNN_ACT_TANH;
    for (ptrdiff_t b = 0; b < B; ++b) {
        const REAL *FRNN_RESTRICT hp = h_prev + b * H + j0;
        REAL *FRNN_RESTRICT hn = h_next + b * H + j0;
        REAL *FRNN_RESTRICT cb = c + b * H + j0;
        REAL *FRNN_RESTRICT ob = out ? out + b * out_stride_b + j0 : NULL;
        if (mask_t && !mask_t[b]) { /* masked: carry the state */
            memcpy(hn, hp, bytes);
            if (ob) {
                if (d->zero_output_for_mask) memset(ob, 0, bytes);
                else memcpy(ob, hp, bytes);
            }
            /* backward never reads a masked row's gates: keep the cache defined anyway */
            if (gates_out && gates_out != z)
                for (int g = 0; g < 4; ++g) memset(gates_out + b * 4 * H + g * H + j0, 0, bytes);
        } else {
            REAL *FRNN_RESTRICT zi = z + b * 4 * H + j0, *FRNN_RESTRICT zf = zi + H;
            REAL *FRNN_RESTRICT zg = zi + 2 * H, *FRNN_RESTRICT zo = zi + 3 * H;
            if (sigmoid_tanh) { /* the usual activations: one pass, each value read once */
                if (gates_out == z) {
                    SFX(lstm_cell_in_place)(n, zi, zf, zg, zo, cb, hn);
                } else if (gates_out) {
                    REAL *si = gates_out + b * 4 * H + j0;
                    SFX(lstm_cell_saving)(n, zi, zf, zg, zo, si, si + H, si + 2 * H, si + 3 * H,
                                          cb, hn);
                } else {
                    SFX(lstm_cell_discarding)(n, zi, zf, zg, zo, cb, hn);
                }
            } else { /* any activations: one pass per activation */
                ACTIVATE(d->recurrent_activation, zi, n);
                ACTIVATE(d->recurrent_activation, zf, n);
                ACTIVATE(d->activation, zg, n);
                ACTIVATE(d->recurrent_activation, zo, n);
                for (ptrdiff_t j = 0; j < n; ++j) {
                    REAL cn = zf[j] * cb[j] + zi[j] * zg[j];
                    cb[j] = cn;
                    scratch[j] = cn;
                }
                ACTIVATE(d->activation, scratch, n);
                for (ptrdiff_t j = 0; j < n; ++j) hn[j] = zo[j] * scratch[j];
                if (gates_out && gates_out != z)
                    for (int g = 0; g < 4; ++g)
                        memcpy(gates_out + b * 4 * H + g * H + j0, zi + g * H, bytes);
            }
            if (ob) memcpy(ob, hn, bytes);
        }
        if (c_save) memcpy(c_save + b * H + j0, cb, bytes);
        if (h_save) memcpy(h_save + b * H + j0, hn, bytes);
        if (rec_mask) {
            const REAL *m = rec_mask + b * H + j0;
            REAL *hd = h_next_dropped + b * H + j0;
            for (ptrdiff_t j = 0; j < n; ++j) hd[j] = hn[j] * m[j];
        }
    }
}

/* One step (T = 1) straight from the weights in either layout (direct_step.h):
 * z = b + x W + h0 U, then the pointwise pass.  h_n and c_n hold h0 and c0 on entry.
 * Training (x_cache non-NULL) writes forward's cache as the loops do: x with masked rows
 * zeroed, the activated gates (z itself), the states and the mask. */
static int SFX(lstm_direct_step)(const frnn_dims *d, const REAL *x, frnn_seq_strides xs,
                                 const REAL *kernel, const REAL *recurrent, const REAL *bias,
                                 const uint8_t *mask, frnn_seq_strides ms, const REAL *h0,
                                 REAL *outputs, frnn_seq_strides os, REAL *h_n, REAL *c_n,
                                 REAL *x_cache, REAL *gates, REAL *c_states, REAL *h_states,
                                 uint8_t *mask_cache) {
    const ptrdiff_t B = d->batch, I = d->input_size, H = d->units, G4 = 4 * H;
    const int training = x_cache != NULL;
    int status;
    uint8_t *mask_t = SFX(first_step_mask)(B, mask, ms, mask_cache, &status);
    REAL *z = training ? gates : frnn_alloc((size_t)(B * G4), sizeof(REAL));
    REAL *h_next = frnn_alloc((size_t)(B * H), sizeof(REAL)); /* h_n is read meanwhile */
    REAL *scratch = frnn_alloc((size_t)H, sizeof(REAL));
    if (status || !z || !h_next || !scratch) {
        status = FRNN_ENOMEM;
        goto done;
    }
    ptrdiff_t ldx;
    const REAL *x_rows = SFX(direct_step_input)(d, x, xs, mask_t, x_cache, &ldx);
    SFX(direct_step_products)(B, I, H, 4, d->weight_rows, SFX(same_gate_rows), x_rows, ldx,
                              kernel, h0, recurrent, z, NULL);
    SFX(add_bias_rows)(B, G4, bias, z);
    SFX(lstm_step_pointwise)(d, z, training ? z : NULL, h_n, h_next, c_n, mask_t, outputs,
                             os.stride_b, c_states, h_states, NULL, NULL, scratch, 0, H);
    memcpy(h_n, h_next, (size_t)(B * H) * sizeof(REAL));
done:
    if (mask_t != mask_cache) frnn_free(mask_t);
    if (!training) frnn_free(z);
    frnn_free(h_next);
    frnn_free(scratch);
    return status;
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
    if (T == 1 && !rec_mask && frnn_direct_step(B, d->weight_rows))
        return SFX(lstm_direct_step)(d, x, xs, kernel, recurrent, bias, mask, ms, h0, outputs,
                                     os, h_n, c_n, x_cache, gates, c_states, h_states,
                                     mask_cache);
    /* torch's layout is read where the weights are packed or multiplied (no transposes) */
    const int w_rows = d->weight_rows;
    const int *gate_rows = w_rows ? SFX(same_gate_rows) : NULL;
    const ptrdiff_t ldu = w_rows ? H : G4; /* recurrent's row stride */

    /* Training projects every step at once into the gate cache; inference works in
     * chunks of steps so its scratch stays bounded (and warm in cache). */
    const int blas_steps = frnn_use_blas_steps(B, B * H * G4);
    /* fused: each step's tile computes bias + x_t W + h_{t-1} U; no projection pass */
    const ptrdiff_t nb = SFX(unit_blocks_fwd)(H);
    const frnn_split split = frnn_pick_split(B, nb, B * H * G4,
                                             frnn_row_split_min_rows(H, 4, sizeof(REAL)),
                                             FRNN_PARALLEL_MIN_MACS);
    const int fuse_input =
        !blas_steps && frnn_lstm_fuses_input(B, split, I, H, sizeof(REAL));
    ptrdiff_t chunk = T;
    if (!training && !fuse_input) { /* fused inference buffers no steps */
        ptrdiff_t per_step = B * (G4 + I);
        chunk = FRNN_INFER_CHUNK_ELEMS / (per_step > 0 ? per_step : 1);
        if (chunk < 1) chunk = 1;
        if (chunk > T) chunk = T;
    }
    const int nt = split.threads;
    int loop_threads = nt; /* 1 once a team has stopped (frnn_step_barrier) */
    const ptrdiff_t packed_rows = fuse_input ? I + H : H;
    const int zigzag =
        frnn_zigzag_blocks(4.0 * H * (H + (fuse_input ? I : 0)) * sizeof(REAL), split);
    REAL *packed = blas_steps ? frnn_alloc(1, sizeof(REAL))
                              : frnn_alloc((size_t)(nb * packed_rows * 4 * VWF), sizeof(REAL));
    REAL *packed_bias = fuse_input ? frnn_alloc((size_t)(nb * 4 * VWF), sizeof(REAL)) : NULL;
    REAL *scratch = frnn_alloc((size_t)(nt * nb * VWF), sizeof(REAL));
    REAL *h_alt = frnn_alloc((size_t)(B * H), sizeof(REAL));
    REAL *h_dropped = rec_mask ? frnn_alloc((size_t)(2 * B * H), sizeof(REAL)) : NULL;
    uint8_t *mask_tm = NULL;
    /* The pre-activations of one step when fused (activated into the gate cache when
     * training: a step's z stays in cache instead of going to memory and back); unfused,
     * training projects every step into the gate cache and activates it in place, and
     * inference projects a chunk of steps at once. */
    const int z_in_cache = training && !fuse_input;
    REAL *z_buf = z_in_cache ? gates
                             : frnn_alloc((size_t)((fuse_input ? 1 : chunk) * B * G4),
                                          sizeof(REAL));
    REAL *x_buf = training ? x_cache
                  : fuse_input ? NULL : frnn_alloc((size_t)(chunk * B * I), sizeof(REAL));
    if (mask) mask_tm = training ? mask_cache : frnn_alloc((size_t)(T * B), 1);
    if (!packed || !scratch || !h_alt || !z_buf || (!x_buf && !fuse_input) || (mask && !mask_tm)
        || (rec_mask && !h_dropped) || (fuse_input && !packed_bias)) {
        status = FRNN_ENOMEM;
        goto done;
    }
    if (fuse_input) SFX(pack_input_recurrent)(kernel, I, recurrent, bias, H, 4, gate_rows, VWF,
                                              packed, packed_bias, nt);
    else if (!blas_steps) SFX(pack_recurrent)(recurrent, ldu, H, 4, gate_rows, VWF, packed, nt);
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
        REAL *z_chunk = z_in_cache ? z_buf + t0 * B * G4 : z_buf;
        if (!fuse_input) {
            SFX(gather_steps)(d, x, xs, t0, t1, x_chunk);
            SFX(zero_masked_rows)(d, mask ? mask_tm : NULL, t0, t1, x_chunk);
            status = SFX(input_projection)(blas, (t1 - t0) * B, I, G4, x_chunk, kernel, w_rows,
                                           bias, z_chunk);
            if (status) goto done;
        }
        if (blas_steps) { /* many rows: BLAS' GEMM beats the tiles; it owns the threads */
            for (ptrdiff_t t = t0; t < t1; ++t) {
                REAL *z_t = z_chunk + (t - t0) * B * G4;
                const REAL *h_prev = h_buf[t & 1];
                status = SFX(gemm_rm)(blas, 0, w_rows, B, G4, H, 1,
                                      rec_mask ? hd_buf[t & 1] : h_prev, H, recurrent, ldu, 1,
                                      z_t, G4);
                if (status) goto done;
                SFX(lstm_step_pointwise)(d, z_t, training ? z_t : NULL, h_prev,
                                         h_buf[(t + 1) & 1], c_n,
                                         mask ? mask_tm + t * B : NULL,
                                         outputs ? outputs + t * os.stride_t : NULL, os.stride_b,
                                         training ? c_states + t * B * H : NULL,
                                         training ? h_states + t * B * H : NULL, rec_mask,
                                         rec_mask ? hd_buf[(t + 1) & 1] : NULL, scratch, 0, H);
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
                const int tid = frnn_thread_id();
                const frnn_part p = frnn_thread_part(d, split, nb, VWF);
                const ptrdiff_t b0 = p.b0, j0 = p.j0, j1 = p.j1;
                REAL *my_scratch = scratch + (ptrdiff_t)tid * nb * VWF;
                for (ptrdiff_t t = t_from; t < t1; ++t) {
                    /* fused, one step's z is reused: each thread rewrites only the rows and
                     * units it reads back itself */
                    REAL *z_t = z_chunk + ((fuse_input ? 0 : t - t0) * B + b0) * G4;
                    REAL *gates_t = !training ? NULL
                                    : z_in_cache ? z_t : gates + (t * B + b0) * G4;
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
                        SFX(input_recurrent_matmul_g4)(packed, fuse_input ? I : 0, x_t, ldx, H,
                            p.rows.batch, h_read, packed_bias, z_t, G4, zb0, zb1));
                    SFX(lstm_step_pointwise)(
                        &p.rows, z_t, gates_t, h_prev, h_buf[(t + 1) & 1] + b0 * H, c_n + b0 * H,
                        mask ? mask_tm + t * B + b0 : NULL,
                        outputs ? outputs + t * os.stride_t + b0 * os.stride_b : NULL, os.stride_b,
                        training ? c_states + (t * B + b0) * H : NULL,
                        training ? h_states + (t * B + b0) * H : NULL,
                        rec_mask ? rec_mask + b0 * H : NULL,
                        rec_mask ? hd_buf[(t + 1) & 1] + b0 * H : NULL, my_scratch, j0, j1);
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
    frnn_free(packed);
    frnn_free(packed_bias);
    frnn_free(scratch);
    frnn_free(h_alt);
    frnn_free(h_dropped);
    if (!z_in_cache) frnn_free(z_buf);
    if (!training) {
        frnn_free(x_buf);
        frnn_free(mask_tm);
    }
    return status;
}

/* Gate gradients of one step for units [j0, j1) of every batch row.
 *   dh, dc (B,H): gradient w.r.t. the state after this step; on return dc holds the
 *     gradient w.r.t. the state before it, and dh only the carried part (rows of masked
 *     steps), zero elsewhere: the recurrent product adds dZ U^T afterwards.
 *   dz (B,4H) row stride ldz: written for the owned units.  tc, dtc (j1-j0,): this
 *     thread's scratch. */
FRNN_CLONES static void SFX(lstm_step_backward_pointwise)(
    const frnn_dims *d, const REAL *FRNN_RESTRICT gates_t, const REAL *FRNN_RESTRICT c_t,
    const REAL *FRNN_RESTRICT c_prev, const uint8_t *mask_t, const REAL *dout,
    ptrdiff_t dout_stride_b, REAL *FRNN_RESTRICT dh, REAL *FRNN_RESTRICT dc,
    REAL *FRNN_RESTRICT dz, ptrdiff_t ldz, REAL *FRNN_RESTRICT tc, REAL *FRNN_RESTRICT dtc,
    ptrdiff_t j0, ptrdiff_t j1) {
    const ptrdiff_t B = d->batch, H = d->units, n = j1 - j0;
    const int sigmoid_tanh =
        d->recurrent_activation == FRNN_ACT_SIGMOID && d->activation == FRNN_ACT_TANH;
    for (ptrdiff_t b = 0; b < B; ++b) {
        REAL *FRNN_RESTRICT dhb = dh + b * H + j0, *FRNN_RESTRICT dcb = dc + b * H + j0;
        REAL *FRNN_RESTRICT dzb = dz + b * ldz;
        const int masked = mask_t && !mask_t[b];
        if (dout && !(masked && d->zero_output_for_mask)) {
            const REAL *db = dout + b * dout_stride_b + j0;
            for (ptrdiff_t j = 0; j < n; ++j) dhb[j] += db[j];
        }
        if (masked) {
            for (int g = 0; g < 4; ++g) memset(dzb + g * H + j0, 0, (size_t)n * sizeof(REAL));
            continue;
        }
        const REAL *FRNN_RESTRICT gb = gates_t + b * 4 * H;
        const REAL *FRNN_RESTRICT gi = gb + j0, *FRNN_RESTRICT gf = gb + H + j0;
        const REAL *FRNN_RESTRICT gg = gb + 2 * H + j0, *FRNN_RESTRICT go = gb + 3 * H + j0;
        const REAL *FRNN_RESTRICT cpb = c_prev ? c_prev + b * H + j0 : NULL;
        REAL *FRNN_RESTRICT dzi = dzb + j0, *FRNN_RESTRICT dzf = dzb + H + j0;
        REAL *FRNN_RESTRICT dzg = dzb + 2 * H + j0, *FRNN_RESTRICT dzo = dzb + 3 * H + j0;
        if (sigmoid_tanh) { /* the usual activations: one pass, each value read once */
            const REAL *FRNN_RESTRICT cb = c_t + b * H + j0;
            for (ptrdiff_t j = 0; j < n; ++j) {
                const REAL i = gi[j], f = gf[j], g = gg[j], o = go[j];
                const REAL a = TANH1(cb[j]); /* a(c_t), recomputed rather than stored */
                dzo[j] = (dhb[j] * a) * (o * ((REAL)1 - o));
                const REAL dct = dcb[j] + (dhb[j] * o) * ((REAL)1 - a * a);
                dzi[j] = (dct * g) * (i * ((REAL)1 - i));
                dzf[j] = cpb ? (dct * cpb[j]) * (f * ((REAL)1 - f)) : (REAL)0;
                dzg[j] = (dct * i) * ((REAL)1 - g * g);
                dcb[j] = dct * f;
                dhb[j] = 0;
            }
            continue;
        }
        memcpy(tc, c_t + b * H + j0, (size_t)n * sizeof(REAL));
        ACTIVATE(d->activation, tc, n); /* a(c_t), recomputed rather than stored */
        for (ptrdiff_t j = 0; j < n; ++j) {
            dzo[j] = dhb[j] * tc[j];
            dtc[j] = dhb[j] * go[j];
        }
        ACTIVATION_GRAD(d->activation, tc, dtc, n);
        for (ptrdiff_t j = 0; j < n; ++j) {
            REAL dct = dcb[j] + dtc[j];
            dzi[j] = dct * gg[j];
            dzf[j] = cpb ? dct * cpb[j] : (REAL)0;
            dzg[j] = dct * gi[j];
            dcb[j] = dct * gf[j];
            dhb[j] = 0;
        }
        ACTIVATION_GRAD(d->recurrent_activation, gi, dzi, n);
        ACTIVATION_GRAD(d->recurrent_activation, gf, dzf, n);
        ACTIVATION_GRAD(d->activation, gg, dzg, n);
        ACTIVATION_GRAD(d->recurrent_activation, go, dzo, n);
    }
}

/* Backward of one step (T = 1) from torch's rows (d->weight_rows), without recurrent
 * dropout: the pointwise pass gives dZ (B, 4H), then dh0 += dZ weight_hh, dx = dZ
 * weight_ih and the gradients in torch's layout (d_kernel (4H, I), d_recurrent (4H, H),
 * d_bias (4H,), the summed bias's) straight from dZ (direct_step.h).  Arguments as for
 * frnn_lstm_backward. */
static int SFX(lstm_direct_step_backward)(const frnn_dims *d, const REAL *kernel,
                                          const REAL *recurrent, const REAL *h0, const REAL *c0,
                                          const REAL *x_cache, const REAL *gates,
                                          const REAL *c_states, const uint8_t *mask_cache,
                                          const REAL *d_outputs, frnn_seq_strides dos,
                                          const REAL *d_h_n, const REAL *d_c_n, REAL *dx,
                                          frnn_seq_strides dxs, REAL *d_kernel,
                                          REAL *d_recurrent, REAL *d_bias, REAL *d_h0,
                                          REAL *d_c0) {
    const ptrdiff_t B = d->batch, I = d->input_size, H = d->units, G4 = 4 * H;
    const size_t state_bytes = (size_t)(B * H) * sizeof(REAL);
    int status = FRNN_OK;
    REAL *dz = frnn_alloc((size_t)(B * G4), sizeof(REAL));
    REAL *dz_t = frnn_alloc((size_t)(B * G4), sizeof(REAL));
    REAL *scratch = frnn_alloc((size_t)(2 * H), sizeof(REAL));
    if (!dz || !dz_t || !scratch) {
        status = FRNN_ENOMEM;
        goto done;
    }
    if (d_h_n) memcpy(d_h0, d_h_n, state_bytes);
    else memset(d_h0, 0, state_bytes);
    if (d_c_n) memcpy(d_c0, d_c_n, state_bytes);
    else memset(d_c0, 0, state_bytes);
    SFX(lstm_step_backward_pointwise)(d, gates, c_states, c0, mask_cache, d_outputs,
                                      dos.stride_b, d_h0, d_c0, dz, G4, scratch, scratch + H, 0,
                                      H);
    const REAL *blocks[4] = {dz, dz + H, dz + 2 * H, dz + 3 * H};
    const ptrdiff_t ld[4] = {G4, G4, G4, G4};
    SFX(direct_step_backward_products)(B, I, H, 4, SFX(same_gate_rows), blocks, ld, blocks, ld,
                                       kernel, recurrent, x_cache, h0, dx, dxs.stride_b,
                                       d_kernel, d_recurrent, d_bias, NULL,
                                       frnn_initial_gradient(d, h0) ? d_h0 : NULL, dz_t);
done:
    frnn_free(dz);
    frnn_free(dz_t);
    frnn_free(scratch);
    return status;
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
    if (d->weight_rows && T == 1 && B > 0 && !rec_mask && frnn_direct_step(B, 1))
        return SFX(lstm_direct_step_backward)(d, kernel, recurrent, h0, c0, x_cache, gates,
                                              c_states, mask_cache, d_outputs, dos, d_h_n,
                                              d_c_n, dx, dxs, d_kernel, d_recurrent, d_bias,
                                              d_h0, d_c0);
    /* torch's layout (same gate order) is read where the weights are packed or multiplied,
     * and the weight gradients are written in it */
    const int w_rows = d->weight_rows;
    const int *gate_rows = w_rows ? SFX(same_gate_rows) : NULL;
    const ptrdiff_t ldk = w_rows ? I : G4, ldu = w_rows ? H : G4; /* row strides */
    SFX(backward_prologue)(d, G4, G4, d_h_n, d_h0, d_kernel, d_recurrent, d_bias);
    if (d_c_n) memcpy(d_c0, d_c_n, (size_t)(B * H) * sizeof(REAL));
    else memset(d_c0, 0, (size_t)(B * H) * sizeof(REAL));
    if (T == 0 || B == 0) return FRNN_OK;

    const ptrdiff_t nb = SFX(unit_blocks)(H);
    const frnn_split split = frnn_pick_split(B, nb, B * H * G4,
                                             frnn_row_split_min_rows(H, 4, sizeof(REAL)),
                                             FRNN_PARALLEL_MIN_MACS);
    const int nt = split.threads;
    const int blas_steps = frnn_use_blas_steps(B, B * H * G4);
    /* dZ of every step, rows ldz apart (frnn_spread_stride: the transposed tiles read
     * many rows at once) */
    const ptrdiff_t ldz = frnn_spread_stride(G4, sizeof(REAL));
    REAL *dz = frnn_alloc((size_t)(T * B * ldz), sizeof(REAL));
    /* dx_t = dZ_t W^T in the time loop while dZ_t is in cache, or one GEMM after it */
    const int fuse_dx =
        dx && !blas_steps && frnn_fuses_input_gradient(B, nt, split, I, H, 4, sizeof(REAL));
    const int zigzag =
        frnn_zigzag_blocks(4.0 * H * (H + (fuse_dx ? I : 0)) * sizeof(REAL), split);
    const ptrdiff_t nbx = SFX(unit_blocks)(I);
    REAL *dx_tm = dx && !fuse_dx ? frnn_alloc((size_t)(T * B * I), sizeof(REAL)) : NULL;
    REAL *packed_wt = fuse_dx ? frnn_alloc((size_t)(nbx * G4 * VW), sizeof(REAL)) : NULL;
    REAL *zeros = fuse_dx ? frnn_alloc((size_t)(nbx * VW), sizeof(REAL)) : NULL;
    /* the BLAS path needs dZ_t U^T in a scratch when it is masked by recurrent dropout */
    REAL *packed_t = blas_steps ? frnn_alloc((size_t)(rec_mask ? B * H : 1), sizeof(REAL))
                                : frnn_alloc((size_t)(nb * G4 * VW), sizeof(REAL));
    REAL *scratch = frnn_alloc((size_t)(2 * nt * nb * VW), sizeof(REAL));
    /* with recurrent dropout: h_{t-1} as the recurrent GEMM saw it, for dU */
    REAL *h_prev_dropped = rec_mask ? frnn_alloc((size_t)(T * B * H), sizeof(REAL)) : NULL;
    if (!dz || (dx && !fuse_dx && !dx_tm) || (fuse_dx && (!packed_wt || !zeros)) || !packed_t
        || !scratch || (rec_mask && !h_prev_dropped)) {
        status = FRNN_ENOMEM;
        goto done;
    }
    if (blas_steps) {
        for (ptrdiff_t t = T - 1; t >= 0; --t) {
            const REAL *c_prev = t > 0 ? c_states + (t - 1) * B * H : c0;
            REAL *dz_t = dz + t * B * ldz;
            SFX(lstm_step_backward_pointwise)(d, gates + t * B * G4, c_states + t * B * H, c_prev,
                                              mask_cache ? mask_cache + t * B : NULL,
                                              d_outputs ? d_outputs + t * dos.stride_t : NULL,
                                              dos.stride_b, d_h0, d_c0, dz_t, ldz, scratch,
                                              scratch + nb * VW, 0, H);
            if (rec_mask) {
                status = SFX(gemm_rm)(blas, 0, !w_rows, B, H, G4, 1, dz_t, ldz, recurrent, ldu,
                                      0, packed_t, H);
                for (ptrdiff_t k = 0; k < B * H; ++k) d_h0[k] += packed_t[k] * rec_mask[k];
            } else {
                status = SFX(gemm_rm)(blas, 0, !w_rows, B, H, G4, 1, dz_t, ldz, recurrent, ldu,
                                      1, d_h0, H);
            }
            if (status) goto done;
        }
        goto weights;
    }
    SFX(pack_recurrent_t)(recurrent, ldu, H, G4, gate_rows, H, packed_t, nt);
    if (fuse_dx) {
        SFX(pack_recurrent_t)(kernel, ldk, I, G4, gate_rows, H, packed_wt, nt);
        memset(zeros, 0, (size_t)(nbx * VW) * sizeof(REAL));
    }

    /* split by units, a team that other programs keep waiting stops (csrc/internal.h's
     * frnn_step_barrier) and the rest of the steps run on one thread */
    int loop_threads = nt; /* 1 once a team has stopped (frnn_step_barrier) */
    for (ptrdiff_t t_from = T - 1; t_from >= 0; loop_threads = 1) {
        frnn_step_barrier step_barrier;
        frnn_step_barrier_init(&step_barrier);
#pragma omp parallel num_threads(loop_threads) if (loop_threads > 1)
        {
            frnn_barrier_side side = frnn_barrier_side_init();
            const int tid = frnn_thread_id();
            const frnn_part p = frnn_thread_part(d, split, nb, VW);
            const ptrdiff_t b0 = p.b0, j0 = p.j0, j1 = p.j1;
            REAL *tc = scratch + (ptrdiff_t)(2 * tid) * nb * VW, *dtc = tc + nb * VW;
            for (ptrdiff_t t = t_from; t >= 0; --t) {
                const REAL *c_prev = t > 0 ? c_states + ((t - 1) * B + b0) * H
                                     : c0 ? c0 + b0 * H : NULL;
                REAL *dz_t = dz + (t * B + b0) * ldz;
                SFX(lstm_step_backward_pointwise)(
                    &p.rows, gates + (t * B + b0) * G4, c_states + (t * B + b0) * H, c_prev,
                    mask_cache ? mask_cache + t * B + b0 : NULL,
                    d_outputs ? d_outputs + t * dos.stride_t + b0 * dos.stride_b : NULL,
                    dos.stride_b, d_h0 + b0 * H, d_c0 + b0 * H, dz_t, ldz, tc, dtc, j0, j1);
                /* split by units: dh_{t-1} needs every column of dZ_t */
                const int stop = !split.by_rows && frnn_team_size() > 1
                    && frnn_step_barrier_stops(&step_barrier, frnn_team_size(), &side, t - 1);
                /* dh_{t-1} += (dZ_t U^T) * rec_mask for the owned rows and units; the next step
                 * writes dZ_{t-1} elsewhere. */
                FRNN_BLOCKS_ZIGZAG(zigzag & t, p.jb0, p.jb1,
                    SFX(recurrent_matmul_t)(packed_t, H, G4, p.rows.batch, dz_t, ldz,
                        rec_mask ? rec_mask + b0 * H : NULL, d_h0 + b0 * H, H, zb0, zb1));
                if (fuse_dx) SFX(step_input_gradient)(d, split, packed_wt, 0, NULL, 0, G4, dz_t,
                                                      ldz, p.rows.batch, zeros, t, b0, dx, dxs);
                if (stop) break;
            }
        }
        t_from = frnn_step_barrier_resume(&step_barrier, -1);
    }

weights:
    /* Weight gradients: a few large GEMMs over all T*B rows. */
    ;
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
    /* d_bias = dZ's column sums, taken while the first product reads dZ */
    status = SFX(weight_gradient_in_layout)(blas, w_rows, I, G4, T * B, x_cache, I, dz, ldz, 0,
                                            d_kernel, d_bias);
    if (status) goto done;
    if (T > 1) { /* dU = sum_t h_{t-1}^T dZ_t over t >= 1 ... */
        status = SFX(weight_gradient_in_layout)(blas, w_rows, H, G4, (T - 1) * B,
                                                h_prev_from_step1, H, dz + B * ldz, ldz, 0,
                                                d_recurrent, NULL);
        if (status) goto done;
    }
    if (h0) { /* ... plus the t = 0 term */
        status = SFX(weight_gradient_in_layout)(blas, w_rows, H, G4, B, h0_used, H, dz, ldz, 1,
                                                d_recurrent, NULL);
        if (status) goto done;
    }
    if (dx && !fuse_dx) {
        status = SFX(gemm_rm)(blas, 0, !w_rows, T * B, I, G4, 1, dz, ldz, kernel, ldk, 0, dx_tm,
                              I);
        if (status) goto done;
        SFX(scatter_dx)(d, dx_tm, dx, dxs);
    }
done:
    frnn_free(dz);
    frnn_free(dx_tm);
    frnn_free(packed_wt);
    frnn_free(zeros);
    frnn_free(packed_t);
    frnn_free(scratch);
    frnn_free(h_prev_dropped);
    return status;
}
