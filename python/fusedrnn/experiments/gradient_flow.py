"""gradient-flow: how far back the loss gradient reaches, for SimpleRNN, GRU and LSTM.

For a many-to-one model (Embedding -> cell -> Dense) the loss L depends on the last state
h_T only; ||dL/dh_t|| for t = 0..T measures how much an earlier state can still influence
(and be trained by) the loss.  The vanishing gradient is its exponential decay as t moves
away from T.

How dL/dh_t is computed, exactly: the state after t steps, (h_t[, c_t]), is obtained by
running the cell over the first t inputs; then the cell is run over the remaining inputs
starting *from that state* (``initial_state``) and backpropagated from dL/dh_T; the
kernel's gradient with respect to the initial state is dL/dh_t (the LSTM's dL/dc_t is not
part of the plotted norm).  float64 throughout so nothing underflows.
"""
from __future__ import annotations

import numpy as np

from . import _nets
from ._report import new_figure
from ._tasks import recall_task

TITLE = "Gradient flow: ||dL/dh_t|| against t"
SUMMARY = """
The notes claim that a simple RNN's gradient vanishes exponentially as it flows back in
time, and that the gates of GRU and LSTM keep it alive.  This experiment measures
||dL/dh_t|| (mean over examples of the per-example norm) for every t on the recall task
(remember the first of T tokens), at initialisation and after training, on a log scale,
for Keras' orthogonal recurrent initialisation and for PyTorch's uniform one: how fast a
simple RNN's gradient vanishes depends on the recurrent weights' scale as much as on the
cell.
"""

CONFIGS = {
    "quick": {"steps": 15, "units": 16, "symbols": 4, "train_samples": 128,
              "eval_samples": 16, "epochs": 2, "batch_size": 32, "learning_rate": 0.01,
              "recurrent_initializers": ["orthogonal", "uniform"]},
    # ~10 min on one core (measured: a training epoch 0.7-2.1 s, one set of norms 1-6 s).
    "full": {"steps": 100, "units": 32, "symbols": 4, "train_samples": 4096,
             "eval_samples": 128, "epochs": 30, "batch_size": 64, "learning_rate": 0.005,
             "recurrent_initializers": ["orthogonal", "uniform"]},
}


def state_gradient_norms(model: "_nets.SequenceClassifier", tokens, labels) -> np.ndarray:
    """(steps + 1,) mean over examples of ||dL_i/dh_t||, t = 0..steps, for the per-example
    loss L_i (binary or softmax cross-entropy as the model's output width says)."""
    rnn = model.rnn
    features = model._inputs(tokens)
    batch, steps, _ = features.shape
    # dL_i/dh_T: through the Dense head, per example (no 1/batch of the mean loss).
    final = rnn.forward(features, training=False)
    logits = final.h_n @ model.dense_kernel + model.dense_bias
    loss = "binary" if logits.shape[1] == 1 else "sparse_categorical"
    _, d_logits = _nets.LOSSES[loss](logits, labels)
    d_h_T = (d_logits * batch) @ model.dense_kernel.T
    norms = np.empty(steps + 1)
    norms[steps] = np.linalg.norm(d_h_T, axis=1).mean()
    zeros = np.zeros((batch, rnn.units), features.dtype)
    for t in range(steps):
        if t == 0:
            state = (zeros, zeros) if rnn.cell == "lstm" else zeros
        else:
            prefix = rnn.forward(features[:, :t], training=False)
            state = (prefix.h_n, prefix.c_n) if rnn.cell == "lstm" else prefix.h_n
        suffix = rnn.forward(features[:, t:], initial_state=state, training=True)
        grads = rnn.backward(suffix.cache, d_h_n=d_h_T)
        norms[t] = np.linalg.norm(grads.h0, axis=1).mean()
    return norms


INIT_LABELS = {"orthogonal": "orthogonal recurrent init (Keras)",
               "uniform": "uniform ±1/√H recurrent init (PyTorch)"}


def run(config, report, progress, data=None):
    rng = np.random.default_rng(config["seed"])
    steps, symbols = config["steps"], config["symbols"]
    x_train, y_train = recall_task(rng, config["train_samples"], steps, symbols)
    x_eval, y_eval = recall_task(rng, config["eval_samples"], steps, symbols)
    inits = config["recurrent_initializers"]
    curves, rows, results = {}, [], {}
    total = len(_nets.CELLS) * len(inits)
    done = 0
    for init in inits:
        results[init] = {}
        for k, cell in enumerate(_nets.CELLS):
            label = f"{_nets.CELL_LABELS[cell]} ({init})"
            model = _nets.SequenceClassifier(
                cell, config["units"], rng=np.random.default_rng(config["seed"] + k),
                vocab_size=symbols + 1, embed_dim=8, outputs=symbols, dtype=np.float64,
                recurrent_initializer=init)
            at_init = state_gradient_norms(model, x_eval, y_eval)
            progress.step(done, total, f"{label}: training {config['epochs']} epochs")
            optimizer = _nets.make_optimizer("adam", config["learning_rate"])
            _nets.train(model, "sparse_categorical", x_train, y_train,
                        epochs=config["epochs"], batch_size=config["batch_size"],
                        optimizer=optimizer, rng=np.random.default_rng(config["seed"] + 7),
                        on_epoch=lambda e, logs, label=label: progress.log(
                            f"{label} epoch {e + 1}: loss {logs['loss']:.4f}"))
            trained = state_gradient_norms(model, x_eval, y_eval)
            accuracy = _nets.score(model, "sparse_categorical", x_eval, y_eval)["accuracy"]
            curves[init, cell] = (at_init, trained)
            results[init][cell] = {
                "norm_at_init": at_init, "norm_trained": trained, "eval_accuracy": accuracy,
                # how many times smaller the gradient is at t=0 than at t=T
                "decay_init": at_init[-1] / at_init[0],
                "decay_trained": trained[-1] / trained[0],
            }
            rows.append([_nets.CELL_LABELS[cell], init, at_init[-1] / at_init[0],
                         trained[-1] / trained[0], accuracy])
            done += 1
    progress.step(total, total, "plotting")
    report.results.update(results, chance_accuracy=1.0 / symbols)

    fig, axes = new_figure(ncols=2, nrows=len(inits))
    for r, init in enumerate(inits):
        for col, title in enumerate(("at initialisation", "after training")):
            ax = axes[r, col]
            for cell in _nets.CELLS:
                ax.semilogy(np.arange(steps + 1), curves[init, cell][col],
                            label=_nets.CELL_LABELS[cell])
            ax.set_xlabel("t (steps consumed)")
            ax.set_ylabel("mean ||dL/dh_t||")
            ax.set_title(f"{title}\n{INIT_LABELS[init]}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    report.figure(fig, "gradient_norms",
                  f"||dL/dh_t|| against t on the recall task, T = {steps} (log scale)")
    report.table(
        ["cell", "recurrent init", "decay T->0 at init", "decay T->0 trained",
         "eval accuracy"], rows,
        caption=("Decay = ||dL/dh_T|| / ||dL/dh_0||: how many times weaker the gradient "
                 "reaching the first step is than the one at the last (< 1: it grows "
                 f"backwards).  Chance accuracy {1 / symbols:.2f}."))
    for init in inits:
        decays = {c: results[init][c]["decay_init"] for c in _nets.CELLS}
        ranking = ", ".join(f"{_nets.CELL_LABELS[c]} {decays[c]:.3g}x"
                            for c in sorted(decays, key=decays.get, reverse=True))
        report.text(f"With {INIT_LABELS[init]}, at initialisation the gradient shrinks "
                    f"from t = T to t = 0 by: {ranking}.")
