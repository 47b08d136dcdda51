"""Keras-compatible layers on the fused recurrent kernels (NumPy in, NumPy out).

Recurrent: :class:`SimpleRNN`, :class:`GRU`, :class:`LSTM`; wrappers: :class:`Bidirectional`,
:class:`TimeDistributed`; core: :class:`Dense`, :class:`Embedding`, :class:`Masking`,
:class:`Dropout`, :class:`RepeatVector`.  Every layer follows the protocol of
:mod:`fusedrnn.layers.base` (forward/backward with a tape, Keras weight order);
``serialize``/``deserialize`` round-trip configs; ``load_keras_weights_h5`` reads a Keras 3
``.weights.h5`` file into a list of layers.
"""
from .base import Layer, deserialize, get_registered, register, serialize
from .core import Dense, Dropout, Embedding, Masking, RepeatVector
from .recurrent import GRU, LSTM, SimpleRNN
from .saving import load_keras_weights_h5
from .wrappers import Bidirectional, TimeDistributed
from ..engine import Input  # Keras has Input among its layers; engine does not import layers

__all__ = [
    "Layer", "register", "serialize", "deserialize", "get_registered",
    "SimpleRNN", "GRU", "LSTM", "Bidirectional", "TimeDistributed",
    "Dense", "Embedding", "Masking", "Dropout", "RepeatVector", "Input", "load_keras_weights_h5",
]
