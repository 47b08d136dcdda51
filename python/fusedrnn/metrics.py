"""Streaming metrics with Keras 3's definitions: accuracies and a (weighted) mean.

A metric accumulates over batches (``update_state``) and reports the running value
(``result``) until ``reset_state``.  As in Keras' ``MeanMetricWrapper``, a mask on the
predictions (a sequence output with padded steps) excludes the masked entries: the result
is ``sum(values * mask) / sum(mask)`` over everything seen.

A loss name (``"mae"``, ``"mse"``, ``"binary_crossentropy"``...) as a metric is the mean
of that loss over the samples seen.  ``"accuracy"`` / ``"acc"`` resolve like Keras' compile(): binary accuracy when the
prediction has one unit, sparse categorical accuracy when the targets have fewer axes than
the predictions (or a last axis of 1 against several classes), categorical otherwise.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "Metric", "Mean", "MeanMetricWrapper", "Accuracy", "BinaryAccuracy", "CategoricalAccuracy",
    "SparseCategoricalAccuracy", "accuracy", "binary_accuracy", "categorical_accuracy",
    "sparse_categorical_accuracy", "get",
]


def _same_rank(y_true, y_pred):
    """Keras' squeeze_or_expand_to_same_rank: reconcile a trailing axis of size 1."""
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        if y_pred.ndim == 1:
            y_pred = y_pred[..., None]
        else:
            y_true = y_true[..., 0]
    elif y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        if y_true.ndim == 1:
            y_true = y_true[..., None]
        else:
            y_pred = y_pred[..., 0]
    return y_true, y_pred


def accuracy(y_true, y_pred):
    """1.0 where y_true == y_pred exactly (elementwise), else 0.0."""
    y_true, y_pred = _same_rank(np.asarray(y_true), np.asarray(y_pred))
    return (y_true == y_pred).astype(np.float32)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """1.0 where (y_pred > threshold) equals the 0/1 target, elementwise."""
    y_true, y_pred = _same_rank(np.asarray(y_true), np.asarray(y_pred))
    return (y_true == (y_pred > threshold).astype(y_true.dtype)).astype(np.float32)


def categorical_accuracy(y_true, y_pred):
    """1.0 where argmax(y_pred) equals argmax(y_true) (one-hot targets)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return (np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)).astype(np.float32)


def sparse_categorical_accuracy(y_true, y_pred):
    """1.0 where argmax(y_pred) equals the integer class id in y_true."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    return (np.argmax(y_pred, axis=-1) == y_true).astype(np.float32)


def _mask_weights(mask, shape):
    """A float weight array with `shape` from a mask on the leading axes (None: all ones)."""
    if mask is None:
        return None
    mask = np.asarray(mask).astype(bool)
    if mask.shape != tuple(shape)[: mask.ndim]:
        raise ValueError(f"mask: expected shape {tuple(shape)[:mask.ndim]} (the leading "
                         f"axes of the metric values {tuple(shape)}), got {mask.shape}")
    weights = mask.astype(np.float64)
    return np.broadcast_to(weights.reshape(weights.shape + (1,) * (len(shape) - mask.ndim)),
                           shape)


class Metric:
    """Base class: ``update_state``, ``result``, ``reset_state`` and a ``name``."""

    def __init__(self, name=None):
        self.name = name or type(self).__name__.lower()
        self.reset_state()

    def reset_state(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def result(self) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name}


class Mean(Metric):
    """Weighted running mean of values: total / count (0 before any update)."""

    def reset_state(self):
        self.total = 0.0
        self.count = 0.0

    def update_state(self, values, sample_weight=None):
        values = np.asarray(values, dtype=np.float64)
        if sample_weight is None:
            self.total += float(np.sum(values))
            self.count += float(values.size)
        else:
            weights = np.broadcast_to(np.asarray(sample_weight, dtype=np.float64), values.shape)
            self.total += float(np.sum(values * weights))
            self.count += float(np.sum(weights))

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0


class MeanMetricWrapper(Mean):
    """A Mean over the values of fn(y_true, y_pred), masked entries excluded."""

    def __init__(self, fn, name=None, **fn_kwargs):
        self._fn = fn
        self._fn_kwargs = fn_kwargs
        super().__init__(name=name or fn.__name__)

    def update_state(self, y_true, y_pred, mask=None):
        values = self._fn(y_true, y_pred, **self._fn_kwargs)
        super().update_state(values, _mask_weights(mask, values.shape))


class Accuracy(MeanMetricWrapper):
    def __init__(self, name="accuracy"):
        super().__init__(accuracy, name=name)


class BinaryAccuracy(MeanMetricWrapper):
    def __init__(self, name="binary_accuracy", threshold=0.5):
        super().__init__(binary_accuracy, name=name, threshold=threshold)


class CategoricalAccuracy(MeanMetricWrapper):
    def __init__(self, name="categorical_accuracy"):
        super().__init__(categorical_accuracy, name=name)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    def __init__(self, name="sparse_categorical_accuracy"):
        super().__init__(sparse_categorical_accuracy, name=name)


_BY_NAME = {
    "binary_accuracy": BinaryAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
}


def resolve_accuracy(y_true_shape, y_pred_shape, name="accuracy") -> Metric:
    """The accuracy Keras' compile() picks for "accuracy" given target/prediction shapes."""
    is_binary = y_pred_shape[-1] == 1
    is_sparse = len(y_true_shape) < len(y_pred_shape) or (
        y_true_shape[-1] == 1 and y_pred_shape[-1] > 1)
    if is_binary:
        return BinaryAccuracy(name=name)
    if is_sparse:
        return SparseCategoricalAccuracy(name=name)
    return CategoricalAccuracy(name=name)


def get(identifier, y_true_shape=None, y_pred_shape=None) -> Metric:
    """A fresh Metric from a name or an instance.  "accuracy"/"acc" need the target and
    prediction shapes to pick the right accuracy (as Keras does at the first batch)."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in ("accuracy", "acc"):
            if y_true_shape is None or y_pred_shape is None:
                raise ValueError("metrics: 'accuracy' needs the target and prediction shapes "
                                 "to choose binary, categorical or sparse accuracy")
            return resolve_accuracy(y_true_shape, y_pred_shape, name=identifier)
        if key in _BY_NAME:
            return _BY_NAME[key](name=identifier)
        from . import losses  # a loss name as a metric: its mean over the samples seen
        try:
            loss = losses.get(key)
        except ValueError:
            raise ValueError(f"metrics: unknown metric {identifier!r}; expected 'accuracy', "
                             f"one of {sorted(_BY_NAME)}, a loss name (e.g. 'mae') or a "
                             "Metric instance") from None
        return MeanMetricWrapper(loss.values, name=identifier)
    raise TypeError(f"metrics: expected a name or a Metric instance, got "
                    f"{type(identifier).__name__}")
