"""Bad and unusual input for every public op in fusedrnn.ops.

Every array argument of every forward/backward pair is put through:
  - wrong ndim, wrong size on each axis, wrong dtype (int, float16, complex, object, bool),
    dtype differing from x's, and non-array values     -> TypeError/ValueError naming it;
  - Fortran order, non-contiguous, negative-stride, zero-stride and read-only views
                                                       -> exactly the contiguous result;
and the ops as a whole through NaN/Inf, empty batches, zero-length sequences, masks that
do not fit, and sizes whose element count overflows 32-bit indices.  After every call the
caller's arrays must be unchanged (compared against copies taken before the call).

The registry of cells (CELLS) and the problem builders here are shared with the other
tests/test_reliability_*.py files and tests/test_properties.py.  GRU and SimpleRNN join
the matrix automatically once fusedrnn.ops has gru_forward / simple_rnn_forward."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import pytest

from fusedrnn import ops
from fusedrnn import reference

INT32_MAX = 2**31 - 1


# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Cell:
    """One forward/backward pair of fusedrnn.ops and what generic tests need to call it."""

    name: str                 # ops.<name>_forward / ops.<name>_backward
    label: str                # test id
    gates: int                # gate blocks side by side in kernel and recurrent_kernel
    states: tuple             # state names: ("h", "c") for LSTM, ("h",) otherwise
    options: dict = field(default_factory=dict)  # fixed forward keywords (reset_after)
    bias_rows: int = 0        # GRU reset_after=True: bias is (2, 3*units)

    @property
    def forward(self):
        return getattr(ops, f"{self.name}_forward")

    @property
    def backward(self):
        return getattr(ops, f"{self.name}_backward")

    @property
    def ref_forward(self):
        return getattr(reference, f"{self.name}_forward")

    @property
    def ref_backward(self):
        return getattr(reference, f"{self.name}_backward")

    def accepts(self, keyword: str) -> bool:
        return keyword in inspect.signature(self.forward).parameters

    def bias_shape(self, units: int) -> tuple:
        width = self.gates * units
        return (self.bias_rows, width) if self.bias_rows else (width,)

    @property
    def grad_inputs(self) -> tuple:
        """Keyword names of the backward pass's upstream gradients."""
        return ("d_outputs",) + tuple(f"d_{s}_n" for s in self.states)

    @property
    def state_outputs(self) -> tuple:
        return tuple(f"{s}_n" for s in self.states)

    def __str__(self):
        return self.label


_ALL_CELLS = (
    Cell("lstm", "lstm", 4, ("h", "c")),
    Cell("gru", "gru", 3, ("h",), {"reset_after": True}, bias_rows=2),
    Cell("gru", "gru_v1", 3, ("h",), {"reset_after": False}),
    Cell("simple_rnn", "simple_rnn", 1, ("h",)),
)
CELLS = tuple(c for c in _ALL_CELLS if hasattr(ops, f"{c.name}_forward"))
cells = pytest.mark.parametrize("cell", CELLS, ids=str)


def make_problem(cell: Cell, rng, batch=3, steps=4, features=5, units=6, dtype=np.float64, *,
                 bias=True, state=False, mask=False, dropout=False, scale=1.0) -> dict:
    """Keyword arguments of cell.forward: random inputs, weights in U(+-scale/sqrt(units))."""
    bound = scale / np.sqrt(units)
    width = cell.gates * units
    problem = dict(
        x=rng.standard_normal((batch, steps, features)).astype(dtype),
        kernel=rng.uniform(-bound, bound, (features, width)).astype(dtype),
        recurrent_kernel=rng.uniform(-bound, bound, (units, width)).astype(dtype),
        bias=rng.uniform(-bound, bound, cell.bias_shape(units)).astype(dtype) if bias else None,
    )
    if state:
        states = tuple(rng.standard_normal((batch, units)).astype(dtype) for _ in cell.states)
        problem["initial_state"] = states if len(states) > 1 else states[0]
    if mask:
        valid = rng.random((batch, steps)) > 0.3
        valid[:, :1] = True
        problem["mask"] = valid
    if dropout and cell.accepts("recurrent_dropout_mask"):
        keep = rng.random((batch, units)) > 0.25
        problem["recurrent_dropout_mask"] = (keep / 0.75).astype(dtype)
    return problem


def forward(cell: Cell, problem: dict, **options):
    return cell.forward(**problem, **cell.options, **options)


def upstream_gradients(cell: Cell, out, rng) -> dict:
    """Random d_outputs, d_h_n (and d_c_n) shaped like the forward results."""
    grads = {"d_outputs": rng.standard_normal(out.outputs.shape).astype(out.outputs.dtype)}
    for name in cell.state_outputs:
        value = getattr(out, name)
        grads[f"d_{name}"] = rng.standard_normal(value.shape).astype(value.dtype)
    return grads


def results(out, grads=None) -> dict:
    """Every array a forward (and backward) pass returned, by name, for comparisons."""
    found = {f"out.{k}": v for k, v in out._asdict().items() if isinstance(v, np.ndarray)}
    if grads is not None:
        found.update({f"grad.{k}": v for k, v in grads._asdict().items() if v is not None})
    return found


def assert_same_results(actual: dict, expected: dict, context=""):
    assert actual.keys() == expected.keys(), context
    for key in expected:
        a, e = actual[key], expected[key]
        assert a.shape == e.shape and a.dtype == e.dtype, f"{context}: {key}"
        np.testing.assert_array_equal(a, e, err_msg=f"{context}: {key}")


def snapshot(value):
    """Deep copy of nested arrays (tuples of arrays for initial_state)."""
    if isinstance(value, (tuple, list)):
        return type(value)(snapshot(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.copy()
    return value


def assert_unchanged(before, after, name):
    if isinstance(before, (tuple, list)):
        for k, (b, a) in enumerate(zip(before, after)):
            assert_unchanged(b, a, f"{name}[{k}]")
    elif isinstance(before, np.ndarray):
        np.testing.assert_array_equal(after, before, err_msg=f"{name} was modified")


def run_both(cell: Cell, problem: dict, grads: dict | None = None, seed=1, **options):
    """Forward (training) and backward; checks that no argument was modified."""
    before = {k: snapshot(v) for k, v in problem.items()}
    out = forward(cell, problem, training=True, **options)
    if grads is None:
        grads = upstream_gradients(cell, out, np.random.default_rng(seed))
    grads_before = {k: snapshot(v) for k, v in grads.items()}
    g = cell.backward(out.cache, **grads)
    for k in problem:
        assert_unchanged(before[k], problem[k], k)
    for k in grads:
        assert_unchanged(grads_before[k], grads[k], k)
    return out, g


# ------------------------------------------------------------------ the argument slots
# A slot is one array the caller passes: (where, name, getter, setter).  "forward" slots
# live in the forward keywords; "backward" slots in the upstream gradients.
def forward_slots(cell: Cell, problem: dict) -> list:
    slots = ["x", "kernel", "recurrent_kernel", "bias"]
    if "mask" in problem:
        slots.append("mask")
    if "recurrent_dropout_mask" in problem:
        slots.append("recurrent_dropout_mask")
    if "initial_state" in problem:
        slots += [f"initial_state[{k}]" for k in range(len(cell.states))]
    return slots


def get_slot(cell, problem, slot):
    if slot.startswith("initial_state["):
        k = int(slot[len("initial_state["):-1])
        state = problem["initial_state"]
        return state[k] if isinstance(state, tuple) else state
    return problem[slot]


def with_slot(cell, problem, slot, value) -> dict:
    """A shallow copy of problem with one argument replaced."""
    changed = dict(problem)
    if slot.startswith("initial_state["):
        k = int(slot[len("initial_state["):-1])
        state = problem["initial_state"]
        if isinstance(state, tuple):
            state = state[:k] + (value,) + state[k + 1:]
        else:
            state = value
        changed["initial_state"] = state
    else:
        changed[slot] = value
    return changed


def arg_name(slot: str) -> str:
    """What the error message must mention for this slot."""
    return "initial_state" if slot.startswith("initial_state") else slot


FULL = dict(bias=True, state=True, mask=True, dropout=True)


def full_problem(cell, rng, dtype=np.float64, **shape):
    return make_problem(cell, rng, dtype=dtype, **FULL, **shape)


def slot_cases():
    """(cell, slot) pairs for every forward argument and every upstream gradient."""
    cases = []
    for cell in CELLS:
        problem = full_problem(cell, np.random.default_rng(0))
        cases += [(cell, "forward", s) for s in forward_slots(cell, problem)]
        cases += [(cell, "backward", s) for s in cell.grad_inputs]
    return cases


def slot_params_without(*excluded):
    cases = [c for c in slot_cases() if c[2] not in excluded]
    return pytest.mark.parametrize("cell,phase,slot", cases, ids=[f"{c}-{s}" for c, _, s in cases])


slot_params = slot_params_without()


def call_with(cell, phase, slot, value, rng):
    """Run the op with one argument replaced by value (forward or backward phase)."""
    problem = full_problem(cell, rng)
    if phase == "forward":
        forward(cell, with_slot(cell, problem, slot, value), training=True)
    else:
        out = forward(cell, problem, training=True)
        grads = upstream_gradients(cell, out, rng)
        grads[slot] = value
        cell.backward(out.cache, **grads)


def original_value(cell, phase, slot, rng):
    problem = full_problem(cell, rng)
    if phase == "forward":
        return get_slot(cell, problem, slot)
    out = forward(cell, problem, training=True)
    return upstream_gradients(cell, out, rng)[slot]


def expect_error(exc_type, cell, phase, slot, value, rng):
    with pytest.raises(exc_type) as info:
        call_with(cell, phase, slot, value, rng)
    assert arg_name(slot) in str(info.value), (
        f"{exc_type.__name__} for {slot} does not name it: {info.value}"
    )


# -------------------------------------------------------------------- wrong ndim / size
@slot_params
def test_wrong_ndim_names_the_argument(cell, phase, slot, rng):
    good = original_value(cell, phase, slot, rng)
    expect_error(ValueError, cell, phase, slot, good[None], rng)       # one axis too many
    expect_error(ValueError, cell, phase, slot, good.reshape(-1)[0] if good.ndim == 1
                 else good[0], rng)                                    # one axis too few


@slot_params_without("x", "recurrent_kernel")
def test_wrong_size_names_the_argument(cell, phase, slot, rng):
    """Grow or shrink each axis of a dependent argument by one: its size no longer matches
    x and recurrent_kernel, which define batch, time, features and units (their own
    mismatches are the tests below)."""
    good = original_value(cell, phase, slot, rng)
    for axis in range(good.ndim):
        grown = np.concatenate([good, good.take([0], axis=axis)], axis=axis)
        expect_error(ValueError, cell, phase, slot, grown, rng)
        if good.shape[axis] > 1:
            shrunk = good.take(range(good.shape[axis] - 1), axis=axis)
            expect_error(ValueError, cell, phase, slot, shrunk, rng)


@cells
def test_features_mismatch_between_x_and_kernel(cell, rng):
    problem = make_problem(cell, rng, features=5)
    problem["x"] = problem["x"][:, :, :4]
    with pytest.raises(ValueError, match="kernel"):
        forward(cell, problem)


@cells
def test_units_mismatch_between_kernels(cell, rng):
    problem = make_problem(cell, rng, units=6, bias=False)
    problem["recurrent_kernel"] = problem["recurrent_kernel"][:5, :cell.gates * 5]
    with pytest.raises(ValueError, match="kernel"):
        forward(cell, problem)


@cells
def test_recurrent_kernel_not_units_by_gates_units(cell, rng):
    problem = make_problem(cell, rng, units=6, bias=False)
    problem["recurrent_kernel"] = np.zeros((6, 6 * cell.gates + 1))
    with pytest.raises(ValueError, match="recurrent_kernel"):
        forward(cell, problem)
    problem["recurrent_kernel"] = np.zeros((0, 0))
    with pytest.raises(ValueError, match="recurrent_kernel"):
        forward(cell, problem)


@cells
def test_empty_feature_axis_is_rejected(cell, rng):
    problem = make_problem(cell, rng, features=5)
    problem["x"] = np.zeros((3, 4, 0))
    problem["kernel"] = np.zeros((0, problem["kernel"].shape[1]))
    with pytest.raises(ValueError, match="x"):
        forward(cell, problem)


@cells
def test_initial_state_with_wrong_count(cell, rng):
    problem = make_problem(cell, rng, state=True)
    h0 = np.zeros((3, 6))
    wrong = [(h0,) * (len(cell.states) + 1)]
    if len(cell.states) > 1:
        wrong += [h0, (h0,)]
    for value in wrong:
        problem["initial_state"] = value
        with pytest.raises(ValueError, match="initial_state"):
            forward(cell, problem)


# ---------------------------------------------------------------------------- dtypes
BAD_DTYPES = (np.int64, np.int32, np.float16, np.complex128, object, np.bool_)


@slot_params_without("mask")
@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_wrong_dtype_names_the_argument(cell, phase, slot, dtype, rng):
    good = original_value(cell, phase, slot, rng)
    expect_error(TypeError, cell, phase, slot, good.astype(dtype), rng)


@cells
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.complex128, object],
                         ids=lambda d: np.dtype(d).name)
def test_mask_of_non_boolean_dtype_names_the_mask(cell, dtype, rng):
    """Masks are boolean (or integer, nonzero = valid: see test_integer_mask_*)."""
    good = original_value(cell, "forward", "mask", rng)
    expect_error(TypeError, cell, "forward", "mask", good.astype(dtype), rng)


@slot_params_without("x", "mask")
def test_dtype_differing_from_x_names_the_argument(cell, phase, slot, rng):
    """x sets the dtype; every float argument must match it (no silent casts)."""
    good = original_value(cell, phase, slot, rng)
    expect_error(TypeError, cell, phase, slot, good.astype(np.float32), rng)


@slot_params
def test_non_array_values_name_the_argument(cell, phase, slot, rng):
    good = original_value(cell, phase, slot, rng)
    ragged = [good.reshape(-1)[:2].tolist(), good.reshape(-1)[:3].tolist()]
    for value in ("abc", {"a": 1}, object(), ragged):
        expect_error((TypeError, ValueError), cell, phase, slot, value, rng)


@cells
def test_required_arguments_cannot_be_none(cell, rng):
    for name in ("x", "kernel", "recurrent_kernel"):
        problem = make_problem(cell, rng)
        problem[name] = None
        with pytest.raises(TypeError, match=name):
            forward(cell, problem)


@cells
def test_float32_x_with_float64_weights_names_the_weight(cell, rng):
    problem = make_problem(cell, rng)
    problem["x"] = problem["x"].astype(np.float32)
    with pytest.raises(TypeError, match="kernel"):
        forward(cell, problem)


@cells
def test_nested_lists_are_accepted_like_arrays(cell, rng):
    problem = make_problem(cell, rng)
    expected = forward(cell, problem)
    as_lists = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in problem.items()}
    assert_same_results(results(forward(cell, as_lists)), results(expected))


@cells
@pytest.mark.parametrize("mask_dtype", [np.int8, np.int32, np.int64, np.uint8])
def test_integer_mask_means_nonzero_is_valid(cell, mask_dtype, rng):
    problem = make_problem(cell, rng, mask=True)
    expected = results(*run_both(cell, problem))
    valid = problem["mask"]
    problem["mask"] = np.where(valid, np.array(-1 if np.issubdtype(mask_dtype, np.signedinteger)
                                               else 7), 0).astype(mask_dtype)
    assert_same_results(results(*run_both(cell, problem)), expected)


@cells
def test_bad_mask_shapes(cell, rng):
    problem = make_problem(cell, rng, batch=3, steps=4)
    valid = np.ones((3, 4), bool)
    for bad in (valid[:, :3], np.ones((3, 5), bool), np.ones((4, 4), bool), valid.T,
                valid[0], valid[..., None], np.bool_(True)):
        problem["mask"] = bad
        with pytest.raises(ValueError, match="mask"):
            forward(cell, problem)


@cells
def test_bad_option_values(cell, rng):
    problem = make_problem(cell, rng)
    for name in ("activation",) + (("recurrent_activation",) if cell.accepts(
            "recurrent_activation") else ()):
        for bad in ("gelu", "TANH", np.tanh, 3):
            with pytest.raises(ValueError, match=name):
                forward(cell, problem, **{name: bad})


@cells
def test_backward_rejects_what_is_not_a_training_cache(cell, rng):
    problem = make_problem(cell, rng)
    inference = forward(cell, problem, training=False)
    assert inference.cache is None
    for bad in (None, inference, (1, 2), "cache"):
        with pytest.raises(TypeError, match="cache"):
            cell.backward(bad)
    other = [c for c in CELLS if c.name != cell.name]
    for o in other:  # a cache of another cell type
        other_cache = forward(o, make_problem(o, rng), training=True).cache
        with pytest.raises(TypeError, match="cache"):
            cell.backward(other_cache)


# ------------------------------------------------------------- legal memory layouts
def fortran(a):
    return np.asfortranarray(a)


def strided(a):
    """Same values, every other element of a twice-as-large buffer along each axis."""
    big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def reversed_view(a):
    """Same values, negative strides on every axis."""
    flipped = np.ascontiguousarray(a[tuple(slice(None, None, -1) for _ in a.shape)])
    return flipped[tuple(slice(None, None, -1) for _ in a.shape)]


def zero_stride(a):
    """Row 0 repeated along the first axis with stride 0 (values change; see the test)."""
    return np.broadcast_to(a[:1], a.shape)


def read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def transposed_time_major(a):
    """(batch, time, ...) values held in (time, batch, ...) memory."""
    if a.ndim < 2:
        return a
    return np.ascontiguousarray(np.swapaxes(a, 0, 1)).swapaxes(0, 1)


LAYOUTS = {
    "fortran": fortran, "strided": strided, "reversed": reversed_view,
    "zero_stride": zero_stride, "read_only": read_only, "time_major": transposed_time_major,
}


@slot_params
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_any_memory_layout_gives_the_contiguous_result(cell, phase, slot, layout, rng):
    """A view computes exactly what a C-contiguous copy of it computes, and stays as it was."""
    problem = full_problem(cell, rng)
    reference_run = forward(cell, problem, training=True)
    grads = upstream_gradients(cell, reference_run, rng)
    if phase == "forward":
        view = LAYOUTS[layout](get_slot(cell, problem, slot))
        contiguous = with_slot(cell, problem, slot, np.array(view, order="C"))
        strided_problem = with_slot(cell, problem, slot, view)
        expected = results(*run_both(cell, contiguous, dict(grads)))
        actual = results(*run_both(cell, strided_problem, dict(grads)))
    else:
        view = LAYOUTS[layout](grads[slot])
        expected = results(*run_both(cell, problem, {**grads, slot: np.array(view, order="C")}))
        actual = results(*run_both(cell, problem, {**grads, slot: view}))
    assert_same_results(actual, expected, f"{slot} as {layout}")


@cells
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_arguments_read_only_at_once(cell, dtype, rng):
    problem = full_problem(cell, rng, dtype)
    expected = results(*run_both(cell, problem))
    frozen = {}
    for k, value in problem.items():
        frozen[k] = (tuple(read_only(s) for s in value) if isinstance(value, tuple)
                     else read_only(value) if isinstance(value, np.ndarray) else value)
    out = forward(cell, frozen, training=True)
    grads = {k: read_only(g) for k, g in upstream_gradients(cell, out, np.random.default_rng(1)).items()}
    assert_same_results(results(out, cell.backward(out.cache, **grads)), expected)


@cells
def test_outputs_are_fresh_writable_arrays(cell, rng):
    """Results never alias the inputs or each other: writing to one changes nothing else."""
    problem = full_problem(cell, rng)
    out, g = run_both(cell, problem)
    arrays = list(results(out, g).values())
    inputs = [a for a in problem.values() if isinstance(a, np.ndarray)]
    inputs += list(problem["initial_state"]) if isinstance(problem["initial_state"], tuple) \
        else [problem["initial_state"]]
    for k, a in enumerate(arrays):
        assert a.flags.writeable
        for other in arrays[k + 1:] + inputs:
            assert not np.shares_memory(a, other)


@cells
def test_backward_reuses_the_cache_and_leaves_it_intact(cell, rng):
    problem = full_problem(cell, rng)
    out = forward(cell, problem, training=True)
    grads = upstream_gradients(cell, out, rng)
    first = results(out, cell.backward(out.cache, **grads))
    second = results(out, cell.backward(out.cache, **grads))
    assert_same_results(second, first)


# ------------------------------------------------------------------------ NaN and Inf
@cells
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_nan_in_one_row_propagates_along_that_row_only(cell, dtype, go_backwards, rng):
    """NaN is legal input: it poisons its own batch row from its step on, nothing else,
    and the kernels do not crash.  The reference predicts the exact NaN pattern."""
    problem = make_problem(cell, rng, batch=3, steps=5, dtype=dtype, state=True)
    problem["x"][1, 1, 3] = np.nan
    out, g = run_both(cell, problem, go_backwards=go_backwards)
    with np.errstate(invalid="ignore"):
        ref = cell.ref_forward(**problem, **cell.options, go_backwards=go_backwards)
    np.testing.assert_array_equal(np.isnan(out.outputs), np.isnan(ref.outputs))
    first = 3 if go_backwards else 1   # processing step that reads x[:, 1]
    assert np.isnan(out.outputs[1, first:]).all()
    assert not np.isnan(out.outputs[1, :first]).any()
    assert np.isfinite(out.outputs[[0, 2]]).all()
    assert np.isfinite(g.x[[0, 2]]).all()      # other rows' input gradients stay finite
    assert np.isnan(g.kernel).any()           # weight gradients sum over the poisoned row


@cells
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_anywhere_never_crashes(cell, dtype, value, rng):
    """Non-finite weights, states, masks-off rows and upstream gradients: a result of the
    right shape (with NaN/Inf where the maths puts them), never a crash or an exception."""
    problem = full_problem(cell, rng, dtype)
    for slot in forward_slots(cell, problem):
        if slot == "mask":
            continue
        changed = with_slot(cell, problem, slot, snapshot(get_slot(cell, problem, slot)))
        get_slot(cell, changed, slot).reshape(-1)[::3] = value
        with np.errstate(all="ignore"):
            out, g = run_both(cell, changed)
        assert out.outputs.shape == problem["x"].shape[:2] + (problem["recurrent_kernel"].shape[0],)
        assert g.x.shape == problem["x"].shape
    out = forward(cell, problem, training=True)
    grads = {k: np.full_like(v, value) for k, v in upstream_gradients(cell, out, rng).items()}
    g = cell.backward(out.cache, **grads)
    assert g.kernel.shape == problem["kernel"].shape


@cells
def test_inf_input_saturates_like_the_reference(cell, rng):
    problem = make_problem(cell, rng, batch=2, steps=3)
    problem["x"][0, 1, :] = np.inf
    problem["x"][1, 0, :] = -np.inf
    out = forward(cell, problem)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = cell.ref_forward(**problem, **cell.options)
    np.testing.assert_array_equal(np.isnan(out.outputs), np.isnan(ref.outputs))
    finite = np.isfinite(ref.outputs)
    np.testing.assert_allclose(out.outputs[finite], ref.outputs[finite], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------- empty and zero-length
def _zero_size_problem(cell, rng, batch, steps, dtype):
    problem = make_problem(cell, rng, batch=max(batch, 1), steps=max(steps, 1), dtype=dtype,
                           **FULL)
    # fresh zero-size arrays (NumPy gives them all-zero strides) rather than slices
    problem["x"] = np.zeros((batch, steps, problem["x"].shape[2]), dtype)
    problem["mask"] = np.ones((batch, steps), bool)
    units = problem["recurrent_kernel"].shape[0]
    states = tuple(rng.standard_normal((batch, units)).astype(dtype) for _ in cell.states)
    problem["initial_state"] = states if len(states) > 1 else states[0]
    if "recurrent_dropout_mask" in problem:
        problem["recurrent_dropout_mask"] = np.ones((batch, units), dtype)
    return problem


@cells
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch,steps", [(0, 4), (3, 0), (0, 0)])
@pytest.mark.parametrize("make", ["fresh", "sliced"])
def test_empty_batch_and_zero_length_sequences(cell, dtype, batch, steps, make, rng):
    """Legal: outputs of shape (batch, 0 or T, units); the states pass straight through
    (h_n = h0, d_h0 = d_h_n); weight gradients are zero."""
    if make == "fresh":
        problem = _zero_size_problem(cell, rng, batch, steps, dtype)
    else:  # slices of non-empty arrays keep their strides
        problem = full_problem(cell, rng, dtype)
        problem["x"] = problem["x"][:batch, :steps]
        problem["mask"] = problem["mask"][:batch, :steps]
        if "recurrent_dropout_mask" in problem:
            problem["recurrent_dropout_mask"] = problem["recurrent_dropout_mask"][:batch]
        states = tuple(s[:batch] for s in (problem["initial_state"] if len(cell.states) > 1
                                            else (problem["initial_state"],)))
        problem["initial_state"] = states if len(states) > 1 else states[0]
    units = problem["recurrent_kernel"].shape[0]
    out = forward(cell, problem, training=True)
    assert out.outputs.shape == (batch, steps, units) and out.outputs.dtype == dtype
    states = problem["initial_state"] if len(cell.states) > 1 else (problem["initial_state"],)
    for name, s0 in zip(cell.state_outputs, states):
        np.testing.assert_array_equal(getattr(out, name), s0)
    grads = {"d_outputs": np.ones((batch, steps, units), dtype)}
    grads.update({f"d_{n}": np.full((batch, units), 2.0, dtype) for n in cell.state_outputs})
    g = cell.backward(out.cache, **grads)
    assert g.x.shape == (batch, steps, problem["x"].shape[2])
    for name in ("kernel", "recurrent_kernel", "bias"):
        assert getattr(g, name).shape == problem[name].shape
        np.testing.assert_array_equal(getattr(g, name), 0)
    if steps == 0:
        for k, name in enumerate(cell.states):
            np.testing.assert_array_equal(getattr(g, f"{name}0"), grads[f"d_{name}_n"])


# ------------------------------------------------------------ 32-bit index overflow
@pytest.mark.slow  # ~5 s per cell: 8 GB of input rows are gathered and projected
@cells
@pytest.mark.parametrize("dtype", [np.float32])
def test_input_with_more_than_int32_max_elements(cell, dtype, rng):
    """x holds 2**31 + 2**20 elements (> INT32_MAX) but only one (time, features) slab of
    memory: its batch axis has stride 0.  Every batch row must then get the same result,
    equal to a one-row run, up to rounding: with this many rows the LSTM adds x_t W inside
    its tiles, whose summation order depends on the row's place in a tile (a wrong index
    would give other numbers, not other last bits)."""
    batch, steps, features, units = 2**11 + 2**0, 2**8, 2**12, 1
    slab = rng.standard_normal((1, steps, features)).astype(dtype)
    x = np.broadcast_to(slab, (batch, steps, features))
    assert x.size > INT32_MAX
    problem = make_problem(cell, rng, steps=steps, features=features, units=units, dtype=dtype)
    problem["x"] = x
    out = forward(cell, problem)
    single = forward(cell, {**problem, "x": slab})
    close = dict(rtol=1e-4, atol=1e-4)  # sums of 4096 float32 products
    np.testing.assert_allclose(out.outputs[0], single.outputs[0], **close)
    np.testing.assert_allclose(out.outputs[-1], single.outputs[0], **close)
    np.testing.assert_allclose(out.outputs, np.broadcast_to(out.outputs[:1], out.outputs.shape),
                               **close)


@pytest.mark.parametrize("cell", [c for c in CELLS if c.gates > 1], ids=str)
def test_units_beyond_int32_blas_indices_fail_cleanly(cell, rng):
    """gates*units > INT32_MAX cannot be a BLAS dimension: a clean Python error (never a
    crash, never an attempt to run).  The weights are zero-stride float32 views, so no
    memory is needed.  (SimpleRNN has one gate: its (units, units) recurrent kernel of
    more than 2**31 units exceeds NumPy's own size limit, so it cannot even be passed.)"""
    units = 2**31 // cell.gates + 1
    zero = np.zeros(1, np.float32)
    recurrent = np.lib.stride_tricks.as_strided(zero, (units, cell.gates * units), (0, 0))
    kernel = np.lib.stride_tricks.as_strided(zero, (5, cell.gates * units), (0, 0))
    problem = make_problem(cell, rng, bias=False, dtype=np.float32)
    problem.update(kernel=kernel, recurrent_kernel=recurrent)
    with pytest.raises((ValueError, MemoryError)):
        forward(cell, problem)


@cells
def test_huge_batch_of_zero_stride_input_fails_cleanly(cell, rng):
    """(2**40, 1, 5) zero-stride x: the results alone would need terabytes, so the op must
    raise a clean error (MemoryError or ValueError), not crash or overflow an index."""
    problem = make_problem(cell, rng, features=5, bias=False)
    problem["x"] = np.lib.stride_tricks.as_strided(np.zeros(5), (2**40, 1, 5), (0, 0, 8))
    with pytest.raises((ValueError, MemoryError)):
        forward(cell, problem, training=True)


# ------------------------------------------------------ layers and torch modules
# The same promises one level up: clear errors naming the input, any layout of the input
# gives the contiguous result, the caller's data is untouched, NaN stays in its row.
def _layer_classes():
    from fusedrnn import layers

    return [getattr(layers, name) for name in ("LSTM", "GRU", "SimpleRNN")
            if hasattr(layers, name)]


layer_classes = pytest.mark.parametrize("layer_class", _layer_classes(),
                                        ids=lambda c: c.__name__)


def _layer(layer_class):
    return layer_class(6, return_sequences=True, return_state=False, seed=0)


@layer_classes
def test_layer_bad_inputs_name_the_input(layer_class, rng):
    layer = _layer(layer_class)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    layer(x)  # build
    for bad in (x.astype(np.complex64), x.astype(object), np.full((3, 4, 5), "a")):
        with pytest.raises(TypeError, match="inputs"):
            layer(bad)
    for bad in (x[0], x[None]):
        with pytest.raises(ValueError, match="inputs"):
            layer(bad)
    with pytest.raises(ValueError, match="features"):
        layer(x[:, :, :3])
    with pytest.raises(ValueError, match="mask"):
        layer(x, mask=np.ones((3, 5), bool))


@layer_classes
def test_layer_any_input_layout_gives_the_contiguous_result(layer_class, rng):
    layer = _layer(layer_class)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    expected = np.asarray(layer(x))
    for layout, view_of in LAYOUTS.items():
        view = view_of(x)
        before = view.copy()
        actual = np.asarray(layer(view))
        np.testing.assert_array_equal(actual, np.asarray(layer(np.array(view))), err_msg=layout)
        np.testing.assert_array_equal(view, before, err_msg=f"{layout} input was modified")
    np.testing.assert_array_equal(np.asarray(layer(x)), expected)


@layer_classes
def test_layer_nan_stays_in_its_row_and_empty_inputs_work(layer_class, rng):
    layer = _layer(layer_class)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    x[1, 2, 0] = np.nan
    out = np.asarray(layer(x))
    assert np.isnan(out[1, 2:]).all() and np.isfinite(out[[0, 2]]).all()
    assert np.isfinite(out[1, :2]).all()
    assert np.asarray(layer(np.zeros((0, 4, 5), np.float32))).shape == (0, 4, 6)
    assert np.asarray(layer(np.zeros((3, 0, 5), np.float32))).shape == (3, 0, 6)


@pytest.fixture
def torch_modules(request):
    from helpers import require

    require("torch", request)
    import fusedrnn.torch as fused_torch

    return fused_torch


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_torch_module_bad_inputs_are_clear_errors(torch_modules, name):
    import torch

    torch.manual_seed(0)
    module = getattr(torch_modules, name)(5, 6, batch_first=True)
    x = torch.randn(3, 4, 5)
    with pytest.raises(TypeError, match="dtype"):
        module(x.int())
    with pytest.raises(TypeError, match="dtype"):
        module(x.double())
    with pytest.raises(ValueError, match="3-D"):
        module(x[None])
    with pytest.raises(ValueError, match="input_size"):
        module(x[:, :, :3])


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_torch_module_views_match_contiguous_and_input_is_untouched(torch_modules, name):
    """Non-contiguous, expanded (zero-stride) and flipped tensors: same outputs and
    gradients as a contiguous copy; the input tensor is unchanged after backward."""
    import torch

    torch.manual_seed(0)
    module = getattr(torch_modules, name)(5, 6, batch_first=True)
    base = torch.randn(4, 3, 5)
    views = {
        "transposed": base.transpose(0, 1),
        "expanded": torch.randn(1, 4, 5).expand(3, 4, 5),
        "flipped": base.transpose(0, 1).flip(1),
        "strided": torch.randn(3, 8, 5)[:, ::2],
    }
    for label, view in views.items():
        results_of = []
        for x in (view, view.contiguous()):
            x = x.detach().requires_grad_(True)
            before = x.detach().clone()
            module.zero_grad()
            out, _ = module(x)
            out.square().sum().backward()
            assert torch.equal(x.detach(), before), f"{label}: input modified"
            results_of.append((out.detach(), x.grad.clone(),
                               [p.grad.clone() for p in module.parameters()]))
        (out_v, gx_v, gp_v), (out_c, gx_c, gp_c) = results_of
        assert torch.equal(out_v, out_c), label
        assert torch.equal(gx_v, gx_c), label
        for a, b in zip(gp_v, gp_c):
            assert torch.equal(a, b), label


def _small_model():
    from fusedrnn import layers, models

    model = models.Sequential([layers.LSTM(8, seed=0), layers.Dense(1)])
    model.compile("adam", "mse")
    return model


def test_model_fit_bad_data_names_x_or_y(rng):
    model = _small_model()
    x = rng.standard_normal((16, 5, 3)).astype(np.float32)
    y = rng.standard_normal((16, 1)).astype(np.float32)
    model.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="samples"):
        model.fit(x, y[:10], epochs=1, verbose=0)
    with pytest.raises(ValueError, match="x"):
        model.fit(x[0], y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="x"):
        model.fit(x[:, :, :2], y, epochs=1, verbose=0)
    with pytest.raises(TypeError, match="x"):
        model.fit(x.astype(np.complex64), y, epochs=1, verbose=0)
    with pytest.raises(TypeError, match="y"):
        model.fit(x, y.astype(object), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(x, y, batch_size=0, verbose=0)


def test_model_fit_and_predict_leave_the_data_untouched(rng):
    model = _small_model()
    x = read_only(rng.standard_normal((16, 5, 3)).astype(np.float32))
    y = read_only(rng.standard_normal((16, 1)).astype(np.float32))
    x_before, y_before = x.copy(), y.copy()
    model.fit(x, y, epochs=2, batch_size=5, verbose=0)
    predicted = model.predict(x)
    np.testing.assert_array_equal(model.predict(reversed_view(x)), predicted)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)
