"""Loss functions with Keras 3's formulas and reduction, and their exact gradients.

Every loss maps ``(y_true, y_pred)`` to one value per sample (per sample *and* step for a
sequence output) exactly as ``keras.losses`` does: probabilities are clipped to
[1e-7, 1 - 1e-7] (Keras' ``backend.epsilon()``), categorical probabilities are renormalised
to sum to one, ``from_logits`` uses log-sigmoid / log-softmax, and mse, mae and binary
crossentropy average over the last axis.

Reduction (Keras' ``"sum_over_batch_size"``): the mean of those values.  When the output
carries a mask (batch, time) - a sequence output whose padded steps are masked - the masked
values get weight 0 and the mean runs over the valid ones only:
``sum(values * mask) / sum(mask)`` (0 when nothing is valid), as ``keras.losses.Loss``
does with ``apply_mask``.

``Loss.value_and_gradient(y_true, y_pred, mask)`` returns the reduced loss and its gradient
with respect to ``y_pred``; the models' backpropagation starts from there.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "Loss", "BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy",
    "MeanSquaredError", "MeanAbsoluteError", "binary_crossentropy", "categorical_crossentropy",
    "sparse_categorical_crossentropy", "mean_squared_error", "mean_absolute_error", "get",
    "serialize", "deserialize",
]

EPSILON = 1e-7  # keras.backend.epsilon()


def _as_prediction(y_pred) -> np.ndarray:
    y_pred = np.asarray(y_pred)
    if y_pred.dtype.kind != "f":
        raise TypeError(f"y_pred: expected a float array, got dtype {y_pred.dtype}")
    if y_pred.ndim < 1:
        raise ValueError(f"y_pred: expected at least one axis, got shape {y_pred.shape}")
    return y_pred


def _as_target(y_true, y_pred: np.ndarray) -> np.ndarray:
    """y_true as y_pred's dtype, with Keras' squeeze_or_expand_to_same_rank rule."""
    y_true = np.asarray(y_true)
    if y_true.dtype.kind not in "biuf":
        raise TypeError(f"y_true: expected a numeric array, got dtype {y_true.dtype}")
    y_true = y_true.astype(y_pred.dtype, copy=False)
    if y_true.ndim == y_pred.ndim - 1 and y_pred.shape[-1] == 1:
        y_true = y_true[..., None]
    elif y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true: expected the shape of the predictions {y_pred.shape}, got {y_true.shape}"
        )
    return y_true


def _sigmoid(x):
    # Split by sign so exp never overflows.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def _log_sigmoid(x):
    # log(sigmoid(x)) = -softplus(-x) = min(x, 0) - log1p(exp(-|x|))
    return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def _log_softmax(x):
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _check_mask(mask, values_shape):
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        if not np.issubdtype(mask.dtype, np.integer) and mask.dtype.kind != "f":
            raise TypeError(f"mask: expected a boolean array, got dtype {mask.dtype}")
        mask = mask != 0
    if mask.shape != tuple(values_shape):
        raise ValueError(
            f"mask: expected shape {tuple(values_shape)} (the per-sample loss values), "
            f"got {mask.shape}"
        )
    return mask


class Loss:
    """A loss: ``loss(y_true, y_pred, mask=None)`` returns the reduced scalar (a Python
    float); ``value_and_gradient`` also returns d loss / d y_pred."""

    name = "loss"

    def __init__(self, name=None):
        if name is not None:
            self.name = name

    # Subclasses: per-sample values, and a function mapping d values -> d y_pred.
    def _values_and_backward(self, y_true, y_pred):  # pragma: no cover - overridden
        raise NotImplementedError

    def _prepare(self, y_true, y_pred):
        y_pred = _as_prediction(y_pred)
        return _as_target(y_true, y_pred), y_pred

    def values(self, y_true, y_pred) -> np.ndarray:
        """Unreduced per-sample (per-step) losses, Keras' ``reduction=None``."""
        y_true, y_pred = self._prepare(y_true, y_pred)
        return self._values_and_backward(y_true, y_pred)[0]

    def value_and_gradient(self, y_true, y_pred, mask=None):
        """(reduced loss as a float, d loss / d y_pred with y_pred's shape and dtype)."""
        y_true, y_pred = self._prepare(y_true, y_pred)
        values, backward = self._values_and_backward(y_true, y_pred)
        mask = _check_mask(mask, values.shape)
        if mask is None:
            weights = np.full(values.shape, 1.0 / max(values.size, 1), dtype=values.dtype)
        else:
            valid = int(mask.sum())
            # divide_no_nan: a batch with no valid step contributes 0 (and no gradient).
            scale = 1.0 / valid if valid else 0.0
            weights = mask.astype(values.dtype) * values.dtype.type(scale)
        loss = float(np.sum(values * weights, dtype=np.float64))
        grad = backward(weights).astype(y_pred.dtype, copy=False)
        return loss, grad

    def __call__(self, y_true, y_pred, mask=None) -> float:
        return self.value_and_gradient(y_true, y_pred, mask)[0]

    def get_config(self) -> dict:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class MeanSquaredError(Loss):
    """mean((y_true - y_pred)**2, axis=-1)."""

    name = "mean_squared_error"

    def _values_and_backward(self, y_true, y_pred):
        diff = y_pred - y_true
        width = y_pred.shape[-1]
        values = np.mean(np.square(diff), axis=-1)
        return values, lambda d: d[..., None] * (2.0 / width) * diff


class MeanAbsoluteError(Loss):
    """mean(|y_true - y_pred|, axis=-1)."""

    name = "mean_absolute_error"

    def _values_and_backward(self, y_true, y_pred):
        diff = y_pred - y_true
        width = y_pred.shape[-1]
        values = np.mean(np.abs(diff), axis=-1)
        return values, lambda d: d[..., None] * (1.0 / width) * np.sign(diff)


class BinaryCrossentropy(Loss):
    """mean(-(t*log(p) + (1-t)*log(1-p)), axis=-1) with p clipped to [eps, 1-eps], or
    with from_logits the stable -t*log_sigmoid(x) - (1-t)*log_sigmoid(-x)."""

    name = "binary_crossentropy"

    def __init__(self, from_logits=False, name=None):
        super().__init__(name)
        self.from_logits = bool(from_logits)

    def _values_and_backward(self, y_true, y_pred):
        width = y_pred.shape[-1]
        if self.from_logits:
            elementwise = -y_true * _log_sigmoid(y_pred) - (1 - y_true) * _log_sigmoid(-y_pred)
            d_elem = _sigmoid(y_pred) - y_true
        else:
            eps = y_pred.dtype.type(EPSILON)
            p = np.clip(y_pred, eps, 1 - eps)
            elementwise = -(y_true * np.log(p) + (1 - y_true) * np.log(1 - p))
            inside = (y_pred >= eps) & (y_pred <= 1 - eps)  # clip passes no gradient outside
            d_elem = np.where(inside, -y_true / p + (1 - y_true) / (1 - p), 0)
        values = np.mean(elementwise, axis=-1)
        return values, lambda d: d[..., None] * (1.0 / width) * d_elem

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


def _categorical_values_and_backward(y_true, y_pred, from_logits):
    """-sum(t * log q) over the last axis with q = softmax(x) or clip(p / sum(p))."""
    if from_logits:
        log_prob = _log_softmax(y_pred)
        values = -np.sum(y_true * log_prob, axis=-1)
        softmax = np.exp(log_prob)

        def backward(d):
            total = np.sum(y_true, axis=-1, keepdims=True)
            return d[..., None] * (softmax * total - y_true)
        return values, backward
    eps = y_pred.dtype.type(EPSILON)
    total = np.sum(y_pred, axis=-1, keepdims=True)
    normalised = y_pred / total
    q = np.clip(normalised, eps, 1 - eps)
    values = -np.sum(y_true * np.log(q), axis=-1)

    def backward(d):
        inside = (normalised >= eps) & (normalised <= 1 - eps)
        g_q = np.where(inside, -y_true / q, 0) * d[..., None]   # d loss / d normalised
        # normalised = p / S: d/dp_j = g_j / S - sum_k g_k p_k / S²
        return g_q / total - np.sum(g_q * y_pred, axis=-1, keepdims=True) / total ** 2
    return values, backward


class CategoricalCrossentropy(Loss):
    """-sum(y_true * log(y_pred), axis=-1) on one-hot (or soft) targets."""

    name = "categorical_crossentropy"

    def __init__(self, from_logits=False, name=None):
        super().__init__(name)
        self.from_logits = bool(from_logits)

    def _values_and_backward(self, y_true, y_pred):
        return _categorical_values_and_backward(y_true, y_pred, self.from_logits)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


class SparseCategoricalCrossentropy(Loss):
    """Categorical crossentropy with integer class ids as targets: y_true has the shape of
    y_pred without its last (class) axis, or with a last axis of size 1."""

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits=False, name=None):
        super().__init__(name)
        self.from_logits = bool(from_logits)

    def _prepare(self, y_true, y_pred):
        y_pred = _as_prediction(y_pred)
        labels = np.asarray(y_true)
        if labels.dtype.kind not in "biuf":
            raise TypeError(f"y_true: expected integer class ids, got dtype {labels.dtype}")
        if labels.ndim == y_pred.ndim and labels.shape[-1] == 1:
            labels = labels[..., 0]
        if labels.shape != y_pred.shape[:-1]:
            raise ValueError(
                f"y_true: expected class ids of shape {y_pred.shape[:-1]} (the predictions' "
                f"shape without the class axis), got {np.asarray(y_true).shape}"
            )
        if labels.dtype.kind == "f" and np.any(labels != np.round(labels)):
            raise ValueError("y_true: class ids must be whole numbers")
        labels = labels.astype(np.int64)
        classes = y_pred.shape[-1]
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise ValueError(
                f"y_true: class ids must lie in [0, {classes - 1}], got values in "
                f"[{labels.min()}, {labels.max()}]"
            )
        one_hot = np.zeros(y_pred.shape, dtype=y_pred.dtype)
        np.put_along_axis(one_hot, labels[..., None], 1, axis=-1)
        return one_hot, y_pred

    def _values_and_backward(self, y_true, y_pred):
        return _categorical_values_and_backward(y_true, y_pred, self.from_logits)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


# Functional forms (per-sample values, like keras.losses.binary_crossentropy & co).
def binary_crossentropy(y_true, y_pred, from_logits=False):
    return BinaryCrossentropy(from_logits).values(y_true, y_pred)


def categorical_crossentropy(y_true, y_pred, from_logits=False):
    return CategoricalCrossentropy(from_logits).values(y_true, y_pred)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False):
    return SparseCategoricalCrossentropy(from_logits).values(y_true, y_pred)


def mean_squared_error(y_true, y_pred):
    return MeanSquaredError().values(y_true, y_pred)


def mean_absolute_error(y_true, y_pred):
    return MeanAbsoluteError().values(y_true, y_pred)


_CLASSES = {
    cls.__name__: cls for cls in (BinaryCrossentropy, CategoricalCrossentropy,
                                  SparseCategoricalCrossentropy, MeanSquaredError,
                                  MeanAbsoluteError)
}
_ALIASES = {
    "binary_crossentropy": BinaryCrossentropy, "bce": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
}


def serialize(loss: Loss) -> dict:
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


def deserialize(config: dict) -> Loss:
    cls = _CLASSES.get(config.get("class_name"))
    if cls is None:
        raise ValueError(f"loss: unknown class_name {config.get('class_name')!r}; expected one "
                         f"of {sorted(_CLASSES)}")
    return cls.from_config(dict(config.get("config", {})))


def get(identifier) -> Loss:
    """A Loss from an instance, a Keras name ("mse", "binary_crossentropy", ...) or a
    serialized dict."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        cls = _ALIASES.get(identifier.lower()) or _CLASSES.get(identifier)
        if cls is None:
            raise ValueError(f"loss: unknown loss {identifier!r}; expected one of "
                             f"{sorted(_ALIASES)} or a Loss instance")
        return cls()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(f"loss: expected a name or a Loss instance, got {type(identifier).__name__}")
