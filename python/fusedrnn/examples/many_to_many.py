"""Many-to-many (same length): one label per input step, on padded sequences.

Each step holds a digit 1-9 and its label is (this digit + the previous digit) mod 3, so
the network has to remember one step back; the first step's "previous digit" is 0.
Sequences have 3-15 steps padded with 0: ``Embedding(mask_zero=True)`` masks the padding,
the LSTM returns a sequence carrying that mask, and the loss and accuracy skip padded
steps (Keras' masked sequence loss).

    python -m fusedrnn.examples.many_to_many [--full]
"""
from __future__ import annotations

import numpy as np

from fusedrnn import engine, layers, models, optimizers
from fusedrnn.examples._common import padded_tokens, run_from_command_line, split

MAX_LENGTH = 15
CLASSES = 3


def make_data(rng, n):
    """(ids (n, MAX_LENGTH) int32, labels (n, MAX_LENGTH) int64, valid-step mask)."""
    ids, _ = padded_tokens(rng, n, MAX_LENGTH, 1, 10, min_length=3)
    previous = np.concatenate([np.zeros((n, 1), ids.dtype), ids[:, :-1]], axis=1)
    labels = (ids + previous) % CLASSES
    valid = ids != 0
    labels[~valid] = 0       # any class: padded steps are masked out of loss and accuracy
    return ids, labels.astype(np.int64), valid


def build_model(units=24):
    model = models.Sequential([
        engine.Input((MAX_LENGTH,), dtype="int32"),
        layers.Embedding(10, 8, mask_zero=True),
        layers.LSTM(units, return_sequences=True),
        layers.TimeDistributed(layers.Dense(CLASSES, activation="softmax")),
    ], name="many_to_many")
    model.compile(optimizers.Adam(0.01), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def run(quick=True, seed=0, verbose=0):
    """Train; return the masked per-step accuracy on held-out sequences."""
    rng = np.random.default_rng(seed)
    np.random.seed(seed)
    ids, labels, valid = make_data(rng, 700 if quick else 4000)
    (x_train, y_train, _), (x_test, y_test, valid_test) = split([ids, labels, valid], 0.2)
    model = build_model()
    history = model.fit(x_train, y_train, batch_size=32, epochs=10 if quick else 25,
                        verbose=verbose)
    _, masked_accuracy = model.evaluate(x_test, y_test, verbose=0)
    predicted = model.predict(x_test).argmax(axis=-1)
    return {
        "test_step_accuracy": float(masked_accuracy),
        # the same, computed by hand over valid steps only
        "test_step_accuracy_by_hand": float(np.mean(predicted[valid_test] ==
                                                    y_test[valid_test])),
        "first_loss": history.history["loss"][0],
        "last_loss": history.history["loss"][-1],
    }


def main(argv=None):
    """Command line: [--full] [--seed N] [--quiet] [--threads N]; returns the results."""
    return run_from_command_line(argv, __doc__, "many-to-many (a label per step, padded steps masked)", run)

if __name__ == "__main__":
    main()
