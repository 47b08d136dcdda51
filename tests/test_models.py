"""Models: whole-model float64 gradient checks, graphs, fit/evaluate/predict, save/load."""
import io
import json
import zipfile

import numpy as np
import pytest

from fusedrnn import callbacks, engine, losses, models, optimizers
from fusedrnn import layers as L
from helpers import assert_close, numerical_gradient

F64 = "float64"


def _padded_ids(rng, batch, steps, vocab):
    ids = np.zeros((batch, steps), dtype=np.int32)
    for row, length in enumerate(rng.integers(1, steps + 1, batch)):
        ids[row, :length] = rng.integers(1, vocab, length)
    ids[0, :] = rng.integers(1, vocab, steps)
    return ids


def _perturb_weights(model, rng, scale=0.3):
    """Move every weight off its initial value (zero biases hide bugs)."""
    model.set_weights([w + scale * rng.standard_normal(w.shape) for w in model.get_weights()])


def _check_model_gradients(model, x, y, rtol=1e-6):
    """Analytic loss gradients (fused BPTT through the whole graph) vs central differences."""
    loss, grads = model.loss_and_gradients(x, y)
    batch = len(x[0]) if isinstance(x, list) else len(x)

    def total_loss():
        return model.evaluate(x, y, batch_size=batch, verbose=0, return_dict=True)["loss"]
    assert_close(loss, total_loss(), rtol=1e-12)
    for weight, grad in zip(model.trainable_weights, grads):
        assert grad.shape == weight.shape and grad.dtype == weight.dtype
        numeric = numerical_gradient(total_loss, weight)
        assert_close(grad, numeric, rtol=rtol)


def test_sequential_masked_stack_gradients_match_finite_differences(rng):
    """Embedding(mask_zero) -> LSTM(seq) -> GRU(seq) -> TimeDistributed(Dense): masked loss."""
    T, V = 5, 7
    model = models.Sequential([
        engine.Input((T,), dtype="int32"),
        L.Embedding(V, 3, mask_zero=True, dtype=F64),
        L.LSTM(4, return_sequences=True, dtype=F64),
        L.GRU(3, return_sequences=True, dtype=F64),
        L.TimeDistributed(L.Dense(3, activation="softmax", dtype=F64)),
    ])
    _perturb_weights(model, rng)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = _padded_ids(rng, 4, T, V)
    y = rng.integers(0, 3, (4, T))
    _check_model_gradients(model, x, y)


def test_functional_encoder_decoder_gradients_match_finite_differences(rng):
    """Decoder initial_state from the encoder's states, a shared Dense applied twice, a
    tensor read by two layers, two outputs with loss weights."""
    enc_in = engine.Input((5, 3), dtype=F64)
    dec_in = engine.Input((4, 2), dtype=F64)
    enc_seq, h, c = L.LSTM(3, return_sequences=True, return_state=True, dtype=F64)(enc_in)
    dec_seq = L.LSTM(3, return_sequences=True, dtype=F64)(dec_in, initial_state=[h, c])
    shared = L.Dense(2, dtype=F64)
    out_a = shared(dec_seq)
    summary = L.SimpleRNN(2, dtype=F64)(enc_seq)          # enc_seq is read twice
    out_b = L.Dense(1, activation="sigmoid", dtype=F64)(summary)
    out_c = shared(enc_seq)                               # the shared Dense, second call
    model = models.Model([enc_in, dec_in], [out_a, out_b, out_c])
    _perturb_weights(model, rng)
    model.compile("adam", ["mse", "binary_crossentropy", "mae"], loss_weights=[0.7, 1.3, 0.4])
    x = [rng.standard_normal((3, 5, 3)), rng.standard_normal((3, 4, 2))]
    y = [rng.standard_normal((3, 4, 2)), rng.integers(0, 2, (3, 1)).astype(float),
         rng.standard_normal((3, 5, 2))]
    _check_model_gradients(model, x, y)


def test_bidirectional_and_repeat_vector_gradients_match_finite_differences(rng):
    inputs = engine.Input((4, 2), dtype=F64)
    h = L.Masking(0.0, dtype=F64)(inputs)
    h = L.Bidirectional(L.GRU(3, dtype=F64), merge_mode="concat")(h)
    h = L.RepeatVector(3, dtype=F64)(h)
    h = L.SimpleRNN(2, return_sequences=True, dtype=F64)(h)
    model = models.Model(inputs, L.TimeDistributed(L.Dense(2, dtype=F64))(h))
    _perturb_weights(model, rng)
    model.compile("sgd", losses.CategoricalCrossentropy(from_logits=True))
    x = rng.standard_normal((3, 4, 2))
    x[1, 2:] = 0.0   # masked padding steps
    y = np.eye(2)[rng.integers(0, 2, (3, 3))]
    _check_model_gradients(model, x, y)


def test_tensor_used_twice_accumulates_gradients(rng):
    """y = Dense(x) + the same output fed to two heads: sums of two paths."""
    inputs = engine.Input((3,), dtype=F64)
    hidden = L.Dense(4, activation="tanh", dtype=F64)(inputs)
    head = L.Dense(1, dtype=F64)
    model = models.Model(inputs, [head(hidden), L.Dense(1, dtype=F64)(hidden)])
    model.compile("sgd", "mse")
    x, y = rng.standard_normal((5, 3)), [rng.standard_normal((5, 1)), rng.standard_normal((5, 1))]
    _check_model_gradients(model, x, y)


def _record_backward_calls(layer, calls):
    backward = layer.backward

    def recording(tape, d_outputs, **kwargs):
        calls.append((layer.name, kwargs.get("input_gradient", True)))
        return backward(tape, d_outputs, **kwargs)
    layer.backward = recording


@pytest.mark.parametrize("first", ["lstm", "bidirectional"])
def test_layers_fed_by_model_inputs_skip_their_input_gradient(rng, first):
    """Training discards the gradient w.r.t. the model's inputs, so a recurrent layer fed
    straight by them is asked not to compute it (input_gradient=False: one GEMM less), as
    Keras' and torch's autodiff compute no gradient nobody uses; a layer fed by another
    layer still computes it, and the weight gradients are bitwise those of a run where the
    first layer computes its input's gradient too."""
    inputs = engine.Input((6, 3), dtype=F64)
    if first == "lstm":
        layer = L.LSTM(5, return_sequences=True, dtype=F64)
    else:
        layer = L.Bidirectional(L.SimpleRNN(5, return_sequences=True, dtype=F64))
    inner = L.Bidirectional(L.GRU(4, dtype=F64))
    model = models.Model(inputs, L.Dense(2, dtype=F64)(inner(layer(inputs))))
    _perturb_weights(model, rng)
    model.compile("sgd", "mse")
    x, y = rng.standard_normal((7, 6, 3)), rng.standard_normal((7, 2))
    calls = []
    for each in (layer, inner):
        _record_backward_calls(each, calls)
    loss, grads = model.loss_and_gradients(x, y)
    assert calls == [(inner.name, True), (layer.name, False)]
    layer._skips_input_gradient = False  # this instance: compute it like any other layer
    calls.clear()
    loss_full, grads_full = model.loss_and_gradients(x, y)
    assert calls == [(inner.name, True), (layer.name, True)]
    assert loss_full == loss
    for g, g_full in zip(grads, grads_full):
        np.testing.assert_array_equal(g, g_full)
    del layer._skips_input_gradient
    calls.clear()
    model.fit(x, y, batch_size=7, epochs=1, verbose=0)
    assert calls == [(inner.name, True), (layer.name, False)]


# -- training ------------------------------------------------------------------------------

def _sign_task(rng, n=240, steps=8):
    """Classify whether a sequence's values sum to a positive number (variable lengths)."""
    lengths = rng.integers(3, steps + 1, n)
    x = rng.standard_normal((n, steps, 1)).astype(np.float32)
    for row, length in enumerate(lengths):
        x[row, length:] = 0.0
    y = (x.sum(axis=(1, 2)) > 0).astype(np.float32)[:, None]
    return x, y


def test_fit_reduces_loss_and_reaches_accuracy(rng, capsys):
    """Masking + LSTM + Dense on the sign task: >= 90% training accuracy in 25 epochs."""
    np.random.seed(1)
    x, y = _sign_task(rng)
    model = models.Sequential([engine.Input((8, 1)), L.Masking(0.0), L.LSTM(12),
                               L.Dense(1, activation="sigmoid")])
    model.compile(optimizers.Adam(0.02), "binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=25, validation_split=0.25, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/25" in out and "6/6 [" in out     # the progress bar
    loss = history.history["loss"]
    assert loss[-1] < 0.6 * loss[0]
    assert history.history["accuracy"][-1] >= 0.90
    assert history.history["val_accuracy"][-1] >= 0.85
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    loss_value, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy >= 0.90 and loss_value < loss[0]


def test_fit_with_validation_data_early_stopping_and_restore(rng):
    np.random.seed(2)
    x, y = _sign_task(rng, n=96)
    x_val, y_val = _sign_task(rng, n=32)
    model = models.Sequential([L.LSTM(4), L.Dense(1, activation="sigmoid")])  # deferred build
    model.compile(optimizers.SGD(5.0), "binary_crossentropy")  # far too large: it oscillates
    stopper = callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    history = model.fit(x, y, epochs=30, batch_size=16, validation_data=(x_val, y_val),
                        callbacks=[stopper], verbose=0)
    epochs_run = len(history.history["loss"])
    assert epochs_run < 30 and stopper.stopped_epoch == epochs_run - 1
    best = int(np.argmin(history.history["val_loss"]))
    assert stopper.best_epoch == best
    restored = model.evaluate(x_val, y_val, verbose=0)
    assert_close(restored, history.history["val_loss"][best], rtol=1e-5)


def test_shuffle_false_is_deterministic_and_caller_arrays_untouched(rng):
    x, y = _sign_task(rng, n=40)
    x_before, y_before = x.copy(), y.copy()
    results = []
    for _ in range(2):
        model = models.Sequential([engine.Input((8, 1)), L.GRU(3), L.Dense(1)])
        model.set_weights([np.full(w.shape, 0.1, w.dtype) * (k + 1)
                           for k, w in enumerate(model.get_weights())])
        model.compile(optimizers.RMSprop(0.01, clipnorm=1.0), "mse")
        results.append(model.fit(x, y, epochs=2, batch_size=8, shuffle=False,
                                 verbose=0).history["loss"])
    assert results[0] == results[1]
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)


def test_dropout_is_active_in_fit_only(rng):
    x, y = _sign_task(rng, n=64)
    model = models.Sequential([engine.Input((8, 1)),
                               L.LSTM(6, dropout=0.3, recurrent_dropout=0.3),
                               L.Dropout(0.5), L.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    first, _ = model.loss_and_gradients(x, y)
    second, _ = model.loss_and_gradients(x, y)
    assert first != second                       # training passes draw new dropout masks
    np.testing.assert_array_equal(model.predict(x), model.predict(x))   # inference does not
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert all(np.isfinite(history.history["loss"]))


def test_stateful_layer_keeps_state_between_predict_batches(rng):
    x = rng.standard_normal((4, 6, 2)).astype(np.float32)
    stateful = models.Sequential([engine.Input((3, 2), batch_size=4),
                                  L.SimpleRNN(3, stateful=True)])
    plain = models.Sequential([engine.Input((None, 2)), L.SimpleRNN(3)])
    plain.set_weights(stateful.get_weights())
    stateful.predict(x[:, :3], batch_size=4)
    second_half = stateful.predict(x[:, 3:], batch_size=4)
    assert_close(second_half, plain.predict(x), rtol=1e-5)
    stateful.reset_states()
    assert_close(stateful.predict(x[:, :3], batch_size=4), plain.predict(x[:, :3]), rtol=1e-5)


def test_multi_output_logs_are_named_per_output(rng):
    inputs = engine.Input((5, 2))
    sequence = L.GRU(4, return_sequences=True, name="encoder")(inputs)
    steps = L.TimeDistributed(L.Dense(3, activation="softmax"), name="tags")(sequence)
    total = L.Dense(1, name="total")(L.SimpleRNN(2)(sequence))
    model = models.Model(inputs, [steps, total])
    model.compile("adam", ["sparse_categorical_crossentropy", "mse"],
                  metrics=[["accuracy"], ["mae"]])
    x = rng.standard_normal((12, 5, 2)).astype(np.float32)
    y = [rng.integers(0, 3, (12, 5)), rng.standard_normal((12, 1)).astype(np.float32)]
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0, validation_split=0.25)
    assert set(history.history) == {
        "loss", "tags_loss", "total_loss", "tags_accuracy", "total_mae",
        "val_loss", "val_tags_loss", "val_total_loss", "val_tags_accuracy", "val_total_mae"}
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(logs["tags_loss"] + logs["total_loss"])
    predicted = model.predict(x)
    assert logs["total_mae"] == pytest.approx(np.mean(np.abs(predicted[1] - y[1])), rel=1e-5)
    assert logs["tags_accuracy"] == pytest.approx(np.mean(predicted[0].argmax(-1) == y[0]))


# -- structure -------------------------------------------------------------------------------

def test_summary_layers_and_weights(capsys):
    model = models.Sequential()
    model.add(engine.Input((None,), dtype="int32"))
    model.add(L.Embedding(10, 4, mask_zero=True, name="emb"))
    model.add(L.LSTM(5, name="rnn"))
    model.add(L.Dense(2, name="out"))
    model.summary()
    text = capsys.readouterr().out
    assert "emb (Embedding)" in text and "(None, None, 4)" in text and "rnn (LSTM)" in text
    assert f"Total params: {40 + 4 * 5 * 4 + 4 * 5 * 5 + 20 + 5 * 2 + 2}" in text
    assert [layer.name for layer in model.layers] == ["emb", "rnn", "out"]
    assert model.get_layer("rnn") is model.layers[1]
    assert len(model.weights) == 6 and all(a is b for a, b in zip(model.weights,
                                                                   model.trainable_weights))
    assert model.layers[0] is model.get_layer(index=0)


def test_symbolic_tensors_carry_shapes_and_masks():
    ids = engine.Input((7,), dtype="int32")
    assert ids.shape == (None, 7) and ids.mask is None
    embedded = L.Embedding(9, 3, mask_zero=True)(ids)
    assert embedded.shape == (None, 7, 3) and embedded.mask is not None
    assert embedded.mask.shape == (None, 7)
    sequence, h, c = L.LSTM(4, return_sequences=True, return_state=True)(embedded)
    assert sequence.shape == (None, 7, 4) and sequence.mask is not None
    assert h.shape == (None, 4) and h.mask is None
    assert engine.is_symbolic([np.zeros(2), h]) and not engine.is_symbolic(np.zeros(2))
    with pytest.raises(TypeError, match="no values"):
        np.asarray(h)


def test_set_weights_and_input_errors(rng):
    model = models.Sequential([engine.Input((4, 2)), L.LSTM(3), L.Dense(1)])
    with pytest.raises(ValueError, match="expected a list of 5 arrays"):
        model.set_weights(model.get_weights()[:-1])
    with pytest.raises(ValueError, match=r"x: expected shape \('batch', 4, 2\)"):
        model.predict(np.zeros((3, 4, 5), np.float32))
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(np.zeros((2, 4, 2)), np.zeros((2, 1)))
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match="y for output .*expected the shape of the predictions"):
        model.fit(np.zeros((2, 4, 2)), np.zeros((2, 3)), verbose=0)
    with pytest.raises(ValueError, match="different numbers of samples"):
        model.fit(np.zeros((2, 4, 2)), np.zeros((3, 1)), verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(np.zeros((2, 4, 2)), batch_size=0)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(np.zeros((2, 4, 2)), np.zeros((2, 1)), validation_split=1.5, verbose=0)
    with pytest.raises(ValueError, match="unknown loss"):
        model.compile("adam", "hinge")
    with pytest.raises(ValueError, match="return_state"):
        models.Sequential([L.LSTM(2, return_state=True)])
    a, b = engine.Input((3,)), engine.Input((3,))
    with pytest.raises(ValueError, match="Graph disconnected"):
        models.Model(a, L.Dense(1)(b))
    with pytest.raises(TypeError, match="inputs\\[0\\]"):
        models.Model(L.Dense(1)(a), L.Dense(1)(a))


# -- saving --------------------------------------------------------------------------------

def test_save_and_load_round_trip_seq2seq(tmp_path, rng):
    enc_in = engine.Input((None,), dtype="int32")
    dec_in = engine.Input((None,), dtype="int32")
    e = L.Embedding(12, 5, mask_zero=True)(enc_in)
    _, h, c = L.LSTM(6, return_state=True)(e)
    d = L.Embedding(9, 5)(dec_in)
    d = L.LSTM(6, return_sequences=True)(d, initial_state=[h, c])
    model = models.Model([enc_in, dec_in], L.Dense(9, activation="softmax")(d))
    model.compile(optimizers.Adam(0.005, clipnorm=1.0), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    src, tgt = _padded_ids(rng, 8, 6, 12), rng.integers(1, 9, (8, 3)).astype(np.int32)
    model.fit([src, tgt], rng.integers(0, 9, (8, 3)), epochs=1, verbose=0)
    path = tmp_path / "seq2seq.fzip"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        document = json.loads(archive.read("model.json"))
    assert "model.json" in names and all(n.endswith(".npy") for n in names if n != "model.json")
    assert document["compile"]["optimizer"]["config"]["clipnorm"] == 1.0
    restored = models.load_model(path)
    np.testing.assert_array_equal(restored.predict([src, tgt]), model.predict([src, tgt]))
    assert restored.optimizer.get_config() == model.optimizer.get_config()
    # the optimizer state came along: one more identical step gives identical weights
    labels = rng.integers(0, 9, (8, 3))
    model.fit([src, tgt], labels, epochs=1, shuffle=False, verbose=0)
    restored.fit([src, tgt], labels, epochs=1, shuffle=False, verbose=0)
    assert restored.optimizer.iterations == model.optimizer.iterations == 2
    for mine, expected in zip(restored.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(mine, expected)


def test_save_and_load_round_trip_sequential(tmp_path, rng):
    model = models.Sequential([L.Bidirectional(L.GRU(3, return_sequences=True)),
                               L.TimeDistributed(L.Dense(2))])
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    before = model.predict(x)    # deferred build from the data
    model.save(tmp_path / "m.zip")
    restored = models.load_model(tmp_path / "m.zip")
    np.testing.assert_array_equal(restored.predict(x), before)
    assert not restored.compiled
    # load_weights reads the same archive into a fresh model of the same architecture
    fresh = models.Sequential([L.Bidirectional(L.GRU(3, return_sequences=True)),
                               L.TimeDistributed(L.Dense(2))])
    fresh.build((None, None, 2))
    fresh.load_weights(tmp_path / "m.zip")
    np.testing.assert_array_equal(fresh.predict(x), before)


def test_load_model_rejects_other_files(tmp_path):
    path = tmp_path / "not_a_model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("other.txt", "hello")
    with pytest.raises(ValueError, match="no model.json"):
        models.load_model(path)
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(2))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.json", json.dumps({"format": "keras"}))
    with pytest.raises(ValueError, match="unknown format"):
        models.load_model(path)
