"""fusedrnn.experiments: the building blocks (exact gradients, tasks, folds, report files)
and the CI smoke test of every experiment's --quick mode (files exist, numbers finite and
in range)."""
from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from helpers import numerical_gradient

from fusedrnn import experiments
from fusedrnn.datasets import imdb
from fusedrnn.experiments import (
    _models, _nets, _tasks, exploding, gradient_flow, imdb_seqlen, long_memory, padding,
)
from fusedrnn.experiments._report import Report, markdown_table, mean_and_spread

SHARED_TARBALL = (Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "imdb"
                  / imdb.FILENAMES[0])


def _need(condition: bool, message: str):
    """Skip locally when a prerequisite is missing; fail in CI, where it must be there."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _matplotlib():
    _need(importlib.util.find_spec("matplotlib") is not None,
          "matplotlib is needed for the experiments' plots")


# ----------------------------------------------------------------------------- networks


@pytest.mark.parametrize("cell", _nets.CELLS)
def test_classifier_gradients_match_finite_differences(cell, rng):
    tokens = rng.integers(0, 6, size=(3, 5))
    labels = np.array([0, 1, 1])
    mask = np.ones((3, 5), bool)
    mask[0, 3:] = False  # the masked path too
    model = _nets.SequenceClassifier(cell, 3, rng=rng, vocab_size=6, embed_dim=2,
                                     dtype=np.float64)
    for w in model.weights:  # non-trivial values everywhere (biases start at zero)
        w += rng.normal(scale=0.3, size=w.shape)

    def loss():
        return _nets.binary_crossentropy(model.forward(tokens, mask)[0], labels)[0]

    logits, tape = model.forward(tokens, mask)
    grads = model.backward(tape, _nets.binary_crossentropy(logits, labels)[1])
    for k, (g, w) in enumerate(zip(grads, model.weights)):
        np.testing.assert_allclose(g, numerical_gradient(loss, w), rtol=1e-5, atol=1e-8,
                                   err_msg=f"weight {k}")


def test_softmax_crossentropy_gradient(rng):
    logits = rng.normal(size=(4, 3))
    y = np.array([0, 2, 1, 2])
    _, d = _nets.sparse_softmax_crossentropy(logits, y)
    numeric = numerical_gradient(lambda: _nets.sparse_softmax_crossentropy(logits, y)[0], logits)
    np.testing.assert_allclose(d, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cell", _nets.CELLS)
def test_state_gradient_norms_are_dl_dh_t(cell, rng):
    tokens, labels = _tasks.recall_task(rng, 3, 6, symbols=3)
    model = _nets.SequenceClassifier(cell, 4, rng=rng, vocab_size=4, embed_dim=3, outputs=3,
                                     dtype=np.float64)
    norms = gradient_flow.state_gradient_norms(model, tokens, labels)
    assert norms.shape == (7,)
    rnn, features = model.rnn, model._inputs(tokens)
    for t in (0, 2, 5):
        prefix = rnn.forward(features[:, :t], training=False) if t else None
        zeros = np.zeros((3, 4))
        h = prefix.h_n.copy() if t else zeros.copy()
        c = (prefix.c_n if t else zeros) if cell == "lstm" else None

        def total_loss():  # sum of the per-example losses, from state h at step t
            state = (h, c) if cell == "lstm" else h
            h_n = rnn.forward(features[:, t:], initial_state=state, training=False).h_n
            logits = h_n @ model.dense_kernel + model.dense_bias
            return _nets.sparse_softmax_crossentropy(logits, labels)[0] * len(labels)

        numeric = numerical_gradient(total_loss, h)
        np.testing.assert_allclose(norms[t], np.linalg.norm(numeric, axis=1).mean(), rtol=1e-5)


@pytest.mark.parametrize("cell", _models.CELLS)
def test_spectral_radius_is_set_per_gate(cell, rng):
    model = _models.sequence_model(cell, 5, seed=1, output_activation="linear")
    _models.build(model, rng.normal(size=(1, 3, 2)).astype(np.float32))
    exploding.set_recurrent_spectral_radius(model.layers[0], 2.5)
    recurrent = model.layers[0].get_weights()[1]
    for g in range(recurrent.shape[1] // 5):
        block = recurrent[:, 5 * g:5 * (g + 1)]
        assert _nets.spectral_radius(block) == pytest.approx(2.5, rel=1e-4)


def test_gradient_flow_training_learns(rng):
    tokens, labels = _tasks.recall_task(rng, 256, 3, symbols=2)
    model = _nets.SequenceClassifier("gru", 8, rng=rng, vocab_size=3, embed_dim=4, outputs=2)
    losses = _nets.train(model, "sparse_categorical", tokens, labels, epochs=8, batch_size=32,
                         optimizer=_nets.make_optimizer("adam", 0.05), rng=rng)
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert _nets.score(model, "sparse_categorical", tokens, labels)["accuracy"] > 0.95


def test_exploding_records_every_step_and_stops_on_divergence(rng):
    x, y = _tasks.adding_problem(rng, 64, 10)
    model = _models.sequence_model("simple_rnn", 4, seed=3, output_activation="linear")
    _models.compile_model(model, "mse", 0.01, optimizer="sgd", metrics=())
    _models.build(model, x)
    history = exploding.train_recording(model, x, y, batch_size=16, seed=0)
    assert history["diverged_at_step"] is None
    assert len(history["step_loss"]) == len(history["step_grad_norm"]) == 4
    assert all(n > 0 for n in history["step_grad_norm"])
    # A linear RNN with recurrent radius 1e30 overflows at once: reported, not raised.
    model = _models.sequence_model("simple_rnn", 4, seed=3, output_activation="linear",
                                   activation="linear")
    _models.compile_model(model, "mse", 0.01, optimizer="sgd", metrics=())
    _models.build(model, x)
    exploding.set_recurrent_spectral_radius(model.layers[0], 1e30)
    history = exploding.train_recording(model, x, y, batch_size=16, seed=0)
    assert history["diverged_at_step"] == 0


def test_cell_and_initializer_are_checked(rng):
    with pytest.raises(ValueError, match="recurrent_initializer"):
        _nets.RecurrentLayer("gru", 2, 3, rng, recurrent_initializer="zeros")
    with pytest.raises(ValueError, match="cell"):
        _nets.RecurrentLayer("rnn", 2, 3, rng)
    with pytest.raises(ValueError, match="cell"):
        _models.sequence_model("rnn", 3, seed=0)


# ----------------------------------------------------------------------------- tasks


def test_adding_problem(rng):
    x, y = _tasks.adding_problem(rng, 50, 12)
    assert x.shape == (50, 12, 2) and y.shape == (50,)
    markers = x[..., 1]
    assert (markers.sum(axis=1) == 2).all()
    assert (markers[:, :6].sum(axis=1) == 1).all()  # one marker in each half
    np.testing.assert_allclose((x[..., 0] * markers).sum(axis=1), y, rtol=1e-6)


def test_recall_task(rng):
    tokens, labels = _tasks.recall_task(rng, 40, 7, symbols=5)
    assert tokens.min() >= 1 and tokens.max() <= 5
    assert (labels == tokens[:, 0] - 1).all()


@pytest.mark.parametrize("padding", ["post", "pre"])
def test_variable_length_sequences(rng, padding):
    x, y, mask, lengths = _tasks.variable_length_sequences(rng, 30, 2, 9, "last", padding)
    assert x.shape == (30, 9, 1)
    assert (mask.sum(axis=1) == lengths).all()
    assert (x[..., 0][~mask] == 0).all() and (x[..., 0][mask] != 0).all()
    last = [x[i, lengths[i] - 1 if padding == "post" else 8, 0] for i in range(30)]
    assert (y == (np.array(last) > 0)).all()
    x_sum, y_sum, _, _ = _tasks.variable_length_sequences(rng, 30, 2, 9, "sum", padding)
    assert (y_sum == (x_sum.sum(axis=(1, 2)) > 0)).all()
    with pytest.raises(ValueError, match="task"):
        _tasks.variable_length_sequences(rng, 3, 2, 9, "first")
    with pytest.raises(ValueError, match="min_len"):
        _tasks.variable_length_sequences(rng, 3, 5, 4, "sum")


def test_padding_conversions():
    x = np.array([[[1.0], [2.0], [0.0]], [[3.0], [0.0], [0.0]]])
    np.testing.assert_array_equal(_tasks.post_to_pre_padding(x, [2, 1])[..., 0],
                                  [[0, 1, 2], [0, 0, 3]])
    sequences = [[1, 2, 3, 4], [5]]
    np.testing.assert_array_equal(_tasks.pad_sequences(sequences, 3), [[2, 3, 4], [0, 0, 5]])
    np.testing.assert_array_equal(_tasks.pad_sequences(sequences, 3, truncating="post"),
                                  [[1, 2, 3], [0, 0, 5]])


def test_stratified_folds_partition_and_balance(rng):
    labels = np.array([0] * 20 + [1] * 10)
    folds = imdb_seqlen.stratified_folds(labels, 5, rng)
    joined = np.sort(np.concatenate(folds))
    np.testing.assert_array_equal(joined, np.arange(30))
    assert all(labels[f].sum() == 2 and len(f) == 6 for f in folds)
    with pytest.raises(ValueError, match="folds"):
        imdb_seqlen.stratified_folds(labels, 1, rng)


def test_longest_learned():
    assert long_memory.longest_learned([5, 10, 20], [0.95, 0.91, 0.5], 0.9) == 10
    assert long_memory.longest_learned([5, 10, 20], [0.95, 0.5, 0.99], 0.9) == 5
    assert long_memory.longest_learned([5, 10], [0.2, 0.99], 0.9) == 0


# ----------------------------------------------------------------------------- report


def test_report_files_and_json_without_nan(tmp_path):
    _matplotlib()
    from fusedrnn.experiments._report import new_figure
    report = Report(tmp_path / "out", "demo", "quick", {"a": 1})
    report.results.update(value=np.float32(0.5), missing=float("nan"), arr=np.arange(3))
    fig, axes = new_figure()
    axes[0, 0].plot([1, 2], [3, 4])
    report.figure(fig, "line", "a line")
    report.table(["x", "y"], [["a", 0.12345], ["b", float("inf")]], caption="numbers")
    path = report.write("Demo", "summary text", 1.5)
    text = path.read_text()
    assert "![a line](line.png)" in text and "| a | 0.123 |" in text and "n/a" in text
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["results"] == {"value": 0.5, "missing": None, "arr": [0, 1, 2]}
    assert data["figures"] == ["line.png"] and (tmp_path / "out" / "line.png").stat().st_size


def test_markdown_table_and_spread():
    assert markdown_table(["a"], [[1.0]]).splitlines() == ["| a |", "|---|", "| 1.000 |"]
    assert markdown_table(["a", "b"], [[2.5e22, 1e-5]]).splitlines()[2] == "| 2.5e+22 | 1e-05 |"
    spread = mean_and_spread([1.0, 3.0])
    assert spread == {"mean": 2.0, "std": pytest.approx(math.sqrt(2)), "min": 1.0, "max": 3.0,
                      "n": 2}
    assert mean_and_spread([4.0])["std"] == 0.0


# ----------------------------------------------------------------------------- CLI


def test_cli_list(capsys):
    assert experiments.main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in experiments.EXPERIMENTS)


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        experiments.main(["no-such-experiment"])
    assert exc.value.code == 2 and "unknown experiment" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        experiments.main(["padding", "--quick", "--full"])
    with pytest.raises(SystemExit):
        experiments.main(["padding", "--seed", "-1"])
    with pytest.raises(SystemExit):
        experiments.main(["padding", "--threads", "0"])
    with pytest.raises(ValueError, match="name"):
        experiments.run("nope", "unused")
    with pytest.raises(ValueError, match="threads"):
        experiments.run("padding", "unused", threads=0)
    with pytest.raises(ValueError, match="seed"):
        experiments.run("padding", "unused", seed=-3)


def test_cli_missing_imdb_says_what_to_pass(tmp_path, monkeypatch, capsys):
    _matplotlib()
    monkeypatch.delenv(imdb.ENV_VAR, raising=False)
    out = tmp_path / "imdb"
    status = experiments.main(["imdb-seqlen", "--quick", "--out", str(out), "-q"])
    assert status == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "--data PATH" in err and imdb.ENV_VAR in err


# ----------------------------------------------------------------------------- smoke


def _load_results(out: Path, name: str) -> dict:
    for filename in ("report.md", "results.json"):
        assert (out / filename).is_file(), filename
    data = json.loads((out / "results.json").read_text())
    assert data["experiment"] == name and data["mode"] == "quick"
    assert data["figures"]
    for figure in data["figures"]:
        assert (out / figure).stat().st_size > 1000
        assert f"]({figure})" in (out / "report.md").read_text()
    return data["results"]


def _probability(value):
    return value is not None and 0.0 <= value <= 1.0


def test_quick_gradient_flow(tmp_path):
    _matplotlib()
    out = tmp_path / "gf"
    assert experiments.main(["gradient-flow", "--quick", "--out", str(out), "-q"]) == 0
    results = _load_results(out, "gradient-flow")
    steps = gradient_flow.CONFIGS["quick"]["steps"]
    for init in gradient_flow.CONFIGS["quick"]["recurrent_initializers"]:
        for cell in _nets.CELLS:
            r = results[init][cell]
            for key in ("norm_at_init", "norm_trained"):
                norms = np.array(r[key], dtype=float)
                assert norms.shape == (steps + 1,)
                assert np.isfinite(norms).all() and (norms > 0).all()
            assert _probability(r["eval_accuracy"])


def test_quick_long_memory(tmp_path):
    _matplotlib()
    experiments.run("long-memory", tmp_path, quick=True, verbose=False)
    results = _load_results(tmp_path, "long-memory")
    lengths = long_memory.CONFIGS["quick"]["lengths"]
    for cell in _nets.CELLS:
        for s in results["recall"][cell]["scores"]:
            assert _probability(s["mean"])
        for s in results["adding"][cell]["scores"]:
            assert s["mean"] is not None and s["mean"] <= 1.0
        for task in long_memory.TASKS:
            assert results[task][cell]["longest_learned"] in [0] + lengths


def test_quick_exploding(tmp_path):
    _matplotlib()
    experiments.run("exploding", tmp_path, quick=True, verbose=False)
    runs = _load_results(tmp_path, "exploding")["runs"]
    config = exploding.CONFIGS["quick"]
    assert len(runs) == 2 * len(config["radii"]) * len(config["activations"])
    for r in runs.values():
        if r["diverged_at_step"] is None:
            assert r["initial_grad_norm"] > 0
            assert len(r["step_grad_norm"]) == config["training_steps"]
            assert r["test_mse"] is not None and r["test_mse"] >= 0
        else:
            assert 0 <= r["diverged_at_step"] < config["training_steps"]
    # tanh: the larger radius starts with the larger gradient, the explosion the plot shows.
    small, large = min(config["radii"]), max(config["radii"])
    assert (runs[exploding.run_key("tanh", large, None)]["initial_grad_norm"]
            > 10 * runs[exploding.run_key("tanh", small, None)]["initial_grad_norm"])


def test_quick_padding(tmp_path):
    _matplotlib()
    experiments.run("padding", tmp_path, quick=True, verbose=False)
    results = _load_results(tmp_path, "padding")
    for task in padding.CONFIGS["quick"]["tasks"]:
        for name, (kind, _, _) in padding.VARIANTS.items():
            r = results[task][name]
            assert _probability(r["test_accuracy"])
            assert all(_probability(v) for v in r["accuracy_by_length"].values())
            if kind == "rnn":
                assert _probability(r["longer_sequences_accuracy"])
            else:
                assert r["longer_sequences_accuracy"] is None  # NaN: cannot take them


def test_quick_imdb_seqlen(tmp_path, monkeypatch):
    _matplotlib()
    source = os.environ.get(imdb.ENV_VAR) or str(SHARED_TARBALL)
    _need(Path(source).exists(), f"IMDB tarball not found at {source}")
    experiments.run("imdb-seqlen", tmp_path, quick=True, data=source, verbose=False)
    results = _load_results(tmp_path, "imdb-seqlen")
    config = imdb_seqlen.CONFIGS["quick"]
    # 124 train + 108 test reviews reach 1000 tokens; quick mode subsamples them.
    assert (results["subsets"][">=1000"]["reviews"]
            == min(232, config["subsets"][">=1000"]["max_reviews"]))
    for name, r in results["subsets"].items():
        repeats = config["subsets"][name]["repeats"]
        for cell in _nets.CELLS:
            points = r["cells"][cell]
            assert [p["max_seq_len"] for p in points] == config["max_seq_lens"]
            for p in points:
                assert _probability(p["mean"])
                assert p["n"] == config["folds"] * repeats
