"""padding: can a dense network take variable-length input through padding?

Sequences of random values in [-1, 1] with lengths drawn uniformly from
[min_length, max_length] are zero-padded to max_length.  Two labels:

- ``sum``: is the sum of the values positive?  Order-free: padding zeros add nothing.
- ``last``: is the last valid value positive?  Its position depends on the length.

Models (same training budget, Adam):

- Dense over post-padded / pre-padded input: the (max_length,) vector -> Dense(relu) ->
  Dense(sigmoid);
- an RNN (config ``cell``) -> Dense(sigmoid) over post-padded input *without* masking (the
  state keeps running through the trailing zeros), over pre-padded input without masking
  (Keras' default padding), and over post-padded input behind ``Masking(0.0)`` (masked
  steps keep the state, so the final state is the one after the last valid value).

Test accuracy is measured on fresh sequences from the same length range, per length, and
for the RNNs also on sequences longer than any seen in training (a dense network cannot
take them at all: its input width is fixed).
"""
from __future__ import annotations

import numpy as np

from . import _models
from ._report import new_figure
from ._tasks import post_to_pre_padding, variable_length_sequences

TITLE = "Padding: a dense network over padded input vs an RNN with and without masking"
SUMMARY = """
The notes leave open whether a dense (feed-forward) network can handle variable-length
input by padding it to a fixed width.  Dense networks and an RNN (with and without
masking, with post- and pre-padding) are trained on an order-free label (sign of the sum)
and a position-dependent one (sign of the last value) and scored on held-out sequences of
the training lengths and of longer lengths.
"""

CONFIGS = {
    "quick": {"min_length": 5, "max_length": 20, "train_samples": 512, "test_samples": 256,
              "epochs": 4, "batch_size": 32, "learning_rate": 0.01, "units": 16,
              "dense_hidden": 32, "cell": "gru", "tasks": ["sum", "last"]},
    # ~10 min on one core.
    "full": {"min_length": 10, "max_length": 100, "train_samples": 8192,
             "test_samples": 2048, "epochs": 20, "batch_size": 64, "learning_rate": 0.003,
             "units": 32, "dense_hidden": 64, "cell": "gru", "tasks": ["sum", "last"]},
}

# name -> (model kind, padding, masked)
VARIANTS = {
    "dense, post-padding": ("dense", "post", False),
    "dense, pre-padding": ("dense", "pre", False),
    "RNN, post-padding, no mask": ("rnn", "post", False),
    "RNN, pre-padding, no mask": ("rnn", "pre", False),
    "RNN, post-padding, masked": ("rnn", "post", True),
}


def _dataset(rng, n, min_length, max_length, task):
    x, y, mask, lengths = variable_length_sequences(rng, n, min_length, max_length, task,
                                                    padding="post")
    return {"post": x, "pre": post_to_pre_padding(x, lengths), "y": y, "mask": mask,
            "lengths": lengths}


def _accuracy_by_length(model, data, padding, kind):
    x = data[padding][..., 0] if kind == "dense" else data[padding]
    probabilities = model.predict(x, batch_size=256)
    correct = (probabilities[:, 0] > 0.5) == (data["y"] > 0)
    per_length = {int(n): float(correct[data["lengths"] == n].mean())
                  for n in np.unique(data["lengths"])}
    return float(correct.mean()), per_length


def run(config, report, progress, data=None):
    lo, hi = config["min_length"], config["max_length"]
    tasks = config["tasks"]
    total = len(tasks) * len(VARIANTS)
    done = 0
    results, rows, curves = {}, [], {}
    for t, task in enumerate(tasks):
        rng = np.random.default_rng(config["seed"] * 100 + t)
        train = _dataset(rng, config["train_samples"], lo, hi, task)
        test = _dataset(rng, config["test_samples"], lo, hi, task)
        longer = _dataset(rng, config["test_samples"], hi + 1, 2 * hi, task)
        results[task] = {}
        for name, (kind, padding, masked) in VARIANTS.items():
            progress.step(done, total, f"{task}: {name}")
            seed = config["seed"] + 17  # the same initial weights for every variant
            if kind == "dense":
                model = _models.dense_model(config["dense_hidden"], seed=seed)
                x_train = train[padding][..., 0]  # (n, max_length): the flattened sequence
            else:
                model = _models.sequence_model(config["cell"], config["units"], seed=seed,
                                               masking=masked)
                x_train = train[padding]
            _models.compile_model(model, "binary_crossentropy", config["learning_rate"])
            _models.fit_quietly(model, x_train, train["y"], epochs=config["epochs"],
                                batch_size=config["batch_size"], seed=config["seed"])
            accuracy, per_length = _accuracy_by_length(model, test, padding, kind)
            longer_accuracy = float("nan")
            if kind == "rnn":
                # Longer sequences: the same padding scheme, over twice the width.
                longer_accuracy, _ = _accuracy_by_length(model, longer, padding, kind)
            curves[task, name] = per_length
            results[task][name] = {"test_accuracy": accuracy,
                                   "accuracy_by_length": per_length,
                                   "longer_sequences_accuracy": longer_accuracy}
            rows.append([task, name, accuracy,
                         "cannot take them" if kind == "dense" else f"{longer_accuracy:.3f}"])
            done += 1
    progress.step(total, total, "plotting")
    report.results.update(results)

    fig, axes = new_figure(ncols=len(tasks))
    for ax, task in zip(axes[0], tasks):
        for name in VARIANTS:
            per_length = curves[task, name]
            lengths = sorted(per_length)
            ax.plot(lengths, [per_length[n] for n in lengths], marker=".", linewidth=1,
                    label=name)
        ax.axhline(0.5, color="black", linestyle=":", linewidth=1)
        ax.set_ylim(0.3, 1.02)
        ax.set_xlabel("sequence length (valid steps)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"label: {task}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    report.figure(fig, "accuracy_by_length",
                  f"Test accuracy per sequence length ({config['cell']} RNN; chance 0.5)")
    for task in tasks:
        ranked = sorted(VARIANTS, key=lambda n: results[task][n]["test_accuracy"], reverse=True)
        report.text(f"Label `{task}`, from best to worst: " + ", ".join(
            f"{n} {results[task][n]['test_accuracy']:.3f}" for n in ranked) + ".")
    report.table(["label", "model", f"test accuracy (lengths {lo}-{hi})",
                  f"accuracy on lengths {hi + 1}-{2 * hi}"], rows)
