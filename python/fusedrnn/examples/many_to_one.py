"""Many-to-one: classify a whole padded token sequence (a sentiment-like task).

Tokens 1-5 are "positive" words, 6-10 "negative" and 11-29 neutral; a review is positive
when it holds more positive than negative words.  Reviews have 4-20 tokens, padded with
0; ``Embedding(mask_zero=True)`` makes the LSTM skip the padding, so the final state is the
state after each review's last real word.

    python -m fusedrnn.examples.many_to_one [--full]
"""
from __future__ import annotations

import numpy as np

from fusedrnn import engine, layers, models, optimizers
from fusedrnn.examples._common import padded_tokens, run_from_command_line, split

VOCAB = 30
POSITIVE = range(1, 6)
NEGATIVE = range(6, 11)


def make_data(rng, n, max_length=20):
    """(ids (n, max_length) int32, labels (n, 1) float32) with no ties."""
    ids, _ = padded_tokens(rng, n, max_length, 1, VOCAB, min_length=4)
    positive = np.isin(ids, POSITIVE).sum(axis=1)
    negative = np.isin(ids, NEGATIVE).sum(axis=1)
    keep = positive != negative          # ties have no label: drop them
    labels = (positive > negative).astype(np.float32)[:, None]
    return ids[keep], labels[keep]


def build_model(max_length=20, units=16):
    model = models.Sequential([
        engine.Input((max_length,), dtype="int32"),
        layers.Embedding(VOCAB, 8, mask_zero=True),
        layers.LSTM(units),
        layers.Dense(1, activation="sigmoid"),
    ], name="many_to_one")
    model.compile(optimizers.Adam(0.01), "binary_crossentropy", metrics=["accuracy"])
    return model


def run(quick=True, seed=0, verbose=0):
    """Train and return {"train_accuracy", "test_accuracy", "first_loss", "last_loss"}."""
    rng = np.random.default_rng(seed)
    np.random.seed(seed)      # fit's shuffling
    x, y = make_data(rng, 900 if quick else 5000)
    (x_train, y_train), (x_test, y_test) = split([x, y], 0.2)
    model = build_model()
    history = model.fit(x_train, y_train, batch_size=32, epochs=12 if quick else 30,
                        validation_split=0.1, verbose=verbose)
    _, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    return {
        "train_accuracy": history.history["accuracy"][-1],
        "test_accuracy": float(test_accuracy),
        "first_loss": history.history["loss"][0],
        "last_loss": history.history["loss"][-1],
        "epochs": len(history.history["loss"]),
    }


def main(argv=None):
    """Command line: [--full] [--seed N] [--quiet] [--threads N]; returns the results."""
    return run_from_command_line(argv, __doc__, "many-to-one (sentiment-like classification)", run)

if __name__ == "__main__":
    main()
