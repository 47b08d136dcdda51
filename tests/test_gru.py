"""The fused GRU kernel (fusedrnn.ops.gru_*) against the NumPy reference, float64 finite
differences, torch.nn.GRU and keras.layers.GRU, plus argument validation.

float64 kernels use exact libm activations and must match the float64 reference to ~1e-12
relative; float32 kernels use a rational tanh approximation and are compared with the
float64 reference run on the same float32-rounded inputs (see test_lstm.py)."""
from __future__ import annotations

import numpy as np
import pytest

from fusedrnn import _kernels, ops
from fusedrnn import reference as ref
from helpers import (assert_close, cast_problem, numerical_gradient, require,
                     run_kernel_and_reference)
from helpers import upstream_gradients as shared_upstream_gradients

GRAD_FIELDS = ("x", "kernel", "recurrent_kernel", "bias", "h0")
RTOL = {np.float64: 1e-12, np.float32: 1e-5}
GRAD_RTOL = {np.float64: 1e-12, np.float32: 3e-5}
DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True)
def _single_blas_thread():
    """These problems are tiny: BLAS threads only add overhead (seconds per test on a
    loaded 2-core machine).  The kernels themselves are single-threaded."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1, user_api="blas"):
        yield
SIZES = [1, 3, 67]
RESET_AFTER = [True, False]
RA_IDS = ["reset_after", "reset_before"]


def make_mask(rng, pattern: str, batch: int, steps: int):
    """(batch, steps) boolean mask, True = step used; None for "none"."""
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
    elif pattern == "first_step":  # the first processed step is masked (either direction)
        mask = rng.random((batch, steps)) > 0.2
        mask[:, 0] = False
        mask[:, -1] = False
    elif pattern == "prefix":  # torch-style lengths: valid prefix, padded tail
        lengths = rng.integers(0, steps + 1, size=batch)
        mask = np.arange(steps)[None, :] < lengths[:, None]
    else:
        raise AssertionError(pattern)
    return mask


def make_problem(rng, batch, steps, features, units, *, reset_after=True, bias=True,
                 state=True, scale=1.0):
    """Random float64 inputs and weights in torch's default range U(+-scale/sqrt(units))."""
    bound = scale / np.sqrt(units)
    bias_shape = (2, 3 * units) if reset_after else (3 * units,)
    return dict(
        x=rng.standard_normal((batch, steps, features)),
        kernel=rng.uniform(-bound, bound, (features, 3 * units)),
        recurrent_kernel=rng.uniform(-bound, bound, (units, 3 * units)),
        bias=rng.uniform(-bound, bound, bias_shape) if bias else None,
        initial_state=rng.standard_normal((batch, units)) if state else None,
    )


cast = cast_problem


def upstream_gradients(rng, batch, steps, units, which: str):
    return shared_upstream_gradients(rng, batch, steps, units, which)


def run_both(problem, dtype, upstream, **options):
    """Kernel in dtype, reference in float64 on the dtype-rounded inputs."""
    return run_kernel_and_reference(ops.gru_forward, ops.gru_backward, ref.gru_forward,
                                    ref.gru_backward, problem, dtype, upstream, **options)


def assert_matches_reference(k_out, k_grads, r_out, r_grads, dtype):
    for name in ("outputs", "h_n"):
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


# ------------------------------------------------------------ kernel vs reference ----

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
@pytest.mark.parametrize("batch,features,units", [
    (1, 1, 1), (3, 3, 3), (67, 3, 1), (1, 67, 3), (3, 1, 67), (67, 67, 67), (2, 5, 16),
])
def test_shapes_match_reference(rng, dtype, reset_after, batch, features, units):
    problem = make_problem(rng, batch, 5, features, units, reset_after=reset_after)
    upstream = upstream_gradients(rng, batch, 5, units, "oh")
    assert_matches_reference(*run_both(problem, dtype, upstream, reset_after=reset_after), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("state", [True, False], ids=["state", "nostate"])
@pytest.mark.parametrize("which", ["oh", "o", "h", ""], ids=lambda w: "d_" + (w or "none"))
def test_bias_state_and_upstream_combinations(rng, dtype, reset_after, bias, state, which):
    batch, steps, features, units = 3, 7, 4, 5
    problem = make_problem(rng, batch, steps, features, units, reset_after=reset_after,
                           bias=bias, state=state)
    upstream = upstream_gradients(rng, batch, steps, units, which)
    k_out, k_grads, r_out, r_grads = run_both(problem, dtype, upstream, reset_after=reset_after)
    assert_matches_reference(k_out, k_grads, r_out, r_grads, dtype)
    if bias:
        assert k_grads.bias.shape == ((2, 3 * units) if reset_after else (3 * units,))
    if not which:  # no upstream gradient: every gradient is exactly zero
        for name in GRAD_FIELDS:
            grad = getattr(k_grads, name)
            assert grad is None or not np.any(grad), name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
@pytest.mark.parametrize("pattern", ["random", "holes", "full_row", "first_step", "prefix"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("zero_output", [False, True], ids=["carry", "zero"])
def test_masks(rng, dtype, reset_after, pattern, go_backwards, zero_output):
    batch, steps, features, units = 6, 9, 3, 4
    problem = make_problem(rng, batch, steps, features, units, reset_after=reset_after)
    mask = make_mask(rng, pattern, batch, steps)
    upstream = upstream_gradients(rng, batch, steps, units, "oh")
    results = run_both(problem, dtype, upstream, reset_after=reset_after, mask=mask,
                       go_backwards=go_backwards, zero_output_for_mask=zero_output)
    assert_matches_reference(*results, dtype)
    k_out = results[0]
    processed_mask = mask[:, ::-1] if go_backwards else mask
    if zero_output:
        assert not np.any(k_out.outputs[~processed_mask])
    h0 = cast(problem, dtype)["initial_state"]
    never_valid = ~mask.any(axis=1)
    np.testing.assert_array_equal(k_out.h_n[never_valid], h0[never_valid])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
def test_mask_semantics_carry_previous_output(rng, dtype, reset_after):
    """A masked step re-emits the previous output (Keras); an all-True mask is a no-op."""
    problem = cast(make_problem(rng, 2, 6, 3, 4, reset_after=reset_after), dtype)
    mask = np.ones((2, 6), bool)
    mask[0, 2:4] = False
    out = ops.gru_forward(**problem, reset_after=reset_after, mask=mask).outputs
    np.testing.assert_array_equal(out[0, 2], out[0, 1])
    np.testing.assert_array_equal(out[0, 3], out[0, 1])
    assert not np.array_equal(out[0, 4], out[0, 1])
    full = ops.gru_forward(**problem, reset_after=reset_after, mask=np.ones((2, 6), bool))
    plain = ops.gru_forward(**problem, reset_after=reset_after)
    for a, b in zip(full[:2], plain[:2]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
def test_go_backwards_equals_reversed_input(rng, dtype, reset_after):
    problem = cast(make_problem(rng, 3, 8, 2, 5, reset_after=reset_after), dtype)
    backwards = ops.gru_forward(**problem, reset_after=reset_after, go_backwards=True)
    reversed_input = dict(problem, x=np.ascontiguousarray(problem["x"][:, ::-1]))
    forwards = ops.gru_forward(**reversed_input, reset_after=reset_after)
    for a, b in zip(backwards[:2], forwards[:2]):
        assert_close(a, b, RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "linear", "hard_sigmoid", None])
@pytest.mark.parametrize("recurrent_activation", ["sigmoid", "hard_sigmoid", "tanh"])
def test_activations(rng, dtype, reset_after, activation, recurrent_activation):
    bounded = {"tanh", "sigmoid", "hard_sigmoid"}
    scale = 3.0 if activation in bounded else 0.5
    problem = make_problem(rng, 3, 6, 4, 5, reset_after=reset_after, scale=scale)
    upstream = upstream_gradients(rng, 3, 6, 5, "oh")
    assert_matches_reference(
        *run_both(problem, dtype, upstream, reset_after=reset_after, activation=activation,
                  recurrent_activation=recurrent_activation, mask=make_mask(rng, "random", 3, 6)),
        dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
@pytest.mark.parametrize("case", ["plain", "masked_backwards"])
def test_single_step(rng, dtype, reset_after, case):
    options = {}
    if case == "masked_backwards":
        options = dict(mask=np.array([[True], [False], [True]]), go_backwards=True,
                       zero_output_for_mask=True)
    problem = make_problem(rng, 3, 1, 4, 3, reset_after=reset_after)
    upstream = upstream_gradients(rng, 3, 1, 3, "oh")
    assert_matches_reference(*run_both(problem, dtype, upstream, reset_after=reset_after,
                                       **options), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
@pytest.mark.parametrize("state", [True, False], ids=["state", "nostate"])
def test_zero_steps(rng, dtype, reset_after, state):
    """T=0: empty outputs, h_n = h0 (a fresh array), zero weight gradients, d_h0 = d_h_n."""
    batch, features, units = 3, 4, 5
    problem = cast(make_problem(rng, batch, 0, features, units, reset_after=reset_after,
                                state=state), dtype)
    out = ops.gru_forward(**problem, reset_after=reset_after, mask=np.zeros((batch, 0), bool),
                          training=True)
    assert out.outputs.shape == (batch, 0, units) and out.outputs.dtype == dtype
    h0 = problem["initial_state"]
    np.testing.assert_array_equal(out.h_n, h0 if state else np.zeros((batch, units), dtype))
    if state:
        assert not np.shares_memory(out.h_n, h0)
    d_h_n = rng.standard_normal((batch, units)).astype(dtype)
    grads = ops.gru_backward(out.cache, np.zeros((batch, 0, units), dtype), d_h_n)
    assert grads.x.shape == (batch, 0, features)
    for name in ("kernel", "recurrent_kernel", "bias"):
        assert not np.any(getattr(grads, name)), name
    if state:
        np.testing.assert_array_equal(grads.h0, d_h_n)
    else:
        assert grads.h0 is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
def test_empty_batch(rng, dtype, reset_after):
    problem = cast(make_problem(rng, 0, 4, 3, 2, reset_after=reset_after), dtype)
    out = ops.gru_forward(**problem, reset_after=reset_after, training=True)
    assert out.outputs.shape == (0, 4, 2) and out.h_n.shape == (0, 2)
    grads = ops.gru_backward(out.cache, np.zeros((0, 4, 2), dtype))
    assert grads.x.shape == (0, 4, 3)
    assert not np.any(grads.kernel) and not np.any(grads.recurrent_kernel)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
@pytest.mark.parametrize("size", [1, 3])
def test_long_sequence(rng, dtype, reset_after, size):
    """T=500, masked and backwards: errors must not accumulate over the time loop."""
    steps = 500
    problem = make_problem(rng, size, steps, size, size, reset_after=reset_after)
    upstream = upstream_gradients(rng, size, steps, size, "oh")
    assert_matches_reference(
        *run_both(problem, dtype, upstream, reset_after=reset_after, go_backwards=True,
                  mask=make_mask(rng, "random", size, steps)),
        dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
@pytest.mark.parametrize("fuse_input", [0, -1], ids=["gemm_chunks", "automatic"])
def test_inference_chunks_match_training(rng, dtype, reset_after, fuse_input):
    """Inference projects the input with a GEMM per chunk of steps (~4M elements); a
    problem spanning several chunks must give the training pass's results, and the
    reference's.  With the automatic choice, 32 rows per thread of reset_after's tiles
    project each step's input in the time loop instead (frnn_gru_projects_in_loop)."""
    batch, steps, features, units = 64, 1100, 64, 16  # 7168 elements/step -> 585-step chunks
    problem = cast(make_problem(rng, batch, steps, features, units, reset_after=reset_after),
                   dtype)
    options = dict(reset_after=reset_after, mask=make_mask(rng, "random", batch, steps),
                   go_backwards=True)
    previous = _kernels.set_path_overrides(fuse_input=fuse_input)
    try:
        inference = ops.gru_forward(**problem, **options)
    finally:
        _kernels.set_path_overrides(*previous)
    training = ops.gru_forward(**problem, training=True, **options)
    assert inference.cache is None
    for a, b in zip(inference[:2], training[:2]):
        assert_close(a, b, RTOL[dtype])
    expected = ref.gru_forward(**cast(problem, np.float64), **options)
    for a, b in zip(inference[:2], expected[:2]):
        assert_close(a, b, RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
def test_strided_inputs(rng, dtype, reset_after):
    """Time-major views (batch stride < time stride) and strided upstream gradients are
    read through their strides: same results as contiguous copies."""
    batch, steps, features, units = 3, 6, 4, 5
    problem = cast(make_problem(rng, batch, steps, features, units, reset_after=reset_after),
                   dtype)
    time_major = np.ascontiguousarray(problem["x"].transpose(1, 0, 2))
    view = dict(problem, x=time_major.transpose(1, 0, 2))
    d_out_tm = rng.standard_normal((steps, batch, units)).astype(dtype)
    mask = np.asfortranarray(make_mask(rng, "random", batch, steps))
    a = ops.gru_forward(**view, reset_after=reset_after, mask=mask, training=True)
    b = ops.gru_forward(**problem, reset_after=reset_after, mask=np.ascontiguousarray(mask),
                        training=True)
    for x, y in zip(a[:2], b[:2]):
        np.testing.assert_array_equal(x, y)
    ga = ops.gru_backward(a.cache, d_out_tm.transpose(1, 0, 2))
    gb = ops.gru_backward(b.cache, np.ascontiguousarray(d_out_tm.transpose(1, 0, 2)))
    for name in GRAD_FIELDS:
        np.testing.assert_array_equal(getattr(ga, name), getattr(gb, name), err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
def test_caller_arrays_are_not_modified(rng, dtype, reset_after):
    batch, steps, units = 3, 5, 4
    problem = cast(make_problem(rng, batch, steps, 2, units, reset_after=reset_after), dtype)
    mask = make_mask(rng, "random", batch, steps)
    upstream = [g.astype(dtype) for g in upstream_gradients(rng, batch, steps, units, "oh")]
    before = {k: v.copy() for k, v in problem.items()}
    before_up = [g.copy() for g in upstream]
    mask_before = mask.copy()
    out = ops.gru_forward(**problem, reset_after=reset_after, mask=mask, training=True)
    first = ops.gru_backward(out.cache, *upstream)
    second = ops.gru_backward(out.cache, *upstream)  # the cache is reusable
    for name in GRAD_FIELDS:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)
    for k, v in problem.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    for g, copy in zip(upstream, before_up):
        np.testing.assert_array_equal(g, copy)
    np.testing.assert_array_equal(mask, mask_before)
    # the initial state as a 1-element list is the same as the array
    listed = ops.gru_forward(**dict(problem, initial_state=[problem["initial_state"]]),
                             reset_after=reset_after, mask=mask)
    np.testing.assert_array_equal(listed.outputs, out.outputs)
    assert out.cache.nbytes > 0


# ------------------------------------------------------------ finite differences ----

FD_RTOL = 1e-6
FD_MASKS = {
    "none": None,
    # row 0: hole in the middle; row 1: first step masked; row 2: never valid
    "mixed": np.array([[1, 1, 0, 0, 1], [0, 1, 1, 0, 1], [0, 0, 0, 0, 0]], bool),
}


def check_gradients(rng, params: dict, batch, steps, units, **options):
    """Kernel and reference backward against central differences of the kernel's forward,
    for L = <A, outputs> + <B, h_n>."""
    weights = dict(d_outputs=rng.standard_normal((batch, steps, units)),
                   d_h_n=rng.standard_normal((batch, units)))

    def call(module, training=False):
        return module.gru_forward(params["x"], params["kernel"], params["recurrent_kernel"],
                                  params.get("bias"), initial_state=params.get("h0"),
                                  training=training, **options)

    def loss():
        out = call(ops)
        return np.sum(weights["d_outputs"] * out.outputs) + np.sum(weights["d_h_n"] * out.h_n)

    analytic = {
        "kernel": ops.gru_backward(call(ops, True).cache, **weights),
        "reference": ref.gru_backward(call(ref, True).cache, **weights),
    }
    for name, array in params.items():
        numeric = numerical_gradient(loss, array)
        for source, grads in analytic.items():
            assert_close(getattr(grads, name), numeric, FD_RTOL, name=f"{source} d{name}")
    for field in ("bias", "h0"):
        if field not in params:
            for grads in analytic.values():
                assert getattr(grads, field) is None, field


def fd_params(rng, batch, steps, features, units, *, reset_after, bias=True, state=True):
    bound = 2.0 / np.sqrt(units)
    params = dict(
        x=rng.standard_normal((batch, steps, features)),
        kernel=rng.uniform(-bound, bound, (features, 3 * units)),
        recurrent_kernel=rng.uniform(-bound, bound, (units, 3 * units)),
    )
    if bias:
        params["bias"] = rng.uniform(-bound, bound, (2, 3 * units) if reset_after else 3 * units)
    if state:
        params["h0"] = rng.standard_normal((batch, units))
    return params


@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
@pytest.mark.parametrize("mask_name", list(FD_MASKS))
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("zero_output", [False, True], ids=["carry", "zero"])
def test_gradients_masks_and_direction(rng, reset_after, mask_name, go_backwards, zero_output):
    params = fd_params(rng, 3, 5, 2, 3, reset_after=reset_after)
    check_gradients(rng, params, 3, 5, 3, reset_after=reset_after, mask=FD_MASKS[mask_name],
                    go_backwards=go_backwards, zero_output_for_mask=zero_output)


@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("state", [True, False], ids=["state", "nostate"])
def test_gradients_optional_inputs(rng, reset_after, bias, state):
    params = fd_params(rng, 2, 4, 3, 2, reset_after=reset_after, bias=bias, state=state)
    check_gradients(rng, params, 2, 4, 2, reset_after=reset_after)


@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
@pytest.mark.parametrize("activation,recurrent_activation", [
    ("sigmoid", "tanh"), ("linear", "sigmoid"), ("relu", "hard_sigmoid"),
])
def test_gradients_other_activations(rng, reset_after, activation, recurrent_activation):
    params = fd_params(rng, 2, 4, 2, 3, reset_after=reset_after)
    check_gradients(rng, params, 2, 4, 3, reset_after=reset_after, activation=activation,
                    recurrent_activation=recurrent_activation, go_backwards=True,
                    mask=np.array([[1, 0, 1, 1], [1, 1, 0, 1]], bool))


# ------------------------------------------------------------ torch.nn.GRU parity ----

def keras_from_torch(gru):
    """Keras-layout (kernel, recurrent_kernel, bias (2, 3H)) of a torch GRU layer: torch
    stacks gates as r, z, n along rows; Keras as z, r, h along columns."""
    def zrh(w):  # (3H, ...) r,z,n rows -> z,r,n rows
        r, z, n = np.split(w, 3, axis=0)
        return np.concatenate([z, r, n], axis=0)
    w_ih, w_hh = gru.weight_ih_l0.detach().numpy(), gru.weight_hh_l0.detach().numpy()
    b_ih, b_hh = gru.bias_ih_l0.detach().numpy(), gru.bias_hh_l0.detach().numpy()
    return zrh(w_ih).T.copy(), zrh(w_hh).T.copy(), np.stack([zrh(b_ih), zrh(b_hh)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,steps,features,units", [
    (1, 1, 1, 1), (3, 7, 3, 67), (4, 200, 5, 3), (67, 4, 67, 2),
])
def test_torch_gru_parity(request, rng, dtype, batch, steps, features, units):
    """Outputs, h_n and every gradient match torch.nn.GRU (batch_first) after mapping
    torch's r, z, n gate order to Keras' z, r, h."""
    torch = require("torch", request)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    torch.manual_seed(int(rng.integers(2**31)))
    gru = torch.nn.GRU(features, units, batch_first=True, dtype=tdtype)
    x = rng.standard_normal((batch, steps, features)).astype(dtype)
    h0 = rng.standard_normal((batch, units)).astype(dtype)
    d_out = rng.standard_normal((batch, steps, units)).astype(dtype)
    d_hn = rng.standard_normal((batch, units)).astype(dtype)

    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0[None], requires_grad=True)
    t_out, t_hn = gru(tx, th0)
    (t_out * torch.tensor(d_out)).sum().add((t_hn[0] * torch.tensor(d_hn)).sum()).backward()

    kernel, recurrent, bias = keras_from_torch(gru)
    out = ops.gru_forward(x, kernel, recurrent, bias, reset_after=True, initial_state=h0,
                          training=True)
    grads = ops.gru_backward(out.cache, d_out, d_hn)
    tol = RTOL[dtype] if dtype == np.float32 else 1e-10
    assert_close(out.outputs, t_out.detach().numpy(), tol, name="outputs")
    assert_close(out.h_n, t_hn[0].detach().numpy(), tol, name="h_n")
    gtol = GRAD_RTOL[dtype] if dtype == np.float32 else 1e-10
    assert_close(grads.x, tx.grad.numpy(), gtol, name="dx")
    assert_close(grads.h0, th0.grad[0].numpy(), gtol, name="dh0")
    # torch's parameter gradients in Keras layout, through the same mapping
    t_grads = torch.nn.GRU(features, units, batch_first=True, dtype=tdtype)
    with torch.no_grad():
        t_grads.weight_ih_l0.copy_(gru.weight_ih_l0.grad)
        t_grads.weight_hh_l0.copy_(gru.weight_hh_l0.grad)
        t_grads.bias_ih_l0.copy_(gru.bias_ih_l0.grad)
        t_grads.bias_hh_l0.copy_(gru.bias_hh_l0.grad)
    dk, dr, db = keras_from_torch(t_grads)
    assert_close(grads.kernel, dk, gtol, name="dkernel")
    assert_close(grads.recurrent_kernel, dr, gtol, name="drecurrent")
    assert_close(grads.bias, db, gtol, name="dbias")


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_packed_sequence_parity(request, rng, dtype):
    """torch's PackedSequence (prefix lengths, zero padding, h_n = last valid state) is a
    prefix mask with zero_output_for_mask=True."""
    torch = require("torch", request)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    batch, steps, features, units = 5, 9, 3, 4
    torch.manual_seed(int(rng.integers(2**31)))
    gru = torch.nn.GRU(features, units, batch_first=True, dtype=tdtype)
    x = rng.standard_normal((batch, steps, features)).astype(dtype)
    lengths = np.array([9, 1, 5, 9, 3])
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x), torch.tensor(lengths),
                                                     batch_first=True, enforce_sorted=False)
    t_packed, t_hn = gru(packed)
    t_out, _ = torch.nn.utils.rnn.pad_packed_sequence(t_packed, batch_first=True,
                                                      total_length=steps)
    mask = np.arange(steps)[None, :] < lengths[:, None]
    out = ops.gru_forward(x, *keras_from_torch(gru), mask=mask, zero_output_for_mask=True)
    tol = RTOL[dtype] if dtype == np.float32 else 1e-10
    assert_close(out.outputs, t_out.detach().numpy(), tol, name="outputs")
    assert_close(out.h_n, t_hn[0].detach().numpy(), tol, name="h_n")


# ----------------------------------------------------------- keras.layers.GRU parity ----

def keras_gru_run(keras, weights, x, *, reset_after, dtype, mask=None, initial_state=None,
                  go_backwards=False, return_sequences=True, zero_output_for_mask=False,
                  exact_tanh=False):
    """Run keras.layers.GRU with the given weights; returns (outputs, h_n) as NumPy.

    Keras' default lax.scan path is used on purpose: its unroll=True path (Keras 3.15,
    backend/jax/rnn.py) ignores zero_output_for_mask and emits zeros rather than the
    initial state for leading masked steps, unlike the scan path and the documentation."""
    activation = "tanh"
    if exact_tanh:
        # Keras 3.15's ops.tanh computes float64 in float32 (dtypes.result_type demotes
        # 64-bit floats, keras-team/keras#23223); jnp.tanh keeps the float64 check exact.
        import jax.numpy as jnp
        activation = jnp.tanh
    layer = keras.layers.GRU(weights[1].shape[0], reset_after=reset_after,
                             activation=activation, return_sequences=return_sequences,
                             return_state=True, go_backwards=go_backwards,
                             zero_output_for_mask=zero_output_for_mask,
                             dtype=np.dtype(dtype).name)
    layer.build(x.shape)
    layer.set_weights(list(weights))
    kwargs = {}
    if mask is not None:
        kwargs["mask"] = mask
    if initial_state is not None:
        kwargs["initial_state"] = [initial_state]
    seq, h_n = layer(x, **kwargs)
    return np.asarray(seq), np.asarray(h_n)


# Each Keras layer costs an XLA compile (seconds here): a few cases cover the semantics.
KERAS_CASES = [(np.float32, "plain"), (np.float32, "holes_bwd_state"),
               (np.float64, "holes_bwd_state"), (np.float64, "random_zero_last_only"),
               (np.float64, "first_step_odd_sizes")]


@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
@pytest.mark.parametrize("dtype,case", KERAS_CASES,
                         ids=[f"{np.dtype(d).name}-{c}" for d, c in KERAS_CASES])
def test_keras_gru_parity(request, rng, dtype, reset_after, case):
    """Outputs (all steps, or the last with return_sequences=False) and the final state of
    keras.layers.GRU given the same weights, with masks passed to the layer call."""
    keras = require("keras", request)
    batch, steps, features, units = (5, 8, 3, 4) if case != "first_step_odd_sizes" else (3, 11, 67, 1)
    problem = cast(make_problem(rng, batch, steps, features, units, reset_after=reset_after),
                   dtype)
    weights = (problem["kernel"], problem["recurrent_kernel"], problem["bias"])
    options = {}
    if case == "holes_bwd_state":
        options = dict(mask=make_mask(rng, "holes", batch, steps), go_backwards=True,
                       initial_state=problem["initial_state"])
    elif case == "random_zero_last_only":
        options = dict(mask=make_mask(rng, "random", batch, steps), zero_output_for_mask=True,
                       initial_state=problem["initial_state"])
    elif case == "first_step_odd_sizes":  # a masked first step re-emits h0
        options = dict(mask=make_mask(rng, "first_step", batch, steps), go_backwards=True,
                       initial_state=problem["initial_state"])
    return_sequences = case != "random_zero_last_only"
    seq, h_n = keras_gru_run(keras, weights, problem["x"], reset_after=reset_after, dtype=dtype,
                             return_sequences=return_sequences,
                             exact_tanh=dtype == np.float64, **options)
    out = ops.gru_forward(problem["x"], *weights, reset_after=reset_after, **options)
    tol = RTOL[dtype]
    if return_sequences:
        assert_close(out.outputs, seq, tol, name="outputs")
    else:  # Keras returns the last output, which is h_n unless masked with zeros
        assert_close(out.outputs[:, -1], seq, tol, name="last output")
    assert_close(out.h_n, h_n, tol, name="h_n")


@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
def test_gradients_match_keras_jax_autodiff(request, rng, reset_after):
    """float64 gradients of L = <A, outputs> + <B, h_n> w.r.t. x, the three weights and h0,
    from jax.grad through keras.layers.GRU.stateless_call with a mask, go_backwards and
    zero_output_for_mask.  (reset_after=False has no torch equivalent: this is its
    independent check besides finite differences.)"""
    keras = require("keras", request)
    import jax
    import jax.numpy as jnp

    batch, steps, features, units = 3, 6, 2, 4
    problem = make_problem(rng, batch, steps, features, units, reset_after=reset_after,
                           scale=2.0)
    mask = make_mask(rng, "first_step", batch, steps)
    mask[2, 2:4] = False
    d_out = rng.standard_normal((batch, steps, units))
    d_h = rng.standard_normal((batch, units))
    layer = keras.layers.GRU(units, reset_after=reset_after, activation=jnp.tanh,
                             return_sequences=True, return_state=True, go_backwards=True,
                             zero_output_for_mask=True, dtype="float64")
    layer.build(problem["x"].shape)
    assert [v.path.split("/")[-1] for v in layer.trainable_variables] == [
        "kernel", "recurrent_kernel", "bias"]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def loss(weights, x, h0):
        (outputs, h_n), _ = layer.stateless_call(list(weights), non_trainable, x,
                                                 initial_state=[h0], mask=jnp.asarray(mask))
        return jnp.sum(outputs * d_out) + jnp.sum(h_n * d_h)

    weights = tuple(jnp.asarray(problem[k]) for k in ("kernel", "recurrent_kernel", "bias"))
    g_weights, g_x, g_h0 = jax.grad(loss, argnums=(0, 1, 2))(
        weights, jnp.asarray(problem["x"]), jnp.asarray(problem["initial_state"]))

    out = ops.gru_forward(**problem, reset_after=reset_after, mask=mask, go_backwards=True,
                          zero_output_for_mask=True, training=True)
    grads = ops.gru_backward(out.cache, d_out, d_h)
    expected = dict(kernel=g_weights[0], recurrent_kernel=g_weights[1], bias=g_weights[2],
                    x=g_x, h0=g_h0)
    for name, value in expected.items():
        assert_close(getattr(grads, name), np.asarray(value), RTOL[np.float64], name=f"d{name}")


# ------------------------------------------------------------ recurrent dropout ----

def dropout_masks(rng, batch, units, rate=0.4):
    """Three (batch, units) inverted-dropout masks, z, r, h, as Keras draws them."""
    return (rng.random((3, batch, units)) > rate) / (1 - rate)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
@pytest.mark.parametrize("state", [True, False], ids=["state", "nostate"])
@pytest.mark.parametrize("steps", [1, 7])
def test_recurrent_dropout_matches_reference(rng, dtype, reset_after, state, steps):
    batch, features, units = 4, 3, 5
    problem = make_problem(rng, batch, steps, features, units, reset_after=reset_after,
                           state=state)
    masks = dropout_masks(rng, batch, units).astype(dtype)
    upstream = upstream_gradients(rng, batch, steps, units, "oh")
    results = run_both(problem, dtype, upstream, reset_after=reset_after,
                       recurrent_dropout_mask=masks, mask=make_mask(rng, "random", batch, steps),
                       go_backwards=True)
    assert_matches_reference(*results, dtype)
    plain = ops.gru_forward(**cast(problem, dtype), reset_after=reset_after)
    if state or steps > 1:  # the masks do change the result
        assert not np.allclose(results[0].outputs, plain.outputs)


@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
def test_recurrent_dropout_single_mask_is_shared_by_the_gates(rng, reset_after):
    problem = cast(make_problem(rng, 3, 5, 2, 4, reset_after=reset_after), np.float64)
    mask = (rng.random((3, 4)) > 0.5) * 2.0
    one = ops.gru_forward(**problem, reset_after=reset_after, recurrent_dropout_mask=mask)
    three = ops.gru_forward(**problem, reset_after=reset_after,
                            recurrent_dropout_mask=np.stack([mask] * 3))
    np.testing.assert_array_equal(one.outputs, three.outputs)
    ones = ops.gru_forward(**problem, reset_after=reset_after,
                           recurrent_dropout_mask=np.ones((3, 3, 4)))
    plain = ops.gru_forward(**problem, reset_after=reset_after)
    assert_close(ones.outputs, plain.outputs, 1e-15)


@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
@pytest.mark.parametrize("state", [True, False], ids=["state", "nostate"])
def test_gradients_recurrent_dropout(rng, reset_after, state):
    params = fd_params(rng, 3, 5, 2, 3, reset_after=reset_after, state=state)
    check_gradients(rng, params, 3, 5, 3, reset_after=reset_after,
                    recurrent_dropout_mask=dropout_masks(rng, 3, 3), mask=FD_MASKS["mixed"],
                    go_backwards=True)


@pytest.mark.parametrize("reset_after", RESET_AFTER, ids=RA_IDS)
def test_recurrent_dropout_matches_keras(request, rng, reset_after):
    """keras.layers.GRU(recurrent_dropout=...) in training, with its three per-gate masks
    replaced by ours (Keras draws them once per call and caches them on the cell)."""
    keras = require("keras", request)
    import jax.numpy as jnp

    batch, steps, features, units = 4, 6, 3, 5
    problem = make_problem(rng, batch, steps, features, units, reset_after=reset_after)
    masks = dropout_masks(rng, batch, units, rate=0.3)
    mask = make_mask(rng, "holes", batch, steps)
    layer = keras.layers.GRU(units, reset_after=reset_after, recurrent_dropout=0.3,
                             activation=jnp.tanh, return_sequences=True, return_state=True,
                             go_backwards=True, dtype="float64")
    layer.build(problem["x"].shape)
    layer.set_weights([problem["kernel"], problem["recurrent_kernel"], problem["bias"]])
    layer.cell._recurrent_dropout_mask = [jnp.asarray(m) for m in masks]
    seq, h_n = (np.asarray(a) for a in layer(problem["x"], initial_state=[problem["initial_state"]],
                                             mask=mask, training=True))
    out = ops.gru_forward(**problem, reset_after=reset_after, recurrent_dropout_mask=masks,
                          mask=mask, go_backwards=True)
    assert_close(out.outputs, seq, 1e-12, name="outputs")
    assert_close(out.h_n, h_n, 1e-12, name="h_n")


# ------------------------------------------------------------------ bad input ----

def _valid(rng, reset_after=True, dtype=np.float64):
    return cast(make_problem(rng, 2, 3, 4, 5, reset_after=reset_after), dtype)


@pytest.mark.parametrize("change,error,words", [
    (dict(x=np.zeros((3, 4))), ValueError, "x: expected a 3-D array"),
    (dict(x=np.zeros((2, 3, 0))), ValueError, "x: the feature axis"),
    (dict(x=np.zeros((2, 3, 4), np.int64)), TypeError, "x: expected a float32 or float64"),
    (dict(kernel=np.zeros((4, 12))), ValueError, "kernel: expected shape (features, 3*units)"),
    (dict(kernel=np.zeros((3, 15))), ValueError, "kernel: expected shape"),
    (dict(recurrent_kernel=np.zeros((5, 5))), ValueError, "recurrent_kernel: expected shape (units, 3*units)"),
    (dict(recurrent_kernel=np.zeros(15)), ValueError, "recurrent_kernel: expected shape"),
    (dict(kernel=np.zeros((4, 15), np.float32)), TypeError, "kernel: dtype float32 does not match"),
    (dict(bias=np.zeros(15)), ValueError, "bias: expected shape (2, 3*units)"),
    (dict(bias=np.zeros((2, 15), np.float32)), TypeError, "bias: dtype float32"),
    (dict(initial_state=np.zeros((2, 4))), ValueError, "initial_state[0]: expected shape"),
    (dict(initial_state=[np.zeros((2, 5))] * 2), ValueError, "initial_state: expected one array"),
    (dict(initial_state=np.zeros((2, 5), np.float32)), TypeError, "initial_state[0]: dtype"),
    (dict(mask=np.ones((3, 2), bool)), ValueError, "mask: expected shape (batch, time)"),
    (dict(mask=np.ones((2, 3), np.float64)), TypeError, "mask: expected a boolean"),
    (dict(activation="softmax"), ValueError, "activation: unsupported activation"),
    (dict(recurrent_activation="gelu"), ValueError, "recurrent_activation: unsupported"),
    (dict(reset_after="yes"), TypeError, "reset_after: expected a bool"),
    (dict(recurrent_dropout_mask=np.ones((2, 2, 5))), ValueError, "recurrent_dropout_mask: expected shape"),
    (dict(recurrent_dropout_mask=np.ones((2, 5), np.float32)), TypeError, "recurrent_dropout_mask: dtype"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_forward_arguments(rng, change, error, words):
    args = dict(_valid(rng), **change)
    with pytest.raises(error) as info:
        ops.gru_forward(**args)
    assert words in str(info.value)


def test_bad_bias_shape_reset_before(rng):
    with pytest.raises(ValueError, match=r"bias: expected shape \(3\*units,\) \(reset_after=False\)"):
        ops.gru_forward(**_valid(rng, reset_after=True), reset_after=False)


@pytest.mark.parametrize("change,error,words", [
    (dict(d_outputs=np.zeros((2, 3, 4))), ValueError, "d_outputs: expected shape (batch, time, units)"),
    (dict(d_h_n=np.zeros((5, 2))), ValueError, "d_h_n: expected shape (batch, units)"),
    (dict(d_h_n=np.zeros((2, 5), np.float32)), TypeError, "d_h_n: dtype float32"),
])
def test_bad_backward_arguments(rng, change, error, words):
    out = ops.gru_forward(**_valid(rng), training=True)
    with pytest.raises(error) as info:
        ops.gru_backward(out.cache, **change)
    assert words in str(info.value)


def test_backward_needs_a_gru_training_cache(rng):
    with pytest.raises(TypeError, match="cache: expected the cache returned by gru_forward"):
        ops.gru_backward(None)
    problem = _valid(rng)
    lstm_like = ops.simple_rnn_forward(problem["x"], np.zeros((4, 5)), np.zeros((5, 5)),
                                       training=True)
    with pytest.raises(TypeError, match="gru_forward"):
        ops.gru_backward(lstm_like.cache)
