"""Optimizers, losses, metrics and callbacks against Keras 3 (jax backend) and by hand."""
import numpy as np
import pytest

from fusedrnn import callbacks, losses, metrics, optimizers
from helpers import assert_close, numerical_gradient, require

# -- optimizers ------------------------------------------------------------------------------

OPTIMIZER_CASES = [
    ("SGD", dict(learning_rate=0.1), "float64"),
    ("SGD", dict(learning_rate=0.05, momentum=0.9), "float32"),
    ("SGD", dict(learning_rate=0.05, momentum=0.8, nesterov=True, clipnorm=0.3), "float32"),
    ("RMSprop", dict(learning_rate=0.01), "float64"),
    ("RMSprop", dict(learning_rate=0.01, rho=0.8, momentum=0.7, epsilon=1e-6), "float32"),
    ("RMSprop", dict(learning_rate=0.01, centered=True, clipvalue=0.2), "float32"),
    ("Adam", dict(learning_rate=0.01), "float64"),
    ("Adam", dict(learning_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-6, amsgrad=True),
     "float32"),
    ("Adam", dict(learning_rate=0.01, global_clipnorm=0.5), "float32"),
    ("Adam", dict(learning_rate=0.01, clipnorm=0.25), "float64"),
]


@pytest.mark.parametrize("name,kwargs,dtype", OPTIMIZER_CASES,
                         ids=[f"{n}-{'-'.join(k)}-{d}" for n, k, d in OPTIMIZER_CASES])
def test_optimizer_matches_keras(name, kwargs, dtype, request, rng):
    keras = require("keras", request)
    shapes = [(3, 8), (8,), (2, 2, 2)]
    start = [rng.standard_normal(s).astype(dtype) for s in shapes]
    # The same gradient sequence for both; large enough that clipping engages.
    gradients = [[rng.standard_normal(s).astype(dtype) * 0.7 for s in shapes]
                 for _ in range(4)]

    ours = getattr(optimizers, name)(**kwargs)
    weights = [w.copy() for w in start]
    theirs = getattr(keras.optimizers, name)(**kwargs)
    variables = [keras.Variable(w.copy(), dtype=dtype) for w in start]
    for grads in gradients:
        ours.apply([g.copy() for g in grads], weights)
        theirs.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], variables))
    tol = 2e-6 if dtype == "float32" else 1e-12
    for w, var in zip(weights, variables):
        assert w.dtype == np.dtype(dtype)
        assert_close(w, np.asarray(var.value), rtol=tol)
    assert ours.iterations == len(gradients)


def test_optimizer_updates_in_place_and_keeps_gradients(rng):
    w = rng.standard_normal((4, 3)).astype(np.float32)
    handle = w
    g = rng.standard_normal((4, 3)).astype(np.float32)
    g_before = g.copy()
    optimizers.Adam(learning_rate=0.1, clipvalue=0.1).apply([g], [w])
    assert handle is w and not np.allclose(w, rng.standard_normal((4, 3)))
    np.testing.assert_array_equal(g, g_before)  # the caller's gradient is untouched


def test_sgd_formula_by_hand():
    w = np.array([1.0, -2.0])
    opt = optimizers.SGD(learning_rate=0.1, momentum=0.9)
    opt.apply([np.array([0.5, 1.0])], [w])   # m = -0.05, -0.1
    opt.apply([np.array([0.5, 1.0])], [w])   # m = -0.095, -0.19
    np.testing.assert_allclose(w, [1.0 - 0.05 - 0.095, -2.0 - 0.1 - 0.19])


def test_optimizer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="Only one of clipnorm"):
        optimizers.SGD(clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        optimizers.Adam(learning_rate=-1)
    with pytest.raises(TypeError, match="nesterov"):
        optimizers.SGD(nesterov="yes")
    with pytest.raises(ValueError, match="unknown optimizer"):
        optimizers.get("adamax")
    with pytest.raises(ValueError, match=r"grads\[0\]: expected shape \(2,\)"):
        optimizers.SGD().apply([np.zeros(3)], [np.zeros(2)])
    with pytest.raises(ValueError, match="expected 1 gradients"):
        optimizers.SGD().apply([np.zeros(2), np.zeros(2)], [np.zeros(2)])
    assert isinstance(optimizers.get("ADAM"), optimizers.Adam)
    restored = optimizers.deserialize(optimizers.serialize(optimizers.RMSprop(0.3, rho=0.5)))
    assert restored.get_config() == optimizers.RMSprop(0.3, rho=0.5).get_config()


# -- losses ----------------------------------------------------------------------------------

def _probabilities(rng, shape):
    p = rng.uniform(0.02, 1.0, size=shape)
    return p / p.sum(-1, keepdims=True)


def _loss_cases(rng):
    """(our loss, keras loss name + kwargs, y_true, y_pred) over shapes with a time axis."""
    B, T, C = 4, 5, 3
    logits = rng.standard_normal((B, T, C)) * 3
    onehot = np.eye(C)[rng.integers(0, C, (B, T))]
    ids = rng.integers(0, C, (B, T))
    binary = rng.integers(0, 2, (B, T, 1)).astype(float)
    probs01 = rng.uniform(0, 1, (B, T, 1))
    probs01[0, 0, 0] = 1.0   # exercises the clipping at 1 - eps
    return [
        (losses.BinaryCrossentropy(), ("BinaryCrossentropy", {}), binary, probs01),
        (losses.BinaryCrossentropy(from_logits=True), ("BinaryCrossentropy", {"from_logits": True}),
         binary, rng.standard_normal((B, T, 1)) * 4),
        (losses.CategoricalCrossentropy(), ("CategoricalCrossentropy", {}), onehot,
         _probabilities(rng, (B, T, C)) * 1.3),   # unnormalised: Keras renormalises
        (losses.CategoricalCrossentropy(from_logits=True),
         ("CategoricalCrossentropy", {"from_logits": True}), onehot, logits),
        (losses.SparseCategoricalCrossentropy(), ("SparseCategoricalCrossentropy", {}), ids,
         _probabilities(rng, (B, T, C))),
        (losses.SparseCategoricalCrossentropy(from_logits=True),
         ("SparseCategoricalCrossentropy", {"from_logits": True}), ids[..., None], logits),
        (losses.MeanSquaredError(), ("MeanSquaredError", {}), rng.standard_normal((B, T, C)),
         rng.standard_normal((B, T, C))),
        (losses.MeanAbsoluteError(), ("MeanAbsoluteError", {}), rng.standard_normal((B, T, C)),
         rng.standard_normal((B, T, C))),
    ]


@pytest.mark.parametrize("case", range(8))
@pytest.mark.parametrize("masked", [False, True])
def test_loss_value_matches_keras(case, masked, request, rng):
    keras = require("keras", request)
    import jax.numpy as jnp
    ours, (keras_name, kwargs), y_true, y_pred = _loss_cases(rng)[case]
    mask = rng.uniform(size=y_pred.shape[:2]) > 0.3 if masked else None
    theirs = getattr(keras.losses, keras_name)(dtype="float64", **kwargs)

    def keras_loss(pred):
        tensor = jnp.asarray(pred)
        if mask is not None:
            tensor._keras_mask = jnp.asarray(mask)  # how Keras carries a mask to the loss
        return theirs(jnp.asarray(y_true), tensor)

    value, grad = ours.value_and_gradient(y_true, y_pred, mask=mask)
    expected_value = float(keras_loss(y_pred))
    # XLA's float64 log/exp on CPU are accurate to ~1e-8 relative, not to the last bit.
    assert_close(value, expected_value, rtol=1e-7)
    assert grad.shape == y_pred.shape and grad.dtype == y_pred.dtype


@pytest.mark.parametrize("case", range(8))
def test_loss_gradient_matches_finite_differences(case, rng):
    ours, _, y_true, y_pred = _loss_cases(rng)[case]
    y_pred = y_pred.copy()
    if case == 0:
        y_pred[0, 0, 0] = 0.5  # finite differences need a point away from the clip kink
    mask = rng.uniform(size=y_pred.shape[:2]) > 0.3
    _, grad = ours.value_and_gradient(y_true, y_pred, mask=mask)
    numeric = numerical_gradient(lambda: ours(y_true, y_pred, mask=mask), y_pred)
    assert_close(grad, numeric, rtol=1e-6)


def test_loss_keeps_float32_and_does_not_touch_inputs(rng):
    y_pred = rng.uniform(0.1, 0.9, (6, 1)).astype(np.float32)
    y_true = rng.integers(0, 2, 6)           # (6,) against (6, 1): Keras expands
    before = y_pred.copy()
    value, grad = losses.get("binary_crossentropy").value_and_gradient(y_true, y_pred)
    assert grad.dtype == np.float32 and isinstance(value, float)
    np.testing.assert_array_equal(y_pred, before)


def test_masked_loss_with_no_valid_step_is_zero():
    loss = losses.MeanSquaredError()
    value, grad = loss.value_and_gradient(np.ones((2, 3, 1)), np.zeros((2, 3, 1)),
                                          mask=np.zeros((2, 3), bool))
    assert value == 0.0 and not grad.any()


def test_loss_rejects_bad_input():
    with pytest.raises(ValueError, match=r"y_true: expected the shape of the predictions"):
        losses.MeanSquaredError()(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 2\]"):
        losses.SparseCategoricalCrossentropy()(np.array([0, 3]), np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="mask: expected shape"):
        losses.MeanSquaredError()(np.zeros((2, 3, 1)), np.zeros((2, 3, 1)),
                                  mask=np.ones((2, 4), bool))
    with pytest.raises(TypeError, match="y_pred: expected a float array"):
        losses.MeanSquaredError()(np.zeros(3), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get("hinge")


# -- metrics ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["BinaryAccuracy", "CategoricalAccuracy",
                                  "SparseCategoricalAccuracy"])
def test_metrics_accumulate_like_keras(name, request, rng):
    keras = require("keras", request)
    import jax.numpy as jnp
    ours = getattr(metrics, name)()
    theirs = getattr(keras.metrics, name)()
    for batch in range(3):
        B, T, C = 5, 4, 3
        if name == "BinaryAccuracy":
            y_true = rng.integers(0, 2, (B, T, 1)).astype(float)
            y_pred = rng.uniform(size=(B, T, 1))
        elif name == "CategoricalAccuracy":
            y_true = np.eye(C)[rng.integers(0, C, (B, T))]
            y_pred = rng.uniform(size=(B, T, C))
        else:
            y_true = rng.integers(0, C, (B, T))
            y_pred = rng.uniform(size=(B, T, C))
        mask = rng.uniform(size=(B, T)) > 0.4 if batch != 1 else None
        ours.update_state(y_true, y_pred, mask=mask)
        tensor = jnp.asarray(y_pred)
        if mask is not None:
            tensor._keras_mask = jnp.asarray(mask)
        theirs.update_state(jnp.asarray(y_true), tensor)
        assert_close(ours.result(), float(theirs.result()), rtol=1e-6)
    ours.reset_state()
    assert ours.result() == 0.0


def test_accuracy_resolution_follows_keras_compile():
    assert isinstance(metrics.get("accuracy", (8, 1), (None, 1)), metrics.BinaryAccuracy)
    assert isinstance(metrics.get("acc", (8,), (None, 5)), metrics.SparseCategoricalAccuracy)
    assert isinstance(metrics.get("accuracy", (8, 7, 1), (None, 7, 5)),
                      metrics.SparseCategoricalAccuracy)
    assert isinstance(metrics.get("accuracy", (8, 5), (None, 5)), metrics.CategoricalAccuracy)
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.get("f1")


def test_metric_functions_by_hand():
    y_true = np.array([[1, 0], [0, 1]])
    y_pred = np.array([[0.7, 0.3], [0.6, 0.4]])
    np.testing.assert_array_equal(metrics.categorical_accuracy(y_true, y_pred), [1, 0])
    np.testing.assert_array_equal(metrics.sparse_categorical_accuracy([0, 0], y_pred), [1, 1])
    np.testing.assert_array_equal(metrics.binary_accuracy([[1], [0]], [[0.51], [0.5]]),
                                  [[1], [1]])


# -- callbacks -------------------------------------------------------------------------------

class _FakeModel:
    """Just enough of a model for EarlyStopping: weights to snapshot and restore."""

    def __init__(self):
        self.stop_training = False
        self.value = 0
        self.metrics = []

    def get_weights(self):
        return [np.array(self.value)]

    def set_weights(self, weights):
        self.value = int(weights[0])


def _drive(callback, series, key="val_loss"):
    model = _FakeModel()
    hooks = callbacks.CallbackList([callback], model, {"epochs": len(series)})
    hooks.on_train_begin()
    stopped_at = None
    for epoch, value in enumerate(series):
        model.value = epoch
        hooks.on_epoch_end(epoch, {key: value})
        if model.stop_training:
            stopped_at = epoch
            break
    hooks.on_train_end()
    return stopped_at, model


@pytest.mark.parametrize("series,patience,min_delta,expected_stop", [
    ([1.0, 0.9, 0.95, 0.97, 0.5], 2, 0, 3),        # two epochs without improvement
    ([1.0, 0.9, 0.8, 0.7, 0.6], 1, 0, None),        # keeps improving
    ([1.0, 0.99, 0.98, 0.97], 1, 0.05, 1),          # improvements below min_delta don't count
    ([1.0, 1.1, 0.9], 0, 0, 1),                    # patience 0 stops at the first miss
])
def test_early_stopping_matches_keras(series, patience, min_delta, expected_stop, request):
    keras = require("keras", request)
    stopped, _ = _drive(callbacks.EarlyStopping(patience=patience, min_delta=min_delta), series)
    assert stopped == expected_stop

    # The same series through Keras' own EarlyStopping.
    class KerasFake:
        stop_training = False
        metrics = []

        def get_weights(self):
            return []
    theirs = keras.callbacks.EarlyStopping(patience=patience, min_delta=min_delta)
    theirs.set_model(KerasFake())
    theirs.on_train_begin()
    keras_stop = None
    for epoch, value in enumerate(series):
        theirs.on_epoch_end(epoch, {"val_loss": value})
        if theirs.model.stop_training:
            keras_stop = epoch
            break
    assert keras_stop == expected_stop


def test_early_stopping_restores_best_weights_and_monitors_accuracy():
    stopped, model = _drive(callbacks.EarlyStopping(patience=2, restore_best_weights=True),
                            [1.0, 0.5, 0.7, 0.8, 0.1])
    assert stopped == 3 and model.value == 1
    stopped, model = _drive(callbacks.EarlyStopping(monitor="val_accuracy", patience=1,
                                                    restore_best_weights=True),
                            [0.5, 0.8, 0.7, 0.9], key="val_accuracy")
    assert stopped == 2 and model.value == 1
    with pytest.raises(ValueError, match="mode"):
        callbacks.EarlyStopping(mode="up")


def test_history_records_every_epoch():
    history = callbacks.History()
    history.on_train_begin()
    for epoch in range(3):
        history.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "accuracy": 0.5})
    assert history.epoch == [0, 1, 2]
    assert history.history["loss"] == [1.0, 0.5, 1.0 / 3]


def test_progress_bar_writes_to_the_stream():
    import io
    stream = io.StringIO()
    bar = callbacks.ProgbarLogger(verbose=1, stream=stream)
    bar.set_params({"epochs": 2, "steps": 3})
    bar.on_epoch_begin(0)
    for step in range(3):
        bar.on_train_batch_end(step, {"loss": 0.5})
    bar.on_epoch_end(0, {"loss": 0.25, "val_loss": 0.3})
    text = stream.getvalue()
    assert "Epoch 1/2" in text and "3/3 [" in text and "val_loss: 0.3000" in text
