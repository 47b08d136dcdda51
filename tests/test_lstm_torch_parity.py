"""Parity of fusedrnn.ops.lstm_forward/lstm_backward with the real torch.nn.LSTM.

Weight mapping (same gate order i, f, g, o):
    weight_ih_l0 (4H, I) = kernel.T,  weight_hh_l0 (4H, H) = recurrent_kernel.T,
    bias_ih_l0 + bias_hh_l0 = bias.
Gradients come from torch autograd on L = <A, outputs> + <B, h_n> + <C, c_n>, and are
compared field by field with lstm_backward(cache, A, B, C), including the input and the
initial states.  Masks are compared through PackedSequence (prefix lengths: padding outputs
are zero = zero_output_for_mask, h_n is the last valid state), and go_backwards through the
reverse direction of a bidirectional torch LSTM."""
from __future__ import annotations

import numpy as np
import pytest

from fusedrnn import ops
from helpers import assert_close, require

# float32: torch uses exact activations, we use a ~3.5e-7 approximation (test_activations).
RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def torch_dtype(torch, dtype):
    return torch.float32 if dtype == np.float32 else torch.float64


def random_lstm(rng, batch, steps, features, units, dtype):
    bound = 1.0 / np.sqrt(units)
    arrays = dict(
        x=rng.standard_normal((batch, steps, features)),
        kernel=rng.uniform(-bound, bound, (features, 4 * units)),
        recurrent_kernel=rng.uniform(-bound, bound, (units, 4 * units)),
        bias_ih=rng.uniform(-bound, bound, 4 * units),
        bias_hh=rng.uniform(-bound, bound, 4 * units),
        h0=rng.standard_normal((batch, units)),
        c0=rng.standard_normal((batch, units)),
        d_outputs=rng.standard_normal((batch, steps, units)),
        d_h_n=rng.standard_normal((batch, units)),
        d_c_n=rng.standard_normal((batch, units)),
    )
    return {k: v.astype(dtype) for k, v in arrays.items()}


def load_direction(torch, module, suffix, kernel, recurrent_kernel, bias_ih, bias_hh):
    with torch.no_grad():
        getattr(module, "weight_ih_l0" + suffix).copy_(torch.from_numpy(kernel.T.copy()))
        getattr(module, "weight_hh_l0" + suffix).copy_(torch.from_numpy(recurrent_kernel.T.copy()))
        getattr(module, "bias_ih_l0" + suffix).copy_(torch.from_numpy(bias_ih))
        getattr(module, "bias_hh_l0" + suffix).copy_(torch.from_numpy(bias_hh))


def fused(a, *, with_state=True, **options):
    out = ops.lstm_forward(a["x"], a["kernel"], a["recurrent_kernel"], a["bias_ih"] + a["bias_hh"],
                           initial_state=(a["h0"], a["c0"]) if with_state else None,
                           training=True, **options)
    grads = ops.lstm_backward(out.cache, a["d_outputs"], a["d_h_n"], a["d_c_n"])
    return out, grads


def torch_lstm(torch, a, dtype, *, with_state=True):
    """Unidirectional torch.nn.LSTM forward + autograd on the same mixed loss."""
    features, units = a["kernel"].shape[0], a["recurrent_kernel"].shape[0]
    module = torch.nn.LSTM(features, units, batch_first=True).to(torch_dtype(torch, dtype))
    load_direction(torch, module, "", a["kernel"], a["recurrent_kernel"], a["bias_ih"],
                   a["bias_hh"])
    x = torch.tensor(a["x"], requires_grad=True)
    h0 = torch.tensor(a["h0"][None], requires_grad=True)
    c0 = torch.tensor(a["c0"][None], requires_grad=True)
    outputs, (h_n, c_n) = module(x, (h0, c0) if with_state else None)
    loss = ((outputs * torch.from_numpy(a["d_outputs"])).sum()
            + (h_n[0] * torch.from_numpy(a["d_h_n"])).sum()
            + (c_n[0] * torch.from_numpy(a["d_c_n"])).sum())
    loss.backward()
    return dict(
        outputs=outputs.detach().numpy(), h_n=h_n[0].detach().numpy(), c_n=c_n[0].detach().numpy(),
        x=x.grad.numpy(), kernel=module.weight_ih_l0.grad.numpy().T,
        recurrent_kernel=module.weight_hh_l0.grad.numpy().T,
        bias_ih=module.bias_ih_l0.grad.numpy(), bias_hh=module.bias_hh_l0.grad.numpy(),
        h0=None if h0.grad is None else h0.grad.numpy()[0],
        c0=None if c0.grad is None else c0.grad.numpy()[0],
    )


def compare(out, grads, expected, dtype, rtol_scale=1.0):
    rtol = RTOL[dtype] * rtol_scale
    for name in ("outputs", "h_n", "c_n"):
        assert_close(getattr(out, name), expected[name], rtol, name=name)
    for name in ("x", "kernel", "recurrent_kernel"):
        assert_close(getattr(grads, name), expected[name], rtol, name=f"d{name}")
    # torch has two biases; both get the same gradient, which is our d_bias
    assert_close(grads.bias, expected["bias_ih"], rtol, name="d_bias vs bias_ih")
    assert_close(grads.bias, expected["bias_hh"], rtol, name="d_bias vs bias_hh")
    for name in ("h0", "c0"):
        if expected[name] is not None:
            assert_close(getattr(grads, name), expected[name], rtol, name=f"d{name}")


DTYPES = [np.float32, np.float64]


@pytest.fixture
def torch(request):
    torch = require("torch", request)
    return torch


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,features,units", [
    (1, 1, 1), (3, 1, 67), (1, 67, 3), (67, 3, 1), (3, 3, 3), (67, 67, 67), (2, 5, 16),
])
def test_matches_torch_lstm(rng, torch, dtype, batch, features, units):
    a = random_lstm(rng, batch, 7, features, units, dtype)
    out, grads = fused(a)
    compare(out, grads, torch_lstm(torch, a, dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch_without_initial_state(rng, torch, dtype):
    a = random_lstm(rng, 4, 6, 3, 5, dtype)
    out, grads = fused(a, with_state=False)
    assert grads.h0 is None and grads.c0 is None
    compare(out, grads, torch_lstm(torch, a, dtype, with_state=False), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("steps", [1, 300])
def test_matches_torch_single_and_long_sequences(rng, torch, dtype, steps):
    a = random_lstm(rng, 3, steps, 3, 3, dtype)
    out, grads = fused(a)
    compare(out, grads, torch_lstm(torch, a, dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_go_backwards_matches_torch_on_flipped_input(rng, torch, dtype):
    """go_backwards consumes x[:, ::-1] and returns outputs in processing order."""
    a = random_lstm(rng, 3, 6, 4, 5, dtype)
    out, grads = fused(a, go_backwards=True)
    flipped = dict(a, x=np.ascontiguousarray(a["x"][:, ::-1]))
    expected = torch_lstm(torch, flipped, dtype)
    expected["x"] = expected["x"][:, ::-1]  # dx comes back in input order
    compare(out, grads, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,features,units", [(5, 3, 4), (4, 1, 67), (67, 3, 1)])
def test_masks_match_bidirectional_packed_torch_lstm(rng, torch, dtype, batch, features, units):
    """Prefix masks = PackedSequence lengths.  The forward direction is our plain pass, the
    reverse direction our go_backwards pass: both with zero_output_for_mask (torch pads
    with zeros).  Gradients flow through both directions and add up in dx."""
    steps = 8
    fwd = random_lstm(rng, batch, steps, features, units, dtype)
    bwd = random_lstm(rng, batch, steps, features, units, dtype)
    bwd["x"] = fwd["x"]
    lengths = rng.integers(1, steps + 1, size=batch)
    lengths[0] = steps  # one full row, one single-step row
    lengths[-1] = 1
    mask = np.arange(steps)[None, :] < lengths[:, None]
    for a in (fwd, bwd):  # upstream gradient of padded outputs is irrelevant (outputs are 0)
        a["d_outputs"] = a["d_outputs"] * mask[:, :, None]

    out_f, grads_f = fused(fwd, mask=mask, zero_output_for_mask=True)
    # our go_backwards outputs come in processing order; flip the upstream gradient to match
    bwd_ours = dict(bwd, d_outputs=np.ascontiguousarray(bwd["d_outputs"][:, ::-1]))
    out_b, grads_b = fused(bwd_ours, mask=mask, go_backwards=True, zero_output_for_mask=True)

    tdt = torch_dtype(torch, dtype)
    module = torch.nn.LSTM(features, units, batch_first=True, bidirectional=True).to(tdt)
    load_direction(torch, module, "", fwd["kernel"], fwd["recurrent_kernel"], fwd["bias_ih"],
                   fwd["bias_hh"])
    load_direction(torch, module, "_reverse", bwd["kernel"], bwd["recurrent_kernel"],
                   bwd["bias_ih"], bwd["bias_hh"])
    x = torch.tensor(fwd["x"], requires_grad=True)
    h0 = torch.tensor(np.stack([fwd["h0"], bwd["h0"]]), requires_grad=True)
    c0 = torch.tensor(np.stack([fwd["c0"], bwd["c0"]]), requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.from_numpy(lengths),
                                                     batch_first=True, enforce_sorted=False)
    packed_out, (h_n, c_n) = module(packed, (h0, c0))
    outputs, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True,
                                                        total_length=steps)
    d_out = torch.from_numpy(np.concatenate([fwd["d_outputs"], bwd["d_outputs"]], axis=2))
    loss = ((outputs * d_out).sum()
            + (h_n * torch.from_numpy(np.stack([fwd["d_h_n"], bwd["d_h_n"]]))).sum()
            + (c_n * torch.from_numpy(np.stack([fwd["d_c_n"], bwd["d_c_n"]]))).sum())
    loss.backward()

    rtol = RTOL[dtype]
    outputs = outputs.detach().numpy()
    assert_close(out_f.outputs, outputs[:, :, :units], rtol, name="forward outputs")
    assert_close(out_b.outputs[:, ::-1], outputs[:, :, units:], rtol, name="reverse outputs")
    for k, (out, suffix) in enumerate(((out_f, ""), (out_b, "_reverse"))):
        assert_close(out.h_n, h_n[k].detach().numpy(), rtol, name="h_n" + suffix)
        assert_close(out.c_n, c_n[k].detach().numpy(), rtol, name="c_n" + suffix)
    assert_close(grads_f.x + grads_b.x, x.grad.numpy(), rtol, name="dx")
    for k, (grads, suffix) in enumerate(((grads_f, ""), (grads_b, "_reverse"))):
        assert_close(grads.kernel, getattr(module, "weight_ih_l0" + suffix).grad.numpy().T, rtol,
                     name="dkernel" + suffix)
        assert_close(grads.recurrent_kernel,
                     getattr(module, "weight_hh_l0" + suffix).grad.numpy().T, rtol,
                     name="drecurrent" + suffix)
        assert_close(grads.bias, getattr(module, "bias_ih_l0" + suffix).grad.numpy(), rtol,
                     name="dbias" + suffix)
        assert_close(grads.h0, h0.grad[k].numpy(), rtol, name="dh0" + suffix)
        assert_close(grads.c0, c0.grad[k].numpy(), rtol, name="dc0" + suffix)
