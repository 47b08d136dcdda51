"""A small network and training loop directly on ``fusedrnn.ops``, for gradient-flow.

gradient-flow needs dL/dh_t for every t: the cell run from a chosen initial state over a
suffix of the sequence and backpropagated to that state, which the layer API does not
expose.  So the network here calls the ops itself (forward/backward as the layers do) and
updates through ``fusedrnn.optimizers``.  The other experiments use the Keras-style API
(``_models``).

Initialisation follows Keras: kernels glorot-uniform, recurrent kernels orthogonal, biases
zero, LSTM forget-gate bias 1 (``unit_forget_bias``), GRU ``reset_after=True``.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

from .. import ops
from .. import optimizers as optimizers_module

CELLS = ("simple_rnn", "gru", "lstm")
CELL_LABELS = {"simple_rnn": "SimpleRNN", "gru": "GRU", "lstm": "LSTM"}
_GATES = {"simple_rnn": 1, "gru": 3, "lstm": 4}


def glorot_uniform(rng, shape, dtype):
    limit = np.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def orthogonal(rng, shape, dtype):
    """Keras' orthogonal initialiser: Q of a QR of a Gaussian matrix, sign-corrected."""
    rows, cols = shape
    flat = rng.normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return np.ascontiguousarray(q[:rows, :cols], dtype=dtype)  # q.T is column-major


def spectral_radius(matrix) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(matrix, dtype=np.float64)))))


RECURRENT_INITIALIZERS = ("orthogonal", "uniform")


class RecurrentLayer:
    """One recurrent layer (SimpleRNN / GRU / LSTM) on the fused ops, Keras weight layout.

    recurrent_initializer: "orthogonal" (Keras' default) or "uniform" (PyTorch's default
    U(-1/sqrt(units), 1/sqrt(units)), whose spectral radius is ~0.6 rather than 1)."""

    def __init__(self, cell: str, input_dim: int, units: int, rng, dtype=np.float32,
                 activation: str = "tanh", recurrent_initializer: str = "orthogonal"):
        if cell not in CELLS:
            raise ValueError(f"cell: expected one of {CELLS}, got {cell!r}")
        if recurrent_initializer not in RECURRENT_INITIALIZERS:
            raise ValueError(f"recurrent_initializer: expected one of "
                             f"{RECURRENT_INITIALIZERS}, got {recurrent_initializer!r}")
        self.cell, self.units, self.dtype, self.activation = cell, units, dtype, activation
        gates = _GATES[cell]
        self.kernel = glorot_uniform(rng, (input_dim, gates * units), dtype)
        if recurrent_initializer == "orthogonal":
            # Keras initialises the gates' recurrent blocks as one orthogonal (H, G*H) matrix.
            self.recurrent_kernel = orthogonal(rng, (units, gates * units), dtype)
        else:
            bound = 1.0 / np.sqrt(units)
            self.recurrent_kernel = rng.uniform(-bound, bound,
                                                size=(units, gates * units)).astype(dtype)
        if cell == "gru":
            self.bias = np.zeros((2, 3 * units), dtype)
        else:
            self.bias = np.zeros(gates * units, dtype)
        if cell == "lstm":
            self.bias[units:2 * units] = 1.0  # unit_forget_bias

    @property
    def weights(self) -> List[np.ndarray]:
        return [self.kernel, self.recurrent_kernel, self.bias]

    def forward(self, x, *, mask=None, initial_state=None, training=True):
        """Returns (result, cache): result has outputs (B, T, H) and h_n (B, H)."""
        common = dict(initial_state=initial_state, mask=mask, training=training)
        if self.cell == "lstm":
            return ops.lstm_forward(x, *self.weights, activation=self.activation, **common)
        if self.cell == "gru":
            return ops.gru_forward(x, *self.weights, reset_after=True,
                                   activation=self.activation, **common)
        return ops.simple_rnn_forward(x, *self.weights, activation=self.activation, **common)

    def backward(self, cache, d_outputs=None, d_h_n=None):
        if self.cell == "lstm":
            return ops.lstm_backward(cache, d_outputs=d_outputs, d_h_n=d_h_n)
        if self.cell == "gru":
            return ops.gru_backward(cache, d_outputs=d_outputs, d_h_n=d_h_n)
        return ops.simple_rnn_backward(cache, d_outputs=d_outputs, d_h_n=d_h_n)


class SequenceClassifier:
    """[Embedding ->] recurrent layer -> Dense: many-to-one, returns logits (B, outputs).

    tokens: integer ids (B, T) when ``vocab_size`` is given (0 may be padding), else float
    features (B, T, input_dim).  ``mask`` (B, T) is passed to the recurrent layer (Keras'
    masking: masked steps keep the state, h_n is the last valid state)."""

    def __init__(self, cell, units, *, rng, vocab_size=None, embed_dim=None, input_dim=None,
                 outputs=1, dtype=np.float32, activation="tanh",
                 recurrent_initializer="orthogonal"):
        self.dtype = dtype
        if vocab_size is not None:
            self.embedding = rng.uniform(-0.05, 0.05, size=(vocab_size, embed_dim)).astype(dtype)
            input_dim = embed_dim
        else:
            if input_dim is None:
                raise ValueError("input_dim: required when vocab_size is None")
            self.embedding = None
        self.rnn = RecurrentLayer(cell, input_dim, units, rng, dtype, activation,
                                  recurrent_initializer)
        self.dense_kernel = glorot_uniform(rng, (units, outputs), dtype)
        self.dense_bias = np.zeros(outputs, dtype)

    @property
    def weights(self) -> List[np.ndarray]:
        head = [self.embedding] if self.embedding is not None else []
        return head + self.rnn.weights + [self.dense_kernel, self.dense_bias]

    def _inputs(self, x):
        if self.embedding is not None:
            return self.embedding[x]
        return np.asarray(x, dtype=self.dtype)

    def forward(self, x, mask=None, training=True):
        features = self._inputs(x)
        result = self.rnn.forward(features, mask=mask, training=training)
        logits = result.h_n @ self.dense_kernel + self.dense_bias
        return logits, (x, result)

    def backward(self, tape, d_logits) -> List[np.ndarray]:
        """Gradients aligned with ``weights``."""
        x, result = tape
        d_kernel = result.h_n.T @ d_logits
        d_bias = d_logits.sum(axis=0)
        grads = self.rnn.backward(result.cache, d_h_n=d_logits @ self.dense_kernel.T)
        rnn_grads = [grads.kernel, grads.recurrent_kernel, grads.bias]
        if self.embedding is None:
            return rnn_grads + [d_kernel, d_bias]
        return [self._embedding_gradient(x, grads.x)] + rnn_grads + [d_kernel, d_bias]

    def _embedding_gradient(self, tokens, d_features):
        """Scatter-add of d_features (B, T, D) into the rows of the used tokens, as one
        sparse (vocab x B*T) product: far faster than np.add.at for long sequences."""
        from scipy import sparse
        flat = np.asarray(tokens).reshape(-1)
        scatter = sparse.csr_matrix(
            (np.ones(flat.size, self.dtype), (flat, np.arange(flat.size))),
            shape=(self.embedding.shape[0], flat.size))
        return np.asarray(scatter @ d_features.reshape(flat.size, -1), dtype=self.dtype)

    def predict(self, x, mask=None, batch_size=256):
        parts = []
        for start in range(0, len(x), batch_size):
            m = None if mask is None else mask[start:start + batch_size]
            parts.append(self.forward(x[start:start + batch_size], m, training=False)[0])
        return np.concatenate(parts)


# ----------------------------------------------------------------------------- losses


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def binary_crossentropy(logits, y):
    """Mean BCE of sigmoid(logits) (B, 1) against y in {0, 1}; returns (loss, d_logits)."""
    z = logits[:, 0].astype(np.float64)
    y = np.asarray(y, dtype=np.float64)
    loss = np.mean(np.logaddexp(0.0, z) - y * z)
    d = ((_sigmoid(z) - y) / len(z))[:, None]
    return float(loss), d.astype(logits.dtype)


def sparse_softmax_crossentropy(logits, y):
    """Mean cross-entropy of softmax(logits) (B, C) against class ids y; (loss, d_logits)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(len(y))
    loss = -np.mean(log_p[rows, y])
    d = np.exp(log_p)
    d[rows, y] -= 1.0
    return float(loss), (d / len(y)).astype(logits.dtype)


LOSSES: Dict[str, Callable] = {"binary": binary_crossentropy,
                               "sparse_categorical": sparse_softmax_crossentropy}


def score(model, loss: str, x, y, mask=None) -> Dict[str, float]:
    """Loss and (for classification) accuracy of ``model`` on a whole set."""
    logits = model.predict(x, mask)
    value, _ = LOSSES[loss](logits, y)
    result = {"loss": value}
    if loss == "binary":
        result["accuracy"] = float(np.mean((logits[:, 0] > 0) == (np.asarray(y) > 0.5)))
    elif loss == "sparse_categorical":
        result["accuracy"] = float(np.mean(np.argmax(logits, axis=1) == np.asarray(y)))
    return result


def global_norm(grads) -> float:
    return float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads)))


def make_optimizer(name: str, learning_rate: float, clipnorm: Optional[float] = None,
                   global_clipnorm: Optional[float] = None):
    """fusedrnn.optimizers.Adam / SGD (Keras' formulas and clipping)."""
    cls = {"adam": optimizers_module.Adam, "sgd": optimizers_module.SGD}[name]
    return cls(learning_rate=learning_rate, clipnorm=clipnorm, global_clipnorm=global_clipnorm)


def train(model, loss: str, x, y, *, epochs: int, batch_size: int, optimizer, rng,
          on_epoch: Optional[Callable[[int, dict], None]] = None) -> List[float]:
    """Mini-batch training with shuffling; returns the mean loss of every epoch."""
    loss_fn = LOSSES[loss]
    epoch_losses = []
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        losses = []
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            logits, tape = model.forward(x[idx], training=True)
            value, d_logits = loss_fn(logits, y[idx])
            optimizer.apply(model.backward(tape, d_logits), model.weights)
            losses.append(value)
        epoch_losses.append(float(np.mean(losses)))
        if on_epoch is not None:
            on_epoch(epoch, {"loss": epoch_losses[-1]})
    return epoch_losses
