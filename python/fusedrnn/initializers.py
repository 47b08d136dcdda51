"""Weight initializers with Keras 3's names, defaults and formulas (NumPy).

An initializer is called as ``init(shape, dtype="float32")`` and returns a new array.
Unseeded initializers draw from NumPy's global generator (``np.random.seed`` makes them
reproducible); with ``seed=`` an initializer draws from its own generator and, as in Keras 3,
returns the same values on every call.

``get(identifier)`` accepts a name (``"glorot_uniform"``, ``"orthogonal"``, ``"uniform"``
...), a class name (``"GlorotUniform"``), an Initializer instance, a Keras-style dict
``{"class_name": ..., "config": {...}}`` or any callable ``f(shape, dtype)``.
"""
from __future__ import annotations

import math
import re

import numpy as np

__all__ = [
    "Initializer", "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform",
    "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "Orthogonal",
    "get", "serialize", "compute_fans",
]


def compute_fans(shape):
    """(fan_in, fan_out) of a weight shape, as keras.src.initializers.random_initializers."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def _check_shape(shape):
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape: expected a tuple of ints, got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"shape: dimensions must be non-negative, got {shape}")
    return shape


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype: initializers create float arrays, got {dtype}")
    return dtype


class Initializer:
    """Base class: subclasses implement ``_sample(shape, generator)`` in float64."""

    def __init__(self, seed=None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed: expected an int or None, got {type(seed).__name__}")
        self.seed = None if seed is None else int(seed)

    def _generator(self):
        # Seeded: a fresh generator per call, so repeated calls agree (Keras 3's rule).
        return np.random.default_rng(self.seed) if self.seed is not None else np.random

    def __call__(self, shape, dtype="float32"):
        shape = _check_shape(shape)
        dtype = _float_dtype(dtype)
        return np.asarray(self._sample(shape, self._generator()), dtype=dtype)

    def _sample(self, shape, generator):
        raise NotImplementedError

    def get_config(self):
        return {"seed": self.seed}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    def __init__(self):
        super().__init__()

    def _sample(self, shape, generator):
        return np.zeros(shape)

    def get_config(self):
        return {}


class Ones(Initializer):
    def __init__(self):
        super().__init__()

    def _sample(self, shape, generator):
        return np.ones(shape)

    def get_config(self):
        return {}


class Constant(Initializer):
    def __init__(self, value=0.0):
        super().__init__()
        self.value = float(value)

    def _sample(self, shape, generator):
        return np.full(shape, self.value)

    def get_config(self):
        return {"value": self.value}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def _sample(self, shape, generator):
        return generator.normal(self.mean, self.stddev, size=shape)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = float(minval), float(maxval)
        if self.maxval < self.minval:
            raise ValueError(f"maxval: must be >= minval, got minval={minval}, maxval={maxval}")

    def _sample(self, shape, generator):
        return generator.uniform(self.minval, self.maxval, size=shape)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class _VarianceScalingUniform(Initializer):
    """U(-limit, limit) with limit = sqrt(3 * scale / fan)."""

    scale = 1.0
    mode = "fan_avg"

    def _sample(self, shape, generator):
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        limit = math.sqrt(3.0 * self.scale / max(1.0, fan))
        return generator.uniform(-limit, limit, size=shape)


class _VarianceScalingNormal(Initializer):
    """Truncated normal (at 2 stddev, as Keras) with variance scale / fan."""

    scale = 1.0
    mode = "fan_avg"

    def _sample(self, shape, generator):
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        # 0.879... is the stddev of a unit normal truncated to [-2, 2] (Keras' constant)
        stddev = math.sqrt(self.scale / max(1.0, fan)) / 0.87962566103423978
        out = generator.normal(0.0, 1.0, size=shape)
        bad = np.abs(out) > 2.0
        while bad.any():  # resample outside [-2, 2]
            out[bad] = generator.normal(0.0, 1.0, size=int(bad.sum()))
            bad = np.abs(out) > 2.0
        return out * stddev


class GlorotUniform(_VarianceScalingUniform):
    """U(-l, l), l = sqrt(6 / (fan_in + fan_out)): Keras' default kernel initializer."""


class GlorotNormal(_VarianceScalingNormal):
    pass


class HeUniform(_VarianceScalingUniform):
    """U(-l, l), l = sqrt(6 / fan_in)."""

    scale = 2.0
    mode = "fan_in"


class HeNormal(_VarianceScalingNormal):
    scale = 2.0
    mode = "fan_in"


class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix from the QR decomposition of a normal matrix, with the
    sign correction of keras.src.initializers.random_initializers.Orthogonal: for a
    (rows, cols) weight with rows < cols the rows are orthonormal, else the columns."""

    def __init__(self, gain=1.0, seed=None):
        super().__init__(seed)
        self.gain = float(gain)

    def _sample(self, shape, generator):
        if len(shape) < 2:
            raise ValueError(f"shape: the orthogonal initializer needs at least 2 dimensions, got {shape}")
        num_rows = math.prod(shape[:-1])
        num_cols = shape[-1]
        flat = (max(num_rows, num_cols), min(num_rows, num_cols))
        a = generator.normal(0.0, 1.0, size=flat)
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))  # makes the distribution uniform (Haar)
        if num_rows < num_cols:
            q = q.T
        return self.gain * q.reshape(shape)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


_CLASSES = {cls.__name__: cls for cls in (
    Zeros, Ones, Constant, RandomNormal, RandomUniform, GlorotUniform, GlorotNormal,
    HeUniform, HeNormal, Orthogonal,
)}
_ALIASES = {
    "zeros": Zeros, "zero": Zeros, "ones": Ones, "one": Ones, "constant": Constant,
    "random_normal": RandomNormal, "normal": RandomNormal,
    "random_uniform": RandomUniform, "uniform": RandomUniform,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform, "he_normal": HeNormal, "orthogonal": Orthogonal,
}


def _snake(name):
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def get(identifier, argname: str = "initializer"):
    """An initializer from a name, class name, dict config, instance or callable."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        cls = _ALIASES.get(identifier) or _CLASSES.get(identifier)
        if cls is None:
            raise ValueError(
                f"{argname}: unknown initializer {identifier!r}; expected one of {sorted(_ALIASES)}"
            )
        return cls()
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        cls = _CLASSES.get(name) or _ALIASES.get(name)
        if cls is None:
            raise ValueError(
                f"{argname}: unknown initializer class {name!r}; expected one of {sorted(_CLASSES)}"
            )
        config = dict(identifier.get("config") or {})
        for key in ("input_axes", "output_axes"):  # Keras 3.15 fan axes: default (None) only
            if key in config and config[key] is None:
                del config[key]
        try:
            return cls(**config)
        except TypeError as exc:
            raise TypeError(f"{argname}: bad config for {name}: {exc}") from None
    if callable(identifier):
        return identifier
    raise TypeError(
        f"{argname}: expected an initializer name, instance, config dict or callable, "
        f"got {type(identifier).__name__}"
    )


def serialize(initializer):
    """Keras-style {"class_name", "config"} dict (JSON-serialisable)."""
    if isinstance(initializer, Initializer):
        return {"class_name": type(initializer).__name__, "config": initializer.get_config()}
    raise TypeError(
        f"cannot serialize initializer {initializer!r}: only fusedrnn.initializers.Initializer "
        "instances have a config"
    )
