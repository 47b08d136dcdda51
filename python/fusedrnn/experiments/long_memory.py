"""long-memory: up to which sequence length each cell learns a task that needs memory.

Two tasks with a known answer (see ``_tasks``):

- adding problem: sum the two marked values of a (T, 2) sequence; scored by R^2 = 1 -
  MSE / (1/6) on fresh test data (0 = the constant guess, 0.5 = remembers only the later
  value, 1 = solved);
- recall: name the first of T tokens drawn from the same symbols; scored by accuracy
  (chance 1/symbols).

A cell "learns" a length when its test score reaches the config's threshold; the report
gives, per cell and task, the longest length learned (with every shorter length also
learned).
"""
from __future__ import annotations

import numpy as np

from . import _models
from ._report import mean_and_spread, new_figure
from ._tasks import ADDING_BASELINE_MSE, adding_problem, recall_task

TITLE = "Long memory: adding problem and recall over growing sequence lengths"
SUMMARY = """
The notes claim that a simple RNN has a short-term memory, while LSTM and GRU carry
information over many more steps.  Each cell is trained on the adding problem and on a
recall task (remember the first token) at growing sequence lengths T, with the same
budget for every cell; the test score at each T shows where each cell stops learning.
"""

CONFIGS = {
    "quick": {"lengths": [5, 20], "units": 16, "train_samples": 256, "test_samples": 128,
              "epochs": 3, "batch_size": 32, "learning_rate": 0.01, "symbols": 4,
              "repeats": 1, "adding_r2_threshold": 0.8, "recall_accuracy_threshold": 0.9},
    # ~30 min on one core (measured: 3 s per LSTM fit at T = 25).
    "full": {"lengths": [10, 25, 50, 100, 200, 400], "units": 32, "train_samples": 2048,
             "test_samples": 1024, "epochs": 15, "batch_size": 64, "learning_rate": 0.005,
             "symbols": 4, "repeats": 3, "adding_r2_threshold": 0.8,
             "recall_accuracy_threshold": 0.9},
}

TASKS = ("adding", "recall")


def _train_and_score(task, cell, steps, config, seed):
    """Train a fresh model on one task and length; its test R^2 (adding) or accuracy."""
    rng = np.random.default_rng(seed)
    if task == "adding":
        x, y = adding_problem(rng, config["train_samples"], steps)
        x_test, y_test = adding_problem(rng, config["test_samples"], steps)
        model = _models.sequence_model(cell, config["units"], seed=seed,
                                       output_activation="linear")
        loss, metrics = "mse", ()
    else:
        x, y = recall_task(rng, config["train_samples"], steps, config["symbols"])
        x_test, y_test = recall_task(rng, config["test_samples"], steps, config["symbols"])
        model = _models.sequence_model(cell, config["units"], seed=seed,
                                       vocab_size=config["symbols"] + 1, embed_dim=8,
                                       outputs=config["symbols"],
                                       output_activation="softmax")
        loss, metrics = "sparse_categorical_crossentropy", ("accuracy",)
    _models.compile_model(model, loss, config["learning_rate"], clipnorm=1.0, metrics=metrics)
    _models.fit_quietly(model, x, y, epochs=config["epochs"], batch_size=config["batch_size"],
                        seed=seed)
    scores = _models.evaluate(model, x_test, y_test)
    if task == "adding":
        return 1.0 - scores["loss"] / ADDING_BASELINE_MSE
    return scores["accuracy"]


def longest_learned(lengths, scores, threshold):
    """The longest length up to which every score reaches threshold (0 if the first fails)."""
    best = 0
    for length, value in zip(lengths, scores):
        if value < threshold:
            break
        best = length
    return best


def run(config, report, progress, data=None):
    lengths, repeats = config["lengths"], config["repeats"]
    thresholds = {"adding": config["adding_r2_threshold"],
                  "recall": config["recall_accuracy_threshold"]}
    total = len(TASKS) * len(_models.CELLS) * len(lengths) * repeats
    done = 0
    results = {task: {} for task in TASKS}
    for task in TASKS:
        for c, cell in enumerate(_models.CELLS):
            per_length = []
            for steps in lengths:
                values = []
                for r in range(repeats):
                    progress.step(done, total, f"{task}: {_models.CELL_LABELS[cell]} T={steps} "
                                               f"repeat {r + 1}/{repeats}")
                    seed = config["seed"] * 1000 + 100 * r + 10 * c + lengths.index(steps)
                    values.append(_train_and_score(task, cell, steps, config, seed))
                    done += 1
                per_length.append(mean_and_spread(values) | {"values": values})
            means = [p["mean"] for p in per_length]
            results[task][cell] = {"lengths": lengths, "scores": per_length,
                                   "longest_learned": longest_learned(lengths, means,
                                                                      thresholds[task])}
    progress.step(total, total, "plotting")
    report.results.update(results, thresholds=thresholds,
                          recall_chance=1.0 / config["symbols"])

    fig, axes = new_figure(ncols=2)
    for ax, task, ylabel in ((axes[0, 0], "adding", "test R^2 (1 = solved)"),
                             (axes[0, 1], "recall", "test accuracy")):
        for cell in _models.CELLS:
            scores = results[task][cell]["scores"]
            ax.errorbar(lengths, [s["mean"] for s in scores], yerr=[s["std"] for s in scores],
                        marker="o", capsize=3, label=_models.CELL_LABELS[cell])
        ax.axhline(thresholds[task], color="grey", linestyle="--", linewidth=1,
                   label="threshold")
        if task == "recall":
            ax.axhline(1.0 / config["symbols"], color="black", linestyle=":", linewidth=1,
                       label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{task} task")
        ax.grid(True, alpha=0.3)
        ax.legend()
    report.figure(fig, "score_vs_length",
                  f"Test score against sequence length (mean and std over {repeats} seeds)")
    for task in TASKS:
        header = ["cell"] + [f"T={n}" for n in lengths] + ["longest learned"]
        rows = [[_models.CELL_LABELS[cell]]
                + [f"{s['mean']:.3f} ± {s['std']:.3f}" for s in results[task][cell]["scores"]]
                + [results[task][cell]["longest_learned"] or "none"]
                for cell in _models.CELLS]
        metric = "R^2" if task == "adding" else "accuracy"
        report.table(header, rows, caption=f"**{task}**: test {metric} (threshold "
                                           f"{thresholds[task]})")
    longest = "; ".join(
        f"{task}: " + ", ".join(f"{_models.CELL_LABELS[c]} "
                                f"{results[task][c]['longest_learned'] or 'none'}"
                                for c in _models.CELLS)
        for task in TASKS)
    report.text(f"Longest sequence length learned (every shorter length too): {longest}.")
