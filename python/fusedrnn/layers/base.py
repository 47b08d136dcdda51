"""The Layer base class, the layer registry and small helpers shared by every layer.

Protocol (shared with fusedrnn.engine / models): ``forward(inputs, *, mask, training,
initial_state) -> (outputs, tape)`` computes the layer and, when training, records what
``backward(tape, d_outputs) -> (d_inputs, d_initial_state, d_weights)`` needs.  Weights are
NumPy arrays owned by the layer and updated in place by optimizers, so a layer never rebinds
them after build(); ``weights`` lists them in Keras' ``get_weights()`` order.
"""
from __future__ import annotations

import re

import numpy as np

__all__ = ["Layer", "register", "serialize", "deserialize", "get_registered"]

_REGISTRY: dict = {}
_NAME_COUNTS: dict = {}


def register(cls):
    """Class decorator: make the layer class known to deserialize()."""
    _REGISTRY[cls.__name__] = cls
    return cls


def get_registered():
    """{class name: class} of every registered layer."""
    return dict(_REGISTRY)


def snake_case(name: str) -> str:
    """Keras' naming.to_snake_case (LSTM -> lstm, SimpleRNN -> simple_rnn)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _unique_name(prefix: str) -> str:
    count = _NAME_COUNTS.get(prefix, 0)
    _NAME_COUNTS[prefix] = count + 1
    return prefix if count == 0 else f"{prefix}_{count}"


def serialize(layer) -> dict:
    """{"class_name": ..., "config": layer.get_config()} (JSON-serialisable)."""
    if not isinstance(layer, Layer):
        raise TypeError(f"layer: expected a fusedrnn Layer, got {type(layer).__name__}")
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(config: dict):
    """A new layer from serialize()'s output (or Keras' {"class_name", "config"} form)."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(
            f"config: expected a dict with 'class_name' and 'config', got {config!r}"
        )
    name = config["class_name"]
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"config: unknown layer class {name!r}; known: {sorted(_REGISTRY)}")
    return cls.from_config(dict(config.get("config") or {}))


def check_rate(value, argname: str) -> float:
    """A dropout rate in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{argname}: expected a float in [0, 1), got {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{argname}: expected a rate in [0, 1), got {value}")
    return value


def check_positive_int(value, argname: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{argname}: expected a positive integer, got {value!r}")
    return int(value)


def check_bool(value, argname: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{argname}: expected True or False, got {value!r}")
    return bool(value)


def check_seed(value, argname: str = "seed"):
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
        raise TypeError(f"{argname}: expected an int or None, got {type(value).__name__}")
    return None if value is None else int(value)


def float_input(x, dtype, argname: str, ndim=None, min_ndim=None) -> np.ndarray:
    """The input as a float array in the layer's dtype (a copy only if needed; the caller's
    array is never modified), with a clear error for non-numeric input or a bad rank."""
    try:
        array = np.asarray(x)
    except Exception as exc:
        raise TypeError(f"{argname}: expected an array, got {type(x).__name__} ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{argname}: expected a numeric array, got dtype {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{argname}: expected a {ndim}-D array, got shape {array.shape}")
    if min_ndim is not None and array.ndim < min_ndim:
        raise ValueError(
            f"{argname}: expected an array with at least {min_ndim} dimensions, got shape {array.shape}"
        )
    return array.astype(dtype, copy=False)


def bool_mask(mask, shape: tuple, argname: str = "mask"):
    """A (batch, time) boolean mask checked against the input's leading dims; None stays None."""
    if mask is None:
        return None
    array = np.asarray(mask)
    if array.dtype != np.bool_ and array.dtype.kind not in "iu":
        raise TypeError(f"{argname}: expected a boolean array, got dtype {array.dtype}")
    if array.shape != tuple(shape):
        raise ValueError(f"{argname}: expected shape (batch, time) = {tuple(shape)}, got {array.shape}")
    return array.astype(bool, copy=False)


def dropout_keep_mask(rng, shape, rate, dtype):
    """Inverted-dropout multipliers: 0 with probability rate, else 1/(1-rate)."""
    draw = rng.random(shape) if rng is not None else np.random.random_sample(shape)
    return ((draw >= rate) / (1.0 - rate)).astype(dtype)


class Layer:
    """Base class of every fusedrnn layer (see the module docstring for the protocol).

    Subclasses set ``_weight_names`` via build() by calling ``add_weight`` in Keras'
    get_weights() order, implement ``forward``/``backward`` and ``get_config``."""

    supports_masking = False  # Keras: a layer that does not support masking drops the mask

    def __init__(self, name=None, trainable=True, dtype="float32", **kwargs):
        if kwargs:
            raise TypeError(
                f"{type(self).__name__}: unsupported keyword argument(s) {sorted(kwargs)}"
            )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name: expected a string or None, got {type(name).__name__}")
        self.name = name if name is not None else _unique_name(snake_case(type(self).__name__))
        self.trainable = check_bool(trainable, "trainable")
        if isinstance(dtype, dict):  # Keras 3 configs: {"class_name": "DTypePolicy", ...}
            dtype = (dtype.get("config") or {}).get("name", dtype)
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype: expected 'float32' or 'float64', got {dtype!r}") from None
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype: expected 'float32' or 'float64', got {dt}")
        self.dtype = dt.name
        self.built = False
        self._weights: list = []       # [(name, array, trainable)] in get_weights() order
        self.input_shape = None

    # ---------------------------------------------------------------- weights
    def add_weight(self, name, shape, initializer, trainable=True):
        """Create a weight (in this layer's dtype) and append it to the weight list."""
        # C order: the kernels take weights without copying, and reshape(-1) stays a view
        value = np.array(initializer(tuple(shape), self.dtype), dtype=self.dtype, order="C")
        if value.shape != tuple(shape):
            raise ValueError(
                f"{self.name}: initializer for {name} returned shape {value.shape}, expected {tuple(shape)}"
            )
        self._weights.append((name, value, bool(trainable)))
        return value

    def _sublayers(self):
        """Layers whose weights this layer owns (wrappers override)."""
        return []

    @property
    def weights(self):
        """Weight arrays (the live objects) in Keras' get_weights() order."""
        own = [w for _, w, _ in self._weights]
        for sub in self._sublayers():
            own.extend(sub.weights)
        return own

    @property
    def weight_names(self):
        own = [f"{self.name}/{n}" for n, _, _ in self._weights]
        for sub in self._sublayers():
            own.extend(f"{self.name}/{n}" for n in sub.weight_names)
        return own

    @property
    def trainable_weights(self):
        """The subset of ``weights`` that training updates (same array objects)."""
        if not self.trainable:
            return []
        own = [w for _, w, t in self._weights if t]
        for sub in self._sublayers():
            own.extend(sub.trainable_weights)
        return own

    @property
    def non_trainable_weights(self):
        trainable_ids = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights if id(w) not in trainable_ids]

    def _weight_grads(self, grads):
        """Arrange {weight array id: gradient} as a list aligned with trainable_weights."""
        return [grads[id(w)] for w in self.trainable_weights]

    def get_weights(self):
        """Copies of the weights in Keras' order."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        """Load weights (Keras' layout and order), checking count and shapes; values are cast
        to the layer dtype and copied into the existing arrays."""
        if not self.built:
            raise ValueError(
                f"{self.name}: set_weights() needs a built layer; call build(input_shape) or the "
                "layer once first"
            )
        own = self.weights
        names = self.weight_names
        weights = list(weights)
        if len(weights) != len(own):
            raise ValueError(
                f"{self.name}: set_weights expected {len(own)} arrays ({names}), got {len(weights)}"
            )
        converted = []
        for name, target, value in zip(names, own, weights):
            value = np.asarray(value)
            if value.dtype.kind not in "biuf":
                raise TypeError(f"{self.name}: weight {name} must be numeric, got dtype {value.dtype}")
            if value.shape != target.shape:
                raise ValueError(
                    f"{self.name}: weight {name} expected shape {target.shape}, got {value.shape}"
                )
            converted.append(value.astype(self.dtype, copy=False))
        for target, value in zip(own, converted):  # only after every check passed
            target[...] = value

    def count_params(self):
        return int(sum(w.size for w in self.weights))

    # ---------------------------------------------------------------- structure
    def build(self, input_shape):
        self.input_shape = input_shape
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_mask(self, inputs, mask=None):
        """Keras 3: a masking-aware layer passes the mask on; any other layer drops it."""
        return mask if self.supports_masking else None

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ---------------------------------------------------------------- computation
    def forward(self, inputs, *, mask=None, training=False, initial_state=None):
        raise NotImplementedError

    def backward(self, tape, d_outputs):
        raise NotImplementedError

    # Layers whose backward takes input_gradient=False (then returns None for the input's
    # gradient and skips computing it); a model passes it where its input is model data.
    _skips_input_gradient = False

    def _check_no_initial_state(self, initial_state):
        if initial_state is not None:
            raise ValueError(f"{self.name}: initial_state is only accepted by recurrent layers")

    @staticmethod
    def _check_tape(tape, layer):
        if tape is None:
            raise ValueError(
                f"{layer.name}: backward() needs the tape of forward(..., training=True); got None"
            )

    def _input_shape_of(self, inputs):
        if isinstance(inputs, (list, tuple)):
            return [tuple(np.shape(x)) for x in inputs]
        return tuple(np.shape(inputs))

    def __call__(self, inputs, mask=None, training=False, initial_state=None):
        try:
            from .. import engine  # lazy: engine imports layers
        except ImportError:  # the graph engine is optional for eager use
            engine = None
        symbolic = engine is not None and (engine.is_symbolic(inputs) or (
            isinstance(inputs, (list, tuple)) and any(engine.is_symbolic(x) for x in inputs)
        ))
        if engine is not None and initial_state is not None:
            states = initial_state if isinstance(initial_state, (list, tuple)) else [initial_state]
            symbolic = symbolic or any(engine.is_symbolic(s) for s in states)
        if symbolic:
            return engine.symbolic_call(self, inputs, mask=mask, training=training,
                                        initial_state=initial_state)
        if not self.built:
            self.build(self._input_shape_of(inputs))
        kwargs = {"mask": mask, "training": training}
        if initial_state is not None:
            kwargs["initial_state"] = initial_state
        return self.forward(inputs, **kwargs)[0]

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r} built={self.built}>"
