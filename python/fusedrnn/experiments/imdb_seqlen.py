"""imdb-seqlen: sentiment accuracy against the number of tokens a model sees.

The notes' protocol: keep only IMDB reviews of at least ``min_review_length`` tokens
(start token included), truncate every review to ``max_seq_len`` tokens (Keras'
``pad_sequences`` default: the *last* max_seq_len tokens are kept), and train
Embedding -> SimpleRNN / GRU / LSTM -> Dense(sigmoid).  Train and test reviews are pooled
(only ~230 reviews reach 1000 tokens) and scored by stratified k-fold cross-validation,
repeated with different shuffles; the report gives the mean and spread of the held-out
accuracy.  The same sweep runs on the larger subset of reviews of >= 500 tokens, where
the trend is less noisy.
"""
from __future__ import annotations

import numpy as np

from . import _models
from ._report import mean_and_spread, new_figure
from ._tasks import pad_sequences

TITLE = "IMDB: accuracy against sequence length for SimpleRNN, GRU and LSTM"
SUMMARY = """
The notes claim that a simple RNN's short-term memory makes it lose track of long
reviews, so feeding it more tokens stops helping (or hurts), while LSTM and GRU keep
improving.  Reviews with at least 1000 (and, separately, 500) tokens are truncated to
max_seq_len tokens and classified by Embedding -> recurrent layer -> Dense(sigmoid);
accuracy is the held-out accuracy of repeated stratified k-fold cross-validation.
"""

CONFIGS = {
    # subsets: name -> minimum review length, at most max_reviews of them (None: all),
    # and how many times the k-fold cross-validation is repeated with new folds.
    "quick": {"subsets": {">=1000": {"min_length": 1000, "max_reviews": 160, "repeats": 1},
                          ">=500": {"min_length": 500, "max_reviews": 160, "repeats": 1}},
              "max_seq_lens": [10, 50], "num_words": 2000, "embed_dim": 8, "units": 8,
              "folds": 2, "epochs": 2, "batch_size": 32, "learning_rate": 0.003,
              "truncating": "pre"},
    # ~45 min of CPU on one core (measured: an LSTM epoch over 185 reviews of 1000 tokens
    # takes 0.8 s); the >= 500 sweep (4108 reviews) is three quarters of it.
    "full": {"subsets": {">=1000": {"min_length": 1000, "max_reviews": None, "repeats": 3},
                         ">=500": {"min_length": 500, "max_reviews": None, "repeats": 1}},
             "max_seq_lens": [10, 20, 50, 100, 200, 500, 1000], "num_words": 10000,
             "embed_dim": 32, "units": 32, "folds": 5, "epochs": 6, "batch_size": 32,
             "learning_rate": 0.003, "truncating": "pre"},
}


def stratified_folds(labels, folds: int, rng):
    """Split indices into `folds` groups with (nearly) the class balance of `labels`."""
    labels = np.asarray(labels)
    if folds < 2:
        raise ValueError(f"folds: expected >= 2, got {folds}")
    groups = [[] for _ in range(folds)]
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        for k, part in enumerate(np.array_split(members, folds)):
            groups[k].extend(part.tolist())
    return [np.array(sorted(g), dtype=np.int64) for g in groups]


def long_reviews(data, min_length: int, max_size, rng):
    """Pool train and test reviews of >= min_length tokens; subsample to max_size."""
    (x_train, y_train), (x_test, y_test) = data
    x = np.concatenate([x_train, x_test])
    y = np.concatenate([y_train, y_test])
    keep = np.flatnonzero(np.fromiter((len(s) >= min_length for s in x), bool, len(x)))
    if max_size is not None and keep.size > max_size:
        keep = np.sort(rng.choice(keep, size=max_size, replace=False))
    return x[keep], y[keep]


def run(config, report, progress, data=None):
    from ..datasets import imdb
    progress.log("loading IMDB (first load parses the tarball, later loads use the cache)")
    dataset = imdb.load_data(data, num_words=config["num_words"])
    rng = np.random.default_rng(config["seed"])
    subsets = {}
    for name, subset in config["subsets"].items():
        x, y = long_reviews(dataset, subset["min_length"], subset["max_reviews"], rng)
        subsets[name] = (x, y)
        progress.log(f"subset {name}: {len(x)} reviews, {y.mean():.1%} positive")
    lengths, folds = config["max_seq_lens"], config["folds"]
    total = sum(s["repeats"] for s in config["subsets"].values()) * folds \
        * len(lengths) * len(_models.CELLS)
    done = 0
    results = {}
    for name, (x, y) in subsets.items():
        repeats = config["subsets"][name]["repeats"]
        results[name] = {"reviews": len(x), "positive_fraction": float(y.mean()),
                         "folds": folds, "repeats": repeats, "cells": {}}
        splits = [stratified_folds(y, folds, np.random.default_rng(config["seed"] + r))
                  for r in range(repeats)]
        for c, cell in enumerate(_models.CELLS):
            per_length = []
            for max_len in lengths:
                tokens = pad_sequences(x, max_len, truncating=config["truncating"])
                accuracies = []
                for r, groups in enumerate(splits):
                    for k, held_out in enumerate(groups):
                        progress.step(done, total, f"{name} {_models.CELL_LABELS[cell]} "
                                                   f"max_seq_len={max_len} fold {k + 1}/{folds}"
                                                   f" repeat {r + 1}/{repeats}")
                        train_idx = np.setdiff1d(np.arange(len(y)), held_out)
                        seed = config["seed"] * 1000 + 10 * r + k
                        model = _models.sequence_model(
                            cell, config["units"], seed=seed, vocab_size=config["num_words"],
                            embed_dim=config["embed_dim"])
                        _models.compile_model(model, "binary_crossentropy",
                                              config["learning_rate"])
                        _models.fit_quietly(model, tokens[train_idx], y[train_idx],
                                            epochs=config["epochs"],
                                            batch_size=config["batch_size"], seed=seed)
                        scores = _models.evaluate(model, tokens[held_out], y[held_out])
                        accuracies.append(scores["accuracy"])
                        done += 1
                per_length.append(dict(mean_and_spread(accuracies), max_seq_len=max_len,
                                       values=accuracies))
            results[name]["cells"][cell] = per_length
    progress.step(total, total, "plotting")
    report.results.update(subsets=results, majority_baseline={
        name: max(r["positive_fraction"], 1 - r["positive_fraction"])
        for name, r in results.items()})

    fig, axes = new_figure(ncols=len(subsets))
    for ax, name in zip(axes[0], subsets):
        for cell in _models.CELLS:
            points = results[name]["cells"][cell]
            ax.errorbar(lengths, [p["mean"] for p in points], yerr=[p["std"] for p in points],
                        marker="o", capsize=3, label=_models.CELL_LABELS[cell])
        baseline = report.results["majority_baseline"][name]
        ax.axhline(baseline, color="black", linestyle=":", linewidth=1, label="majority class")
        ax.set_xscale("log")
        ax.set_xlabel("max_seq_len (tokens kept)")
        ax.set_ylabel("held-out accuracy")
        ax.set_title(f"reviews {name} tokens (n = {results[name]['reviews']})")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    report.figure(fig, "accuracy_vs_seqlen",
                  f"Held-out accuracy: mean ± std over {folds} cross-validation folds "
                  "x repeats (see the tables)")
    for name in subsets:
        rows = [[_models.CELL_LABELS[cell]]
                + [f"{p['mean']:.3f} ± {p['std']:.3f}" for p in results[name]["cells"][cell]]
                for cell in _models.CELLS]
        best = {c: max(results[name]["cells"][c], key=lambda p: p["mean"])
                for c in _models.CELLS}
        report.text(f"Reviews {name}: best mean accuracy per cell: " + ", ".join(
            f"{_models.CELL_LABELS[c]} {best[c]['mean']:.3f} at max_seq_len "
            f"{best[c]['max_seq_len']}" for c in _models.CELLS) + ".")
        report.table(["cell"] + [f"{n}" for n in lengths], rows,
                     caption=f"**Reviews {name} tokens** ({results[name]['reviews']} reviews, "
                             f"{results[name]['positive_fraction']:.1%} positive): held-out "
                             f"accuracy by max_seq_len, {folds}-fold cross-validation x "
                             f"{results[name]['repeats']}")
