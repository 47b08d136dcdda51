"""Gradient-descent optimizers with Keras 3's exact update formulas (NumPy, in place).

Each optimizer updates the weight arrays it is given *in place* (``w[...] -= ...``), so the
layers that own them see the new values without rebinding anything.  The formulas follow
``keras/src/optimizers/{sgd,rmsprop,adam}.py`` (Keras 3.15) line by line, including the
gradient clipping of ``keras/src/optimizers/base_optimizer.py``:

- ``clipnorm``: every gradient is rescaled on its own so that its L2 norm is at most clipnorm;
- ``global_clipnorm``: all gradients are rescaled together so that their joint norm is at
  most global_clipnorm;
- ``clipvalue``: every element is clipped to [-clipvalue, clipvalue].

At most one of the three may be set (Keras' rule).  Optimizer state (momenta, velocities)
is kept per weight array and created on the first update; ``iterations`` counts the
completed ``apply`` calls as Keras' ``optimizer.iterations`` does.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "get", "serialize", "deserialize"]


def _positive_or_none(value, argname):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{argname}: expected a number or None, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{argname}: expected a positive number, got {value}")
    return float(value)


def _number(value, argname, low=None, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{argname}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{argname}: expected a finite number, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{argname}: expected a number {bound}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{argname}: expected a number <= {high}, got {value}")
    return value


class Optimizer:
    """Base class: clipping, per-weight state, the iteration counter, and configs.

    Subclasses implement ``_update(index, gradient, variable)`` for one weight array."""

    def __init__(self, learning_rate, *, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 name=None):
        self.learning_rate = _number(learning_rate, "learning_rate", low=0.0, low_open=True)
        self.clipnorm = _positive_or_none(clipnorm, "clipnorm")
        self.clipvalue = _positive_or_none(clipvalue, "clipvalue")
        self.global_clipnorm = _positive_or_none(global_clipnorm, "global_clipnorm")
        if sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(
                "Only one of clipnorm, clipvalue and global_clipnorm can be set; got "
                f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}"
            )
        self.name = name if name is not None else type(self).__name__.lower()
        self.iterations = 0
        # id(variable) -> (variable, index); the variable is kept so its id stays unique.
        self._slots_index: dict = {}
        self._variables: list = []
        self._slots: dict = {}   # slot name -> list of arrays, one per variable index

    # -- state -------------------------------------------------------------------------
    def _index_of(self, variable: np.ndarray) -> int:
        entry = self._slots_index.get(id(variable))
        if entry is not None and entry[0] is variable:
            return entry[1]
        index = len(self._variables)
        self._variables.append(variable)
        self._slots_index[id(variable)] = (variable, index)
        self._create_slots(variable)
        return index

    def _slot_names(self) -> tuple:
        """Names of the per-weight state arrays this optimizer keeps (subclasses)."""
        return ()

    def _create_slots(self, variable):
        for name in self._slot_names():
            self._slots.setdefault(name, []).append(np.zeros_like(variable))

    def _slot(self, name, index):
        return self._slots[name][index]

    def get_state(self, variables) -> tuple:
        """(iterations, [state arrays of each variable, in _slot_names() order]) for the
        given variables (zeros for a variable never updated).  Copies."""
        state = []
        for var in variables:
            entry = self._slots_index.get(id(var))
            if entry is not None and entry[0] is var:
                state.append([self._slot(n, entry[1]).copy() for n in self._slot_names()])
            else:
                state.append([np.zeros_like(var) for _ in self._slot_names()])
        return self.iterations, state

    def set_state(self, variables, iterations, state) -> None:
        """Restore what get_state returned (e.g. after load_model), for the same variables."""
        names = self._slot_names()
        state = list(state)
        if len(state) != len(variables):
            raise ValueError(f"state: expected one entry per variable ({len(variables)}), got "
                             f"{len(state)}")
        for k, (var, arrays) in enumerate(zip(variables, state)):
            if len(arrays) != len(names) or any(a.shape != var.shape for a in arrays):
                raise ValueError(f"state[{k}]: expected {len(names)} arrays ({names}) of shape "
                                 f"{var.shape}")
        for var, arrays in zip(variables, state):
            index = self._index_of(var)
            for name, array in zip(names, arrays):
                self._slot(name, index)[...] = array
        self.iterations = int(iterations)

    # -- clipping (keras/src/optimizers/base_optimizer.py) ---------------------------------
    def _clip_gradients(self, grads):
        if self.clipnorm:
            clipped = []
            for g in grads:
                norm = np.sqrt(np.sum(np.square(g)))
                # g * clipnorm / max(norm, clipnorm): unchanged when the norm is small.
                clipped.append(g * g.dtype.type(self.clipnorm)
                               / np.maximum(norm, g.dtype.type(self.clipnorm)))
            return clipped
        if self.global_clipnorm:
            norm = math.sqrt(sum(float(np.sum(np.square(g.astype(np.float64)))) for g in grads))
            clip = self.global_clipnorm
            scale = clip * min(1.0 / norm, 1.0 / clip) if norm > 0 else 1.0
            if not math.isfinite(norm):
                scale = math.nan  # Keras turns inf/NaN norms into NaN updates
            return [g * g.dtype.type(scale) for g in grads]
        if self.clipvalue:
            v = self.clipvalue
            return [np.clip(g, -v, v).astype(g.dtype, copy=False) for g in grads]
        return list(grads)

    def _lr(self, dtype):
        """The learning rate in the weight dtype.  Keras keeps it in a float32 variable,
        so a float64 weight sees float32(lr); we do the same for identical updates."""
        return dtype.type(np.float32(self.learning_rate))

    # -- public API --------------------------------------------------------------------
    def apply(self, grads, variables) -> None:
        """Update every array of `variables` in place from the aligned `grads` list.

        A None gradient leaves its variable unchanged (Keras skips it too)."""
        grads = list(grads)
        variables = list(variables)
        if len(grads) != len(variables):
            raise ValueError(
                f"grads: expected {len(variables)} gradients (one per variable), got {len(grads)}"
            )
        pairs = []
        for k, (g, var) in enumerate(zip(grads, variables)):
            if g is None:
                continue
            if not isinstance(var, np.ndarray) or var.dtype.kind != "f":
                raise TypeError(f"variables[{k}]: expected a float NumPy array, got "
                                f"{type(var).__name__}")
            g = np.asarray(g)
            if g.shape != var.shape:
                raise ValueError(
                    f"grads[{k}]: expected shape {var.shape} (the variable's shape), got {g.shape}"
                )
            pairs.append((g.astype(var.dtype, copy=False), var))
        if pairs:
            clipped = self._clip_gradients([g for g, _ in pairs])
            for g, (_, var) in zip(clipped, pairs):
                self._update(self._index_of(var), g, var)
        self.iterations += 1

    def apply_gradients(self, grads_and_vars) -> None:
        """Keras-style alias: apply_gradients(zip(grads, variables))."""
        grads, variables = [], []
        for g, var in grads_and_vars:
            grads.append(g)
            variables.append(var)
        self.apply(grads, variables)

    def _update(self, index, gradient, variable):  # pragma: no cover - overridden
        raise NotImplementedError

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "learning_rate": self.learning_rate,
            "clipnorm": self.clipnorm,
            "clipvalue": self.clipvalue,
            "global_clipnorm": self.global_clipnorm,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if v is not None)
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as keras.optimizers.SGD:

        m = momentum * m - lr * g
        w += m                                  (plain momentum)
        w += momentum * m - lr * g              (nesterov)
        w -= lr * g                             (momentum == 0)
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, *, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, name=None):
        super().__init__(learning_rate, clipnorm=clipnorm, clipvalue=clipvalue,
                         global_clipnorm=global_clipnorm, name=name)
        self.momentum = _number(momentum, "momentum", low=0.0, high=1.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov: expected a bool, got {type(nesterov).__name__}")
        self.nesterov = bool(nesterov)

    def _slot_names(self):
        return ("momentum",) if self.momentum != 0 else ()

    def _update(self, index, g, w):
        lr = self._lr(w.dtype)
        if self.momentum != 0:
            m = self._slot("momentum", index)
            momentum = w.dtype.type(self.momentum)
            m[...] = m * momentum - g * lr
            if self.nesterov:
                w += m * momentum - g * lr
            else:
                w += m
        else:
            w -= g * lr

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class RMSprop(Optimizer):
    """RMSprop as keras.optimizers.RMSprop (optionally centered, with momentum):

        v = rho * v + (1 - rho) * g²
        a = rho * a + (1 - rho) * g                     (centered only)
        inc = lr * g / sqrt(v - a² + eps)  (centered) or lr * g / sqrt(v + eps)
        m = momentum * m + inc; w -= m     (momentum > 0) or w -= inc
    """

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False, *, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 name=None):
        super().__init__(learning_rate, clipnorm=clipnorm, clipvalue=clipvalue,
                         global_clipnorm=global_clipnorm, name=name)
        self.rho = _number(rho, "rho", low=0.0, high=1.0)
        self.momentum = _number(momentum, "momentum", low=0.0, high=1.0)
        self.epsilon = _number(epsilon, "epsilon", low=0.0)
        self.centered = bool(centered)

    def _slot_names(self):
        return (("velocity",) + (("momentum",) if self.momentum > 0 else ())
                + (("average_gradient",) if self.centered else ()))

    def _update(self, index, g, w):
        t = w.dtype.type
        lr, rho = self._lr(w.dtype), t(self.rho)
        velocity = self._slot("velocity", index)
        velocity[...] = rho * velocity + (t(1) - rho) * np.square(g)
        if self.centered:
            average = self._slot("average_gradient", index)
            average[...] = rho * average + (t(1) - rho) * g
            denominator = velocity - np.square(average) + t(self.epsilon)
        else:
            denominator = velocity + t(self.epsilon)
        increment = (lr * g) / np.sqrt(denominator)
        if self.momentum > 0:
            m = self._slot("momentum", index)
            m[...] = t(self.momentum) * m + increment
            w -= m
        else:
            w -= increment

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


class Adam(Optimizer):
    """Adam as keras.optimizers.Adam (epsilon outside the square root, Keras' bias
    correction folded into the step size):

        t = iterations + 1
        alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m += (g - m) * (1 - beta_1);  v += (g² - v) * (1 - beta_2)
        v_hat = max(v_hat, v)  (amsgrad only; then v = v_hat)
        w -= m * alpha / (sqrt(v) + eps)
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, *, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 name=None):
        super().__init__(learning_rate, clipnorm=clipnorm, clipvalue=clipvalue,
                         global_clipnorm=global_clipnorm, name=name)
        self.beta_1 = _number(beta_1, "beta_1", low=0.0, high=1.0)
        self.beta_2 = _number(beta_2, "beta_2", low=0.0, high=1.0)
        self.epsilon = _number(epsilon, "epsilon", low=0.0)
        self.amsgrad = bool(amsgrad)

    def _slot_names(self):
        return ("momentum", "velocity") + (("velocity_hat",) if self.amsgrad else ())

    def _update(self, index, g, w):
        t = w.dtype.type
        step = t(self.iterations + 1)
        beta_1, beta_2 = t(self.beta_1), t(self.beta_2)
        alpha = self._lr(w.dtype) * np.sqrt(t(1) - beta_2 ** step) / (t(1) - beta_1 ** step)
        m, v = self._slot("momentum", index), self._slot("velocity", index)
        m += (g - m) * (t(1) - beta_1)
        v += (np.square(g) - v) * (t(1) - beta_2)
        if self.amsgrad:
            v_hat = self._slot("velocity_hat", index)
            np.maximum(v_hat, v, out=v_hat)
            v = v_hat
        w -= (m * alpha) / (np.sqrt(v) + t(self.epsilon))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


_REGISTRY = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}


def serialize(optimizer: Optimizer) -> dict:
    """{"class_name", "config"} of an optimizer (hyperparameters only, not its state)."""
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


def deserialize(config: dict) -> Optimizer:
    name = str(config.get("class_name", "")).lower()
    if name not in _REGISTRY:
        raise ValueError(f"optimizer: unknown class_name {config.get('class_name')!r}; "
                         f"expected one of SGD, RMSprop, Adam")
    return _REGISTRY[name].from_config(dict(config.get("config", {})))


def get(identifier) -> Optimizer:
    """An Optimizer from an instance, a name ("sgd", "rmsprop", "adam"; Keras' defaults) or
    a serialized dict."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _REGISTRY:
            raise ValueError(
                f"optimizer: unknown optimizer {identifier!r}; expected one of "
                f"{sorted(_REGISTRY)} or an Optimizer instance"
            )
        return _REGISTRY[key]()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(
        f"optimizer: expected a name or an Optimizer instance, got {type(identifier).__name__}"
    )
