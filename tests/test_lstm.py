"""The fused LSTM kernel (fusedrnn.ops) against the pure-NumPy reference (fusedrnn.reference).

float64 kernels use exact libm activations, so they must match the float64 reference to
~1e-12 relative.  float32 kernels use a rational tanh approximation (|error| < 5e-7, see
test_activations.py); they are compared with the float64 reference run on the same
(float32-rounded) inputs, so the tolerance measures the kernel's error, not the
reference's."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusedrnn import ops
from fusedrnn import reference as ref
from helpers import assert_close, cast_problem, run_kernel_and_reference
from helpers import upstream_gradients as shared_upstream_gradients

GRAD_FIELDS = ("x", "kernel", "recurrent_kernel", "bias", "h0", "c0")

# Relative tolerances, scaled by max(1, max|expected|) (see helpers.assert_close).
# Measured worst cases: float64 ~4e-15, float32 forward ~3e-7, float32 gradients ~2e-6
# (the largest at T=1000, where the weight gradients sum 1000 steps).
RTOL = {np.float64: 1e-12, np.float32: 1e-5}
GRAD_RTOL = {np.float64: 1e-12, np.float32: 3e-5}


def make_mask(rng, pattern: str, batch: int, steps: int) -> np.ndarray | None:
    """(batch, steps) boolean mask, True = step used.  Patterns cover what Keras allows."""
    if pattern == "none":
        return None
    mask = np.ones((batch, steps), bool)
    if pattern == "random":
        mask = rng.random((batch, steps)) > 0.35
    elif pattern == "holes":  # valid at both ends, a hole in the middle of every row
        mask[:, steps // 3: max(steps // 3 + 1, 2 * steps // 3)] = False
        mask[:, 0] = True
    elif pattern == "full_row":  # one row never updates: h_n must be h0 for it
        mask = rng.random((batch, steps)) > 0.2
        mask[batch // 2] = False
    elif pattern == "first_step":  # the very first step is masked for every row
        mask = rng.random((batch, steps)) > 0.2
        mask[:, 0] = False
        mask[:, -1] = False  # first processed step when go_backwards
    elif pattern == "prefix":  # torch-style lengths: valid prefix, padded tail
        lengths = rng.integers(0, steps + 1, size=batch)
        mask = np.arange(steps)[None, :] < lengths[:, None]
    else:
        raise AssertionError(pattern)
    return mask


def make_problem(rng, batch, steps, features, units, *, bias=True, state=True, scale=1.0):
    """Random float64 inputs and weights in torch's default range U(+-1/sqrt(units))."""
    bound = scale / np.sqrt(units)
    problem = dict(
        x=rng.standard_normal((batch, steps, features)),
        kernel=rng.uniform(-bound, bound, (features, 4 * units)),
        recurrent_kernel=rng.uniform(-bound, bound, (units, 4 * units)),
        bias=rng.uniform(-bound, bound, 4 * units) if bias else None,
        initial_state=(
            (rng.standard_normal((batch, units)), rng.standard_normal((batch, units)))
            if state else None
        ),
    )
    return problem


cast = cast_problem


def upstream_gradients(rng, batch, steps, units, which: str):
    return shared_upstream_gradients(rng, batch, steps, units, which, cell_state=True)


def run_both(problem, dtype, upstream, **options):
    """Kernel in dtype, reference in float64 on the dtype-rounded inputs."""
    return run_kernel_and_reference(ops.lstm_forward, ops.lstm_backward, ref.lstm_forward,
                                    ref.lstm_backward, problem, dtype, upstream, **options)


def assert_matches_reference(k_out, k_grads, r_out, r_grads, dtype):
    for name in ("outputs", "h_n", "c_n"):
        actual = getattr(k_out, name)
        assert actual.dtype == dtype, f"{name} dtype {actual.dtype}"
        assert actual.shape == getattr(r_out, name).shape, name
        assert_close(actual, getattr(r_out, name), RTOL[dtype], name=name)
    for name in GRAD_FIELDS:
        actual, expected = getattr(k_grads, name), getattr(r_grads, name)
        if expected is None:
            assert actual is None, f"d{name} should be None"
            continue
        assert actual.dtype == dtype, f"d{name} dtype {actual.dtype}"
        assert actual.shape == expected.shape, f"d{name} shape {actual.shape}"
        assert_close(actual, expected, GRAD_RTOL[dtype], name=f"d{name}")


DTYPES = [np.float32, np.float64]
SIZES = [1, 3, 67]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", SIZES)
@pytest.mark.parametrize("features", SIZES)
@pytest.mark.parametrize("units", SIZES)
def test_shapes_match_reference(rng, dtype, batch, features, units):
    steps = 5
    problem = make_problem(rng, batch, steps, features, units)
    upstream = upstream_gradients(rng, batch, steps, units, "ohc")
    assert_matches_reference(*run_both(problem, dtype, upstream), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("state", [True, False], ids=["state", "nostate"])
@pytest.mark.parametrize("which", ["ohc", "o", "h", "c", "hc", ""],
                         ids=lambda w: "d_" + (w or "none"))
def test_bias_state_and_upstream_combinations(rng, dtype, bias, state, which):
    batch, steps, features, units = 3, 7, 4, 5
    problem = make_problem(rng, batch, steps, features, units, bias=bias, state=state)
    upstream = upstream_gradients(rng, batch, steps, units, which)
    k_out, k_grads, r_out, r_grads = run_both(problem, dtype, upstream)
    assert_matches_reference(k_out, k_grads, r_out, r_grads, dtype)
    if not which:  # no upstream gradient at all: every gradient is exactly zero
        for name in GRAD_FIELDS:
            grad = getattr(k_grads, name)
            assert grad is None or not np.any(grad), name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pattern", ["random", "holes", "full_row", "first_step", "prefix"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("zero_output", [False, True], ids=["carry", "zero"])
def test_masks(rng, dtype, pattern, go_backwards, zero_output):
    batch, steps, features, units = 6, 9, 3, 4
    problem = make_problem(rng, batch, steps, features, units)
    mask = make_mask(rng, pattern, batch, steps)
    upstream = upstream_gradients(rng, batch, steps, units, "ohc")
    results = run_both(problem, dtype, upstream, mask=mask, go_backwards=go_backwards,
                       zero_output_for_mask=zero_output)
    assert_matches_reference(*results, dtype)
    k_out = results[0]
    processed_mask = mask[:, ::-1] if go_backwards else mask
    if zero_output:  # masked steps output exactly zero
        assert not np.any(k_out.outputs[~processed_mask])
    h0, c0 = cast(problem, dtype)["initial_state"]
    never_valid = ~mask.any(axis=1)
    # rows with no valid step keep their initial state bit for bit
    np.testing.assert_array_equal(k_out.h_n[never_valid], h0[never_valid])
    np.testing.assert_array_equal(k_out.c_n[never_valid], c0[never_valid])


@pytest.mark.parametrize("dtype", DTYPES)
def test_mask_semantics_carry_previous_output(rng, dtype):
    """A masked step re-emits the previous output (Keras), and an all-True mask is a no-op."""
    problem = cast(make_problem(rng, 2, 6, 3, 4), dtype)
    mask = np.ones((2, 6), bool)
    mask[0, 2:4] = False
    out = ops.lstm_forward(**problem, mask=mask).outputs
    np.testing.assert_array_equal(out[0, 2], out[0, 1])
    np.testing.assert_array_equal(out[0, 3], out[0, 1])
    assert not np.array_equal(out[0, 4], out[0, 1])
    full = ops.lstm_forward(**problem, mask=np.ones((2, 6), bool))
    plain = ops.lstm_forward(**problem)
    for a, b in zip(full[:3], plain[:3]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
def test_go_backwards_equals_reversed_input(rng, dtype, go_backwards):
    """go_backwards consumes x[:, ::-1] and returns outputs in processing order."""
    problem = cast(make_problem(rng, 3, 8, 2, 5), dtype)
    backwards = ops.lstm_forward(**problem, go_backwards=True)
    reversed_input = dict(problem, x=np.ascontiguousarray(problem["x"][:, ::-1]))
    forwards = ops.lstm_forward(**reversed_input)
    for a, b in zip(backwards[:3], forwards[:3]):
        assert_close(a, b, RTOL[dtype])
    assert_matches_reference(
        *run_both(make_problem(rng, 3, 8, 2, 5), dtype,
                  upstream_gradients(rng, 3, 8, 5, "ohc"), go_backwards=go_backwards),
        dtype)


ACTIVATIONS = ["tanh", "sigmoid", "relu", "linear", "hard_sigmoid", None]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("recurrent_activation",
                         ["sigmoid", "hard_sigmoid", "tanh", "linear", "relu"])
def test_activations(rng, dtype, activation, recurrent_activation):
    batch, steps, features, units = 3, 6, 4, 5
    # Bounded activations: large weights reach the flat parts of hard_sigmoid as well as the
    # slopes.  Unbounded ones (relu, linear) make the recurrence polynomial in h, so large
    # weights blow up in a few steps and float32 loses every digit: keep them small (relu
    # still sees both signs).
    bounded = {"tanh", "sigmoid", "hard_sigmoid"}
    scale = 3.0 if {activation, recurrent_activation} <= bounded else 0.5
    problem = make_problem(rng, batch, steps, features, units, scale=scale)
    upstream = upstream_gradients(rng, batch, steps, units, "ohc")
    mask = make_mask(rng, "random", batch, steps)
    assert_matches_reference(
        *run_both(problem, dtype, upstream, activation=activation,
                  recurrent_activation=recurrent_activation, mask=mask),
        dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["plain", "masked_backwards"])
def test_single_step(rng, dtype, case):
    options = {}
    if case == "masked_backwards":
        options = dict(mask=np.array([[True], [False], [True]]), go_backwards=True,
                       zero_output_for_mask=True)
    problem = make_problem(rng, 3, 1, 4, 3)
    upstream = upstream_gradients(rng, 3, 1, 3, "ohc")
    assert_matches_reference(*run_both(problem, dtype, upstream, **options), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("state", [True, False], ids=["state", "nostate"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_zero_steps(rng, dtype, state, masked):
    """T=0: outputs are empty (batch, 0, units), h_n = h0 and c_n = c0 (zeros without an
    initial state); backward gives dx empty, zero weight gradients and d_h0 = d_h_n."""
    batch, features, units = 3, 4, 5
    problem = cast(make_problem(rng, batch, 0, features, units, state=state), dtype)
    mask = np.zeros((batch, 0), bool) if masked else None
    out = ops.lstm_forward(**problem, mask=mask, training=True)
    assert out.outputs.shape == (batch, 0, units) and out.outputs.dtype == dtype
    h0, c0 = problem["initial_state"] or (np.zeros((batch, units), dtype),) * 2
    np.testing.assert_array_equal(out.h_n, h0)
    np.testing.assert_array_equal(out.c_n, c0)
    if state:  # fresh arrays, not the caller's
        assert not np.shares_memory(out.h_n, h0) and not np.shares_memory(out.c_n, c0)
    d_h_n = rng.standard_normal((batch, units)).astype(dtype)
    d_c_n = rng.standard_normal((batch, units)).astype(dtype)
    grads = ops.lstm_backward(out.cache, np.zeros((batch, 0, units), dtype), d_h_n, d_c_n)
    assert grads.x.shape == (batch, 0, features)
    assert grads.kernel.shape == (features, 4 * units) and not np.any(grads.kernel)
    assert grads.recurrent_kernel.shape == (units, 4 * units) and not np.any(grads.recurrent_kernel)
    assert grads.bias.shape == (4 * units,) and not np.any(grads.bias)
    if state:
        np.testing.assert_array_equal(grads.h0, d_h_n)
        np.testing.assert_array_equal(grads.c0, d_c_n)
    else:
        assert grads.h0 is None and grads.c0 is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(rng, dtype):
    problem = cast(make_problem(rng, 0, 4, 3, 2), dtype)
    out = ops.lstm_forward(**problem, training=True)
    assert out.outputs.shape == (0, 4, 2) and out.h_n.shape == (0, 2)
    grads = ops.lstm_backward(out.cache, np.zeros((0, 4, 2), dtype))
    assert grads.x.shape == (0, 4, 3)
    assert not np.any(grads.kernel) and not np.any(grads.recurrent_kernel)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 3])
@pytest.mark.parametrize("options", [{}, {"go_backwards": True, "mask": "random"}],
                         ids=["plain", "masked_backwards"])
def test_long_sequence(rng, dtype, size, options):
    """T=1000 at small sizes: errors must not accumulate over the time loop."""
    steps = 1000
    problem = make_problem(rng, size, steps, size, size)
    options = dict(options)
    if options.get("mask"):
        options["mask"] = make_mask(rng, options["mask"], size, steps)
    upstream = upstream_gradients(rng, size, steps, size, "ohc")
    assert_matches_reference(*run_both(problem, dtype, upstream, **options), dtype)


@pytest.mark.parametrize("dtype,go_backwards", [(np.float32, False), (np.float64, True)],
                         ids=["float32-fwd", "float64-bwd"])
def test_inference_spanning_several_chunks(rng, dtype, go_backwards):
    """Inference projects the input in chunks of steps (about 4M elements of scratch, so
    204 steps here: chunks of 204, 204 and 42); the result must not depend on where the
    chunks start, whatever the direction and mask."""
    batch, steps, features, units = 4096, 450, 1, 1  # 4096 * (4 + 1) elements per step
    problem = cast(make_problem(rng, batch, steps, features, units), dtype)
    mask = make_mask(rng, "random", batch, steps)
    options = dict(mask=mask, go_backwards=go_backwards)
    inference = ops.lstm_forward(**problem, **options)
    assert inference.cache is None
    expected = ref.lstm_forward(**cast(problem, np.float64), **options)
    for name, a, b in zip(("outputs", "h_n", "c_n"), inference[:3], expected[:3]):
        assert_close(a, b, RTOL[dtype], name=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_is_repeatable_and_leaves_inputs_alone(rng, dtype):
    """The cache is not consumed, and upstream gradients are not modified."""
    batch, steps, units = 3, 5, 4
    problem = cast(make_problem(rng, batch, steps, 2, units), dtype)
    out = ops.lstm_forward(**problem, mask=make_mask(rng, "random", batch, steps), training=True)
    upstream = [g.astype(dtype) for g in upstream_gradients(rng, batch, steps, units, "ohc")]
    copies = [g.copy() for g in upstream]
    first = ops.lstm_backward(out.cache, *upstream)
    second = ops.lstm_backward(out.cache, *upstream)
    for name in GRAD_FIELDS:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)
    for g, copy in zip(upstream, copies):
        np.testing.assert_array_equal(g, copy)
    # keyword form and None-for-zero agree with explicit zeros
    zeros = ops.lstm_backward(out.cache, d_outputs=upstream[0],
                              d_h_n=np.zeros_like(upstream[1]), d_c_n=None)
    nones = ops.lstm_backward(out.cache, upstream[0])
    for name in GRAD_FIELDS:
        np.testing.assert_array_equal(getattr(zeros, name), getattr(nones, name), err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_inference_and_training_forward_agree(rng, dtype):
    problem = cast(make_problem(rng, 4, 6, 3, 5), dtype)
    inference = ops.lstm_forward(**problem)
    training = ops.lstm_forward(**problem, training=True)
    assert inference.cache is None and training.cache is not None
    assert training.cache.nbytes > 0
    for a, b in zip(inference[:3], training[:3]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("state", [True, False], ids=["state", "nostate"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
def test_recurrent_dropout_mask(rng, dtype, state, go_backwards):
    """recurrent_dropout_mask (batch, units) multiplies h_{t-1} in the recurrent matmul at
    every step (Keras 3's rule), under masks and in both directions."""
    batch, steps, features, units = 4, 6, 3, 5
    problem = make_problem(rng, batch, steps, features, units, state=state)
    problem["recurrent_dropout_mask"] = (rng.random((batch, units)) > 0.4) / 0.6
    upstream = upstream_gradients(rng, batch, steps, units, "ohc")
    mask = make_mask(rng, "random", batch, steps)
    results = run_both(problem, dtype, upstream, mask=mask, go_backwards=go_backwards)
    assert_matches_reference(*results, dtype)
    # an all-ones dropout mask is the same as none
    ones = dict(cast(problem, dtype), recurrent_dropout_mask=np.ones((batch, units), dtype))
    plain = dict(cast(problem, dtype), recurrent_dropout_mask=None)
    with_ones = ops.lstm_forward(**ones, mask=mask)
    without = ops.lstm_forward(**plain, mask=mask)
    for a, b in zip(with_ones[:3], without[:3]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_aliased_read_only_arguments(rng, dtype):
    """The same array passed twice (h0 is c0; d_h_n is d_c_n) is only read."""
    problem = cast(make_problem(rng, 3, 4, 2, 3), dtype)
    state = problem["initial_state"][0]
    before = state.copy()
    out = ops.lstm_forward(**dict(problem, initial_state=(state, state)), training=True)
    expected = ops.lstm_forward(**dict(problem, initial_state=(state.copy(), state.copy())),
                                training=True)
    for a, b in zip(out[:3], expected[:3]):
        np.testing.assert_array_equal(a, b)
    grad = rng.standard_normal((3, 3)).astype(dtype)
    got = ops.lstm_backward(out.cache, None, grad, grad)
    want = ops.lstm_backward(expected.cache, None, grad.copy(), grad.copy())
    for name in GRAD_FIELDS:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    np.testing.assert_array_equal(state, before)


def test_concurrent_calls_from_threads(rng):
    """The kernels release the GIL and keep no global state: calls from several threads
    at once give the same results as the same calls made one after the other."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = []
    for k in range(8):
        dtype = DTYPES[k % 2]
        problem = cast(make_problem(rng, 5, 40, 6, 7 + k), dtype)
        mask = make_mask(rng, "random", 5, 40)
        d_outputs = rng.standard_normal((5, 40, 7 + k)).astype(dtype)
        jobs.append((problem, mask, d_outputs))

    def work(job):
        problem, mask, d_outputs = job
        out = ops.lstm_forward(**problem, mask=mask, go_backwards=True, training=True)
        return out[:3], ops.lstm_backward(out.cache, d_outputs)

    serial = [work(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(work, jobs * 2))
    # to rounding only: BLAS may split a GEMM differently when its threads are busy
    for (out, grads), (out_e, grads_e), (problem, _, _) in zip(parallel, serial * 2, jobs * 2):
        rtol = RTOL[problem["x"].dtype.type]
        for a, b in zip(out, out_e):
            assert_close(a, b, rtol)
        for name in GRAD_FIELDS:
            a, b = getattr(grads, name), getattr(grads_e, name)
            assert (a is None) == (b is None)
            if a is not None:
                assert_close(a, b, rtol, name=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
def test_masked_steps_never_read_their_input(rng, dtype, go_backwards):
    """NaN/inf padding under the mask changes nothing in the forward pass, nor dx."""
    batch, steps, features, units = 4, 6, 3, 5
    problem = cast(make_problem(rng, batch, steps, features, units), dtype)
    mask = make_mask(rng, "random", batch, steps)
    mask[1] = False
    padded = problem["x"].copy()
    padded[~mask] = np.where(rng.random(((~mask).sum(), 1)) > 0.5, np.nan, np.inf)
    options = dict(mask=mask, go_backwards=go_backwards, training=True)
    clean = ops.lstm_forward(**problem, **options)
    dirty = ops.lstm_forward(**dict(problem, x=padded), **options)
    for a, b in zip(clean[:3], dirty[:3]):
        np.testing.assert_array_equal(a, b)
    d_outputs = rng.standard_normal((batch, steps, units)).astype(dtype)
    dx_clean = ops.lstm_backward(clean.cache, d_outputs).x
    dx_dirty = ops.lstm_backward(dirty.cache, d_outputs).x
    np.testing.assert_array_equal(dx_clean, dx_dirty)
    assert not np.any(dx_clean[~mask])  # masked steps get no input gradient


@pytest.mark.parametrize("dtype", DTYPES)
def test_editing_results_or_input_after_forward_does_not_change_backward(rng, dtype):
    """The cache keeps its own copies of x and of every state it needs."""
    problem = cast(make_problem(rng, 3, 5, 2, 4), dtype)
    x = problem["x"].copy()
    out = ops.lstm_forward(**dict(problem, x=x), training=True)
    d_outputs = rng.standard_normal((3, 5, 4)).astype(dtype)
    before = ops.lstm_backward(out.cache, d_outputs, out.h_n.copy(), None)
    d_h_n = out.h_n.copy()
    for array in (x, out.outputs, out.h_n, out.c_n):
        array[...] = 123.0
    after = ops.lstm_backward(out.cache, d_outputs, d_h_n, None)
    for name in GRAD_FIELDS:
        np.testing.assert_array_equal(getattr(after, name), getattr(before, name), err_msg=name)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    dims=st.tuples(st.integers(0, 5), st.integers(0, 7), st.integers(1, 6), st.integers(1, 6)),
    dtype=st.sampled_from(DTYPES),
    bias=st.booleans(),
    state=st.booleans(),
    mask_pattern=st.sampled_from(["none", "random", "first_step", "prefix"]),
    go_backwards=st.booleans(),
    zero_output=st.booleans(),
    activations=st.sampled_from([("tanh", "sigmoid"), ("relu", "hard_sigmoid"),
                                 ("sigmoid", "tanh"), (None, "sigmoid")]),
    dropout=st.booleans(),
    which=st.sampled_from(["ohc", "o", "hc", "c"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_configurations_match_reference(dims, dtype, bias, state, mask_pattern,
                                               go_backwards, zero_output, activations,
                                               dropout, which, seed):
    """Every option combined with every other, on small random shapes (including an
    empty batch and zero steps)."""
    rng = np.random.default_rng(seed)
    batch, steps, features, units = dims
    problem = make_problem(rng, batch, steps, features, units, bias=bias, state=state)
    if dropout:
        problem["recurrent_dropout_mask"] = (rng.random((batch, units)) > 0.3) / 0.7
    mask = None
    if mask_pattern != "none" and batch > 0 and steps > 0:
        mask = make_mask(rng, mask_pattern, batch, steps)
    upstream = upstream_gradients(rng, batch, steps, units, which)
    activation, recurrent_activation = activations
    results = run_both(problem, dtype, upstream, mask=mask, go_backwards=go_backwards,
                       zero_output_for_mask=zero_output, activation=activation,
                       recurrent_activation=recurrent_activation)
    assert_matches_reference(*results, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_wide_layer(rng, dtype):
    """Units and features large enough for full vector bodies and multi-threaded BLAS."""
    batch, steps, features, units = 8, 12, 130, 256
    problem = make_problem(rng, batch, steps, features, units)
    upstream = upstream_gradients(rng, batch, steps, units, "ohc")
    mask = make_mask(rng, "random", batch, steps)
    assert_matches_reference(*run_both(problem, dtype, upstream, mask=mask, go_backwards=True),
                             dtype)


# Edges of the fused time loop: 4-row register tiles plus leftover rows, unit blocks of
# 64 bytes (16 float32 / 8 float64 units) plus a partial block, BLAS for the recurrent
# product from 32 rows, and threads splitting the unit blocks from 2^16 MACs per step.
TILE_EDGES = [(1, 17), (3, 16), (4, 15), (5, 9), (7, 8), (8, 7), (31, 33), (32, 5), (33, 1),
              (8, 48), (6, 100)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_register_tile_and_thread_edges(rng, dtype, n_threads):
    import fusedrnn

    for batch, units in TILE_EDGES:
        steps, features = 4, 3
        problem = make_problem(rng, batch, steps, features, units)
        problem["recurrent_dropout_mask"] = (rng.random((batch, units)) > 0.3) / 0.7
        upstream = upstream_gradients(rng, batch, steps, units, "ohc")
        mask = make_mask(rng, "random", batch, steps)
        with fusedrnn.threads(n_threads):
            results = run_both(problem, dtype, upstream, mask=mask, go_backwards=True)
        try:
            assert_matches_reference(*results, dtype)
        except AssertionError as error:
            raise AssertionError(f"batch={batch} units={units}: {error}") from None
