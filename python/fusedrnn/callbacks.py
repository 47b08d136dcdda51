"""Training callbacks: the Callback hooks, History, EarlyStopping and the progress bar.

The hooks and their order follow Keras 3: ``on_train_begin``, then per epoch
``on_epoch_begin``, ``on_train_batch_begin/end`` for every batch, ``on_epoch_end(epoch,
logs)`` with the epoch's logs (``loss``, metrics, and ``val_*`` when validating), and
finally ``on_train_end``.  A callback stops training by setting ``model.stop_training``.
"""
from __future__ import annotations

import sys
import time
import warnings

__all__ = ["Callback", "History", "EarlyStopping", "ProgbarLogger", "CallbackList"]


class Callback:
    """Base class; every hook is a no-op.  ``self.model`` is set by fit()."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = dict(params)

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass


class CallbackList:
    """Dispatches every hook to a list of callbacks, in order."""

    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"callbacks: expected Callback instances, got "
                                f"{type(callback).__name__}")
            callback.set_model(model)
            callback.set_params(params)

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def dispatch(*args, **kwargs):
            for callback in self.callbacks:
                getattr(callback, hook)(*args, **kwargs)
        return dispatch


class History(Callback):
    """Records the logs of every epoch: ``history.history["loss"]`` is a list of floats
    and ``history.epoch`` the epoch indices.  fit() always returns one."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


def _direction(monitor: str) -> str:
    """"min" or "max" for a monitored quantity, as Keras' mode="auto" decides."""
    name = monitor[4:] if monitor.startswith("val_") else monitor
    if "acc" in name:
        return "max"
    if name in ("loss", "mse", "mae", "mean_squared_error", "mean_absolute_error") or \
            name.endswith("loss") or name.endswith("crossentropy"):
        return "min"
    raise ValueError(
        f"EarlyStopping: cannot tell whether monitor={monitor!r} should be minimised or "
        "maximised; pass mode='min' or mode='max'"
    )


class EarlyStopping(Callback):
    """Stop training when the monitored quantity stops improving (Keras 3 semantics).

    An epoch improves when ``current + min_delta < best`` (mode min) or
    ``current - min_delta > best`` (mode max), i.e. by more than min_delta.  After ``patience`` epochs without
    improvement (counting from the last improvement) training stops.  With
    ``restore_best_weights=True`` the weights of the best epoch are put back at the end.
    ``baseline``: training must beat it to reset the patience counter.
    ``start_from_epoch``: epochs before it are not monitored (warm-up)."""

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
        if not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience: expected a non-negative int, got {patience!r}")
        self.monitor = monitor
        self.mode = mode
        self.min_delta = abs(float(min_delta))
        self.patience = patience
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self._reset()

    def _reset(self):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def _is_improvement(self, value, reference):
        if reference is None:
            return True
        direction = self.mode if self.mode != "auto" else _direction(self.monitor)
        if direction == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_train_begin(self, logs=None):
        self._reset()  # the same instance may be reused across fit() calls
        self.best = self.baseline

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"EarlyStopping: monitor {self.monitor!r} is not in the logs; "
                          f"available: {', '.join(logs)}", stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


def _format_logs(logs) -> str:
    return " - ".join(f"{key}: {value:.4f}" for key, value in logs.items())


class ProgbarLogger(Callback):
    """Keras' text progress bar on a stream (stdout by default).

    verbose=1: one bar per epoch, redrawn after every batch (``\\r``), with the running
    loss and metrics; verbose=2: one line per epoch."""

    def __init__(self, verbose=1, stream=None, width=30):
        super().__init__()
        self.verbose = verbose
        self.stream = stream
        self.width = width

    def _write(self, text):
        stream = self.stream if self.stream is not None else sys.stdout
        stream.write(text)
        stream.flush()

    def _redraw(self, line, end=""):
        """Overwrite the current bar line (padding over a longer previous one)."""
        padding = max(getattr(self, "_last_length", 0) - len(line), 0)
        self._last_length = 0 if end else len(line) + padding  # what the terminal shows
        self._write("\r" + line + " " * padding + end)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._epoch_header = f"Epoch {epoch + 1}/{self.params.get('epochs', '?')}"
        if self.verbose == 1:
            self._write(self._epoch_header + "\n")

    def _bar(self, done, total):
        filled = int(self.width * done / total) if total else self.width
        if done < total:
            return "[" + "=" * max(filled - 1, 0) + ">" + "." * (self.width - filled) + "]"
        return "[" + "=" * self.width + "]"

    def on_train_batch_end(self, batch, logs=None):
        if self.verbose != 1:
            return
        total = self.params.get("steps", 0)
        digits = len(str(total))
        line = f"{batch + 1:>{digits}}/{total} {self._bar(batch + 1, total)}"
        if logs:
            line += " - " + _format_logs(logs)
        self._redraw(line)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        took = f"{seconds:.0f}s" if seconds >= 1 else f"{seconds * 1000:.0f}ms"
        if self.verbose == 1:
            total = self.params.get("steps", 0)
            line = f"{total}/{total} {self._bar(total, total)} {took}"
            if logs:
                line += " - " + _format_logs(logs)
            self._redraw(line, end="\n")
        elif self.verbose == 2:
            self._write(f"{self._epoch_header} - {took} - {_format_logs(logs or {})}\n")

