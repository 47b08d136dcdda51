"""fusedrnn.torch.LSTM / GRU / RNN against torch.nn: parity, state_dict, training, errors.

Every parity test copies a torch.nn module's state_dict into ours and compares outputs,
final states and the gradients of every parameter, the input and hx, for a loss with
random weights on all outputs (so no gradient is symmetric or trivially zero)."""
from __future__ import annotations

import io

import pytest
import numpy as np

from helpers import assert_close, require

KINDS = ("LSTM", "GRU", "RNN")
# (relative tolerance, absolute floor scaled to the magnitude) per dtype name
RTOL = {"float32": 2e-4, "float64": 1e-9}


@pytest.fixture(autouse=True, scope="module")
def _one_thread_each(request):
    """torch and BLAS on one thread: on 2 shared cores, threads spinning against each other
    (and against other test processes) cost far more than they bring at these sizes."""
    import threadpoolctl

    torch = require("torch", request)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpoolctl.threadpool_limits(1):
        yield
    torch.set_num_threads(previous)


@pytest.fixture
def torch(request):
    torch = require("torch", request)
    torch.manual_seed(0)
    return torch


@pytest.fixture
def ft(torch):
    import fusedrnn.torch as ft
    return ft


def make_pair(torch, ft, kind, input_size, hidden_size, dtype, **options):
    """A torch.nn module and ours with identical parameters."""
    reference = getattr(torch.nn, kind)(input_size, hidden_size, dtype=dtype, **options)
    ours = getattr(ft, kind)(input_size, hidden_size, dtype=dtype, **options)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def run_with_gradients(torch, module, make_input, hx, loss_weights):
    """Forward, then the gradients of a weighted sum of every returned tensor w.r.t. the
    input, hx and every parameter.  Returns (output tensor, states tuple, grads dict)."""
    x_leaf, model_input = make_input()
    output, hidden = module(model_input, hx)
    states = hidden if isinstance(hidden, tuple) else (hidden,)
    out_tensor = output.data if hasattr(output, "batch_sizes") else output
    loss = (out_tensor * loss_weights[0]).sum()
    for state, weight in zip(states, loss_weights[1:]):
        loss = loss + (state * weight).sum()
    wrt = {"input": x_leaf}
    if hx is not None:
        for k, state in enumerate(hx if isinstance(hx, tuple) else (hx,)):
            wrt[f"hx[{k}]"] = state
    wrt.update(dict(module.named_parameters()))
    grads = torch.autograd.grad(loss, list(wrt.values()))
    return output, states, dict(zip(wrt, grads))


def assert_parity(torch, reference, ours, make_input, hx, dtype):
    """Outputs, final states and all gradients of `ours` equal torch.nn's."""
    rtol = RTOL[str(dtype).replace("torch.", "")]
    with torch.no_grad():
        ref_out, ref_hidden = reference(make_input()[1], hx)
    ref_states = ref_hidden if isinstance(ref_hidden, tuple) else (ref_hidden,)
    ref_data = ref_out.data if hasattr(ref_out, "batch_sizes") else ref_out
    generator = torch.Generator().manual_seed(1)
    loss_weights = [torch.randn(ref_data.shape, generator=generator, dtype=dtype)]
    loss_weights += [torch.randn(s.shape, generator=generator, dtype=dtype) for s in ref_states]

    expected = run_with_gradients(torch, reference, make_input, hx, loss_weights)
    actual = run_with_gradients(torch, ours, make_input, hx, loss_weights)

    exp_out, act_out = expected[0], actual[0]
    assert type(act_out) is type(exp_out)
    if hasattr(exp_out, "batch_sizes"):
        assert torch.equal(act_out.batch_sizes, exp_out.batch_sizes)
        for name in ("sorted_indices", "unsorted_indices"):
            e, a = getattr(exp_out, name), getattr(act_out, name)
            assert (e is None and a is None) or torch.equal(a, e), name
        exp_out, act_out = exp_out.data, act_out.data
    assert act_out.shape == exp_out.shape and act_out.dtype == exp_out.dtype
    assert act_out.is_contiguous()
    assert_close(act_out.detach().numpy(), exp_out.detach().numpy(), rtol, name="output")
    assert len(actual[1]) == len(expected[1])
    for k, (a, e) in enumerate(zip(actual[1], expected[1])):
        assert a.shape == e.shape
        assert_close(a.detach().numpy(), e.detach().numpy(), rtol, name=f"final state {k}")
    assert actual[2].keys() == expected[2].keys()
    for name, e in expected[2].items():
        assert_close(actual[2][name].numpy(), e.numpy(), rtol, name=f"gradient of {name}")


def input_maker(torch, rng, *, layout, steps, batch, input_size, batch_first, dtype,
                lengths=None, enforce_sorted=False):
    """A function returning (leaf tensor, module input) afresh on each call."""
    from torch.nn.utils.rnn import pack_padded_sequence

    if layout == "unbatched":
        data = rng.standard_normal((steps, input_size))
    elif batch_first:
        data = rng.standard_normal((batch, steps, input_size))
    else:
        data = rng.standard_normal((steps, batch, input_size))

    def make():
        leaf = torch.tensor(data, dtype=dtype, requires_grad=True)
        if layout == "packed":
            return leaf, pack_padded_sequence(leaf, torch.tensor(lengths), batch_first=batch_first,
                                              enforce_sorted=enforce_sorted)
        return leaf, leaf

    return make


def random_hx(torch, rng, kind, layers, batch, hidden_size, dtype, unbatched=False):
    shape = (layers, hidden_size) if unbatched else (layers, batch, hidden_size)

    def state():
        return torch.tensor(rng.standard_normal(shape), dtype=dtype, requires_grad=True)

    return (state(), state()) if kind == "LSTM" else state()


# Random configurations: (num_layers, bidirectional, batch_first, bias, layout, hx, dtype).
# Sizes are drawn per test from the seeded rng, with odd sizes (1, 3, 67) forced in some.
CONFIGS = [
    (1, False, False, True, "tensor", False, "float64"),
    (2, True, True, True, "tensor", True, "float64"),
    (3, False, False, False, "tensor", True, "float32"),
    (1, True, False, True, "packed", True, "float64"),
    (2, True, True, True, "packed", False, "float32"),
    (3, True, False, True, "packed", True, "float64"),
    (2, False, True, False, "packed", True, "float64"),
    (1, True, True, True, "unbatched", True, "float32"),
    (2, True, False, True, "unbatched", False, "float64"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_parity_with_torch_nn_on_random_configurations(torch, ft, rng, kind, config):
    reference, ours, make_input, hx, dtype = configured_pair(
        torch, ft, rng, kind, config, lambda: int(rng.integers(1, 12)))
    assert_parity(torch, reference, ours, make_input, hx, dtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_one_step_training_parity_with_torch_nn_on_random_configurations(torch, ft, rng, kind,
                                                                         config):
    """One step in training, a teacher-forced decoder's call: forward and backward straight
    from torch's weights, the gradients in torch's layout (csrc/direct_step.h)."""
    reference, ours, make_input, hx, dtype = configured_pair(
        torch, ft, rng, kind, config, lambda: 1)
    assert_parity(torch, reference, ours, make_input, hx, dtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch", [32, 33, 70])
def test_one_step_training_either_side_of_the_rows_threshold(torch, ft, rng, kind, batch):
    """One step in training with up to 32 rows runs straight from torch's weights
    (csrc/direct_step.h), with more on the loops' packed tiles, which read torch's rows
    too (fusedrnn._kernels.one_step_from_rows); both match torch.nn, two layers and both
    directions, on two threads."""
    import fusedrnn

    assert fusedrnn._kernels.one_step_from_rows(batch) == (batch <= 32)
    reference, ours = make_pair(torch, ft, kind, 5, 67, torch.float64, num_layers=2,
                                bidirectional=True, batch_first=True)
    make_input = input_maker(torch, rng, layout="tensor", steps=1, batch=batch, input_size=5,
                             batch_first=True, dtype=torch.float64)
    hx = random_hx(torch, rng, kind, 4, batch, 67, torch.float64)
    with fusedrnn.threads(2):
        assert_parity(torch, reference, ours, make_input, hx, torch.float64)


def configured_pair(torch, ft, rng, kind, config, draw_steps):
    """torch.nn's module and ours for one of CONFIGS, with sizes drawn from rng (odd ones
    among them): (reference, ours, make_input, hx or None, dtype)."""
    layers, bidirectional, batch_first, bias, layout, with_hx, dtype_name = config
    dtype = getattr(torch, dtype_name)
    input_size = int(rng.choice([1, 3, 5, 67]))
    hidden_size = int(rng.choice([1, 3, 8, 67]))
    batch = int(rng.choice([1, 3, 6]))
    steps = draw_steps()
    options = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
                   bias=bias)
    if kind == "RNN":
        options["nonlinearity"] = str(rng.choice(["tanh", "relu"]))
    reference, ours = make_pair(torch, ft, kind, input_size, hidden_size, dtype, **options)
    lengths = None
    if layout == "packed":
        lengths = rng.integers(1, steps + 1, size=batch)
        lengths[rng.integers(batch)] = steps  # one sequence spans every step
        lengths = lengths.tolist()
    # shown by pytest on failure: the rng seed depends on the run's hash seed
    print(f"{kind} {options} input_size={input_size} hidden_size={hidden_size} "
          f"batch={batch} steps={steps} lengths={lengths}")
    make_input = input_maker(torch, rng, layout=layout, steps=steps, batch=batch,
                             input_size=input_size, batch_first=batch_first, dtype=dtype,
                             lengths=lengths)
    hx = None
    if with_hx:
        hx = random_hx(torch, rng, kind, layers * (2 if bidirectional else 1), batch,
                       hidden_size, dtype, unbatched=layout == "unbatched")
    return reference, ours, make_input, hx, dtype


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_inference_parity_with_torch_nn_on_random_configurations(torch, ft, rng, kind, config):
    """The same configurations under torch.no_grad(), where the kernels take torch's weight
    layout as it is (one step straight from its rows, longer inputs converted in C)."""
    reference, ours, make_input, hx, dtype = configured_pair(
        torch, ft, rng, kind, config, lambda: int(rng.choice([1, 1, 2, 11])))
    layout, dtype_name = config[4], config[6]
    model_input = make_input()[1]
    with torch.no_grad():
        expected, expected_hidden = reference(model_input, hx)
        actual, actual_hidden = ours(model_input, hx)
    if layout == "packed":
        expected, actual = expected.data, actual.data
    rtol = RTOL[dtype_name]
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert_close(actual.numpy(), expected.numpy(), rtol, name="output")
    expected_states = expected_hidden if kind == "LSTM" else (expected_hidden,)
    actual_states = actual_hidden if kind == "LSTM" else (actual_hidden,)
    for a, e in zip(actual_states, expected_states, strict=True):
        assert_close(a.numpy(), e.numpy(), rtol, name="state")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("batch,hidden_size,threads", [(1, 67, 1), (3, 130, 2), (None, 5, 1)])
def test_decoding_loop_one_step_at_a_time_matches_torch_nn(torch, ft, rng, kind, dtype_name,
                                                           batch, hidden_size, threads):
    """A seq2seq decoder's loop: two layers called one step at a time with the previous
    step's output and state (unbatched when batch is None), the weights updated in place
    between two steps as an optimizer would; with 130 units the one-step products split over
    two threads."""
    import fusedrnn

    dtype = getattr(torch, dtype_name)
    size = hidden_size  # the output feeds the next step
    reference, ours = make_pair(torch, ft, kind, size, hidden_size, dtype, num_layers=2)
    shape = (1, size) if batch is None else (1, batch, size)
    token = torch.tensor(rng.standard_normal(shape), dtype=dtype)
    ref_token, ref_hidden, hidden = token, None, None
    rtol = RTOL[dtype_name]
    with torch.no_grad(), fusedrnn.threads(threads):
        for step in range(8):
            if step == 4:
                for module in (reference, ours):
                    module.weight_hh_l1.mul_(0.5)
                    module.weight_ih_l0.data.add_(0.25)  # through .data: no version bump
            ref_token, ref_hidden = reference(ref_token, ref_hidden)
            token, hidden = ours(token, hidden)
            assert_close(token.numpy(), ref_token.numpy(), rtol, name=f"output, step {step}")
            pairs = zip(hidden, ref_hidden) if kind == "LSTM" else [(hidden, ref_hidden)]
            for a, e in pairs:
                assert_close(a.numpy(), e.numpy(), rtol, name=f"state, step {step}")


# (kind, options) of the one-layer modules the short path serves
SHORT_PATH_MODULES = [("LSTM", {}), ("GRU", {}), ("RNN", {}), ("RNN", {"nonlinearity": "relu"}),
                      ("LSTM", {"bias": False}), ("GRU", {"bias": False})]


def full_path_only(module, monkeypatch):
    """The module with its short path switched off (forward's full path)."""
    monkeypatch.setattr(module, "_one_layer", lambda input, hx: None)
    return module


@pytest.mark.parametrize("kind,options", SHORT_PATH_MODULES,
                         ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.items())))
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_short_inference_path_equals_the_full_path(torch, ft, rng, monkeypatch, kind, options,
                                                   dtype_name, batch_first):
    """One layer, no gradient: forward takes a short path straight to the kernel
    (_one_layer).  It returns bit for bit what the full path returns, shaped
    as torch.nn's, with and without hx, for one and several steps, odd sizes."""
    dtype = getattr(torch, dtype_name)
    for batch, steps, input_size, hidden_size in [(1, 1, 3, 67), (3, 5, 1, 1), (2, 11, 67, 3)]:
        reference, ours = make_pair(torch, ft, kind, input_size, hidden_size, dtype,
                                    batch_first=batch_first, **options)
        _, full = make_pair(torch, ft, kind, input_size, hidden_size, dtype,
                            batch_first=batch_first, **options)
        full.load_state_dict(reference.state_dict())
        full_path_only(full, monkeypatch)
        shape = (batch, steps, input_size) if batch_first else (steps, batch, input_size)
        x = torch.tensor(rng.standard_normal(shape), dtype=dtype, requires_grad=True)
        for hx in (None, random_hx(torch, rng, kind, 1, batch, hidden_size, dtype)):
            with torch.no_grad():
                assert ours._one_layer(x, hx) is not None  # the short path ran
                got, got_hidden = ours(x, hx)
                want, want_hidden = full(x, hx)
                expected, expected_hidden = reference(x, hx)
            assert got.shape == expected.shape and got.dtype == dtype and got.is_contiguous()
            torch.testing.assert_close(got, want, rtol=0, atol=0)
            assert_close(got.numpy(), expected.numpy(), RTOL[dtype_name], name="output")
            got_states = got_hidden if kind == "LSTM" else (got_hidden,)
            want_states = want_hidden if kind == "LSTM" else (want_hidden,)
            expected_states = expected_hidden if kind == "LSTM" else (expected_hidden,)
            for a, w, e in zip(got_states, want_states, expected_states, strict=True):
                assert a.shape == e.shape == (1, batch, hidden_size)
                torch.testing.assert_close(a, w, rtol=0, atol=0)
                assert_close(a.numpy(), e.numpy(), RTOL[dtype_name], name="state")


@pytest.mark.parametrize("kind", KINDS)
def test_short_inference_path_leaves_everything_else_to_the_full_path(torch, ft, rng, kind):
    """What the short path does not take (several layers, unbatched or packed input, a
    non-contiguous weight or input, hx as a list) goes through the full path with
    torch.nn's results, and malformed arguments raise the full path's errors."""
    from torch.nn.utils.rnn import pack_padded_sequence

    reference, ours = make_pair(torch, ft, kind, 6, 5, torch.float64)
    x = torch.tensor(rng.standard_normal((4, 3, 6)))
    hx = random_hx(torch, rng, kind, 1, 3, 5, torch.float64)
    with torch.no_grad():
        assert ours._one_layer(x, hx) is not None
        packed = pack_padded_sequence(x, torch.tensor([4, 2, 1]))
        declined_inputs = [(x[:, 0], tuple(s[:, 0] for s in hx) if kind == "LSTM" else hx[:, 0]),
                           (packed, hx), (torch.tensor(rng.standard_normal((4, 3, 12)))[..., ::2],
                                          hx)]
        if kind == "LSTM":
            declined_inputs.append((x, list(hx)))
        for model_input, state in declined_inputs:
            assert ours._one_layer(model_input, state) is None
            got, _ = ours(model_input, state)
            want, _ = reference(model_input, state)
            got = got.data if isinstance(got, type(packed)) else got
            want = want.data if isinstance(want, type(packed)) else want
            assert_close(got.numpy(), want.numpy(), 1e-9, name="output")
        # a weight that is a transposed view: declined, the full path copies it
        transposed = torch.nn.Parameter(ours.weight_hh_l0.detach().t().contiguous().t())
        assert not transposed.is_contiguous()
        ours.weight_hh_l0 = transposed
        assert ours._one_layer(x, hx) is None
        assert_close(ours(x, hx)[0].numpy(), reference(x, hx)[0].numpy(), 1e-9, name="output")
        # malformed arguments: declined, and the full path names them
        with pytest.raises(ValueError, match="input_size = 6"):
            ours(torch.randn(4, 3, 7, dtype=torch.float64))
        with pytest.raises(TypeError, match="weight_ih_l0 has dtype torch.float64"):
            ours(torch.randn(4, 3, 6))
        state = torch.zeros(1, 2, 5, dtype=torch.float64)  # batch 2 != 3
        with pytest.raises(ValueError, match=r"\(1, 3, 5\)"):
            ours(x, (state, state) if kind == "LSTM" else state)
        state = torch.zeros(1, 3, 5)  # float32 state, float64 input
        with pytest.raises(TypeError, match="dtype"):
            ours(x, (state, state) if kind == "LSTM" else state)
    # with autograd (and contiguous weights): the short path too, through the fused
    # autograd Function
    _, fresh = make_pair(torch, ft, kind, 6, 5, torch.float64)
    got, _ = fresh._one_layer(x, hx)
    assert got.requires_grad


@pytest.mark.parametrize("kind,options", SHORT_PATH_MODULES,
                         ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.items())))
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_short_training_path_equals_the_full_path(torch, ft, rng, monkeypatch, kind, options,
                                                  dtype_name, batch_first):
    """One layer with autograd: the short path's kernels, called without fusedrnn.ops'
    checks, give bit for bit the full path's outputs and gradients (input, hx, every
    parameter), and torch.nn's within tolerance.  Upstream gradients as autograd hands
    them: dense, expanded with zero strides (sum()), transposed (batch_first=False), for
    the output alone or with the final states; the input and hx with and without a
    gradient (a state carried without one: the kernels skip the hx gradient)."""
    dtype = getattr(torch, dtype_name)
    losses = {
        "weighted": lambda out, states, w: (out * w[0]).sum(),
        "sum": lambda out, states, w: out.sum(),
        "with states": lambda out, states, w: (out * w[0]).sum() + sum(
            (s * ws).sum() for s, ws in zip(states, w[1:])),
    }
    for batch, steps, input_size, hidden_size in [(1, 1, 3, 67), (3, 5, 1, 1), (2, 11, 67, 3)]:
        reference, ours = make_pair(torch, ft, kind, input_size, hidden_size, dtype,
                                    batch_first=batch_first, **options)
        _, full = make_pair(torch, ft, kind, input_size, hidden_size, dtype,
                            batch_first=batch_first, **options)
        full.load_state_dict(reference.state_dict())
        full_path_only(full, monkeypatch)
        shape = (batch, steps, input_size) if batch_first else (steps, batch, input_size)
        x_data = rng.standard_normal(shape)
        out_shape = (batch, steps, hidden_size) if batch_first else (steps, batch, hidden_size)
        weights = [torch.tensor(rng.standard_normal(out_shape), dtype=dtype)]
        weights += [torch.tensor(rng.standard_normal((1, batch, hidden_size)), dtype=dtype)
                    for _ in range(2)]
        for hx_given, x_grad, loss_name in [(None, True, "weighted"), ("grad", True, "sum"),
                                            ("grad", False, "with states"),
                                            (None, False, "with states"),
                                            ("no grad", True, "with states")]:
            hx = None
            if hx_given:
                hx = random_hx(torch, rng, kind, 1, batch, hidden_size, dtype)
                if hx_given == "no grad":
                    hx = tuple(s.detach() for s in hx) if kind == "LSTM" else hx.detach()
            results = []
            for module in (ours, full, reference):
                x = torch.tensor(x_data, dtype=dtype, requires_grad=x_grad)
                if module is ours:
                    assert ours._one_layer(x, hx) is not None  # the short path ran
                out, hidden = module(x, hx)
                states = hidden if kind == "LSTM" else (hidden,)
                leaves = [*([x] if x_grad else []),
                          *(states_of(hx) if hx_given == "grad" else []), *module.parameters()]
                grads = torch.autograd.grad(losses[loss_name](out, states, weights), leaves)
                results.append([t.detach() for t in (out, *states, *grads)])
            got, want, expected = results
            for a, w, e in zip(got, want, expected, strict=True):
                assert a.shape == e.shape and a.dtype == dtype
                torch.testing.assert_close(a, w, rtol=0, atol=0)
                assert_close(a.numpy(), e.numpy(), RTOL[dtype_name],
                             name=f"{loss_name}, hx {hx_given}, x grad {x_grad}")


def states_of(hx):
    """hx as a list of its state tensors (LSTM's tuple or a single tensor)."""
    return list(hx) if isinstance(hx, tuple) else [hx]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_parity_long_packed_bidirectional_sequence(torch, ft, rng, kind, dtype_name):
    """300 steps, 67 units, unsorted lengths: the reverse direction starts at each
    sequence's own last step, padding outputs are zero, h_n is taken at the last step."""
    dtype = getattr(torch, dtype_name)
    reference, ours = make_pair(torch, ft, kind, 3, 67, dtype, bidirectional=True)
    lengths = [137, 300, 1, 64]
    make_input = input_maker(torch, rng, layout="packed", steps=300, batch=4, input_size=3,
                             batch_first=False, dtype=dtype, lengths=lengths)
    hx = random_hx(torch, rng, kind, 2, 4, 67, dtype)
    assert_parity(torch, reference, ours, make_input, hx, dtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_parity_with_weights_large_enough_to_transpose_on_two_threads(torch, ft, rng, kind,
                                                                      dtype_name):
    """Weight and gradient matrices of 2^17 elements and more: the layout transposes
    (csrc/transpose.c) split them between the kernel threads; GRU's gate blocks included."""
    import fusedrnn

    dtype = getattr(torch, dtype_name)
    hidden_size = 420 if kind == "RNN" else 300  # weight_hh: 176,400 / 270,000 / 360,000
    reference, ours = make_pair(torch, ft, kind, 211, hidden_size, dtype, batch_first=True)
    make_input = input_maker(torch, rng, layout="tensor", steps=3, batch=2, input_size=211,
                             batch_first=True, dtype=dtype)
    hx = random_hx(torch, rng, kind, 1, 2, hidden_size, dtype)
    with fusedrnn.threads(2):
        assert_parity(torch, reference, ours, make_input, hx, dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_packed_sorted_input_and_padding_outputs(torch, ft, rng, kind):
    """enforce_sorted=True input (no sorted_indices), and the padded view of the output
    is zero past each length, as torch's."""
    from torch.nn.utils.rnn import pad_packed_sequence

    dtype = torch.float64
    reference, ours = make_pair(torch, ft, kind, 4, 5, dtype, num_layers=2, bidirectional=True,
                                batch_first=True)
    lengths = [7, 5, 5, 2]
    make_input = input_maker(torch, rng, layout="packed", steps=7, batch=4, input_size=4,
                             batch_first=True, dtype=dtype, lengths=lengths,
                             enforce_sorted=True)
    assert_parity(torch, reference, ours, make_input, None, dtype)
    padded, _ = pad_packed_sequence(ours(make_input()[1])[0], batch_first=True)
    for row, length in enumerate(lengths):
        assert torch.all(padded[row, length:] == 0)
        assert torch.all(padded[row, :length].abs().sum(-1) > 0)


@pytest.mark.parametrize("kind", KINDS)
def test_loss_on_part_of_the_results(torch, ft, rng, kind):
    """Gradients flowing only from h_n (no output gradient), or only from the output."""
    dtype = torch.float64
    reference, ours = make_pair(torch, ft, kind, 3, 4, dtype, num_layers=2, bidirectional=True)
    x = torch.tensor(rng.standard_normal((6, 2, 3)), dtype=dtype)
    for pick in ("state", "output"):
        grads = []
        for module in (reference, ours):
            module.zero_grad()
            output, hidden = module(x)
            h_n = hidden[0] if kind == "LSTM" else hidden
            (h_n.sum() if pick == "state" else output.pow(2).sum()).backward()
            grads.append([p.grad.clone() for p in module.parameters()])
        for expected, actual in zip(*grads):
            assert_close(actual.numpy(), expected.numpy(), 1e-9, name=pick)


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trips_both_ways(torch, ft, kind):
    ours = getattr(ft, kind)(5, 7, num_layers=2, bidirectional=True)
    reference = getattr(torch.nn, kind)(5, 7, num_layers=2, bidirectional=True)
    assert list(ours.state_dict()) == list(reference.state_dict())
    for (name, a), (_, b) in zip(ours.state_dict().items(), reference.state_dict().items()):
        assert a.shape == b.shape and a.dtype == b.dtype, name
    assert isinstance(ours, getattr(torch.nn, kind))

    reference.load_state_dict(ours.state_dict())  # ours -> torch
    for name, value in ours.state_dict().items():
        assert torch.equal(reference.state_dict()[name], value)
    saved = io.BytesIO()
    torch.save(reference.state_dict(), saved)  # torch -> file -> ours
    saved.seek(0)
    fresh = getattr(ft, kind)(5, 7, num_layers=2, bidirectional=True)
    fresh.load_state_dict(torch.load(saved))
    x = torch.randn(4, 3, 5)
    with torch.no_grad():
        assert torch.allclose(fresh(x)[0], reference(x)[0], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_default_initialisation_is_uniform_in_plus_minus_one_over_sqrt_h(torch, ft, kind):
    hidden_size = 16
    bound = 1.0 / hidden_size ** 0.5
    values = torch.cat([p.detach().reshape(-1) for p in getattr(ft, kind)(30, hidden_size).parameters()])
    assert values.abs().max() <= bound
    assert values.max() > 0.95 * bound and values.min() < -0.95 * bound
    assert abs(float(values.mean())) < 0.05 * bound  # centred
    assert abs(float(values.std()) - bound / 3 ** 0.5) < 0.05 * bound  # std of U(-b, b)


def test_training_with_adam_matches_torch_nn(torch, ft, rng):
    """Eight Adam steps of a small sequence classifier in float64 (packed, bidirectional,
    2 layers): the parameters end where torch.nn's end."""
    from torch.nn.utils.rnn import pack_padded_sequence

    dtype = torch.float64
    results = []
    data = torch.tensor(rng.standard_normal((5, 9, 3)), dtype=dtype)
    targets = torch.tensor(rng.standard_normal((5, 2)), dtype=dtype)
    lengths = torch.tensor([9, 4, 7, 1, 9])
    torch.manual_seed(3)
    initial = torch.nn.LSTM(3, 6, num_layers=2, bidirectional=True, batch_first=True).double()
    head_init = torch.nn.Linear(12, 2).double()
    for module_class in (torch.nn.LSTM, ft.LSTM):
        rnn = module_class(3, 6, num_layers=2, bidirectional=True, batch_first=True,
                           dtype=dtype)
        rnn.load_state_dict(initial.state_dict())
        head = torch.nn.Linear(12, 2, dtype=dtype)
        head.load_state_dict(head_init.state_dict())
        params = list(rnn.parameters()) + list(head.parameters())
        optimizer = torch.optim.Adam(params, lr=0.05)
        for _ in range(8):
            optimizer.zero_grad()
            packed = pack_padded_sequence(data, lengths, batch_first=True, enforce_sorted=False)
            _, (h_n, _) = rnn(packed)
            features = torch.cat([h_n[-2], h_n[-1]], dim=1)
            loss = torch.nn.functional.mse_loss(head(features), targets)
            loss.backward()
            optimizer.step()
        results.append([p.detach().clone() for p in params])
    start = [p.detach() for p in (*initial.parameters(), *head_init.parameters())]
    moved = max(float((a - b).abs().max()) for a, b in zip(results[0], start))
    assert moved > 0.1  # training really changed the parameters
    for expected, actual in zip(*results):
        assert_close(actual.numpy(), expected.numpy(), 1e-8)


def test_no_grad_runs_inference_kernels(torch, ft, monkeypatch):
    """Under torch.no_grad() (or when nothing requires grad) the kernels get
    training=False; with autograd they get training=True."""
    from fusedrnn import ops

    calls = []
    real_forward = ops.lstm_forward

    def recording_forward(*args, **kwargs):
        calls.append(kwargs["training"])
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(ops, "lstm_forward", recording_forward)
    reference, ours = make_pair(torch, ft, "LSTM", 3, 4, torch.float32, bidirectional=True)
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        output, (h_n, c_n) = ours(x)
        expected, (h_exp, c_exp) = reference(x)
    assert calls == [False, False]
    assert not output.requires_grad and not h_n.requires_grad
    assert torch.allclose(output, expected, atol=1e-5) and torch.allclose(c_n, c_exp, atol=1e-5)

    calls.clear()
    output, _ = ours(x)
    assert calls == [True, True] and output.requires_grad

    calls.clear()
    for p in ours.parameters():
        p.requires_grad_(False)
    output, _ = ours(x)
    assert calls == [False, False] and not output.requires_grad


def record_backward_flag(monkeypatch, op, flag):
    """The list that receives `flag`'s value at every call of fusedrnn.ops.<op>, which
    still runs (patched for the test)."""
    from fusedrnn import ops

    calls = []
    real_backward = getattr(ops, op)

    def recording_backward(*args, **kwargs):
        calls.append(kwargs[flag])
        return real_backward(*args, **kwargs)

    monkeypatch.setattr(ops, op, recording_backward)
    return calls


@pytest.mark.parametrize("kind,op", [("LSTM", "lstm_backward"), ("GRU", "gru_backward"),
                                     ("RNN", "simple_rnn_backward")])
def test_input_gradient_only_when_autograd_needs_it(torch, ft, rng, monkeypatch, kind, op):
    """Like torch.nn's RNNs, the first layer skips the gradient w.r.t. an input that does
    not require grad (input_gradient=False: one GEMM less); the second layer, whose input
    is the first's output, computes it; with x.requires_grad every layer does, and x.grad
    matches torch.nn's."""
    calls = record_backward_flag(monkeypatch, op, "input_gradient")
    dtype = torch.float64
    reference, ours = make_pair(torch, ft, kind, 3, 5, dtype, num_layers=2, bidirectional=True)
    data = rng.standard_normal((6, 2, 3))
    for requires_grad in (False, True):
        calls.clear()
        grads = []
        for module in (reference, ours):
            module.zero_grad()
            x = torch.tensor(data, dtype=dtype, requires_grad=requires_grad)
            output, _ = module(x)
            output.pow(2).sum().backward()
            grads.append(([p.grad.clone() for p in module.parameters()], x.grad))
        # backward runs layer 2's two directions, then layer 1's
        assert calls == [True, True, requires_grad, requires_grad]
        (ref_params, ref_dx), (our_params, our_dx) = grads
        for expected, actual in zip(ref_params, our_params):
            assert_close(actual.numpy(), expected.numpy(), 1e-9, name="parameter")
        if requires_grad:
            assert_close(our_dx.numpy(), ref_dx.numpy(), 1e-9, name="x")
        else:
            assert our_dx is None and ref_dx is None


@pytest.mark.parametrize("kind,op", [("LSTM", "lstm_backward"), ("GRU", "gru_backward"),
                                     ("RNN", "simple_rnn_backward")])
def test_initial_gradient_only_when_autograd_needs_it(torch, ft, rng, monkeypatch, kind, op):
    """The gradient w.r.t. hx is asked of the kernels only when hx requires grad
    (initial_gradient=False otherwise: a carried state's step skips its product with
    weight_hh); the parameters' gradients and hx's match torch.nn's either way."""
    calls = record_backward_flag(monkeypatch, op, "initial_gradient")
    dtype = torch.float64
    reference, ours = make_pair(torch, ft, kind, 3, 5, dtype, num_layers=2)  # the full path
    data = rng.standard_normal((1, 2, 3))
    for requires_grad in (False, True):
        calls.clear()
        hx = random_hx(torch, rng, kind, 2, 2, 5, dtype)
        if not requires_grad:
            hx = tuple(s.detach() for s in hx) if kind == "LSTM" else hx.detach()
        grads = []
        for module in (reference, ours):
            output, _ = module(torch.tensor(data, dtype=dtype), hx)
            leaves = [*module.parameters(), *(states_of(hx) if requires_grad else [])]
            grads.append(torch.autograd.grad(output.pow(2).sum(), leaves))
        assert calls == [requires_grad, requires_grad]
        for expected, actual in zip(*grads, strict=True):
            assert_close(actual.numpy(), expected.numpy(), 1e-9, name="gradient")


def test_double_and_float_conversions(torch, ft, rng):
    reference, ours = make_pair(torch, ft, "LSTM", 3, 4, torch.float32, num_layers=2)
    x = rng.standard_normal((6, 2, 3))
    ours.double()
    reference.double()
    assert all(p.dtype == torch.float64 for p in ours.parameters())
    out64, _ = ours(torch.tensor(x))
    assert out64.dtype == torch.float64
    assert_close(out64.detach().numpy(), reference(torch.tensor(x))[0].detach().numpy(), 1e-12)
    ours.float()
    out32, _ = ours(torch.tensor(x, dtype=torch.float32))
    assert out32.dtype == torch.float32
    assert_close(out32.detach().numpy(), out64.detach().numpy(), 1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_inter_layer_dropout_only_in_training(torch, ft, rng, kind):
    dtype = torch.float64
    x = torch.tensor(rng.standard_normal((8, 3, 4)), dtype=dtype)
    reference, ours = make_pair(torch, ft, kind, 4, 5, dtype, num_layers=2, dropout=0.5)
    ours.eval()
    reference.eval()
    assert_close(ours(x)[0].detach().numpy(), reference(x)[0].detach().numpy(), 1e-9)
    ours.train()
    first, second = ours(x)[0], ours(x)[0]
    assert not torch.allclose(first, second)  # a fresh dropout mask per call

    # dropout=1 zeroes the second layer's input: deterministic, so torch must agree.
    reference, ours = make_pair(torch, ft, kind, 4, 5, dtype, num_layers=2, dropout=1.0)
    out_ref, out_ours = reference(x)[0], ours(x)[0]
    assert_close(out_ours.detach().numpy(), out_ref.detach().numpy(), 1e-9)
    out_ours.sum().backward()
    assert torch.all(ours.weight_ih_l1.grad == 0)  # the zeroed input carries no gradient
    assert torch.any(ours.weight_hh_l1.grad != 0)


def test_callers_tensors_are_not_modified(torch, ft, rng):
    reference, ours = make_pair(torch, ft, "LSTM", 3, 4, torch.float64, bidirectional=True)
    x = torch.tensor(rng.standard_normal((5, 2, 3)), requires_grad=True)
    hx = random_hx(torch, rng, "LSTM", 2, 2, 4, torch.float64)
    before = [t.detach().clone() for t in (x, *hx, *ours.parameters())]
    output, (h_n, c_n) = ours(x, hx)
    (output.sum() + h_n.sum() + c_n.sum()).backward()
    for old, new in zip(before, (x, *hx, *ours.parameters())):
        assert torch.equal(old, new.detach())


def test_backward_twice_with_retained_graph(torch, ft, rng):
    _, ours = make_pair(torch, ft, "LSTM", 3, 4, torch.float64)
    x = torch.tensor(rng.standard_normal((5, 2, 3)), requires_grad=True)
    loss = ours(x)[0].pow(2).sum()
    loss.backward(retain_graph=True)
    once = x.grad.clone()
    loss.backward()
    assert_close(x.grad.numpy(), 2 * once.numpy(), 1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lengths", [[2, 4, 1], [1, 1, 1]])
def test_gradcheck_against_finite_differences(torch, ft, rng, kind, lengths):
    """torch.autograd.gradcheck through the module: packed, bidirectional, with hx; over
    four steps and over one (straight from torch's weights)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    module = getattr(ft, kind)(2, 3, bidirectional=True, dtype=torch.float64)
    x = torch.tensor(rng.standard_normal((max(lengths), 3, 2)), requires_grad=True)
    h0 = torch.tensor(rng.standard_normal((2, 3, 3)), requires_grad=True)
    c0 = torch.tensor(rng.standard_normal((2, 3, 3)), requires_grad=True)
    lengths = torch.tensor(lengths)

    def run(x, h0, c0, *params):
        named = dict(zip([n for n, _ in module.named_parameters()], params))
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        hx = (h0, c0) if kind == "LSTM" else h0
        output, hidden = torch.func.functional_call(module, named, (packed, hx))
        states = hidden if kind == "LSTM" else (hidden,)
        return (output.data, *states)

    params = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    assert torch.autograd.gradcheck(run, (x, h0, c0, *params))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layers", [1, 2], ids=["short_path", "full_path"])
@pytest.mark.parametrize("modified", ["weight_ih_l0", "weight_hh_l0", "hx"])
@pytest.mark.parametrize("x_grad", [False, True], ids=["x", "x_grad"])
def test_in_place_changes_before_backward_raise_like_torch(torch, ft, rng, kind, layers,
                                                           modified, x_grad):
    """The kernels' cache reads the weights and hx where they are: one that backward reads,
    modified in place between forward and backward, makes backward raise (autograd's
    version check) where torch.nn's raises, rather than computing with its new values;
    weight_ih is read only for x's gradient, as in torch.nn."""
    reference, ours = make_pair(torch, ft, kind, 3, 4, torch.float64, num_layers=layers)
    raised = []
    for module in (reference, ours):
        x = torch.tensor(rng.standard_normal((5, 2, 3)), requires_grad=x_grad)
        hx = random_hx(torch, rng, kind, layers, 2, 4, torch.float64)
        output, _ = module(x, hx)
        with torch.no_grad():
            target = states_of(hx)[0] if modified == "hx" else getattr(module, modified)
            target.add_(0.5)
        try:
            output.sum().backward()
            raised.append(False)
        except RuntimeError as error:
            # torch.nn's message for hx names its own unbind view; ours is the version's
            assert module is reference or "modified by an inplace operation" in str(error)
            raised.append(True)
    assert raised[1] == raised[0] == (modified != "weight_ih_l0" or x_grad)


def test_double_backward_is_refused_not_silently_wrong(torch, ft, rng):
    _, ours = make_pair(torch, ft, "RNN", 2, 3, torch.float64)
    x = torch.tensor(rng.standard_normal((4, 1, 2)), requires_grad=True)
    (grad,) = torch.autograd.grad(ours(x)[0].pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.sum().backward()


def test_lstm_proj_size_is_rejected_clearly(torch, ft):
    with pytest.raises(ValueError, match="proj_size"):
        ft.LSTM(3, 4, proj_size=2)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_raises_clear_errors(torch, ft, kind):
    module = getattr(ft, kind)(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="input_size = 3"):
        module(torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match="3-D"):
        module(torch.randn(5, 2, 3, 1))
    with pytest.raises(TypeError, match="torch.float32 or torch.float64"):
        module(torch.zeros(5, 2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.float32 or torch.float64"):
        module(torch.zeros(5, 2, 3, dtype=torch.float16))
    with pytest.raises(TypeError, match="weight_ih_l0 has dtype torch.float32"):
        module(torch.zeros(5, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="CPU"):
        module(torch.zeros(5, 2, 3, device="meta"))
    with pytest.raises(ValueError, match="at least one sequence and one time step"):
        module(torch.randn(0, 2, 3))
    with pytest.raises(ValueError, match="at least one sequence and one time step"):
        module(torch.randn(5, 0, 3))
    with pytest.raises(TypeError, match="torch.Tensor or a PackedSequence"):
        module(np.zeros((5, 2, 3), np.float32))
    state = torch.zeros(2, 3, 4)  # batch 3 != 2
    with pytest.raises(ValueError, match=r"\(2, 2, 4\)"):
        module(torch.randn(5, 2, 3), (state, state) if kind == "LSTM" else state)
    state = torch.zeros(2, 2, 4)  # batched state for unbatched input
    with pytest.raises(ValueError, match="unbatched"):
        module(torch.randn(5, 3), (state, state) if kind == "LSTM" else state)
    state = torch.zeros(2, 2, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="dtype"):
        module(torch.randn(5, 2, 3), (state, state) if kind == "LSTM" else state)
    if kind == "LSTM":
        with pytest.raises(TypeError, match=r"\(h_0, c_0\)"):
            module(torch.randn(5, 2, 3), torch.zeros(2, 2, 4))
