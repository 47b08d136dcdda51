"""Every per-step product path of every cell agrees with the reference: the packed tiles
(AVX2+FMA micro-kernels where the CPU has them, with or without their AVX-512VL variant,
and the generic C tiles, forced), the BLAS
GEMM per step (forced: on AVX2 CPUs the tiles are always chosen), each with the time loop
on one thread, split over two threads by batch rows, and split by units (the splits forced
from the smallest size); and with the weights in Keras' layout or in torch's
(weight_layout="torch", which the LSTM and SimpleRNN pack and multiply without a
conversion)."""
import contextlib

import numpy as np
import pytest

import fusedrnn
from fusedrnn import _kernels, ops, reference

# (batch, units): remainder rows for every tile height (1..6 rows) and a partial last unit
# block; 32 rows with little work; 32 x 128 units; 9-11 rows, which leave 1-3 rows after
# an 8-row tile (the 512-bit tiles, also on pairs of unit blocks, 20 units: a partial
# second block).
SHAPES = [(7, 37), (32, 20), (32, 128), (9, 20), (10, 37), (11, 20)]
CELLS = {
    "lstm": (4, ops.lstm_forward, ops.lstm_backward, reference.lstm_forward, reference.lstm_backward, {}),
    "gru": (3, ops.gru_forward, ops.gru_backward, reference.gru_forward, reference.gru_backward,
            {"reset_after": True}),
    # reset_after=False multiplies Uh by r*h: its products run gate block by gate block
    "gru_reset_before": (3, ops.gru_forward, ops.gru_backward, reference.gru_forward,
                         reference.gru_backward, {"reset_after": False}),
    "simple_rnn": (1, ops.simple_rnn_forward, ops.simple_rnn_backward, reference.simple_rnn_forward,
                   reference.simple_rnn_backward, {}),
}
# name -> set_path_overrides arguments
PATHS = {
    "tiles": dict(simd=-1, blas_steps=0),
    # AVX2 only: without the AVX-512VL variant of the LSTM forward tiles (4-row tails)
    "avx2_tiles": dict(simd=1, blas_steps=0),
    "generic_tiles": dict(simd=0, blas_steps=0),
    "blas_steps": dict(simd=-1, blas_steps=1),
}


# torch's row block of each of Keras' gate blocks, for weight_layout="torch": the loops
# pack and multiply straight from torch's rows (the GRU's with BLAS products per step
# convert them in C)
GATE_ROWS = {"lstm": (0, 1, 2, 3), "gru": (1, 0, 2), "gru_reset_before": (1, 0, 2),
             "simple_rnn": (0,)}
LAYOUTS = ["keras", "torch"]


def weights_in_layout(layout, cell, kernel, recurrent, bias=None):
    """(kernel, recurrent_kernel, bias) from Keras' layout into `layout`: torch's is
    weight_ih (G*units, features), weight_hh (G*units, units) in its gate order."""
    if layout == "keras":
        return kernel, recurrent, bias
    units, order = recurrent.shape[0], GATE_ROWS[cell]

    def rows(matrix):
        out = np.empty((matrix.shape[1], matrix.shape[0]), matrix.dtype)
        for keras_block, torch_block in enumerate(order):
            out[torch_block * units:(torch_block + 1) * units] = (
                matrix[:, keras_block * units:(keras_block + 1) * units].T)
        return out
    return rows(kernel), rows(recurrent), None if bias is None else reorder_gates(bias, units,
                                                                                  order)


def reorder_gates(bias, units, order, to_torch=True):
    """A bias's gate blocks (last axis) from Keras' order to torch's, or back."""
    out = np.empty_like(bias)
    for keras_block, torch_block in enumerate(order):
        keras, torch = (slice(b * units, (b + 1) * units) for b in (keras_block, torch_block))
        out[..., torch if to_torch else keras] = bias[..., keras if to_torch else torch]
    return out


def keras_gradients(layout, cell, grads):
    """A backward's gradients with the weight and bias gradients in Keras' layout."""
    if layout == "keras":
        return grads
    units, order = grads.recurrent_kernel.shape[1], GATE_ROWS[cell]

    def columns(rows):
        return np.concatenate([rows[t * units:(t + 1) * units].T for t in order], axis=1)
    bias = None if grads.bias is None else reorder_gates(grads.bias, units, order, False)
    return grads._replace(kernel=columns(grads.kernel),
                          recurrent_kernel=columns(grads.recurrent_kernel), bias=bias)


# name -> (threads, split_by): one thread; two threads each running the loop for its own
# batch rows; two threads owning units of every row, meeting at a barrier per step
THREADING = {"one_thread": (1, -1), "split_rows": (2, 1), "split_units": (2, 0)}


@contextlib.contextmanager
def kernel_paths(split_min_macs=-1, split_by=-1, **choice):
    previous = _kernels.set_path_overrides(split_min_macs=split_min_macs, split_by=split_by,
                                           **choice)
    try:
        yield
    finally:
        _kernels.set_path_overrides(*previous)


def masked_problem(rng, cell, batch, steps, features, units, dtype):
    """Random (x, kernel, recurrent_kernel, bias, d_outputs) in dtype and the forward's
    keyword arguments (the cell's options, a mask, training) for a cell of CELLS."""
    gates, *_, extra = CELLS[cell]
    x = rng.standard_normal((batch, steps, features))
    kernel = rng.standard_normal((features, gates * units)) * 0.3
    recurrent = rng.standard_normal((units, gates * units)) * 0.3
    bias = rng.standard_normal((2, gates * units) if cell == "gru" else (gates * units,))
    mask = rng.random((batch, steps)) > 0.25
    d_out = rng.standard_normal((batch, steps, units))
    arrays = [a.astype(dtype) for a in (x, kernel, recurrent, bias, d_out)]
    return arrays, dict(extra, mask=mask, training=True)


def dropout_problem(rng, cell, batch, steps, features, units, dtype):
    """Random (x, kernel, recurrent_kernel, recurrent dropout mask, d_outputs) in dtype and
    a step mask, for a cell of CELLS (GRU: one dropout mask per gate block)."""
    gates = CELLS[cell][0]
    x = rng.standard_normal((batch, steps, features))
    kernel = rng.standard_normal((features, gates * units)) * 0.3
    recurrent = rng.standard_normal((units, gates * units)) * 0.3
    mask_shape = (3, batch, units) if cell.startswith("gru") else (batch, units)
    drop = (rng.random(mask_shape) > 0.3) / 0.7
    mask = rng.random((batch, steps)) > 0.25
    d_out = rng.standard_normal((batch, steps, units))
    return [a.astype(dtype) for a in (x, kernel, recurrent, drop, d_out)], mask


def test_this_machine_reports_its_simd_path():
    assert isinstance(_kernels.cpu_has_avx2_fma(), bool)
    assert isinstance(_kernels.cpu_has_avx512vl(), bool)
    assert _kernels.cpu_has_avx2_fma() or not _kernels.cpu_has_avx512vl()


@pytest.mark.parametrize("batch", [4, 7, 16])
def test_lstm_forward_tail_rows_take_the_avx512vl_tile(rng, batch):
    """With AVX-512VL the LSTM forward runs 4-row tiles and takes the rows the AVX2 3-row
    tiles leave over in a taller tile (csrc/recurrent_matmul.h).  A row's sum runs in the
    same order in every tile height but 1, so all rows but the last are bitwise those of
    the AVX2 tiles, everything agrees with the reference, and the AVX2 1-row tile's two
    partial sums make the last row differ in its last bits, which shows the variant ran."""
    if not _kernels.cpu_has_avx512vl():
        pytest.skip("no AVX-512VL on this CPU: the AVX2 tiles run (test_paths_match_reference)")
    arrays, _ = masked_problem(rng, "lstm", batch, 6, 3, 40, np.float32)
    with fusedrnn.threads(1):
        with kernel_paths(simd=1, fuse_input=1):
            avx2 = ops.lstm_forward(*arrays[:4]).outputs
        with kernel_paths(simd=2, fuse_input=1):
            vl = ops.lstm_forward(*arrays[:4]).outputs
    want = reference.lstm_forward(*(a.astype(np.float64) for a in arrays[:4])).outputs
    np.testing.assert_array_equal(vl[:-1], avx2[:-1])
    np.testing.assert_allclose(vl, want, rtol=2e-5, atol=2e-5)
    assert not np.array_equal(vl[-1], avx2[-1])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("threading", sorted(THREADING))
@pytest.mark.parametrize("batch,units", SHAPES)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_paths_match_reference(rng, cell, batch, units, threading, path, dtype, layout):
    _, fwd, bwd, ref_fwd, ref_bwd, _ = CELLS[cell]
    arrays, kwargs = masked_problem(rng, cell, batch, 5, 3, units, dtype)
    threads, split_by = THREADING[threading]
    with fusedrnn.threads(threads), kernel_paths(split_min_macs=0, split_by=split_by,
                                                 **PATHS[path]):
        got = fwd(arrays[0], *weights_in_layout(layout, cell, *arrays[1:4]),
                  weight_layout=layout, **kwargs)
        got_grads = keras_gradients(layout, cell, bwd(got.cache, arrays[4]))
    # the reference in float64 on the same (rounded) inputs
    want = ref_fwd(*(a.astype(np.float64) for a in arrays[:4]), **kwargs)
    want_grads = ref_bwd(want.cache, arrays[4].astype(np.float64))
    tol = 1e-10 if dtype == np.float64 else 2e-4
    assert got.outputs.dtype == dtype
    np.testing.assert_allclose(got.outputs, want.outputs, rtol=tol, atol=tol)
    for name in ("x", "kernel", "recurrent_kernel", "bias"):
        np.testing.assert_allclose(getattr(got_grads, name), getattr(want_grads, name),
                                   rtol=tol, atol=tol * 10, err_msg=name)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_unit_split_with_every_meeting_asleep_matches_reference(rng, cell):
    """The per-step barrier's sleeping side (csrc/internal.h: a thread that spun too long
    sleeps on a futex, the meeting's last arriver wakes it), which only contention reaches
    otherwise: with no spinning every early arriver sleeps, at every meeting of 60 steps of
    forward and backward, GRU's two and three per step included."""
    _, fwd, bwd, ref_fwd, ref_bwd, _ = CELLS[cell]
    arrays, kwargs = masked_problem(rng, cell, 2, 60, 3, 37, np.float64)
    previous_spins = _kernels.set_barrier_spins(0)
    previous_rule = _kernels.set_team_stop_rule(0)  # every meeting, not only until a stop
    try:
        with fusedrnn.threads(2), kernel_paths(split_min_macs=0, split_by=0):
            got = fwd(*arrays[:4], **kwargs)
            got_grads = bwd(got.cache, arrays[4])
    finally:
        _kernels.set_barrier_spins(previous_spins)
        _kernels.set_team_stop_rule(previous_rule)
    assert _kernels.set_barrier_spins(-1) == previous_spins  # restored, then the default
    want = ref_fwd(*arrays[:4], **kwargs)
    want_grads = ref_bwd(want.cache, arrays[4])
    np.testing.assert_allclose(got.outputs, want.outputs, rtol=1e-10, atol=1e-10)
    for name in ("x", "kernel", "recurrent_kernel", "bias"):
        np.testing.assert_allclose(getattr(got_grads, name), getattr(want_grads, name),
                                   rtol=1e-9, atol=1e-9, err_msg=name)


@contextlib.contextmanager
def team_stop_rule(rule):
    previous = _kernels.set_team_stop_rule(rule)
    try:
        yield
    finally:
        _kernels.set_team_stop_rule(previous)


@pytest.mark.parametrize("dropout", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_unit_split_that_stops_gives_the_split_results_bitwise(rng, cell, dtype, dropout):
    """A team split by units that stops meeting (csrc/internal.h's frnn_step_barrier: its
    partner kept it waiting) finishes the loop on one thread from the next step, forward
    and backward, GRU's gate-by-gate loops included (reset_after=False, recurrent dropout).
    Forced here at the 1st, 17th, last and a never-reached step, and left to the automatic
    rule with every wait asleep: every result is bitwise the split loop's, whose units each
    thread computes as one thread would."""
    _, fwd, bwd, *_, extra = CELLS[cell]
    steps, units = 40, 37
    if dropout:
        (x, kernel, recurrent, drop, d_out), mask = dropout_problem(rng, cell, 3, steps, 5,
                                                                    units, dtype)
        inputs = (x, kernel, recurrent)
        kwargs = dict(extra, mask=mask, training=True, recurrent_dropout_mask=drop)
    else:
        arrays, kwargs = masked_problem(rng, cell, 3, steps, 5, units, dtype)
        inputs, d_out = arrays[:4], arrays[4]
    results, stops = {}, {}
    with fusedrnn.threads(2), kernel_paths(split_min_macs=0, split_by=0):
        for rule in (0, 1, 17, steps, steps + 1, "asleep"):
            # "asleep": the automatic rule with every wait asleep, as under contention
            previous_spins = _kernels.set_barrier_spins(0 if rule == "asleep" else -1)
            try:
                with team_stop_rule(-1 if rule == "asleep" else rule):
                    before = _kernels.team_stops()
                    out = fwd(*inputs, **kwargs)
                    results[rule] = (out.outputs, out.h_n, *bwd(out.cache, d_out))
                    stops[rule] = _kernels.team_stops() - before
            finally:
                _kernels.set_barrier_spins(previous_spins)
    # forward and backward each stop once at the 1st step; a never-reached step: never
    assert (stops[0], stops[1], stops[steps + 1]) == (0, 2, 0)
    assert stops[17] >= 1 and stops[steps] >= 1
    for rule in (1, 17, steps, steps + 1, "asleep"):
        for got, want in zip(results[rule], results[0]):
            if want is not None:
                np.testing.assert_array_equal(got, want, err_msg=f"stop rule {rule}")


def test_team_stop_rule_is_set_and_restored():
    previous = _kernels.set_team_stop_rule(5)
    try:
        assert _kernels.set_team_stop_rule(-7) == 5  # below -1: the default
        assert _kernels.set_team_stop_rule(previous) == -1
    finally:
        _kernels.set_team_stop_rule(previous)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("threading", sorted(THREADING))
@pytest.mark.parametrize("batch,units", [(3, 37), (8, 40)])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_recurrent_dropout_on_the_tiles_matches_reference(rng, cell, batch, units, threading,
                                                         dtype):
    """Recurrent dropout runs on the packed tiles, split like the rest: LSTM and SimpleRNN
    double-buffer the dropped-out state h*m with h when the units are split; GRU (one mask
    per gate block) runs its blocks one by one, split by rows."""
    _, fwd, bwd, ref_fwd, ref_bwd, extra = CELLS[cell]
    arrays, mask = dropout_problem(rng, cell, batch, 6, 3, units, dtype)
    threads, split_by = THREADING[threading]
    kwargs = dict(extra, mask=mask, training=True)
    with fusedrnn.threads(threads), kernel_paths(split_min_macs=0, split_by=split_by,
                                                 **PATHS["tiles"]):
        got = fwd(*arrays[:3], recurrent_dropout_mask=arrays[3], **kwargs)
        got_grads = bwd(got.cache, arrays[4])
    want = ref_fwd(*(a.astype(np.float64) for a in arrays[:3]),
                   recurrent_dropout_mask=arrays[3].astype(np.float64), **kwargs)
    want_grads = ref_bwd(want.cache, arrays[4].astype(np.float64))
    tol = 1e-10 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(got.outputs, want.outputs, rtol=tol, atol=tol)
    np.testing.assert_allclose(got.h_n, want.h_n, rtol=tol, atol=tol)
    for name in ("x", "kernel", "recurrent_kernel"):
        np.testing.assert_allclose(getattr(got_grads, name), getattr(want_grads, name),
                                   rtol=tol, atol=tol * 10, err_msg=name)


@pytest.mark.parametrize("batch", [2, 16])
def test_lstm_default_split_across_two_threads(rng, batch):
    """Large steps split across two threads by default: 2 rows (2**21 multiply-adds per
    step) by units, one barrier per step; 16 rows by rows."""
    steps, features, units = 3, 2, 512
    x = rng.standard_normal((batch, steps, features))
    kernel = rng.standard_normal((features, 4 * units)) * 0.1
    recurrent = rng.standard_normal((units, 4 * units)) * 0.05
    d_out = rng.standard_normal((batch, steps, units))
    results = {}
    for threads in (1, 2):
        with fusedrnn.threads(threads):
            out = ops.lstm_forward(x, kernel, recurrent, training=True)
            results[threads] = (out.outputs, ops.lstm_backward(out.cache, d_out))
    want = reference.lstm_forward(x, kernel, recurrent, training=True)
    want_grads = reference.lstm_backward(want.cache, d_out)
    for threads, (outputs, grads) in results.items():
        np.testing.assert_allclose(outputs, want.outputs, rtol=1e-11, atol=1e-11)
        for name in ("x", "kernel", "recurrent_kernel"):
            np.testing.assert_allclose(getattr(grads, name), getattr(want_grads, name),
                                       rtol=1e-10, atol=1e-10, err_msg=f"{name}, {threads} threads")


@pytest.mark.parametrize("fused", [0, 1], ids=["gemm_projection", "fused_tiles"])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_nan_padding_under_the_mask_stays_out_of_every_gradient(rng, cell, fused):
    """Padding under a mask may hold NaN (never read by the cell); it must not reach
    dW = X^T dZ through 0 * NaN, nor the outputs.  Fused, LSTM and SimpleRNN tiles read
    each step's input rows where the caller keeps them, masked or not, and cache them for
    backward with masked rows zeroed."""
    gates, fwd, bwd, _, _, extra = CELLS[cell]
    x = rng.standard_normal((2, 3, 4))
    x[0, 2] = np.nan
    mask = np.array([[True, True, False], [True, True, True]])
    kernel = rng.standard_normal((4, gates * 5))
    recurrent = rng.standard_normal((5, gates * 5))
    with kernel_paths(blas_steps=0, fuse_input=fused):
        inference = fwd(x, kernel, recurrent, mask=mask, **extra)
        out = fwd(x, kernel, recurrent, mask=mask, training=True, **extra)
        grads = bwd(out.cache, np.ones((2, 3, 5)))
    np.testing.assert_array_equal(inference.outputs, out.outputs)
    assert np.isfinite(out.outputs).all() and np.isfinite(out.h_n).all()
    for name in ("kernel", "recurrent_kernel"):
        assert np.isfinite(getattr(grads, name)).all(), name
    assert np.isfinite(grads.x[1]).all() and np.isfinite(grads.x[0, :2]).all()


# name -> set_path_overrides arguments for the input projection of LSTM, SimpleRNN and GRU
INPUT_PATHS = {
    "gemm_projection": dict(fuse_input=0),
    "fused_tiles": dict(fuse_input=1, simd=-1),
    "fused_generic_tiles": dict(fuse_input=1, simd=0),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("path", sorted(INPUT_PATHS))
@pytest.mark.parametrize("threading", sorted(THREADING))
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("batch,features,units", [(1, 1, 1), (7, 3, 37), (16, 67, 9),
                                                  (32, 5, 128)])
@pytest.mark.parametrize("options", [{}, dict(go_backwards=True, zero_output_for_mask=True,
                                             activation="relu")], ids=["default", "options"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cell", ["lstm", "simple_rnn", "gru"])
def test_input_projection_paths_match_reference(rng, cell, batch, features, units, training,
                                                threading, path, dtype, options, layout):
    """LSTM and SimpleRNN either project the input of many steps with one GEMM or add
    x_t W inside each step's tiles (W and U packed together, the bias as the tiles' start);
    GRU inference either uses the GEMM or projects each step's input in its time loop (W
    packed alone, where each thread owns its rows: one thread or split by rows).
    Fused inference reuses one step's pre-activation buffer for every step, so each case
    runs 11 steps with masks, an initial state and recurrent dropout (not for the GRU,
    whose dropout runs the gate-by-gate loop, tested below), with and without bias,
    and once more reversed (go_backwards), zeroing masked outputs, with relu; from Keras'
    and from torch's weight layout; the reversed case takes the input as a time-major
    array's (batch, steps, features) view, whose rows are not contiguous (fused, the tiles
    read them there)."""
    gates, fwd, bwd, ref_fwd, ref_bwd, _ = CELLS[cell]
    steps = 11
    x = rng.standard_normal((batch, steps, features))
    if options:
        x = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)
    kernel = rng.standard_normal((features, gates * units)) * 0.3
    # gain about 1 per step, so float32 rounding is not amplified over the steps
    recurrent = rng.standard_normal((units, gates * units)) * min(0.3, 1 / np.sqrt(units))
    # reset_after: the GRU's input and recurrent biases
    bias = rng.standard_normal((2, gates * units) if cell == "gru" else gates * units)
    state = rng.standard_normal((2, batch, units))
    drop = (rng.random((batch, units)) > 0.3) / 0.7
    mask = rng.random((batch, steps)) > 0.25
    d_out = rng.standard_normal((batch, steps, units))
    arrays = [a.astype(dtype) for a in (x, kernel, recurrent, bias, state, drop, d_out)]
    threads, split_by = THREADING[threading]
    tol = 1e-10 if dtype == np.float64 else 2e-4
    for use_bias in (True, False):
        def run(forward, a, layout="keras"):
            initial = (a[4][0], a[4][1]) if cell == "lstm" else a[4][0]
            weights = weights_in_layout(layout, cell, a[1], a[2], a[3] if use_bias else None)
            return forward(a[0], *weights, initial_state=initial, mask=mask,
                           training=training,
                           recurrent_dropout_mask=None if cell == "gru" else a[5], **options,
                           **({"weight_layout": layout} if layout != "keras" else {}))
        with fusedrnn.threads(threads), kernel_paths(split_min_macs=0, split_by=split_by,
                                                     blas_steps=0, **INPUT_PATHS[path]):
            got = run(fwd, arrays, layout)
            got_grads = (keras_gradients(layout, cell, bwd(got.cache, arrays[6]))
                         if training else None)
        want = run(ref_fwd, [a.astype(np.float64) for a in arrays])
        for name in ("outputs", "h_n", "c_n") if cell == "lstm" else ("outputs", "h_n"):
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=tol,
                                       atol=tol, err_msg=name)
        if training:
            want_grads = ref_bwd(want.cache, arrays[6].astype(np.float64))
            for name in ("x", "kernel", "recurrent_kernel") + (("bias",) if use_bias else ()):
                np.testing.assert_allclose(getattr(got_grads, name), getattr(want_grads, name),
                                           rtol=tol, atol=tol * 10, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("path", ["tiles", "generic_tiles"])
@pytest.mark.parametrize("threading", sorted(THREADING))
@pytest.mark.parametrize("batch,units", [(1, 37), (3, 20), (7, 64)])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("dropout", [False, True], ids=["no_dropout", "dropout"])
def test_gru_gate_by_gate_paths_match_reference(rng, dropout, reset_after, batch, units,
                                                threading, path, dtype):
    """GRU runs its gate blocks one by one when reset_after=False (Uh multiplies r*h) or with
    recurrent dropout (one mask per block), split by rows or by units (then meeting after
    h*m_g, after q and after h each step; backward after dz's z and h blocks and after r's).
    Every such case against the float64 reference, gradients included; reset_after=True
    without dropout (the three-gate tiles) for comparison."""
    steps, features = 9, 3
    x = rng.standard_normal((batch, steps, features))
    kernel = rng.standard_normal((features, 3 * units)) * 0.3
    recurrent = rng.standard_normal((units, 3 * units)) * min(0.3, 1 / np.sqrt(units))
    bias = rng.standard_normal((2, 3 * units) if reset_after else (3 * units,))
    state = rng.standard_normal((batch, units))
    mask = rng.random((batch, steps)) > 0.25
    drop = (rng.random((3, batch, units)) > 0.3) / 0.7
    d_out = rng.standard_normal((batch, steps, units))
    d_h_n = rng.standard_normal((batch, units))
    arrays = [a.astype(dtype) for a in (x, kernel, recurrent, bias, state, drop, d_out, d_h_n)]
    kwargs = dict(reset_after=reset_after, mask=mask, training=True)
    threads, split_by = THREADING[threading]
    with fusedrnn.threads(threads), kernel_paths(split_min_macs=0, split_by=split_by,
                                                 **PATHS[path]):
        got = ops.gru_forward(*arrays[:4], initial_state=arrays[4],
                              recurrent_dropout_mask=arrays[5] if dropout else None, **kwargs)
        got_grads = ops.gru_backward(got.cache, arrays[6], arrays[7])
    want = reference.gru_forward(*(a.astype(np.float64) for a in arrays[:4]),
                                 initial_state=arrays[4].astype(np.float64),
                                 recurrent_dropout_mask=arrays[5].astype(np.float64)
                                 if dropout else None, **kwargs)
    want_grads = reference.gru_backward(want.cache, arrays[6].astype(np.float64),
                                        arrays[7].astype(np.float64))
    tol = 1e-10 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(got.outputs, want.outputs, rtol=tol, atol=tol)
    np.testing.assert_allclose(got.h_n, want.h_n, rtol=tol, atol=tol)
    for name in ("x", "kernel", "recurrent_kernel", "bias", "h0"):
        np.testing.assert_allclose(getattr(got_grads, name), getattr(want_grads, name),
                                   rtol=tol * 10, atol=tol * 10, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fused", [0, 1], ids=["gemm_after_loop", "in_loop"])
@pytest.mark.parametrize("threading", sorted(THREADING))
@pytest.mark.parametrize("features", [1, 17, 67])
@pytest.mark.parametrize("options", [{}, dict(go_backwards=True, dropout=True)],
                         ids=["default", "reversed_dropout"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_input_gradient_paths_match_reference(rng, cell, options, features, threading, fused,
                                              dtype, layout):
    """The input gradient dx_t = dz_t W^T is either one GEMM after the time loop or
    computed in the loop, step by step, on W^T packed like U^T (fused, the default from 16
    rows per thread), written straight to dx's (reversed, under go_backwards) step.  Both,
    split by rows or by units (each thread a share of the input columns), with widths that
    leave a partial last block, masks, and recurrent dropout (GRU's block-by-block loop);
    W^T packed from Keras' columns or from torch's rows."""
    _, fwd, bwd, ref_fwd, ref_bwd, extra = CELLS[cell]
    options = dict(options)
    dropout = options.pop("dropout", False)
    arrays, mask = dropout_problem(rng, cell, 9, 7, features, 19, dtype)
    kwargs = dict(extra, mask=mask, training=True, **options)
    threads, split_by = THREADING[threading]
    with fusedrnn.threads(threads), kernel_paths(split_min_macs=0, split_by=split_by,
                                                 blas_steps=0, fuse_input=fused):
        got = fwd(arrays[0], *weights_in_layout(layout, cell, *arrays[1:3])[:2],
                  recurrent_dropout_mask=arrays[3] if dropout else None, weight_layout=layout,
                  **kwargs)
        got_grads = keras_gradients(layout, cell, bwd(got.cache, arrays[4]))
    want = ref_fwd(*(a.astype(np.float64) for a in arrays[:3]),
                   recurrent_dropout_mask=arrays[3].astype(np.float64) if dropout else None,
                   **kwargs)
    want_grads = ref_bwd(want.cache, arrays[4].astype(np.float64))
    tol = 1e-10 if dtype == np.float64 else 2e-4
    for name in ("x", "kernel", "recurrent_kernel"):
        np.testing.assert_allclose(getattr(got_grads, name), getattr(want_grads, name),
                                   rtol=tol, atol=tol * 10, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("dropout", [False, True], ids=["no_dropout", "dropout"])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_backward_without_input_gradient(rng, cell, dropout, path, dtype):
    """input_gradient=False skips the x gradient's GEMM (for a first layer fed with data):
    x is None and every other gradient is bitwise the one computed with it; the NumPy
    reference takes the same keyword."""
    gates, fwd, bwd, ref_fwd, ref_bwd, extra = CELLS[cell]
    batch, steps, features, units = 5, 6, 3, 21
    x = rng.standard_normal((batch, steps, features))
    kernel = rng.standard_normal((features, gates * units)) * 0.3
    recurrent = rng.standard_normal((units, gates * units)) * 0.3
    bias = rng.standard_normal((2, gates * units) if cell.startswith("gru")
                               and extra["reset_after"] else (gates * units,))
    mask = rng.random((batch, steps)) > 0.25
    drop = (rng.random((batch, units)) > 0.3) / 0.7
    d_out = rng.standard_normal((batch, steps, units))
    arrays = [a.astype(dtype) for a in (x, kernel, recurrent, bias, drop, d_out)]
    kwargs = dict(extra, mask=mask, training=True)
    if dropout:
        kwargs["recurrent_dropout_mask"] = arrays[4]
    with kernel_paths(split_min_macs=0, **PATHS[path]):
        out = fwd(*arrays[:4], **kwargs)
        full = bwd(out.cache, arrays[5])
        partial = bwd(out.cache, arrays[5], input_gradient=False)
    assert full.x is not None and partial.x is None
    for name in full._fields[1:]:
        a, b = getattr(full, name), getattr(partial, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(b, a, err_msg=name)
    want = ref_fwd(*(a.astype(np.float64) for a in arrays[:4]),
                   **{k: (v.astype(np.float64) if k == "recurrent_dropout_mask" else v)
                      for k, v in kwargs.items()})
    assert ref_bwd(want.cache, arrays[5].astype(np.float64), input_gradient=False).x is None
    with pytest.raises(TypeError, match="input_gradient"):
        bwd(out.cache, arrays[5], input_gradient="no")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("steps", [1, 6])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_backward_without_initial_gradient(rng, cell, path, layout, steps, dtype):
    """initial_gradient=False (a state that needs no gradient): h0 (and the LSTM's c0)
    come back None, a single step on torch's layout skipping its product with the
    recurrent weights, and every other gradient is bitwise the one computed with them;
    with the flag set, the h0 gradient is the float64 reference's."""
    gates, fwd, bwd, ref_fwd, ref_bwd, _ = CELLS[cell]
    batch, features, units = 5, 3, 21
    arrays, kwargs = masked_problem(rng, cell, batch, steps, features, units, dtype)
    x, kernel, recurrent, bias, d_out = arrays
    initial = [(rng.standard_normal((batch, units)) * 0.5).astype(dtype)
               for _ in range(2 if cell == "lstm" else 1)]
    d_h_n = rng.standard_normal((batch, units)).astype(dtype)
    weights = weights_in_layout(layout, cell, kernel, recurrent, bias)
    with kernel_paths(**PATHS[path]):
        out = fwd(x, *weights, initial_state=initial, weight_layout=layout, **kwargs)
        full = bwd(out.cache, d_out, d_h_n)
        partial = bwd(out.cache, d_out, d_h_n, initial_gradient=False)
    assert full.h0 is not None and partial.h0 is None
    for name in full._fields:
        a, b = getattr(full, name), getattr(partial, name)
        if name in ("h0", "c0"):
            assert b is None, name
        else:
            np.testing.assert_array_equal(b, a, err_msg=name)
    want = ref_fwd(x.astype(np.float64), kernel.astype(np.float64),
                   recurrent.astype(np.float64), bias.astype(np.float64),
                   initial_state=[s.astype(np.float64) for s in initial], **kwargs)
    want_grads = ref_bwd(want.cache, d_out.astype(np.float64), d_h_n.astype(np.float64))
    tol = 1e-10 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(full.h0, want_grads.h0, rtol=tol, atol=tol * 10)
    assert ref_bwd(want.cache, d_out.astype(np.float64), initial_gradient=False).h0 is None
    with pytest.raises(TypeError, match="initial_gradient"):
        bwd(out.cache, d_out, initial_gradient=None)


@pytest.mark.parametrize("simd", [-1, 0], ids=["tiles", "blas"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("steps", [40, 130])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_weight_gradients_over_many_rows_match_reference(rng, cell, threads, dtype, simd,
                                                         layout, steps):
    """The weight gradients sum over T*B rows: when those are at least as many as the
    gradient's longer side, two threads split the sum itself (one partial each, added in a
    fixed order) rather than the gradient's rows or columns.  Here T*B = 640 (or 2080)
    rows against at most 52 columns, and the recurrent kernel's gradient (at least
    13*52*640 or 31*31*640 multiply-adds) is past both thresholds (csrc/internal.h:
    FRNN_GEMM_SPLIT_K_RATIO, FRNN_GEMM_SPLIT_MIN_MACS).  float32 runs the AVX2 tiles of
    csrc/weight_gradient.c, which take the bias gradient while they pack dZ, and BLAS
    with a pass of column sums (simd=0, as on CPUs without AVX2); float64 always BLAS.  In
    torch's layout the LSTM and SimpleRNN take the recurrent kernel's gradient as the
    swapped product (dZ^T h, 52 or 31 rows against 13 or 31 columns), the GRU gate block by
    gate block, or from 2048 rows (130 steps: 2080) in one product through a scratch
    (csrc/internal.h: FRNN_GRU_SWAPPED_MAX_ROWS)."""
    _, fwd, bwd, ref_fwd, ref_bwd, _ = CELLS[cell]
    units = 31 if cell == "simple_rnn" else 13
    arrays, kwargs = masked_problem(rng, cell, 16, steps, 11, units, dtype)
    with fusedrnn.threads(threads), kernel_paths(simd=simd):
        got = fwd(arrays[0], *weights_in_layout(layout, cell, *arrays[1:4]),
                  weight_layout=layout, **kwargs)
        grads = keras_gradients(layout, cell, bwd(got.cache, arrays[4]))
        again = keras_gradients(layout, cell, bwd(got.cache, arrays[4]))
    want = ref_fwd(*(a.astype(np.float64) for a in arrays[:4]), **kwargs)
    want_grads = ref_bwd(want.cache, arrays[4].astype(np.float64))
    tol = 1e-10 if dtype == np.float64 else 2e-4
    for name in ("x", "kernel", "recurrent_kernel", "bias"):
        np.testing.assert_allclose(getattr(grads, name), getattr(want_grads, name),
                                   rtol=tol, atol=tol * 10, err_msg=name)
        # the same split every call: bitwise the same sums
        np.testing.assert_array_equal(getattr(again, name), getattr(grads, name), err_msg=name)
