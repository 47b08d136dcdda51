"""The fused SimpleRNN kernel (fusedrnn.ops.simple_rnn_*) against the NumPy reference,
float64 finite differences, torch.nn.RNN and keras.layers.SimpleRNN, plus argument
validation.  Tolerances as in test_gru.py / test_lstm.py."""
from __future__ import annotations

import numpy as np
import pytest

from fusedrnn import ops
from fusedrnn import reference as ref
from helpers import (assert_close, cast_problem, numerical_gradient, require,
                     run_kernel_and_reference)
from helpers import upstream_gradients as shared_upstream_gradients

GRAD_FIELDS = ("x", "kernel", "recurrent_kernel", "bias", "h0")
RTOL = {np.float64: 1e-12, np.float32: 1e-5}
GRAD_RTOL = {np.float64: 1e-12, np.float32: 3e-5}
DTYPES = [np.float32, np.float64]
ACTIVATIONS = ["tanh", "relu", "sigmoid", "linear"]


@pytest.fixture(autouse=True)
def _single_blas_thread():
    """These problems are tiny: BLAS threads only add overhead (seconds per test on a
    loaded 2-core machine).  The kernels themselves are single-threaded."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1, user_api="blas"):
        yield


def make_mask(rng, pattern: str, batch: int, steps: int):
    if pattern == "none":
        return None
    mask = np.ones((batch, steps), bool)
    if pattern == "random":
        mask = rng.random((batch, steps)) > 0.35
    elif pattern == "holes":
        mask[:, steps // 3: max(steps // 3 + 1, 2 * steps // 3)] = False
        mask[:, 0] = True
    elif pattern == "full_row":
        mask = rng.random((batch, steps)) > 0.2
        mask[batch // 2] = False
    elif pattern == "first_step":
        mask = rng.random((batch, steps)) > 0.2
        mask[:, 0] = False
        mask[:, -1] = False
    elif pattern == "prefix":
        lengths = rng.integers(0, steps + 1, size=batch)
        mask = np.arange(steps)[None, :] < lengths[:, None]
    else:
        raise AssertionError(pattern)
    return mask


def make_problem(rng, batch, steps, features, units, *, bias=True, state=True, scale=1.0):
    bound = scale / np.sqrt(units)
    return dict(
        x=rng.standard_normal((batch, steps, features)),
        kernel=rng.uniform(-bound, bound, (features, units)),
        recurrent_kernel=rng.uniform(-bound, bound, (units, units)),
        bias=rng.uniform(-bound, bound, units) if bias else None,
        initial_state=rng.standard_normal((batch, units)) if state else None,
    )


cast = cast_problem


def upstream_gradients(rng, batch, steps, units, which: str):
    return shared_upstream_gradients(rng, batch, steps, units, which)


def run_both(problem, dtype, upstream, **options):
    """Kernel in dtype, reference in float64 on the dtype-rounded inputs."""
    return run_kernel_and_reference(ops.simple_rnn_forward, ops.simple_rnn_backward, ref.simple_rnn_forward,
                                    ref.simple_rnn_backward, problem, dtype, upstream, **options)


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
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch,features,units", [
    (1, 1, 1), (3, 3, 3), (67, 3, 1), (1, 67, 3), (3, 1, 67), (67, 67, 67),
])
def test_shapes_match_reference(rng, dtype, activation, batch, features, units):
    scale = 1.0 if activation in ("tanh", "sigmoid") else 0.5
    problem = make_problem(rng, batch, 5, features, units, scale=scale)
    upstream = upstream_gradients(rng, batch, 5, units, "oh")
    assert_matches_reference(*run_both(problem, dtype, upstream, activation=activation), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("state", [True, False], ids=["state", "nostate"])
@pytest.mark.parametrize("which", ["oh", "o", "h", ""], ids=lambda w: "d_" + (w or "none"))
def test_bias_state_and_upstream_combinations(rng, dtype, bias, state, which):
    batch, steps, features, units = 3, 7, 4, 5
    problem = make_problem(rng, batch, steps, features, units, bias=bias, state=state)
    upstream = upstream_gradients(rng, batch, steps, units, which)
    k_out, k_grads, r_out, r_grads = run_both(problem, dtype, upstream)
    assert_matches_reference(k_out, k_grads, r_out, r_grads, dtype)
    if not which:
        for name in GRAD_FIELDS:
            grad = getattr(k_grads, name)
            assert grad is None or not np.any(grad), name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS + ["hard_sigmoid", None])
@pytest.mark.parametrize("pattern", ["random", "holes", "full_row", "first_step", "prefix"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("zero_output", [False, True], ids=["carry", "zero"])
def test_masks(rng, dtype, activation, pattern, go_backwards, zero_output):
    batch, steps, features, units = 6, 9, 3, 4
    scale = 2.0 if activation in ("tanh", "sigmoid", "hard_sigmoid") else 0.5
    problem = make_problem(rng, batch, steps, features, units, scale=scale)
    mask = make_mask(rng, pattern, batch, steps)
    upstream = upstream_gradients(rng, batch, steps, units, "oh")
    results = run_both(problem, dtype, upstream, activation=activation, mask=mask,
                       go_backwards=go_backwards, zero_output_for_mask=zero_output)
    assert_matches_reference(*results, dtype)
    k_out = results[0]
    processed_mask = mask[:, ::-1] if go_backwards else mask
    if zero_output:
        assert not np.any(k_out.outputs[~processed_mask])
    else:  # a masked step re-emits the previous output (h0 before any valid step)
        h0 = cast(problem, dtype)["initial_state"]
        previous = np.concatenate([h0[:, None], k_out.outputs[:, :-1]], axis=1)
        np.testing.assert_array_equal(k_out.outputs[~processed_mask], previous[~processed_mask])
    never_valid = ~mask.any(axis=1)
    np.testing.assert_array_equal(k_out.h_n[never_valid],
                                  cast(problem, dtype)["initial_state"][never_valid])


@pytest.mark.parametrize("dtype", DTYPES)
def test_go_backwards_equals_reversed_input(rng, dtype):
    problem = cast(make_problem(rng, 3, 8, 2, 5), dtype)
    backwards = ops.simple_rnn_forward(**problem, go_backwards=True)
    forwards = ops.simple_rnn_forward(**dict(problem, x=np.ascontiguousarray(problem["x"][:, ::-1])))
    for a, b in zip(backwards[:2], forwards[:2]):
        assert_close(a, b, RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["plain", "masked_backwards"])
def test_single_step(rng, dtype, case):
    options = {}
    if case == "masked_backwards":
        options = dict(mask=np.array([[True], [False], [True]]), go_backwards=True,
                       zero_output_for_mask=True)
    problem = make_problem(rng, 3, 1, 4, 3)
    upstream = upstream_gradients(rng, 3, 1, 3, "oh")
    assert_matches_reference(*run_both(problem, dtype, upstream, **options), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("state", [True, False], ids=["state", "nostate"])
def test_zero_steps(rng, dtype, state):
    batch, features, units = 3, 4, 5
    problem = cast(make_problem(rng, batch, 0, features, units, state=state), dtype)
    out = ops.simple_rnn_forward(**problem, mask=np.zeros((batch, 0), bool), training=True)
    assert out.outputs.shape == (batch, 0, units) and out.outputs.dtype == dtype
    h0 = problem["initial_state"]
    np.testing.assert_array_equal(out.h_n, h0 if state else np.zeros((batch, units), dtype))
    if state:
        assert not np.shares_memory(out.h_n, h0)
    d_h_n = rng.standard_normal((batch, units)).astype(dtype)
    grads = ops.simple_rnn_backward(out.cache, np.zeros((batch, 0, units), dtype), d_h_n)
    assert grads.x.shape == (batch, 0, features)
    for name in ("kernel", "recurrent_kernel", "bias"):
        assert not np.any(getattr(grads, name)), name
    if state:
        np.testing.assert_array_equal(grads.h0, d_h_n)
    else:
        assert grads.h0 is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(rng, dtype):
    problem = cast(make_problem(rng, 0, 4, 3, 2), dtype)
    out = ops.simple_rnn_forward(**problem, training=True)
    assert out.outputs.shape == (0, 4, 2) and out.h_n.shape == (0, 2)
    grads = ops.simple_rnn_backward(out.cache, np.zeros((0, 4, 2), dtype))
    assert grads.x.shape == (0, 4, 3)
    assert not np.any(grads.kernel) and not np.any(grads.recurrent_kernel)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("size", [1, 3])
def test_long_sequence(rng, dtype, activation, size):
    """T=500, masked and backwards: errors must not accumulate over the time loop."""
    steps = 500
    problem = make_problem(rng, size, steps, size, size, scale=1.0 if activation == "tanh" else 0.5)
    upstream = upstream_gradients(rng, size, steps, size, "oh")
    assert_matches_reference(
        *run_both(problem, dtype, upstream, activation=activation, go_backwards=True,
                  mask=make_mask(rng, "random", size, steps)),
        dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_inference_chunks_match_training(rng, dtype):
    """Inference projects the input in chunks (~4M elements); several chunks must give the
    training pass's results, and the reference's."""
    batch, steps, features, units = 64, 1100, 96, 32  # 8192 elements/step -> 512-step chunks
    problem = cast(make_problem(rng, batch, steps, features, units), dtype)
    options = dict(mask=make_mask(rng, "random", batch, steps), go_backwards=True)
    inference = ops.simple_rnn_forward(**problem, **options)
    training = ops.simple_rnn_forward(**problem, training=True, **options)
    assert inference.cache is None
    for a, b in zip(inference[:2], training[:2]):
        assert_close(a, b, RTOL[dtype])
    expected = ref.simple_rnn_forward(**cast(problem, np.float64), **options)
    for a, b in zip(inference[:2], expected[:2]):
        assert_close(a, b, RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_inputs(rng, dtype):
    batch, steps, features, units = 3, 6, 4, 5
    problem = cast(make_problem(rng, batch, steps, features, units), dtype)
    time_major = np.ascontiguousarray(problem["x"].transpose(1, 0, 2))
    view = dict(problem, x=time_major.transpose(1, 0, 2))
    d_out_tm = rng.standard_normal((steps, batch, units)).astype(dtype)
    mask = np.asfortranarray(make_mask(rng, "random", batch, steps))
    a = ops.simple_rnn_forward(**view, mask=mask, training=True)
    b = ops.simple_rnn_forward(**problem, mask=np.ascontiguousarray(mask), training=True)
    for x, y in zip(a[:2], b[:2]):
        np.testing.assert_array_equal(x, y)
    ga = ops.simple_rnn_backward(a.cache, d_out_tm.transpose(1, 0, 2))
    gb = ops.simple_rnn_backward(b.cache, np.ascontiguousarray(d_out_tm.transpose(1, 0, 2)))
    for name in GRAD_FIELDS:
        np.testing.assert_array_equal(getattr(ga, name), getattr(gb, name), err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_caller_arrays_are_not_modified(rng, dtype):
    batch, steps, units = 3, 5, 4
    problem = cast(make_problem(rng, batch, steps, 2, units), dtype)
    mask = make_mask(rng, "random", batch, steps)
    upstream = [g.astype(dtype) for g in upstream_gradients(rng, batch, steps, units, "oh")]
    before = {k: v.copy() for k, v in problem.items()}
    before_up = [g.copy() for g in upstream]
    mask_before = mask.copy()
    out = ops.simple_rnn_forward(**problem, mask=mask, training=True)
    first = ops.simple_rnn_backward(out.cache, *upstream)
    second = ops.simple_rnn_backward(out.cache, *upstream)
    for name in GRAD_FIELDS:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)
    for k, v in problem.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    for g, copy in zip(upstream, before_up):
        np.testing.assert_array_equal(g, copy)
    np.testing.assert_array_equal(mask, mask_before)
    listed = ops.simple_rnn_forward(**dict(problem, initial_state=(problem["initial_state"],)),
                                    mask=mask)
    np.testing.assert_array_equal(listed.outputs, out.outputs)
    inference = ops.simple_rnn_forward(**problem, mask=mask)
    for a, b in zip(inference[:2], out[:2]):
        np.testing.assert_array_equal(a, b)
    assert inference.cache is None and out.cache.nbytes > 0


# ------------------------------------------------------------ finite differences ----

FD_RTOL = 1e-6
FD_MASKS = {
    "none": None,
    "mixed": np.array([[1, 1, 0, 0, 1], [0, 1, 1, 0, 1], [0, 0, 0, 0, 0]], bool),
}


def check_gradients(rng, params: dict, batch, steps, units, **options):
    """Kernel and reference backward against central differences of the kernel's forward,
    for L = <A, outputs> + <B, h_n>."""
    weights = dict(d_outputs=rng.standard_normal((batch, steps, units)),
                   d_h_n=rng.standard_normal((batch, units)))

    def call(module, training=False):
        return module.simple_rnn_forward(params["x"], params["kernel"],
                                         params["recurrent_kernel"], params.get("bias"),
                                         initial_state=params.get("h0"), training=training,
                                         **options)

    def loss():
        out = call(ops)
        return np.sum(weights["d_outputs"] * out.outputs) + np.sum(weights["d_h_n"] * out.h_n)

    analytic = {
        "kernel": ops.simple_rnn_backward(call(ops, True).cache, **weights),
        "reference": ref.simple_rnn_backward(call(ref, True).cache, **weights),
    }
    for name, array in params.items():
        numeric = numerical_gradient(loss, array)
        for source, grads in analytic.items():
            assert_close(getattr(grads, name), numeric, FD_RTOL, name=f"{source} d{name}")
    for field in ("bias", "h0"):
        if field not in params:
            for grads in analytic.values():
                assert getattr(grads, field) is None, field


def fd_params(rng, batch, steps, features, units, *, bias=True, state=True, scale=2.0):
    bound = scale / np.sqrt(units)
    params = dict(
        x=rng.standard_normal((batch, steps, features)),
        kernel=rng.uniform(-bound, bound, (features, units)),
        recurrent_kernel=rng.uniform(-bound, bound, (units, units)),
    )
    if bias:
        params["bias"] = rng.uniform(-bound, bound, units)
    if state:
        params["h0"] = rng.standard_normal((batch, units))
    return params


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("mask_name", list(FD_MASKS))
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("zero_output", [False, True], ids=["carry", "zero"])
def test_gradients_masks_and_direction(rng, activation, mask_name, go_backwards, zero_output):
    # relu has a kink at 0; a random point lies within eps of it with probability ~1e-6
    params = fd_params(rng, 3, 5, 2, 3, scale=2.0 if activation in ("tanh", "sigmoid") else 0.8)
    check_gradients(rng, params, 3, 5, 3, activation=activation, mask=FD_MASKS[mask_name],
                    go_backwards=go_backwards, zero_output_for_mask=zero_output)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("state", [True, False], ids=["state", "nostate"])
def test_gradients_optional_inputs(rng, bias, state):
    params = fd_params(rng, 2, 4, 3, 2, bias=bias, state=state)
    check_gradients(rng, params, 2, 4, 2)


# ------------------------------------------------------------ torch.nn.RNN parity ----

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("batch,steps,features,units", [
    (1, 1, 1, 1), (3, 7, 3, 67), (4, 200, 5, 3), (67, 4, 67, 2),
])
def test_torch_rnn_parity(request, rng, dtype, nonlinearity, batch, steps, features, units):
    """Outputs, h_n and every gradient match torch.nn.RNN: kernel = weight_ih^T,
    recurrent = weight_hh^T, bias = bias_ih + bias_hh (so both torch biases get db)."""
    torch = require("torch", request)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    torch.manual_seed(int(rng.integers(2**31)))
    rnn = torch.nn.RNN(features, units, nonlinearity=nonlinearity, batch_first=True,
                       dtype=tdtype)
    x = rng.standard_normal((batch, steps, features)).astype(dtype)
    h0 = rng.standard_normal((batch, units)).astype(dtype)
    d_out = rng.standard_normal((batch, steps, units)).astype(dtype)
    d_hn = rng.standard_normal((batch, units)).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0[None], requires_grad=True)
    t_out, t_hn = rnn(tx, th0)
    (t_out * torch.tensor(d_out)).sum().add((t_hn[0] * torch.tensor(d_hn)).sum()).backward()

    kernel = rnn.weight_ih_l0.detach().numpy().T.copy()
    recurrent = rnn.weight_hh_l0.detach().numpy().T.copy()
    bias = (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach().numpy()
    out = ops.simple_rnn_forward(x, kernel, recurrent, bias, activation=nonlinearity,
                                 initial_state=h0, training=True)
    grads = ops.simple_rnn_backward(out.cache, d_out, d_hn)
    tol = RTOL[dtype] if dtype == np.float32 else 1e-10
    gtol = GRAD_RTOL[dtype] if dtype == np.float32 else 1e-10
    assert_close(out.outputs, t_out.detach().numpy(), tol, name="outputs")
    assert_close(out.h_n, t_hn[0].detach().numpy(), tol, name="h_n")
    assert_close(grads.x, tx.grad.numpy(), gtol, name="dx")
    assert_close(grads.h0, th0.grad[0].numpy(), gtol, name="dh0")
    assert_close(grads.kernel, rnn.weight_ih_l0.grad.numpy().T, gtol, name="dkernel")
    assert_close(grads.recurrent_kernel, rnn.weight_hh_l0.grad.numpy().T, gtol, name="drecurrent")
    assert_close(grads.bias, rnn.bias_ih_l0.grad.numpy(), gtol, name="dbias (ih)")
    assert_close(grads.bias, rnn.bias_hh_l0.grad.numpy(), gtol, name="dbias (hh)")


# ----------------------------------------------------- keras.layers.SimpleRNN parity ----

# Each Keras layer costs an XLA compile (seconds here): a few cases cover the semantics.
# Keras' default lax.scan path is used (see test_gru.keras_gru_run on its unroll=True path).
KERAS_CASES = [
    (np.float32, "tanh", "plain"), (np.float64, "tanh", "holes_bwd_state"),
    (np.float64, "relu", "random_zero_last_only"), (np.float32, "sigmoid", "first_step_state"),
    (np.float64, "linear", "holes_bwd_state"),
]


@pytest.mark.parametrize("dtype,activation,case", KERAS_CASES,
                         ids=[f"{np.dtype(d).name}-{a}-{c}" for d, a, c in KERAS_CASES])
def test_keras_simple_rnn_parity(request, rng, dtype, activation, case):
    keras = require("keras", request)
    batch, steps, features, units = 5, 8, 3, 4
    problem = cast(make_problem(rng, batch, steps, features, units,
                                scale=1.0 if activation in ("tanh", "sigmoid") else 0.5), dtype)
    weights = (problem["kernel"], problem["recurrent_kernel"], problem["bias"])
    options = {}
    if case == "holes_bwd_state":
        options = dict(mask=make_mask(rng, "holes", batch, steps), go_backwards=True,
                       initial_state=problem["initial_state"])
    elif case == "random_zero_last_only":
        options = dict(mask=make_mask(rng, "random", batch, steps), zero_output_for_mask=True,
                       initial_state=problem["initial_state"])
    elif case == "first_step_state":  # a masked first step re-emits h0
        options = dict(mask=make_mask(rng, "first_step", batch, steps),
                       initial_state=problem["initial_state"])
    return_sequences = case != "random_zero_last_only"
    keras_activation = activation
    if activation == "tanh" and dtype == np.float64:
        # Keras 3.15's ops.tanh computes float64 in float32 (keras-team/keras#23223)
        import jax.numpy as jnp
        keras_activation = jnp.tanh
    layer = keras.layers.SimpleRNN(units, activation=keras_activation,
                                   return_sequences=return_sequences, return_state=True,
                                   go_backwards=options.get("go_backwards", False),
                                   zero_output_for_mask=options.get("zero_output_for_mask", False),
                                   dtype=np.dtype(dtype).name)
    layer.build(problem["x"].shape)
    layer.set_weights(list(weights))
    call_kwargs = {}
    if "mask" in options:
        call_kwargs["mask"] = options["mask"]
    if "initial_state" in options:
        call_kwargs["initial_state"] = [options["initial_state"]]
    seq, h_n = (np.asarray(a) for a in layer(problem["x"], **call_kwargs))
    out = ops.simple_rnn_forward(problem["x"], *weights, activation=activation, **options)
    if return_sequences:
        assert_close(out.outputs, seq, RTOL[dtype], name="outputs")
    else:
        assert_close(out.outputs[:, -1], seq, RTOL[dtype], name="last output")
    assert_close(out.h_n, h_n, RTOL[dtype], name="h_n")


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gradients_match_keras_jax_autodiff(request, rng, activation):
    """float64 gradients of L = <A, outputs> + <B, h_n> from jax.grad through
    keras.layers.SimpleRNN.stateless_call, with a mask and go_backwards."""
    keras = require("keras", request)
    import jax
    import jax.numpy as jnp

    batch, steps, features, units = 3, 6, 2, 4
    problem = make_problem(rng, batch, steps, features, units,
                           scale=2.0 if activation == "tanh" else 0.7)
    mask = make_mask(rng, "first_step", batch, steps)
    mask[2, 2:4] = False
    d_out = rng.standard_normal((batch, steps, units))
    d_h = rng.standard_normal((batch, units))
    layer = keras.layers.SimpleRNN(units, activation=jnp.tanh if activation == "tanh" else "relu",
                                   return_sequences=True, return_state=True, go_backwards=True,
                                   dtype="float64")
    layer.build(problem["x"].shape)
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def loss(weights, x, h0):
        (outputs, h_n), _ = layer.stateless_call(list(weights), non_trainable, x,
                                                 initial_state=[h0], mask=jnp.asarray(mask))
        return jnp.sum(outputs * d_out) + jnp.sum(h_n * d_h)

    weights = tuple(jnp.asarray(problem[k]) for k in ("kernel", "recurrent_kernel", "bias"))
    g_weights, g_x, g_h0 = jax.grad(loss, argnums=(0, 1, 2))(
        weights, jnp.asarray(problem["x"]), jnp.asarray(problem["initial_state"]))
    out = ops.simple_rnn_forward(**problem, activation=activation, mask=mask, go_backwards=True,
                                 training=True)
    grads = ops.simple_rnn_backward(out.cache, d_out, d_h)
    expected = dict(kernel=g_weights[0], recurrent_kernel=g_weights[1], bias=g_weights[2],
                    x=g_x, h0=g_h0)
    for name, value in expected.items():
        assert_close(getattr(grads, name), np.asarray(value), RTOL[np.float64], name=f"d{name}")


# ------------------------------------------------------------ recurrent dropout ----

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("state", [True, False], ids=["state", "nostate"])
def test_recurrent_dropout_matches_reference(rng, dtype, state):
    batch, steps, features, units = 4, 7, 3, 5
    problem = make_problem(rng, batch, steps, features, units, state=state)
    keep = ((rng.random((batch, units)) > 0.4) / 0.6).astype(dtype)
    upstream = upstream_gradients(rng, batch, steps, units, "oh")
    results = run_both(problem, dtype, upstream, recurrent_dropout_mask=keep,
                       mask=make_mask(rng, "random", batch, steps), go_backwards=True)
    assert_matches_reference(*results, dtype)
    assert not np.allclose(results[0].outputs,
                           ops.simple_rnn_forward(**cast(problem, dtype)).outputs)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("state", [True, False], ids=["state", "nostate"])
def test_gradients_recurrent_dropout(rng, activation, state):
    params = fd_params(rng, 3, 5, 2, 3, state=state, scale=2.0 if activation == "tanh" else 0.8)
    check_gradients(rng, params, 3, 5, 3, activation=activation,
                    recurrent_dropout_mask=(rng.random((3, 3)) > 0.4) / 0.6,
                    mask=FD_MASKS["mixed"], go_backwards=True)


def test_recurrent_dropout_matches_keras(request, rng):
    """keras.layers.SimpleRNN(recurrent_dropout=...) in training, its mask replaced by ours."""
    keras = require("keras", request)
    import jax.numpy as jnp

    batch, steps, features, units = 4, 6, 3, 5
    problem = make_problem(rng, batch, steps, features, units)
    keep = (rng.random((batch, units)) > 0.3) / 0.7
    mask = make_mask(rng, "holes", batch, steps)
    layer = keras.layers.SimpleRNN(units, recurrent_dropout=0.3, activation=jnp.tanh,
                                   return_sequences=True, return_state=True, dtype="float64")
    layer.build(problem["x"].shape)
    layer.set_weights([problem["kernel"], problem["recurrent_kernel"], problem["bias"]])
    layer.cell._recurrent_dropout_mask = jnp.asarray(keep)
    seq, h_n = (np.asarray(a) for a in layer(problem["x"], initial_state=[problem["initial_state"]],
                                             mask=mask, training=True))
    out = ops.simple_rnn_forward(**problem, recurrent_dropout_mask=keep, mask=mask)
    assert_close(out.outputs, seq, 1e-12, name="outputs")
    assert_close(out.h_n, h_n, 1e-12, name="h_n")


# ------------------------------------------------------------------ bad input ----

def _valid(rng, dtype=np.float64):
    return cast(make_problem(rng, 2, 3, 4, 5), dtype)


@pytest.mark.parametrize("change,error,words", [
    (dict(x=np.zeros((3, 4))), ValueError, "x: expected a 3-D array"),
    (dict(x=np.zeros((2, 3, 4), np.int32)), TypeError, "x: expected a float32 or float64"),
    (dict(kernel=np.zeros((4, 6))), ValueError, "kernel: expected shape (features, units)"),
    (dict(kernel=np.zeros((5, 5))), ValueError, "kernel: expected shape"),
    (dict(recurrent_kernel=np.zeros((5, 15))), ValueError, "recurrent_kernel: expected shape (units, units)"),
    (dict(recurrent_kernel=np.zeros((5, 5, 1))), ValueError, "recurrent_kernel: expected shape"),
    (dict(kernel=np.zeros((4, 5), np.float32)), TypeError, "kernel: dtype float32 does not match"),
    (dict(bias=np.zeros((2, 5))), ValueError, "bias: expected shape (units,)"),
    (dict(bias=np.zeros(5, np.float32)), TypeError, "bias: dtype float32"),
    (dict(initial_state=np.zeros((3, 5))), ValueError, "initial_state[0]: expected shape"),
    (dict(initial_state=(np.zeros((2, 5)), np.zeros((2, 5)))), ValueError, "initial_state: expected one array"),
    (dict(mask=np.ones((2, 4), bool)), ValueError, "mask: expected shape (batch, time)"),
    (dict(mask=np.ones((2, 3), np.float32)), TypeError, "mask: expected a boolean"),
    (dict(activation="softmax"), ValueError, "activation: unsupported activation"),
    (dict(recurrent_dropout_mask=np.ones((3, 2, 5))), ValueError, "recurrent_dropout_mask: expected shape"),
    (dict(recurrent_dropout_mask=np.ones((2, 5), np.float32)), TypeError, "recurrent_dropout_mask: dtype"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_forward_arguments(rng, change, error, words):
    args = dict(_valid(rng), **change)
    with pytest.raises(error) as info:
        ops.simple_rnn_forward(**args)
    assert words in str(info.value)


@pytest.mark.parametrize("change,error,words", [
    (dict(d_outputs=np.zeros((2, 4, 5))), ValueError, "d_outputs: expected shape (batch, time, units)"),
    (dict(d_outputs=np.zeros((2, 3, 5), np.float32)), TypeError, "d_outputs: dtype float32"),
    (dict(d_h_n=np.zeros(5)), ValueError, "d_h_n: expected shape (batch, units)"),
])
def test_bad_backward_arguments(rng, change, error, words):
    out = ops.simple_rnn_forward(**_valid(rng), training=True)
    with pytest.raises(error) as info:
        ops.simple_rnn_backward(out.cache, **change)
    assert words in str(info.value)


def test_backward_needs_a_simple_rnn_training_cache(rng):
    with pytest.raises(TypeError, match="cache: expected the cache returned by simple_rnn_forward"):
        ops.simple_rnn_backward("cache")
    problem = _valid(rng)
    gru = ops.gru_forward(problem["x"], np.zeros((4, 15)), np.zeros((5, 15)), training=True)
    with pytest.raises(TypeError, match="simple_rnn_forward"):
        ops.simple_rnn_backward(gru.cache)
    assert ops.simple_rnn_forward(**problem).cache is None  # inference keeps no cache
