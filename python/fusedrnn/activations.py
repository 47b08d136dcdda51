"""NumPy activation functions with their backward pass, named as in Keras 3.

Every activation is an :class:`Activation`: ``act(z)`` computes the output and
``act.backward(z, y, dy)`` returns dL/dz given dL/dy (a vector-Jacobian product, so softmax,
whose Jacobian is not diagonal, fits the same interface).  The element-wise activations the
recurrent kernels also implement (tanh, sigmoid, relu, linear, hard_sigmoid) reuse
``fusedrnn.reference.ACTIVATIONS`` so both share one definition.

``get(identifier)`` accepts a name (``"relu"``), ``None`` (linear, as Keras), an
``Activation``, or a Keras-style serialized dict, and raises a ValueError naming the
supported activations otherwise.
"""
from __future__ import annotations

import numpy as np
from scipy.special import erf

from .reference import ACTIVATIONS as _KERNEL_ACTIVATIONS

__all__ = ["Activation", "get", "serialize", "KERNEL_ACTIVATIONS", "names"]

# Activations the fused recurrent kernels compute (fusedrnn._validation.ACTIVATIONS).
KERNEL_ACTIVATIONS = frozenset(_KERNEL_ACTIVATIONS)


class Activation:
    """A named activation: ``__call__(z) -> y`` and ``backward(z, y, dy) -> dz``."""

    def __init__(self, name, forward, backward):
        self.name = name
        self._forward = forward
        self._backward = backward

    def __call__(self, z):
        return self._forward(z)

    def backward(self, z, y, dy):
        """dL/dz from the pre-activation z, the output y = self(z) and dL/dy."""
        return self._backward(z, y, dy)

    def __repr__(self):
        return f"Activation({self.name!r})"


def _elementwise_from_output(name):
    """An activation from reference.ACTIVATIONS, whose derivative is written through y."""
    function, derivative = _KERNEL_ACTIVATIONS[name]
    return Activation(name, function, lambda z, y, dy: dy * derivative(y))


def _softmax(z):
    shifted = z - np.max(z, axis=-1, keepdims=True)  # overflow-free
    e = np.exp(shifted)
    return e / np.sum(e, axis=-1, keepdims=True)


def _softmax_backward(z, y, dy):
    return y * (dy - np.sum(dy * y, axis=-1, keepdims=True))


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _sigmoid(z):
    return _KERNEL_ACTIVATIONS["sigmoid"][0](z)


def _elu(z):
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))


def _softplus(z):
    return np.logaddexp(0.0, z).astype(z.dtype, copy=False)


def _gelu(z):
    # Keras 3 default: the exact form x * Phi(x) (approximate=False)
    return 0.5 * z * (1.0 + erf(z / np.sqrt(2.0)))


def _gelu_backward(z, y, dy):
    cdf = 0.5 * (1.0 + erf(z / np.sqrt(2.0)))
    pdf = np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
    return dy * (cdf + z * pdf)


_REGISTRY = {name: _elementwise_from_output(name) for name in _KERNEL_ACTIVATIONS}
_REGISTRY.update({
    "softmax": Activation("softmax", _softmax, _softmax_backward),
    "elu": Activation("elu", _elu, lambda z, y, dy: dy * np.where(z > 0, 1.0, y + 1.0)),
    "selu": Activation(
        "selu",
        lambda z: _SELU_SCALE * np.where(z > 0, z, _SELU_ALPHA * np.expm1(np.minimum(z, 0))),
        lambda z, y, dy: dy * np.where(z > 0, _SELU_SCALE, y + _SELU_SCALE * _SELU_ALPHA),
    ),
    "softplus": Activation("softplus", _softplus, lambda z, y, dy: dy * _sigmoid(z)),
    "softsign": Activation("softsign", lambda z: z / (1.0 + np.abs(z)),
                           lambda z, y, dy: dy / (1.0 + np.abs(z)) ** 2),
    "silu": Activation("silu", lambda z: z * _sigmoid(z),
                       lambda z, y, dy: dy * (_sigmoid(z) * (1.0 + z * (1.0 - _sigmoid(z))))),
    "exponential": Activation("exponential", np.exp, lambda z, y, dy: dy * y),
    "leaky_relu": Activation("leaky_relu", lambda z: np.where(z > 0, z, 0.2 * z),
                             lambda z, y, dy: dy * np.where(z > 0, 1.0, 0.2)),
    "relu6": Activation("relu6", lambda z: np.clip(z, 0.0, 6.0),
                        lambda z, y, dy: dy * ((z > 0) & (z < 6))),
    "gelu": Activation("gelu", _gelu, _gelu_backward),
})
_ALIASES = {"swish": "silu", None: "linear"}


def names():
    """Sorted names accepted by :func:`get`."""
    return sorted(set(_REGISTRY) | {a for a in _ALIASES if a is not None})


def get(identifier, argname: str = "activation") -> Activation:
    """The Activation for a name, None (linear), an Activation or {"class_name": name}."""
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, dict) and "config" in identifier:
        identifier = identifier.get("config")
    if isinstance(identifier, dict) and "class_name" in identifier:  # older Keras form
        identifier = identifier["class_name"]
    if identifier is None or isinstance(identifier, str):
        name = _ALIASES.get(identifier, identifier)
        if name in _REGISTRY:
            return _REGISTRY[name]
    raise ValueError(
        f"{argname}: unsupported activation {identifier!r}; expected one of {names()} or None"
    )


def serialize(activation: Activation) -> str:
    """The name Keras' get_config() uses for this activation."""
    return activation.name
