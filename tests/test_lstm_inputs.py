"""Memory layouts and bad input for fusedrnn.ops.lstm_forward / lstm_backward.

Layouts: whatever strides, order, writeability or container the caller uses, the results
equal those of C-contiguous copies bit for bit, and the caller's arrays are never
modified.  Bad input: a ValueError (shapes) or TypeError (dtypes, types) whose message
starts with the argument's name."""
from __future__ import annotations

import re

import numpy as np
import pytest

from fusedrnn import ops
from fusedrnn import reference as ref

B, T, I, H = 3, 5, 4, 2
DTYPES = [np.float32, np.float64]


def make_arrays(rng, dtype, batch=B, steps=T, features=I, units=H):
    bound = 1.0 / np.sqrt(units)
    arrays = dict(
        x=rng.standard_normal((batch, steps, features)),
        kernel=rng.uniform(-bound, bound, (features, 4 * units)),
        recurrent_kernel=rng.uniform(-bound, bound, (units, 4 * units)),
        bias=rng.uniform(-bound, bound, 4 * units),
        h0=rng.standard_normal((batch, units)),
        c0=rng.standard_normal((batch, units)),
        d_outputs=rng.standard_normal((batch, steps, units)),
        d_h_n=rng.standard_normal((batch, units)),
        d_c_n=rng.standard_normal((batch, units)),
    )
    arrays = {k: v.astype(dtype) for k, v in arrays.items()}
    arrays["mask"] = rng.random((batch, steps)) > 0.3
    return arrays


def run(a, **options):
    """Forward (training) and backward with every input given; returns both results."""
    out = ops.lstm_forward(a["x"], a["kernel"], a["recurrent_kernel"], a["bias"],
                           initial_state=(a["h0"], a["c0"]), mask=a["mask"], training=True,
                           **options)
    grads = ops.lstm_backward(out.cache, a["d_outputs"], a["d_h_n"], a["d_c_n"])
    return out, grads


def assert_same_results(got, expected):
    (out, grads), (out_e, grads_e) = got, expected
    for name in ("outputs", "h_n", "c_n"):
        np.testing.assert_array_equal(getattr(out, name), getattr(out_e, name), err_msg=name)
    for name in grads._fields:
        np.testing.assert_array_equal(getattr(grads, name), getattr(grads_e, name),
                                      err_msg=f"d{name}")


def strided_copy(array, how):
    """The same values as `array` in another memory layout."""
    if how == "fortran":
        return np.asfortranarray(array)
    if how == "reversed":  # negative strides on every axis
        index = (slice(None, None, -1),) * array.ndim
        return np.ascontiguousarray(array[index])[index]
    if how == "stepped":  # every other element of a bigger buffer, on every axis
        big = np.zeros(tuple(2 * n + 1 for n in array.shape), array.dtype)
        view = big[(slice(1, None, 2),) * array.ndim]
        view[...] = array
        return view
    if how == "broadcast":  # zero strides: one row repeated (read-only, no copy)
        return np.broadcast_to(array[(0,) * (array.ndim - 1)], array.shape)
    if how == "readonly":
        copy = array.copy()
        copy.setflags(write=False)
        return copy
    if how == "list":
        return array.tolist()
    raise AssertionError(how)


LAYOUTS = ["fortran", "reversed", "stepped", "readonly", "list", "broadcast"]
ARGUMENTS = ["x", "kernel", "recurrent_kernel", "bias", "h0", "c0", "mask", "d_outputs",
             "d_h_n", "d_c_n"]


# Python lists become float64 arrays, so lists are checked with float64 only.
LAYOUT_CASES = [(dtype, how) for dtype in DTYPES for how in LAYOUTS
                if not (how == "list" and dtype == np.float32)]


@pytest.mark.parametrize("dtype,how", LAYOUT_CASES,
                         ids=[f"{how}-{np.dtype(d).name}" for d, how in LAYOUT_CASES])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
def test_every_argument_in_every_layout(rng, dtype, how, go_backwards):
    """All arguments at once in one layout."""
    a = make_arrays(rng, dtype)
    laid_out = {k: strided_copy(v, how) for k, v in a.items()}
    if how == "broadcast":  # new values: compare with C-contiguous copies of them
        a = {k: np.ascontiguousarray(v) for k, v in laid_out.items()}
    expected = run(a, go_backwards=go_backwards)
    snapshots = {k: np.array(v, copy=True) for k, v in laid_out.items()}
    assert_same_results(run(laid_out, go_backwards=go_backwards), expected)
    for name, value in laid_out.items():  # the caller's arrays are untouched
        np.testing.assert_array_equal(np.asarray(value), snapshots[name], err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ARGUMENTS)
@pytest.mark.parametrize("how", ["fortran", "reversed", "stepped", "broadcast"])
def test_one_argument_in_another_layout(rng, dtype, name, how):
    """One strided argument among C-contiguous ones (catches a stride applied to the
    wrong array)."""
    a = make_arrays(rng, dtype)
    changed = dict(a, **{name: strided_copy(a[name], how)})
    expected = run(dict(a, **{name: np.ascontiguousarray(changed[name])}))
    assert_same_results(run(changed), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("view", ["time_step_slice", "time_major_transpose", "batch_slice",
                                  "feature_column", "time_reversed", "batch_reversed"])
def test_input_views(rng, dtype, view):
    """Views of a bigger x that the kernel can read through strides without a copy."""
    a = make_arrays(rng, dtype)
    if view == "time_step_slice":
        big = rng.standard_normal((B, 2 * T, I)).astype(dtype)
        x = big[:, ::2]
    elif view == "time_major_transpose":
        x = np.ascontiguousarray(a["x"].transpose(1, 0, 2)).transpose(1, 0, 2)
    elif view == "batch_slice":
        big = rng.standard_normal((3 * B, T, I)).astype(dtype)
        x = big[1::3]
    elif view == "feature_column":  # features = 1 with a non-unit feature stride
        big = rng.standard_normal((B, T, 3)).astype(dtype)
        x = big[:, :, 1:2]
        a = make_arrays(rng, dtype, features=1)
    elif view == "time_reversed":
        x = a["x"][:, ::-1]
    else:
        x = a["x"][::-1]
    before = x.copy()
    a_view = dict(a, x=x)
    a_copy = dict(a, x=np.ascontiguousarray(x))
    assert_same_results(run(a_view), run(a_copy))
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["x", "d_outputs"])
def test_strides_that_are_not_multiples_of_the_item_size(rng, dtype, name):
    """A field of a packed structured array: the batch and time strides are not multiples
    of the element size, so they cannot be expressed in elements (the kernels take
    strides in elements)."""
    a = make_arrays(rng, dtype)
    packed = np.zeros(a[name].shape[:2], dtype=[("field", dtype, a[name].shape[2:]),
                                                 ("pad", np.uint8)])
    packed["field"] = a[name]
    view = packed["field"]
    assert view.strides[1] % view.itemsize != 0
    assert_same_results(run(dict(a, **{name: view})), run(a))


@pytest.mark.parametrize("dtype", DTYPES)
def test_unaligned_arrays(rng, dtype):
    """Arrays whose data pointer is not aligned to the element size."""
    a = make_arrays(rng, dtype)

    def unaligned(array):
        buffer = np.zeros(array.nbytes + 1, np.uint8)
        view = buffer[1:].view(array.dtype).reshape(array.shape)
        view[...] = array
        assert not view.flags.aligned
        return view

    changed = {k: (unaligned(v) if k != "mask" else v) for k, v in a.items()}
    assert_same_results(run(changed), run(a))


@pytest.mark.parametrize("dtype", DTYPES)
def test_results_do_not_alias_inputs(rng, dtype):
    a = make_arrays(rng, dtype)
    out, grads = run(a)
    results = [out.outputs, out.h_n, out.c_n, *grads]
    for value in a.values():
        for result in results:
            assert not np.shares_memory(result, value)


@pytest.mark.parametrize("mask_kind", ["int", "uint8", "fortran_int", "bool_view"])
def test_integer_masks_mean_nonzero(rng, mask_kind):
    """Integer masks are accepted, nonzero = valid step (values like 2 and -1 included)."""
    a = make_arrays(rng, np.float64)
    expected = run(a)
    values = np.where(a["mask"], rng.choice([1, 2, -1, 7], size=a["mask"].shape), 0)
    if mask_kind == "int":
        mask = values.astype(np.int64)
    elif mask_kind == "uint8":
        mask = (values != 0).astype(np.uint8) * 3
    elif mask_kind == "fortran_int":
        mask = np.asfortranarray(values.astype(np.int32))
    else:  # booleans sliced out of a bigger mask
        mask = np.repeat(a["mask"], 2, axis=1)[:, ::2]
    assert_same_results(run(dict(a, mask=mask)), expected)


def test_reference_accepts_the_same_layouts(rng):
    """The reference is called with the same arguments by the tests: it must agree."""
    a = make_arrays(rng, np.float64)
    laid_out = {k: strided_copy(v, "reversed") for k, v in a.items()}
    expected = ref.lstm_forward(a["x"], a["kernel"], a["recurrent_kernel"], a["bias"],
                                initial_state=(a["h0"], a["c0"]), mask=a["mask"])
    got = ref.lstm_forward(laid_out["x"], laid_out["kernel"], laid_out["recurrent_kernel"],
                           laid_out["bias"], initial_state=(laid_out["h0"], laid_out["c0"]),
                           mask=laid_out["mask"])
    for e, g in zip(expected[:3], got[:3]):
        np.testing.assert_array_equal(g, e)


# ------------------------------------------------------------------------ bad input ---

def raises_naming(exc_type, argname):
    """pytest.raises for an error whose message starts with `argname:`."""
    return pytest.raises(exc_type, match=rf"^{re.escape(argname)}:")


def forward_with(a, **changes):
    args = dict(x=a["x"], kernel=a["kernel"], recurrent_kernel=a["recurrent_kernel"],
                bias=a["bias"], initial_state=(a["h0"], a["c0"]), mask=a["mask"])
    args.update(changes)
    return ops.lstm_forward(args.pop("x"), args.pop("kernel"), args.pop("recurrent_kernel"),
                            args.pop("bias"), **args)


BAD_SHAPES = {
    "x 2-D": ("x", lambda a: a["x"][0]),
    "x 4-D": ("x", lambda a: a["x"][None]),
    "x no features": ("x", lambda a: a["x"][:, :, :0]),
    "x scalar": ("x", lambda a: np.float64(1.0)),
    "kernel features": ("kernel", lambda a: a["kernel"][:-1]),
    "kernel gates": ("kernel", lambda a: a["kernel"][:, :-1]),
    "kernel 1-D": ("kernel", lambda a: a["kernel"].ravel()),
    "kernel transposed": ("kernel", lambda a: a["kernel"].T),
    "recurrent 3 gates": ("recurrent_kernel", lambda a: a["recurrent_kernel"][:, : 3 * H]),
    "recurrent rows": ("recurrent_kernel",
                       lambda a: np.zeros((H + 1, 4 * H), a["recurrent_kernel"].dtype)),
    "recurrent 1-D": ("recurrent_kernel", lambda a: a["recurrent_kernel"].ravel()),
    "recurrent empty": ("recurrent_kernel", lambda a: np.zeros((0, 0), a["x"].dtype)),
    "bias length": ("bias", lambda a: a["bias"][:-1]),
    "bias 2-D": ("bias", lambda a: a["bias"][None]),
    "mask time": ("mask", lambda a: np.ones((B, T + 1), bool)),
    "mask batch": ("mask", lambda a: np.ones((B + 1, T), bool)),
    "mask 1-D": ("mask", lambda a: np.ones(T, bool)),
    "mask 3-D": ("mask", lambda a: np.ones((B, T, 1), bool)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(BAD_SHAPES))
def test_bad_shapes_raise_value_error_naming_the_argument(rng, dtype, case):
    a = make_arrays(rng, dtype)
    name, make_bad = BAD_SHAPES[case]
    bad = make_bad(a)
    with raises_naming(ValueError, name) as info:
        forward_with(a, **{name: bad})
    assert "shape" in str(info.value)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad_state,argname", [
    ("single_array", "initial_state"),
    ("three_arrays", "initial_state"),
    ("one_array_tuple", "initial_state"),
    ("h0_shape", "initial_state[0]"),
    ("c0_shape", "initial_state[1]"),
    ("h0_transposed", "initial_state[0]"),
    ("c0_batch", "initial_state[1]"),
    ("stacked_array", "initial_state"),
])
def test_bad_initial_state(rng, dtype, bad_state, argname):
    a = make_arrays(rng, dtype)
    h0, c0 = a["h0"], a["c0"]
    state = {
        "single_array": h0,
        "three_arrays": (h0, c0, c0),
        "one_array_tuple": (h0,),
        "h0_shape": (h0[:, :1], c0),
        "c0_shape": (h0, np.zeros((B, H + 1), dtype)),
        "h0_transposed": (np.zeros((H, B), dtype), c0) if H != B else (h0[:, None], c0),
        "c0_batch": (h0, c0[:-1]),
        "stacked_array": np.stack([h0, c0]),
    }[bad_state]
    with raises_naming(ValueError, argname):
        forward_with(a, initial_state=state)


BAD_DTYPES = {
    "int": lambda v: v.astype(np.int64),
    "float16": lambda v: v.astype(np.float16),
    "complex": lambda v: v.astype(np.complex128),
    "object": lambda v: v.astype(object),
    "bool": lambda v: v > 0,
    "longdouble": lambda v: v.astype(np.longdouble),
}


@pytest.mark.parametrize("bad_dtype", list(BAD_DTYPES))
@pytest.mark.parametrize("name", ["x", "kernel", "recurrent_kernel", "bias", "h0", "c0"])
def test_unsupported_dtypes_raise_type_error(rng, bad_dtype, name):
    a = make_arrays(rng, np.float32)
    if bad_dtype == "longdouble" and np.dtype(np.longdouble) == np.dtype(np.float64):
        pytest.skip("long double is float64 on this platform")
    argname = {"h0": "initial_state[0]", "c0": "initial_state[1]"}.get(name, name)
    changed = dict(a, **{name: BAD_DTYPES[bad_dtype](a[name])})
    with raises_naming(TypeError, argname):
        forward_with(changed, initial_state=(changed["h0"], changed["c0"]))


@pytest.mark.parametrize("x_dtype,other_dtype", [(np.float32, np.float64),
                                                 (np.float64, np.float32)])
@pytest.mark.parametrize("name", ["kernel", "recurrent_kernel", "bias", "h0", "c0"])
def test_mixed_float_precisions_raise_type_error(rng, x_dtype, other_dtype, name):
    """No silent casts: every array must have x's dtype, and the message says so."""
    a = make_arrays(rng, x_dtype)
    argname = {"h0": "initial_state[0]", "c0": "initial_state[1]"}.get(name, name)
    changed = dict(a, **{name: a[name].astype(other_dtype)})
    with raises_naming(TypeError, argname) as info:
        forward_with(changed, initial_state=(changed["h0"], changed["c0"]))
    assert np.dtype(x_dtype).name in str(info.value)


@pytest.mark.parametrize("mask", [
    pytest.param(lambda a: a["mask"].astype(np.float64), id="float"),
    pytest.param(lambda a: a["mask"].astype(object), id="object"),
    pytest.param(lambda a: a["mask"].astype(np.complex64), id="complex"),
    pytest.param(lambda a: np.where(a["mask"], "yes", "no"), id="strings"),
])
def test_bad_mask_dtypes_raise_type_error(rng, mask):
    a = make_arrays(rng, np.float64)
    with raises_naming(TypeError, "mask"):
        forward_with(a, mask=mask(a))


@pytest.mark.parametrize("value", [
    pytest.param([[[1.0, 2.0]], [[1.0]]], id="ragged_list"),
    pytest.param("abc", id="string"),
    pytest.param(None, id="none"),
    pytest.param({"a": 1}, id="dict"),
])
def test_non_arrays_for_x_raise_type_error(rng, value):
    a = make_arrays(rng, np.float64)
    with pytest.raises((TypeError, ValueError), match=r"^x:"):
        forward_with(a, x=value)


@pytest.mark.parametrize("argname,value", [
    ("activation", "gelu"), ("activation", "Tanh"), ("activation", 3),
    ("recurrent_activation", "softmax"), ("recurrent_activation", ""),
])
def test_unknown_activation(rng, argname, value):
    a = make_arrays(rng, np.float64)
    with raises_naming(ValueError, argname):
        forward_with(a, **{argname: value})


def test_unknown_keyword_is_a_type_error(rng):
    a = make_arrays(rng, np.float64)
    with pytest.raises(TypeError, match="return_sequences"):
        forward_with(a, return_sequences=True)


@pytest.mark.parametrize("case,argname,error", [
    ("shape", "recurrent_dropout_mask", ValueError),
    ("transposed", "recurrent_dropout_mask", ValueError),
    ("dtype", "recurrent_dropout_mask", TypeError),
    ("int", "recurrent_dropout_mask", TypeError),
])
def test_bad_recurrent_dropout_mask(rng, case, argname, error):
    a = make_arrays(rng, np.float32)
    value = {
        "shape": np.ones((B, H + 1), np.float32),
        "transposed": np.ones((H, B), np.float32),
        "dtype": np.ones((B, H), np.float64),
        "int": np.ones((B, H), np.int32),
    }[case]
    with raises_naming(error, argname):
        forward_with(a, recurrent_dropout_mask=value)


# -- backward ------------------------------------------------------------------------

@pytest.mark.parametrize("cache", [
    pytest.param(lambda a, out: None, id="none"),
    pytest.param(lambda a, out: out.cache.arrays, id="raw_tuple"),
    pytest.param(lambda a, out: {"kernel": a["kernel"]}, id="dict"),
    pytest.param(lambda a, out: out, id="whole_output"),
    pytest.param(lambda a, out: ref.lstm_forward(a["x"], a["kernel"], a["recurrent_kernel"],
                                                 training=True).cache, id="reference_cache"),
])
def test_bad_cache_raises_type_error(rng, cache):
    a = make_arrays(rng, np.float64)
    out = forward_with(a, training=True)
    with raises_naming(TypeError, "cache"):
        ops.lstm_backward(cache(a, out), a["d_outputs"])


def test_inference_output_has_no_cache(rng):
    """Forgetting training=True gives cache=None, and backward says what to do."""
    a = make_arrays(rng, np.float64)
    out = forward_with(a)
    assert out.cache is None
    with raises_naming(TypeError, "cache") as info:
        ops.lstm_backward(out.cache, a["d_outputs"])
    assert "training=True" in str(info.value)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("argname,make_bad,error", [
    ("d_outputs", lambda a: a["d_outputs"][:, :-1], ValueError),
    ("d_outputs", lambda a: a["d_outputs"][..., :1], ValueError),
    ("d_outputs", lambda a: a["d_outputs"][:, :, None], ValueError),
    ("d_outputs", lambda a: a["d_outputs"][:, -1], ValueError),  # forgot return_sequences
    ("d_h_n", lambda a: a["d_h_n"][None], ValueError),
    ("d_h_n", lambda a: a["d_h_n"].T, ValueError),
    ("d_c_n", lambda a: a["d_c_n"][:-1], ValueError),
    ("d_outputs", lambda a: a["d_outputs"].astype(np.float16), TypeError),
    ("d_h_n", lambda a: a["d_h_n"].astype(np.int32), TypeError),
    ("d_c_n", lambda a: a["d_c_n"].astype(object), TypeError),
    ("d_c_n", lambda a: "gradient", TypeError),
])
def test_bad_upstream_gradients(rng, dtype, argname, make_bad, error):
    a = make_arrays(rng, dtype)
    out = forward_with(a, training=True)
    grads = dict(d_outputs=a["d_outputs"], d_h_n=a["d_h_n"], d_c_n=a["d_c_n"])
    grads[argname] = make_bad(a)
    with raises_naming(error, argname):
        ops.lstm_backward(out.cache, **grads)


@pytest.mark.parametrize("dtype,other", [(np.float32, np.float64), (np.float64, np.float32)])
@pytest.mark.parametrize("argname", ["d_outputs", "d_h_n", "d_c_n"])
def test_upstream_gradient_precision_must_match(rng, dtype, other, argname):
    a = make_arrays(rng, dtype)
    out = forward_with(a, training=True)
    grads = dict(d_outputs=a["d_outputs"], d_h_n=a["d_h_n"], d_c_n=a["d_c_n"])
    grads[argname] = grads[argname].astype(other)
    with raises_naming(TypeError, argname):
        ops.lstm_backward(out.cache, **grads)


def test_failed_calls_leave_arguments_alone(rng):
    """A call that raises must not have modified anything either."""
    a = make_arrays(rng, np.float64)
    snapshots = {k: v.copy() for k, v in a.items()}
    with pytest.raises(ValueError):
        forward_with(a, mask=np.ones((B, T + 1), bool))
    with pytest.raises(TypeError):
        forward_with(a, bias=a["bias"].astype(np.float32))
    for name, value in a.items():
        np.testing.assert_array_equal(value, snapshots[name], err_msg=name)
