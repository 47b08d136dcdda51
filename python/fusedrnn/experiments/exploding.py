"""exploding: recurrent weights with spectral radius > 1, trained with and without clipping.

A SimpleRNN (tanh, and relu: tanh saturates and bounds the state, relu does not) learns
the adding problem with plain SGD; its recurrent kernel is
rescaled at initialisation to spectral radius rho (1.0 is the control).  Every training
step records the loss and the global gradient norm *before* clipping (the model's
``loss_and_gradients`` then ``optimizer.apply``, i.e. ``train_on_batch`` with the norm
recorded); the clipped runs use ``fusedrnn.optimizers.SGD(clipnorm=...)`` (Keras'
per-weight clipping).  A run whose loss
or gradient stops being finite is reported as diverged at that step.
"""
from __future__ import annotations

import numpy as np

from . import _models, _nets
from ._report import new_figure
from ._tasks import ADDING_BASELINE_MSE, adding_problem

TITLE = "Exploding gradients: spectral radius > 1, with and without gradient clipping"
SUMMARY = """
The notes claim that recurrent weights larger than 1 make gradients explode through
repeated multiplication, and that clipping the gradient norm keeps training usable.  A
SimpleRNN (tanh and relu) on the adding problem starts from recurrent weights of spectral
radius rho and is trained with SGD, with and without clipnorm; the loss and the gradient
norm of every step are plotted on log scales.
"""

CONFIGS = {
    "quick": {"cell": "simple_rnn", "activations": ["tanh", "relu"], "sequence_length": 30,
              "units": 16, "radii": [1.0, 2.0], "training_steps": 30, "batch_size": 32,
              "learning_rate": 0.05, "clipnorm": 1.0, "test_samples": 256},
    # a few minutes.
    "full": {"cell": "simple_rnn", "activations": ["tanh", "relu"], "sequence_length": 50,
             # relu at radius 2 over 50 steps already reaches gradients ~1e15; much more
             # and the forward pass itself overflows float32 (nothing left to compare).
             "units": 32, "radii": [1.0, 1.5, 2.0], "training_steps": 1000,
             "batch_size": 32, "learning_rate": 0.05, "clipnorm": 1.0,
             "test_samples": 1024},
}


def set_recurrent_spectral_radius(layer, radius: float) -> None:
    """Rescale every gate's (units, units) block of a built recurrent layer's recurrent
    kernel to the given spectral radius (largest |eigenvalue|)."""
    kernel, recurrent_kernel, *rest = layer.get_weights()
    units = recurrent_kernel.shape[0]
    for g in range(recurrent_kernel.shape[1] // units):
        block = recurrent_kernel[:, g * units:(g + 1) * units]
        block *= radius / _nets.spectral_radius(block)
    layer.set_weights([kernel, recurrent_kernel, *rest])


def train_recording(model, x, y, batch_size: int, seed: int) -> dict:
    """One epoch of mini-batch training that records every step's loss and global gradient
    norm before clipping (``fit`` only reports epoch means).  Stops at the first non-finite
    loss or gradient: ``diverged_at_step`` is then that step's index, else None."""
    order = np.random.default_rng(seed).permutation(len(x))
    history = {"step_loss": [], "step_grad_norm": [], "diverged_at_step": None}
    for step, start in enumerate(range(0, len(x), batch_size)):
        index = order[start:start + batch_size]
        with np.errstate(over="ignore", invalid="ignore"):
            loss, grads = model.loss_and_gradients(x[index], y[index])
            norm = _nets.global_norm(grads)
        history["step_loss"].append(float(loss))
        history["step_grad_norm"].append(norm)
        if not (np.isfinite(loss) and np.isfinite(norm)):
            history["diverged_at_step"] = step
            break
        # Squaring a float32 gradient of norm > ~1e19 overflows inside clipnorm (as in
        # Keras); the update is then scaled to zero.  The recorded norm (float64) shows it.
        with np.errstate(over="ignore", invalid="ignore"):
            model.optimizer.apply(grads, model.trainable_weights)
    return history


def _one_run(config, activation, rho, clip, x, y, x_test, y_test) -> dict:
    """Train one model from spectral radius rho; every number of the run."""
    # Same initial weights and batches for every run of an activation.
    model = _models.sequence_model(config["cell"], config["units"], seed=config["seed"] + 1,
                                   output_activation="linear", activation=activation)
    _models.compile_model(model, "mse", config["learning_rate"], optimizer="sgd",
                          clipnorm=clip, metrics=())
    _models.build(model, x)
    rnn = model.layers[0]
    set_recurrent_spectral_radius(rnn, rho)
    history = train_recording(model, x, y, config["batch_size"], config["seed"])
    diverged = history["diverged_at_step"]
    test_mse = float("nan")
    if diverged is None:
        with np.errstate(over="ignore", invalid="ignore"):
            test_mse = _models.evaluate(model, x_test, y_test)["loss"]
    norms = np.asarray(history["step_grad_norm"])
    losses = np.asarray(history["step_loss"])
    finite = np.isfinite(norms)
    nan = float("nan")
    return {
        "activation": activation, "spectral_radius": rho, "clipnorm": clip,
        "step_loss": losses, "step_grad_norm": norms, "diverged_at_step": diverged,
        "initial_grad_norm": norms[0] if norms.size else nan,
        "max_grad_norm": norms[finite].max() if finite.any() else nan,
        "median_grad_norm": np.median(norms[finite]) if finite.any() else nan,
        "final_train_loss": losses[-1] if losses.size else nan,
        "test_mse": test_mse,
        "test_r2": 1.0 - test_mse / ADDING_BASELINE_MSE,
        # How far the updates moved the recurrent weights: a giant unclipped step shows up
        # as a much larger radius.
        "final_spectral_radius":
            _nets.spectral_radius(rnn.get_weights()[1]) if diverged is None else nan,
    }


def run_key(activation: str, rho: float, clip) -> str:
    """The results.json key of one run, e.g. ``tanh/rho=3/clipnorm``."""
    return f"{activation}/rho={rho:g}/" + ("clipnorm" if clip else "none")


def _outcome(run: dict) -> str:
    if run["diverged_at_step"] is not None:
        return f"diverged at step {run['diverged_at_step']}"
    return (f"recurrent radius ends at {run['final_spectral_radius']:.3g}, "
            f"test MSE {run['test_mse']:.3g}")


def run(config, report, progress, data=None):
    steps, batch = config["training_steps"], config["batch_size"]
    radii, activations = config["radii"], config["activations"]
    clip_settings = [None, config["clipnorm"]]
    data_rng = np.random.default_rng(config["seed"])
    x, y = adding_problem(data_rng, steps * batch, config["sequence_length"])
    x_test, y_test = adding_problem(data_rng, config["test_samples"], config["sequence_length"])
    results, rows = {}, []
    total = len(activations) * len(radii) * len(clip_settings)
    done = 0
    for activation in activations:
        for rho in radii:
            for clip in clip_settings:
                key = run_key(activation, rho, clip)
                progress.step(done, total, f"{key}: {steps} SGD steps")
                r = results[key] = _one_run(config, activation, rho, clip, x, y, x_test,
                                            y_test)
                rows.append([activation, f"{rho:g}", f"{clip:g}" if clip else "none",
                             r["initial_grad_norm"], r["max_grad_norm"],
                             r["median_grad_norm"], r["final_spectral_radius"],
                             "no" if r["diverged_at_step"] is None
                             else f"step {r['diverged_at_step']}", r["test_mse"]])
                done += 1
    progress.step(total, total, "plotting")
    report.results.update(runs=results, baseline_mse=ADDING_BASELINE_MSE)

    fig, axes = new_figure(ncols=2, nrows=len(activations))
    colours = dict(zip(radii, [f"C{k}" for k in range(10)]))
    for row, activation in enumerate(activations):
        for rho in radii:
            for clip in clip_settings:
                r = results[run_key(activation, rho, clip)]
                style = dict(color=colours[rho], linestyle="-" if clip else "--",
                             linewidth=1, label=f"ρ={rho:g}" + (", clipped" if clip else ""))
                for col, series in enumerate((r["step_loss"], r["step_grad_norm"])):
                    # Non-finite points (a diverged last step) are left out of the plot.
                    axes[row, col].semilogy(np.arange(series.size),
                                            np.where(np.isfinite(series), series, np.nan),
                                            **style)
        axes[row, 0].axhline(ADDING_BASELINE_MSE, color="grey", linestyle=":", linewidth=1,
                             label="constant guess")
        axes[row, 0].set_ylabel("training loss (MSE)")
        axes[row, 1].set_ylabel("gradient norm before clipping")
        for ax in axes[row]:
            ax.set_title(f"SimpleRNN, activation {activation}", fontsize=9)
            ax.set_xlabel("SGD step")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    report.figure(fig, "loss_and_gradient_norm",
                  "Loss and global gradient norm per step; dashed: no clipping, solid: "
                  f"clipnorm={config['clipnorm']:g}")
    report.text("\n".join(
        f"- {activation}, ρ = {rho:g}: gradient norm "
        f"{results[run_key(activation, rho, None)]['initial_grad_norm']:.3g} at step 0; "
        f"without clipping: {_outcome(results[run_key(activation, rho, None)])}; "
        f"with clipping: {_outcome(results[run_key(activation, rho, config['clipnorm'])])}."
        for activation in activations for rho in radii))
    report.table(["activation", "spectral radius", "clipnorm", "grad norm at step 0",
                  "max grad norm", "median grad norm", "final spectral radius", "diverged",
                  "test MSE"], rows,
                 caption=f"Test MSE of the constant guess: {ADDING_BASELINE_MSE:.3f}.")
