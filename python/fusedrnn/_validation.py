"""Argument checking shared by every public entry point.

Each check names the argument and says what was expected, and never modifies the caller's
array: when a kernel needs a different memory layout we copy."""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Activation names -> the kernels' frnn_activation codes (csrc/fusedrnn.h).
ACTIVATIONS = {"tanh": 0, "sigmoid": 1, "relu": 2, "linear": 3, "hard_sigmoid": 4}


def activation_code(name, argname: str) -> int:
    """Kernel code of an activation given by name (None means linear, as in Keras)."""
    if name is None:
        return ACTIVATIONS["linear"]
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"{argname}: unsupported activation {name!r}; expected one of {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


INT32_MAX = 2**31 - 1  # BLAS' Fortran integers: the kernels' dimensions must fit


def flag(value, argname: str) -> bool:
    """A boolean option; strings such as "no" are refused rather than read as True."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{argname}: expected True or False, got {value!r}")


def check_blas_dims(array: np.ndarray, argname: str) -> None:
    """Refuse (before any copy) dimensions that 32-bit BLAS indices cannot address."""
    if 0 < array.size <= INT32_MAX:  # then every dimension fits (cheaper than the scan)
        return
    if any(n > INT32_MAX for n in array.shape):
        raise ValueError(
            f"{argname}: dimension {max(array.shape)} of shape {array.shape} exceeds the "
            f"kernels' limit of {INT32_MAX} (32-bit BLAS indices)"
        )


def as_array(value, argname: str) -> np.ndarray:
    """np.asarray with a clear error for things that are not numeric arrays."""
    if isinstance(value, np.ndarray):
        return value
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists, odd objects
        raise TypeError(f"{argname}: expected an array, got {type(value).__name__} ({exc})") from None
    return array


def float_array(value, argname: str, dtype=None) -> np.ndarray:
    """A float32/float64 array; with dtype given, it must match (no silent casts)."""
    array = as_array(value, argname)
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{argname}: expected a float32 or float64 array, got dtype {array.dtype}")
    if dtype is not None and array.dtype != dtype:
        raise TypeError(
            f"{argname}: dtype {array.dtype} does not match the input x's dtype {np.dtype(dtype)}; "
            "cast it with .astype()"
        )
    return array


def check_shape(array: np.ndarray, expected: tuple, argname: str, names: str) -> None:
    """Compare array.shape with expected (None entries match anything)."""
    if array.shape == expected:  # the usual case, without the generator below (per call)
        return
    ok = array.ndim == len(expected) and all(
        e is None or s == e for s, e in zip(array.shape, expected)
    )
    if not ok:
        shown = tuple("?" if e is None else e for e in expected)
        raise ValueError(f"{argname}: expected shape {names} = {shown}, got {array.shape}")


def sequence_input(x, argname: str = "x") -> np.ndarray:
    """(batch, time, features) float array whose feature axis is contiguous."""
    x = float_array(x, argname)
    if x.ndim != 3:
        raise ValueError(
            f"{argname}: expected a 3-D array (batch, time, features), got shape {x.shape}"
        )
    if x.shape[2] < 1:
        raise ValueError(f"{argname}: the feature axis must not be empty, got shape {x.shape}")
    check_blas_dims(x[:1, :1], argname)
    return strided_ok(x)


def c_array(array: np.ndarray) -> np.ndarray:
    """The array itself if it is C-contiguous and aligned, else an aligned C-ordered copy."""
    flags = array.flags
    if flags.c_contiguous and flags.aligned:
        return array
    return np.array(array, order="C", copy=True)


def strided_ok(array: np.ndarray) -> np.ndarray:
    """The array itself when the kernels can address it by element strides (aligned, feature
    axis contiguous, every stride a whole number of elements), else a C-ordered copy."""
    if array.size == 0:
        return array
    flags = array.flags
    if flags.c_contiguous and flags.aligned:  # the usual case: nothing to check
        return array
    needs_copy = (
        not flags.aligned
        or any(stride % array.itemsize for stride in array.strides)
        or (array.shape[-1] > 1 and array.strides[-1] != array.itemsize)
    )
    return c_array(array) if needs_copy else array


def weight(value, shape: tuple, argname: str, names: str, dtype) -> np.ndarray:
    """A C-contiguous weight of exactly `shape` in `dtype`."""
    array = float_array(value, argname, dtype)
    check_shape(array, shape, argname, names)
    check_blas_dims(array, argname)
    return c_array(array)


def mask_array(mask, batch: int, steps: int, argname: str = "mask"):
    """(batch, time) mask as a uint8 array (1 = valid step); None stays None."""
    if mask is None:
        return None
    array = as_array(mask, argname)
    if array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{argname}: expected a boolean array, got dtype {array.dtype}")
    check_shape(array, (batch, steps), argname, "(batch, time)")
    if array.dtype == np.bool_:
        return array.view(np.uint8)
    return (array != 0).view(np.uint8)


def initial_states(initial_state, count: int, batch: int, units: int, dtype, argname="initial_state"):
    """Tuple of `count` C-contiguous (batch, units) arrays, or a tuple of Nones."""
    if initial_state is None:
        return (None,) * count
    if count == 1 and not isinstance(initial_state, (list, tuple)):
        initial_state = (initial_state,)
    if not isinstance(initial_state, (list, tuple)) or len(initial_state) != count:
        raise ValueError(
            f"{argname}: expected {'a sequence of ' + str(count) + ' arrays' if count > 1 else 'one array'}"
            f" of shape (batch, units) = ({batch}, {units})"
        )
    states = []
    for k, state in enumerate(initial_state):
        name = f"{argname}[{k}]"
        array = float_array(state, name, dtype)
        check_shape(array, (batch, units), name, "(batch, units)")
        states.append(c_array(array))
    return tuple(states)


def gradient_input(value, shape: tuple, argname: str, names: str, dtype):
    """An upstream gradient (None = zero) with the forward result's shape and dtype."""
    if value is None:
        return None
    array = float_array(value, argname, dtype)
    check_shape(array, shape, argname, names)
    if array.ndim == 3:
        return strided_ok(array)
    return c_array(array)


def optional_state_like(value, batch: int, units: int, dtype, argname: str):
    """An optional (batch, units) array in `dtype` (e.g. a recurrent dropout mask), copied to
    C order when needed; None stays None."""
    if value is None:
        return None
    array = float_array(value, argname, dtype)
    check_shape(array, (batch, units), argname, "(batch, units)")
    return c_array(array)
