"""One-to-many: generate a whole sequence from one vector.

The vector encodes a start digit s (one-hot, 10) and a step d in {1, 2, 3} (one-hot, 3);
the sequence to generate is s, s+d, s+2d, ... modulo 10, for 8 steps: one class per step.
The vector is projected by a Dense layer, repeated at every step (``RepeatVector``) and
unrolled by a GRU whose per-step outputs a ``TimeDistributed(Dense)`` turns into digits.

    python -m fusedrnn.examples.one_to_many [--full]
"""
from __future__ import annotations

import numpy as np

from fusedrnn import engine, layers, models, optimizers
from fusedrnn.examples._common import run_from_command_line

STEPS = 8
DIGITS = 10
STRIDES = (1, 2, 3)


def make_data(rng, n):
    """(vectors (n, 13) float32, digit sequences (n, STEPS) int64)."""
    start = rng.integers(0, DIGITS, n)
    stride_index = rng.integers(0, len(STRIDES), n)
    vectors = np.concatenate([np.eye(DIGITS)[start], np.eye(len(STRIDES))[stride_index]],
                             axis=1).astype(np.float32)
    stride = np.asarray(STRIDES)[stride_index]
    sequences = (start[:, None] + stride[:, None] * np.arange(STEPS)) % DIGITS
    return vectors, sequences


def build_model(units=32):
    vector = engine.Input((DIGITS + len(STRIDES),))
    h = layers.Dense(units, activation="tanh")(vector)
    h = layers.RepeatVector(STEPS)(h)
    h = layers.GRU(units, return_sequences=True)(h)
    digits = layers.TimeDistributed(layers.Dense(DIGITS, activation="softmax"))(h)
    model = models.Model(vector, digits, name="one_to_many")
    model.compile(optimizers.Adam(0.01), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def run(quick=True, seed=0, verbose=0):
    """Train; return per-step and whole-sequence accuracy on fresh vectors."""
    rng = np.random.default_rng(seed)
    np.random.seed(seed)
    x, y = make_data(rng, 600 if quick else 3000)
    model = build_model()
    history = model.fit(x, y, batch_size=32, epochs=15 if quick else 40, verbose=verbose)
    x_test, y_test = make_data(rng, 200)
    predicted = model.predict(x_test).argmax(axis=-1)
    return {
        "step_accuracy": float(np.mean(predicted == y_test)),
        "sequence_accuracy": float(np.mean(np.all(predicted == y_test, axis=1))),
        "first_loss": history.history["loss"][0],
        "last_loss": history.history["loss"][-1],
    }


def main(argv=None):
    """Command line: [--full] [--seed N] [--quiet] [--threads N]; returns the results."""
    return run_from_command_line(argv, __doc__, "one-to-many (a digit sequence generated from one vector)", run)

if __name__ == "__main__":
    main()
