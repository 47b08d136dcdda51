"""The experiments' models, built with the library's Keras-style API
(``fusedrnn.layers`` + ``fusedrnn.models.Sequential`` + ``fusedrnn.optimizers``).

Seeding: the library's initializers and ``fit``'s shuffling draw from NumPy's global
generator (as Keras' do from its global seed), so every builder and ``fit_quietly`` seeds
it first: a run is reproducible from the experiment's ``--seed``."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .. import callbacks, layers, models, optimizers

CELLS = ("simple_rnn", "gru", "lstm")
CELL_LABELS = {"simple_rnn": "SimpleRNN", "gru": "GRU", "lstm": "LSTM"}
_CELL_LAYERS = {"simple_rnn": layers.SimpleRNN, "gru": layers.GRU, "lstm": layers.LSTM}


def recurrent_layer(cell: str, units: int, *, activation: str = "tanh",
                    recurrent_initializer: str = "orthogonal"):
    if cell not in _CELL_LAYERS:
        raise ValueError(f"cell: expected one of {CELLS}, got {cell!r}")
    return _CELL_LAYERS[cell](units, activation=activation,
                              recurrent_initializer=recurrent_initializer)


def sequence_model(cell: str, units: int, *, seed: int, vocab_size: Optional[int] = None,
                   embed_dim: Optional[int] = None, outputs: int = 1,
                   output_activation: str = "sigmoid", masking: bool = False,
                   activation: str = "tanh", recurrent_initializer: str = "orthogonal"):
    """[Embedding | Masking] -> SimpleRNN/GRU/LSTM -> Dense, not compiled yet.

    vocab_size: integer token input through Embedding(vocab_size, embed_dim); else float
    features, optionally behind Masking(0.0) so zero-padded steps are skipped."""
    np.random.seed(seed)
    stack = []
    if vocab_size is not None:
        stack.append(layers.Embedding(vocab_size, embed_dim, mask_zero=masking))
    elif masking:
        stack.append(layers.Masking(0.0))
    stack.append(recurrent_layer(cell, units, activation=activation,
                                 recurrent_initializer=recurrent_initializer))
    stack.append(layers.Dense(outputs, activation=output_activation))
    return models.Sequential(stack)


def dense_model(hidden: int, *, seed: int, outputs: int = 1,
                output_activation: str = "sigmoid"):
    """Dense(relu) -> Dense over a fixed-width (flattened) input."""
    np.random.seed(seed)
    return models.Sequential([layers.Dense(hidden, activation="relu"),
                              layers.Dense(outputs, activation=output_activation)])


def compile_model(model, loss: str, learning_rate: float, optimizer: str = "adam",
                  clipnorm: Optional[float] = None, metrics=("accuracy",)):
    cls = {"adam": optimizers.Adam, "sgd": optimizers.SGD}[optimizer]
    model.compile(optimizer=cls(learning_rate=learning_rate, clipnorm=clipnorm), loss=loss,
                  metrics=list(metrics))
    return model


class _EpochLog(callbacks.Callback):
    def __init__(self, log: Callable[[int, dict], None]):
        super().__init__()
        self.log = log

    def on_epoch_end(self, epoch, logs=None):
        self.log(epoch, logs or {})


def fit_quietly(model, x, y, *, epochs: int, batch_size: int, seed: int,
                on_epoch: Optional[Callable[[int, dict], None]] = None):
    """model.fit without its progress bar (the experiment prints its own progress)."""
    np.random.seed(seed)
    hooks = [_EpochLog(on_epoch)] if on_epoch is not None else []
    return model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=hooks)


def evaluate(model, x, y, batch_size: int = 256) -> dict:
    return model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)


def build(model, x_example) -> None:
    """Create the weights (Sequential builds on its first call) without training."""
    model.predict(x_example[:1], verbose=0)
