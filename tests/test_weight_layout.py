"""One-step inference straight from the weights, and weight_layout="torch" (csrc/
direct_step.h).  A single inference step multiplies straight from Keras' columns or torch's
rows; on longer inputs the loops read torch's rows themselves (only the GRU's BLAS products
per step, without AVX2, convert them to Keras' layout in C; tests/test_kernel_paths.py
runs every loop path on both layouts).  Checked against the float64 reference on the same weights in Keras'
layout, on every path (direct or packed tiles, AVX2 or generic C) and thread split, with
odd sizes, masks, initial states and go_backwards; and every misuse refused by name."""
import itertools

import numpy as np
import pytest

import fusedrnn
from fusedrnn import _kernels, ops, reference

# cell -> (gate blocks, forward, reference forward, options, torch's row block of each of
# Keras' gate blocks)
CELLS = {
    "lstm": (4, ops.lstm_forward, reference.lstm_forward, {}, (0, 1, 2, 3)),
    "gru": (3, ops.gru_forward, reference.gru_forward, {"reset_after": True}, (1, 0, 2)),
    "gru_reset_before": (3, ops.gru_forward, reference.gru_forward, {"reset_after": False},
                         (1, 0, 2)),
    "simple_rnn": (1, ops.simple_rnn_forward, reference.simple_rnn_forward, {}, (0,)),
}


def torch_rows(matrix, units, gate_rows):
    """Keras' (n, G*units) columns -> torch's (G*units, n) rows, torch's gate order."""
    rows = np.empty((matrix.shape[1], matrix.shape[0]), matrix.dtype)
    for keras_block, torch_block in enumerate(gate_rows):
        rows[torch_block * units:(torch_block + 1) * units] = (
            matrix[:, keras_block * units:(keras_block + 1) * units].T)
    return rows


def torch_bias(bias, units, gate_rows):
    """Keras' bias (its gate blocks along the last axis) in torch's gate order."""
    out = np.empty_like(bias)
    for keras_block, torch_block in enumerate(gate_rows):
        out[..., torch_block * units:(torch_block + 1) * units] = (
            bias[..., keras_block * units:(keras_block + 1) * units])
    return out


def problem(rng, cell, batch, steps, features, units, dtype, *, masked, with_state):
    gates, _, _, options, _ = CELLS[cell]
    x = rng.standard_normal((batch, steps, features)).astype(dtype)
    kernel = (rng.standard_normal((features, gates * units)) * 0.3).astype(dtype)
    recurrent = (rng.standard_normal((units, gates * units)) * 0.3).astype(dtype)
    bias_shape = (2, gates * units) if cell == "gru" else (gates * units,)
    bias = rng.standard_normal(bias_shape).astype(dtype)
    kwargs = dict(options)
    if masked:
        kwargs["mask"] = rng.random((batch, steps)) > 0.3
    if with_state:
        count = 2 if cell == "lstm" else 1
        kwargs["initial_state"] = [rng.standard_normal((batch, units)).astype(dtype)
                                   for _ in range(count)]
    return (x, kernel, recurrent, bias), kwargs


def as_torch(cell, kernel, recurrent, bias, units):
    gate_rows = CELLS[cell][4]
    return (torch_rows(kernel, units, gate_rows), torch_rows(recurrent, units, gate_rows),
            None if bias is None else torch_bias(bias, units, gate_rows))


def check_against_reference(cell, arrays, kwargs, dtype, layout="torch"):
    _, forward, reference_forward, _, _ = CELLS[cell]
    x, kernel, recurrent, bias = arrays
    units = recurrent.shape[0]
    weights = (as_torch(cell, kernel, recurrent, bias, units) if layout == "torch"
               else (kernel, recurrent, bias))
    before = [a.copy() for a in weights if a is not None]
    got = forward(x, *weights, weight_layout=layout, **kwargs)
    want = reference_forward(*(None if a is None else a.astype(np.float64) for a in arrays),
                             **kwargs)
    tol = 1e-10 if dtype == np.float64 else 2e-5
    assert got.outputs.dtype == dtype and got.cache is None
    for name in ("outputs", "h_n", "c_n"):
        if hasattr(want, name):
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=tol,
                                       atol=tol, err_msg=name)
    for kept, now in zip(before, [a for a in weights if a is not None]):
        np.testing.assert_array_equal(kept, now)  # the caller's arrays are untouched


# name -> set_path_overrides arguments: a single step straight from the weights or on the
# packed tiles (whatever the batch size), with the AVX2 kernels or the generic C
PATHS = {"direct": dict(simd=-1, direct_step=1), "tiles": dict(simd=-1, direct_step=0),
         "generic_direct": dict(simd=0, direct_step=1), "generic_tiles": dict(simd=0, direct_step=0)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("layout,steps", [("torch", 1), ("torch", 6), ("keras", 1)])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_layouts_match_reference(rng, cell, layout, steps, threads, path, dtype):
    """Odd sizes (1, 3, 5, 9, 67 features; 1, 3, 67, 130 units; 1, 3, 5, 8 rows), masks, initial states and
    go_backwards; with 130 units and 8 rows a step's products split over two threads (and
    Keras' 130 columns per gate leave a partial tile)."""
    previous = _kernels.set_path_overrides(**PATHS[path])
    try:
        with fusedrnn.threads(threads):
            for (batch, features, units), masked, with_state, backwards in itertools.product(
                    [(1, 1, 1), (3, 67, 3), (1, 3, 67), (5, 9, 67), (8, 5, 130)], [False, True],
                    [False, True], [False, True]):
                arrays, kwargs = problem(rng, cell, batch, steps, features, units, dtype,
                                         masked=masked, with_state=with_state)
                kwargs["go_backwards"] = backwards
                check_against_reference(cell, arrays, kwargs, dtype, layout)
    finally:
        _kernels.set_path_overrides(*previous)


@pytest.mark.parametrize("layout", ["keras", "torch"])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_one_step_without_bias_and_with_recurrent_dropout(rng, cell, layout):
    """No bias; and recurrent dropout, which a single step takes through the loops."""
    arrays, kwargs = problem(rng, cell, 3, 1, 4, 7, np.float64, masked=True, with_state=True)
    check_against_reference(cell, arrays[:3] + (None,), kwargs, np.float64, layout)
    shape = (3, 3, 7) if cell.startswith("gru") else (3, 7)
    kwargs["recurrent_dropout_mask"] = (rng.random(shape) > 0.3) / 0.7
    check_against_reference(cell, arrays, kwargs, np.float64, layout)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_torch_layout_equals_keras_layout_bitwise_on_longer_inputs(rng, cell):
    """Longer inputs run the same loops as Keras' layout: the tiles' packings take the
    same values from torch's rows, and the input projection is BLAS's GEMM with the other
    transpose flag (the GRU's one per gate block), which sums in the same order here.  The
    results are those of the Keras layout, bit for bit."""
    _, forward, _, _, _ = CELLS[cell]
    arrays, kwargs = problem(rng, cell, 5, 9, 6, 33, np.float32, masked=True, with_state=True)
    x, kernel, recurrent, bias = arrays
    keras = forward(*arrays, **kwargs)
    torch = forward(x, *as_torch(cell, kernel, recurrent, bias, 33), weight_layout="torch",
                    **kwargs)
    np.testing.assert_array_equal(torch.outputs, keras.outputs)
    np.testing.assert_array_equal(torch.h_n, keras.h_n)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_torch_layout_misuse_is_refused_by_name(rng, cell):
    gates, forward, _, options, _ = CELLS[cell]
    arrays, kwargs = problem(rng, cell, 2, 1, 5, 3, np.float64, masked=False, with_state=False)
    x, kernel, recurrent, bias = arrays
    rows = as_torch(cell, kernel, recurrent, bias, 3)
    with pytest.raises(ValueError, match="weight_layout: expected 'keras' or 'torch'"):
        forward(x, *rows, weight_layout="pytorch", **kwargs)
    with pytest.raises(ValueError, match="weight_layout: expected"):
        forward(x, *rows, weight_layout=None, **kwargs)
    blocks = "units" if gates == 1 else f"{gates}\\*units"
    # Keras-shaped weights given as torch's: named, with the shape torch's layout needs
    with pytest.raises(ValueError, match=f"kernel: expected shape \\({blocks}, features\\)"):
        forward(x, kernel, rows[1], bias, weight_layout="torch", **kwargs)
    if gates > 1:  # (units, units) is the same shape in both layouts
        with pytest.raises(ValueError,
                           match=f"recurrent_kernel: expected shape \\({blocks}, units\\)"):
            forward(x, rows[0], recurrent, bias, weight_layout="torch", **kwargs)
    with pytest.raises(TypeError, match="recurrent_kernel"):
        forward(x, rows[0], rows[1].astype(np.float32), bias, weight_layout="torch", **kwargs)
    with pytest.raises(TypeError, match="training"):
        forward(x, *rows, weight_layout="torch", training="no", **kwargs)


BACKWARD = {"lstm": (ops.lstm_backward, reference.lstm_backward),
            "gru": (ops.gru_backward, reference.gru_backward),
            "gru_reset_before": (ops.gru_backward, reference.gru_backward),
            "simple_rnn": (ops.simple_rnn_backward, reference.simple_rnn_backward)}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_one_step_training_caches_give_the_reference_gradients(rng, cell, path):
    """A single training step writes the cache backward reads (inputs with masked rows
    zeroed, gates, states, mask) whichever way it ran: every gradient is the reference's,
    and the outputs are the inference step's bit for bit."""
    _, forward, reference_forward, _, _ = CELLS[cell]
    backward, reference_backward = BACKWARD[cell]
    previous = _kernels.set_path_overrides(**PATHS[path])
    try:
        for batch, features, units in [(1, 3, 5), (3, 67, 34), (4, 9, 67)]:
            arrays, kwargs = problem(rng, cell, batch, 1, features, units, np.float64,
                                     masked=True, with_state=True)
            d_outputs = rng.standard_normal((batch, 1, units))
            got = forward(*arrays, training=True, **kwargs)
            inference = forward(*arrays, **kwargs)
            np.testing.assert_array_equal(got.outputs, inference.outputs)
            grads = backward(got.cache, d_outputs)
            want = reference_forward(*arrays, training=True, **kwargs)
            want_grads = reference_backward(want.cache, d_outputs)
            np.testing.assert_allclose(got.outputs, want.outputs, rtol=1e-10, atol=1e-10)
            names = ("x", "kernel", "recurrent_kernel", "bias", "h0")
            for name in names:
                np.testing.assert_allclose(getattr(grads, name), getattr(want_grads, name),
                                           rtol=1e-9, atol=1e-9, err_msg=name)
            # a masked step's input is never used: NaN there changes nothing
            x_nan = arrays[0].copy()
            x_nan[~kwargs["mask"]] = np.nan
            nan_grads = backward(forward(x_nan, *arrays[1:], training=True, **kwargs).cache,
                                 d_outputs)
            for name in names[1:]:
                np.testing.assert_array_equal(getattr(nan_grads, name), getattr(grads, name),
                                              err_msg=name)
    finally:
        _kernels.set_path_overrides(*previous)


def torch_layout_gradients(cell, grads, units):
    """A Keras-layout gradient tuple's weight gradients in torch's layout."""
    kernel, recurrent, bias = as_torch(cell, grads.kernel, grads.recurrent_kernel, grads.bias,
                                       units)
    return grads._replace(kernel=kernel, recurrent_kernel=recurrent, bias=bias)


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_torch_layout_training_gives_the_reference_gradients_in_torch_layout(
        rng, cell, steps, threads, path):
    """Training on torch's rows: backward returns the weight and bias gradients in torch's
    layout.  One step runs straight from the rows both ways (the GRU with reset_after;
    reset_after=False takes the loops), longer inputs run the loops on torch's rows; both
    give the reference's gradients (float64), with odd sizes, masks, initial states,
    go_backwards and upstream gradients for the final states, and leave the caller's
    arrays alone."""
    _, forward, reference_forward, _, gate_rows = CELLS[cell]
    backward, reference_backward = BACKWARD[cell]
    previous = _kernels.set_path_overrides(**PATHS[path])
    try:
        with fusedrnn.threads(threads):
            for (batch, features, units), backwards, input_gradient in itertools.product(
                    [(1, 1, 1), (3, 67, 3), (1, 3, 67), (8, 5, 130)], [False, True],
                    [True, False]):
                arrays, kwargs = problem(rng, cell, batch, steps, features, units, np.float64,
                                         masked=True, with_state=True)
                kwargs["go_backwards"] = backwards
                x, kernel, recurrent, bias = arrays
                rows = as_torch(cell, kernel, recurrent, bias, units)
                kept = [a.copy() for a in (x, *rows)]
                got = forward(x, *rows, weight_layout="torch", training=True, **kwargs)
                want = reference_forward(*arrays, training=True, **kwargs)
                upstream = {"d_outputs": rng.standard_normal((batch, steps, units)),
                            "d_h_n": rng.standard_normal((batch, units))}
                if cell == "lstm":
                    upstream["d_c_n"] = rng.standard_normal((batch, units))
                grads = backward(got.cache, **upstream, input_gradient=input_gradient)
                want_grads = torch_layout_gradients(
                    cell, reference_backward(want.cache, **upstream), units)
                np.testing.assert_allclose(got.outputs, want.outputs, rtol=1e-10, atol=1e-10)
                for name in want_grads._fields:
                    if name == "x" and not input_gradient:
                        assert grads.x is None
                        continue
                    np.testing.assert_allclose(getattr(grads, name), getattr(want_grads, name),
                                               rtol=1e-9, atol=1e-9, err_msg=name)
                for before, now in zip(kept, (x, *rows)):
                    np.testing.assert_array_equal(before, now)
    finally:
        _kernels.set_path_overrides(*previous)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_torch_layout_training_without_bias_or_state_and_with_recurrent_dropout(rng, cell):
    """No bias and no initial state (zero gradients w.r.t. weight_hh at one step); and
    recurrent dropout, which a step in torch's layout takes through the loops (on the rows)."""
    _, forward, reference_forward, _, _ = CELLS[cell]
    backward, reference_backward = BACKWARD[cell]
    for steps in (1, 4):
        arrays, kwargs = problem(rng, cell, 3, steps, 4, 7, np.float64, masked=False,
                                 with_state=False)
        x, kernel, recurrent, _ = arrays
        for dropout in (False, True):
            if dropout:
                shape = (3, 3, 7) if cell.startswith("gru") else (3, 7)
                kwargs["recurrent_dropout_mask"] = (rng.random(shape) > 0.3) / 0.7
            got = forward(x, *as_torch(cell, kernel, recurrent, None, 7)[:2], None,
                          weight_layout="torch", training=True, **kwargs)
            want = reference_forward(x, kernel, recurrent, None, training=True, **kwargs)
            d_outputs = rng.standard_normal((3, steps, 7))
            grads = backward(got.cache, d_outputs)
            want_grads = torch_layout_gradients(cell, reference_backward(want.cache, d_outputs),
                                                7)
            assert grads.bias is None and grads.h0 is None
            for name in ("x", "kernel", "recurrent_kernel"):
                np.testing.assert_allclose(getattr(grads, name), getattr(want_grads, name),
                                           rtol=1e-9, atol=1e-9, err_msg=name)
            if steps == 1 and not dropout:
                assert not grads.recurrent_kernel.any()  # h0 = 0: no gradient for weight_hh
