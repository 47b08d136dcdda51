"""Keras-style models: the functional ``Model``, ``Sequential``, training and saving.

A model is a graph of layer calls recorded by ``fusedrnn.engine`` (``Input`` ->
layer calls -> outputs).  Running it means calling every node's ``layer.forward`` in
topological order, carrying each tensor's mask along (``layer.compute_mask``, Keras 3.15
rules).  Training runs the forward pass with ``training=True`` keeping each layer's tape,
takes the loss gradient at every output (``fusedrnn.losses``, padded steps masked), and
calls ``layer.backward`` in reverse topological order, summing the gradients of tensors
read by several nodes and of layers called more than once.  The optimizer then updates
the layers' trainable arrays in place.

Saving (``model.save(path)`` / ``load_model(path)``) writes a zip archive holding
``model.json`` (architecture, layer configs, compile settings) and one ``.npy`` file per
weight array, in ``get_weights()`` order; nothing is pickled.
"""
from __future__ import annotations

import copy
import io
import json
import math
import zipfile

import numpy as np

from . import callbacks as callbacks_module
from . import engine
from . import losses as losses_module
from . import metrics as metrics_module
from . import optimizers as optimizers_module
from .engine import SymbolicTensor

__all__ = ["Model", "Sequential", "load_model"]

FORMAT_NAME = "fusedrnn.model"
FORMAT_VERSION = 1


def _is_layer(obj) -> bool:
    return all(hasattr(obj, attr) for attr in ("forward", "backward", "build", "get_config"))


def _accumulate(store: dict, key, gradient):
    """store[key] += gradient without ever writing into an array someone else owns."""
    if gradient is None:
        return
    if key in store:
        store[key] = store[key] + gradient
    else:
        store[key] = gradient


def _structure_map(fn, structure):
    if isinstance(structure, (list, tuple)):
        return [_structure_map(fn, item) for item in structure]
    return fn(structure)


def _num_samples(arrays, argname) -> int:
    sizes = {a.shape[0] for a in arrays if a.ndim > 0}
    if any(a.ndim == 0 for a in arrays):
        raise ValueError(f"{argname}: expected arrays with a batch axis, got a scalar")
    if len(sizes) != 1:
        raise ValueError(f"{argname}: all arrays must have the same number of samples (first "
                         f"axis), got {sorted(sizes)}")
    return sizes.pop()


class Model:
    """A functional model: ``Model(inputs, outputs)`` over engine SymbolicTensors.

    inputs / outputs: a SymbolicTensor or a list of them.  Several inputs and outputs are
    supported; layers may be shared; an RNN's ``initial_state`` may come from other
    layers' outputs (e.g. the encoder's final states in an encoder-decoder)."""

    def __init__(self, inputs=None, outputs=None, name=None):
        self.name = name or "functional"
        self.stop_training = False
        self.optimizer = None
        self._compiled = None
        self._graph_ready = False
        if type(self) is Model or inputs is not None or outputs is not None:
            self._init_graph(inputs, outputs)

    # -- graph --------------------------------------------------------------------------
    def _init_graph(self, inputs, outputs):
        if inputs is None or outputs is None:
            raise ValueError("Model: expected Model(inputs, outputs) with SymbolicTensors from "
                             "fusedrnn.engine.Input and layer calls")
        self._inputs_were_list = isinstance(inputs, (list, tuple))
        self._outputs_were_list = isinstance(outputs, (list, tuple))
        inputs = list(inputs) if self._inputs_were_list else [inputs]
        outputs = list(outputs) if self._outputs_were_list else [outputs]
        for k, tensor in enumerate(inputs):
            if not isinstance(tensor, SymbolicTensor) or tensor.node is None \
                    or not tensor.node.is_input:
                raise TypeError(f"inputs[{k}]: expected a SymbolicTensor from "
                                f"fusedrnn.engine.Input, got {tensor!r}")
        for k, tensor in enumerate(outputs):
            if not isinstance(tensor, SymbolicTensor):
                raise TypeError(f"outputs[{k}]: expected a SymbolicTensor, got "
                                f"{type(tensor).__name__}")
        if not outputs:
            raise ValueError("outputs: expected at least one output tensor")
        self.inputs = inputs
        self.outputs = outputs
        self._nodes, self._layers = engine.map_graph(inputs, outputs)
        self._graph_ready = True

    def _ensure_graph(self, x=None):
        """Raise unless the graph exists.  x: input data that a model with a deferred
        build (Sequential without Input) may build from; unused here."""
        if not self._graph_ready:
            raise ValueError(f"{self.name}: the model has no inputs yet")

    @property
    def layers(self) -> list:
        """The model's layers (Keras order, without input placeholders)."""
        self._ensure_graph()
        return list(self._layers)

    def get_layer(self, name=None, index=None):
        """A layer by name or by position in ``layers``."""
        if (name is None) == (index is None):
            raise ValueError("get_layer: pass exactly one of name or index")
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"get_layer: no layer named {name!r}; layers are "
                         f"{[l.name for l in self.layers]}")

    @property
    def weights(self) -> list:
        return [w for layer in self.layers for w in layer.weights]

    @property
    def trainable_weights(self) -> list:
        return [w for layer in self.layers for w in layer.trainable_weights]

    def count_params(self) -> int:
        return int(sum(w.size for w in self.weights))

    def get_weights(self) -> list:
        """Copies of every layer's weights, concatenated in ``layers`` order (Keras')."""
        return [np.array(w, copy=True) for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights) -> None:
        """Load a list in get_weights() order (e.g. ``keras_model.get_weights()``)."""
        weights = list(weights)
        expected = sum(len(layer.weights) for layer in self.layers)
        if len(weights) != expected:
            raise ValueError(f"weights: expected a list of {expected} arrays (the model's "
                             f"get_weights() order), got {len(weights)}")
        position = 0
        for layer in self.layers:
            count = len(layer.weights)
            layer.set_weights(weights[position:position + count])
            position += count

    @property
    def output_names(self) -> list:
        names = []
        for tensor in self.outputs:
            base = tensor.node.layer.name if tensor.node.layer is not None else tensor.name
            name, suffix = base, 1
            while name in names:
                name, suffix = f"{base}_{suffix}", suffix + 1
            names.append(name)
        return names

    @property
    def input_names(self) -> list:
        return [t.name for t in self.inputs]

    # -- running the graph ----------------------------------------------------------------
    def _standardize_inputs(self, x, argname="x") -> list:
        """Model inputs as a list of arrays in the Input dtypes (copies, never in place)."""
        self._ensure_graph(x)
        if isinstance(x, dict):
            missing = [n for n in self.input_names if n not in x]
            if missing:
                raise ValueError(f"{argname}: missing inputs {missing}")
            x = [x[n] for n in self.input_names]
        arrays = list(x) if isinstance(x, (list, tuple)) and len(self.inputs) > 1 else [x]
        if isinstance(x, (list, tuple)) and len(self.inputs) == 1 and len(x) == 1 \
                and isinstance(x[0], np.ndarray):
            arrays = [x[0]]
        if len(arrays) != len(self.inputs):
            raise ValueError(f"{argname}: the model has {len(self.inputs)} inputs, got "
                             f"{len(arrays)} arrays")
        result = []
        for k, (array, tensor) in enumerate(zip(arrays, self.inputs)):
            name = argname if len(self.inputs) == 1 else f"{argname}[{k}]"
            array = np.asarray(array)
            if array.dtype.kind not in "biuf":
                raise TypeError(f"{name}: expected a numeric array, got dtype {array.dtype}")
            expected = tensor.shape[1:]
            if array.ndim != len(tensor.shape) or any(
                    e is not None and s != e for s, e in zip(array.shape[1:], expected)):
                shown = ("batch",) + tuple("?" if e is None else e for e in expected)
                raise ValueError(f"{name}: expected shape {shown}, got {array.shape}")
            if array.dtype != tensor.dtype:
                if tensor.dtype.kind in "iu" and array.dtype.kind == "f" and \
                        np.any(array != np.round(array)):
                    raise TypeError(f"{name}: expected integer ids (dtype {tensor.dtype}), got "
                                    f"non-integer floats")
                array = array.astype(tensor.dtype)
            result.append(array)
        _num_samples(result, argname)
        return result

    def _standardize_targets(self, y, argname="y") -> list:
        if isinstance(y, dict):
            missing = [n for n in self.output_names if n not in y]
            if missing:
                raise ValueError(f"{argname}: missing targets for outputs {missing}")
            y = [y[n] for n in self.output_names]
        if len(self.outputs) == 1:
            targets = [y[0]] if isinstance(y, (list, tuple)) and len(y) == 1 and \
                isinstance(y[0], np.ndarray) else [y]
        else:
            if not isinstance(y, (list, tuple)) or len(y) != len(self.outputs):
                raise ValueError(f"{argname}: the model has {len(self.outputs)} outputs; pass a "
                                 f"list of {len(self.outputs)} target arrays")
            targets = list(y)
        targets = [np.asarray(t) for t in targets]
        for k, t in enumerate(targets):
            if t.dtype.kind not in "biuf":
                raise TypeError(f"{argname}: expected numeric targets, got dtype {t.dtype}")
        _num_samples(targets, argname)
        return targets

    def _run(self, arrays, training: bool):
        """Forward every node.  Returns (outputs, output_masks, records) where records are
        (node, tape) pairs in execution order (tapes only when training)."""
        values, masks = {}, {}
        for tensor, array in zip(self.inputs, arrays):
            values[id(tensor)] = array
            masks[id(tensor)] = None
        records = []
        for node in self._nodes:
            x = _structure_map(lambda t: values[id(t)], node.inputs)
            if isinstance(node.inputs, list):
                mask = [masks[id(t)] for t in node.inputs]
                if all(m is None for m in mask):
                    mask = None
            else:
                mask = masks[id(node.inputs)]
            state = None
            if node.initial_state is not None:
                state = [values[id(t)] for t in node.initial_state]
            out, tape = node.layer.forward(x, mask=mask, training=training, initial_state=state)
            outs = list(out) if node.returns_list else [out]
            if len(outs) != len(node.outputs):
                raise RuntimeError(f"{node.layer.name}: forward returned {len(outs)} outputs, "
                                   f"the graph expects {len(node.outputs)}")
            out_masks = node.layer.compute_mask(x, mask)
            if not isinstance(out_masks, (list, tuple)):
                out_masks = [out_masks] + [None] * (len(outs) - 1)
            for tensor, array, out_mask in zip(node.outputs, outs, out_masks):
                values[id(tensor)] = array
                masks[id(tensor)] = out_mask
            records.append((node, tape))
        return ([values[id(t)] for t in self.outputs], [masks[id(t)] for t in self.outputs],
                records)

    def _backward(self, records, output_grads, input_gradients=True):
        """Reverse pass.  output_grads: list aligned with self.outputs (None = 0).
        Returns gradients aligned with trainable_weights and with the model inputs; with
        input_gradients=False the latter are not wanted, so a recurrent layer fed straight
        by model inputs skips its input's gradient (one GEMM less, as in Keras and torch,
        whose autodiff computes no gradient nobody asks for) and they come back None."""
        model_inputs = {id(t) for t in self.inputs}
        grads = {}
        for tensor, g in zip(self.outputs, output_grads):
            _accumulate(grads, id(tensor), g)
        layer_grads = {}
        for node, tape in reversed(records):
            d_outs = [grads.get(id(t)) for t in node.outputs]
            if all(g is None for g in d_outs):
                continue  # nothing downstream of this call reaches the loss
            d_outputs = d_outs if node.returns_list else d_outs[0]
            in_tensors = node.inputs if isinstance(node.inputs, list) else [node.inputs]
            if (not input_gradients and getattr(node.layer, "_skips_input_gradient", False)
                    and all(id(t) in model_inputs for t in in_tensors)):
                d_inputs, d_state, d_weights = node.layer.backward(tape, d_outputs,
                                                                   input_gradient=False)
            else:
                d_inputs, d_state, d_weights = node.layer.backward(tape, d_outputs)
            d_in_list = d_inputs if isinstance(node.inputs, list) else [d_inputs]
            for tensor, g in zip(in_tensors, d_in_list):
                _accumulate(grads, id(tensor), g)
            if node.initial_state is not None and d_state is not None:
                for tensor, g in zip(node.initial_state, d_state):
                    _accumulate(grads, id(tensor), g)
            key = id(node.layer)
            if key in layer_grads:
                layer_grads[key] = [a if b is None else (b if a is None else a + b)
                                    for a, b in zip(layer_grads[key], d_weights)]
            else:
                layer_grads[key] = list(d_weights)
        weight_grads = []
        for layer in self.layers:
            per_layer = layer_grads.get(id(layer))
            for k, w in enumerate(layer.trainable_weights):
                g = per_layer[k] if per_layer is not None else None
                # A weight that does not reach the loss gets a zero gradient (as in Keras,
                # where the optimizer still applies momentum to it).
                weight_grads.append(np.zeros_like(w) if g is None else g)
        input_grads = [grads.get(id(t)) for t in self.inputs]
        return weight_grads, input_grads

    def __call__(self, inputs, training=False):
        """Run the model on arrays and return its output(s)."""
        if engine.is_symbolic(inputs):
            raise TypeError(f"{self.name}: calling a model on SymbolicTensors (nesting models) "
                            "is not supported; build one graph from the layers instead")
        arrays = self._standardize_inputs(inputs)
        outputs, _, _ = self._run(arrays, training=bool(training))
        return outputs if self._outputs_were_list else outputs[0]

    # -- compile / losses -------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None):
        """Configure training.  optimizer: name or fusedrnn.optimizers instance; loss: name
        or fusedrnn.losses instance, or one per output (list or dict by output name);
        metrics: a list of names/instances (applied to every output) or one list per
        output; loss_weights: one float per output (list or dict)."""
        if loss is None:
            raise ValueError("compile: loss is required (e.g. 'mse' or "
                             "'sparse_categorical_crossentropy')")
        names = self._compile_output_names()
        n_out = len(names)

        def per_output(value, argname):
            if isinstance(value, dict):
                unknown = set(value) - set(names)
                if unknown:
                    raise ValueError(f"{argname}: unknown output names {sorted(unknown)}; "
                                     f"outputs are {names}")
                return [value.get(n) for n in names]
            if isinstance(value, (list, tuple)):
                if len(value) != n_out:
                    raise ValueError(f"{argname}: expected {n_out} entries (one per output), "
                                     f"got {len(value)}")
                return list(value)
            return [value] * n_out

        loss_list = per_output(loss, "loss")
        loss_objects = [losses_module.get(l) if l is not None else None for l in loss_list]
        if all(l is None for l in loss_objects):
            raise ValueError("loss: at least one output needs a loss")
        weights = [1.0] * n_out if loss_weights is None else per_output(loss_weights,
                                                                         "loss_weights")
        weights = [1.0 if w is None else float(w) for w in weights]
        if metrics is None:
            metric_ids = [[] for _ in range(n_out)]
        elif isinstance(metrics, dict):
            metric_ids = [list(m) if isinstance(m, (list, tuple)) else ([] if m is None else [m])
                          for m in per_output(metrics, "metrics")]
        elif isinstance(metrics, (list, tuple)) and metrics and all(
                isinstance(m, (list, tuple)) for m in metrics):
            metric_ids = [list(m) for m in per_output(list(metrics), "metrics")]
        elif isinstance(metrics, (list, tuple)):
            metric_ids = [list(metrics) for _ in range(n_out)]
        else:
            raise TypeError(f"metrics: expected a list of metric names or instances, got "
                            f"{type(metrics).__name__}")
        self.optimizer = optimizers_module.get(optimizer)
        self._compiled = {"losses": loss_objects, "loss_weights": weights,
                          "metrics": metric_ids}
        self.stop_training = False

    def _compile_output_names(self) -> list:
        self._ensure_graph()
        return self.output_names

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def _require_compiled(self, what):
        if self._compiled is None:
            raise RuntimeError(f"{what}: call model.compile(optimizer, loss, metrics) first")

    def _loss_and_output_grads(self, targets, outputs, masks):
        """Total weighted loss, per-output losses and d loss / d output."""
        total, per_output, grads = 0.0, [], []
        single = len(self.outputs) == 1
        for k, (loss, weight, y, y_pred, mask) in enumerate(zip(
                self._compiled["losses"], self._compiled["loss_weights"], targets, outputs,
                masks)):
            if loss is None:
                per_output.append(None)
                grads.append(None)
                continue
            try:
                value, grad = loss.value_and_gradient(y, y_pred, mask=mask)
            except (ValueError, TypeError) as exc:
                # Name the target array and the output it is compared with.
                where = "y" if single else f"y[{k}]"
                raise type(exc)(f"{where} for output {self.output_names[k]!r} "
                                f"({loss.name}): {exc}") from None
            total += weight * value
            per_output.append(value)
            grads.append(grad * grad.dtype.type(weight) if weight != 1.0 else grad)
        return total, per_output, grads

    def loss_and_gradients(self, x, y):
        """(loss, gradients aligned with trainable_weights) of one batch, training=True.

        Nothing is updated; this is the train step without the optimizer (and what the
        finite-difference tests check)."""
        self._require_compiled("loss_and_gradients")
        arrays = self._standardize_inputs(x)
        targets = self._standardize_targets(y)
        outputs, masks, records = self._run(arrays, training=True)
        loss, _, output_grads = self._loss_and_output_grads(targets, outputs, masks)
        weight_grads, _ = self._backward(records, output_grads, input_gradients=False)
        return loss, weight_grads

    # -- metrics bookkeeping --------------------------------------------------------------
    def _make_metrics(self, targets):
        """Fresh metric objects per output (accuracy resolved from the target shapes)."""
        made = []
        for ids, y, tensor in zip(self._compiled["metrics"], targets, self.outputs):
            objs = []
            for identifier in ids:
                if isinstance(identifier, metrics_module.Metric):
                    metric = copy.deepcopy(identifier)
                    metric.reset_state()
                else:
                    metric = metrics_module.get(identifier, y.shape, tensor.shape)
                objs.append(metric)
            made.append(objs)
        return made

    def _log_names(self):
        names = self.output_names
        multi = len(self.outputs) > 1
        return names, multi

    def _collect_logs(self, loss_tracker, per_output_trackers, metric_objs, prefix=""):
        names, multi = self._log_names()
        logs = {prefix + "loss": loss_tracker.result()}
        if multi:
            for name, tracker, loss in zip(names, per_output_trackers, self._compiled["losses"]):
                if loss is not None:
                    logs[f"{prefix}{name}_loss"] = tracker.result()
        for name, objs in zip(names, metric_objs):
            for metric in objs:
                key = f"{name}_{metric.name}" if multi else metric.name
                logs[prefix + key] = metric.result()
        return logs

    def _update_trackers(self, batch_size, loss, per_output, trackers, metric_objs, targets,
                         outputs, masks):
        trackers[0].update_state(loss, sample_weight=batch_size)
        for tracker, value in zip(trackers[1], per_output):
            if value is not None:
                tracker.update_state(value, sample_weight=batch_size)
        for objs, y, y_pred, mask in zip(metric_objs, targets, outputs, masks):
            for metric in objs:
                metric.update_state(y, y_pred, mask=mask)

    # -- training --------------------------------------------------------------------------
    def train_on_batch(self, x, y) -> float:
        """One optimizer step on one batch; returns the batch loss (before the step)."""
        self._require_compiled("train_on_batch")
        loss, grads = self.loss_and_gradients(x, y)
        self.optimizer.apply(grads, self.trainable_weights)
        return loss

    def fit(self, x=None, y=None, batch_size=32, epochs=1, verbose=1, callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0):
        """Train for `epochs` epochs of mini-batches; returns a callbacks.History.

        validation_split: the fraction of samples taken *from the end* before shuffling
        (Keras' rule); validation_data: (x_val, y_val) instead.  shuffle: reshuffle the
        training samples every epoch (NumPy's global random state).  verbose: 0 silent,
        1 progress bar, 2 one line per epoch.  Logs hold loss and metrics averaged over
        the epoch's batches (weighted by batch size), plus val_* when validating."""
        self._require_compiled("fit")
        if x is None or y is None:
            raise ValueError("fit: both x and y are required")
        batch_size = self._check_batch_size(batch_size)
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs: expected a non-negative int, got {epochs!r}")
        if not (isinstance(validation_split, (int, float)) and 0 <= validation_split < 1):
            raise ValueError(f"validation_split: expected a float in [0, 1), got "
                             f"{validation_split!r}")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose: expected 0, 1 or 2, got {verbose!r}")
        self._ensure_built_for(x)
        arrays = self._standardize_inputs(x)
        targets = self._standardize_targets(y)
        n = arrays[0].shape[0]
        if targets[0].shape[0] != n:
            raise ValueError(f"x and y: different numbers of samples ({n} and "
                             f"{targets[0].shape[0]})")
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data: expected a tuple (x_val, y_val)")
            val = (self._standardize_inputs(validation_data[0], "validation_data[0]"),
                   self._standardize_targets(validation_data[1], "validation_data[1]"))
        elif validation_split:
            n_val = int(n * validation_split)
            if n_val == 0 or n_val == n:
                raise ValueError(f"validation_split={validation_split} leaves "
                                 f"{n - n_val} training and {n_val} validation samples of {n}")
            split = n - n_val
            val = ([a[split:] for a in arrays], [t[split:] for t in targets])
            arrays = [a[:split] for a in arrays]
            targets = [t[:split] for t in targets]
            n = split
        steps = math.ceil(n / batch_size)

        history = callbacks_module.History()
        callback_list = list(callbacks or [])
        if verbose:
            callback_list.append(callbacks_module.ProgbarLogger(verbose))
        callback_list.append(history)
        params = {"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size}
        hooks = callbacks_module.CallbackList(callback_list, self, params)

        self.stop_training = False
        hooks.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            hooks.on_epoch_begin(epoch)
            order = np.random.permutation(n) if shuffle else np.arange(n)
            loss_tracker = metrics_module.Mean(name="loss")
            output_trackers = [metrics_module.Mean() for _ in self.outputs]
            metric_objs = self._make_metrics(targets)
            for step in range(steps):
                hooks.on_train_batch_begin(step)
                index = order[step * batch_size:(step + 1) * batch_size]
                xb = [a[index] for a in arrays]
                yb = [t[index] for t in targets]
                outputs, masks, records = self._run(xb, training=True)
                loss, per_output, output_grads = self._loss_and_output_grads(yb, outputs,
                                                                             masks)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"fit: the loss became {loss} at epoch "
                                             f"{epoch + 1}, batch {step + 1}")
                weight_grads, _ = self._backward(records, output_grads, input_gradients=False)
                del records  # release the tapes before the update
                self.optimizer.apply(weight_grads, self.trainable_weights)
                self._update_trackers(len(index), loss, per_output,
                                      (loss_tracker, output_trackers), metric_objs, yb,
                                      outputs, masks)
                logs = self._collect_logs(loss_tracker, output_trackers, metric_objs)
                hooks.on_train_batch_end(step, logs)
            if val is not None:
                val_logs = self._evaluate_arrays(val[0], val[1], batch_size)
                logs.update({"val_" + k: v for k, v in val_logs.items()})
            hooks.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        hooks.on_train_end(logs)
        return history

    @staticmethod
    def _check_batch_size(batch_size):
        if batch_size is None:
            return 32
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        return int(batch_size)

    def _evaluate_arrays(self, arrays, targets, batch_size):
        n = arrays[0].shape[0]
        loss_tracker = metrics_module.Mean(name="loss")
        output_trackers = [metrics_module.Mean() for _ in self.outputs]
        metric_objs = self._make_metrics(targets)
        for start in range(0, n, batch_size):
            xb = [a[start:start + batch_size] for a in arrays]
            yb = [t[start:start + batch_size] for t in targets]
            outputs, masks, _ = self._run(xb, training=False)
            loss, per_output, _ = self._loss_and_output_grads(yb, outputs, masks)
            self._update_trackers(len(xb[0]), loss, per_output, (loss_tracker, output_trackers),
                                  metric_objs, yb, outputs, masks)
        return self._collect_logs(loss_tracker, output_trackers, metric_objs)

    def evaluate(self, x=None, y=None, batch_size=32, verbose=1, return_dict=False):
        """Loss (and metrics) over (x, y) with training=False.  Returns the loss alone when
        no metric was compiled, else [loss, *metrics]; a dict with return_dict=True."""
        self._require_compiled("evaluate")
        if x is None or y is None:
            raise ValueError("evaluate: both x and y are required")
        batch_size = self._check_batch_size(batch_size)
        self._ensure_built_for(x)
        arrays = self._standardize_inputs(x)
        targets = self._standardize_targets(y)
        if targets[0].shape[0] != arrays[0].shape[0]:
            raise ValueError(f"x and y: different numbers of samples ({arrays[0].shape[0]} "
                             f"and {targets[0].shape[0]})")
        logs = self._evaluate_arrays(arrays, targets, batch_size)
        if verbose:
            print(callbacks_module._format_logs(logs))
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=32, verbose=0):
        """Outputs for x computed in batches with training=False (a list for several
        outputs)."""
        batch_size = self._check_batch_size(batch_size)
        self._ensure_built_for(x)
        arrays = self._standardize_inputs(x)
        n = arrays[0].shape[0]
        chunks = [[] for _ in self.outputs]
        for start in range(0, max(n, 1), batch_size):  # an empty x still runs once: (0, ...) out
            outputs, _, _ = self._run([a[start:start + batch_size] for a in arrays],
                                      training=False)
            for store, out in zip(chunks, outputs):
                store.append(out)
        results = [np.concatenate(c, axis=0) for c in chunks]
        if verbose:
            print(f"predict: {n} samples")
        return results if self._outputs_were_list else results[0]

    def predict_on_batch(self, x):
        arrays = self._standardize_inputs(x)
        outputs, _, _ = self._run(arrays, training=False)
        return outputs if self._outputs_were_list else outputs[0]

    def reset_states(self):
        """Reset every stateful layer's state."""
        for layer in self.layers:
            if getattr(layer, "stateful", False) and hasattr(layer, "reset_state"):
                layer.reset_state()

    def _ensure_built_for(self, x):
        """Hook for Sequential's deferred build; functional models are always built."""
        self._ensure_graph()

    # -- summary ------------------------------------------------------------------------------
    def _layer_output_shapes(self):
        shapes = {}
        for node in self._nodes:
            out = [t.shape for t in node.outputs]
            shapes.setdefault(id(node.layer), out if len(out) > 1 else out[0])
        return shapes

    def summary(self, print_fn=None, line_length=78):
        """Print a Keras-like table: layer (type), output shape, parameter count."""
        self._ensure_graph()
        emit = print_fn or print
        shapes = self._layer_output_shapes()
        widths = (int(line_length * 0.42), int(line_length * 0.38))
        rule = "-" * line_length
        lines = [f'Model: "{self.name}"', "=" * line_length,
                 f"{'Layer (type)':<{widths[0]}}{'Output Shape':<{widths[1]}}Param #",
                 "=" * line_length]
        for tensor in self.inputs:
            lines.append(f"{tensor.name + ' (Input)':<{widths[0]}}"
                         f"{str(tensor.shape):<{widths[1]}}0")
            lines.append(rule)
        for layer in self.layers:
            label = f"{layer.name} ({type(layer).__name__})"
            count = int(sum(w.size for w in layer.weights))
            lines.append(f"{label:<{widths[0]}}{str(shapes.get(id(layer))):<{widths[1]}}{count}")
            lines.append(rule)
        total = self.count_params()
        trainable = int(sum(w.size for w in self.trainable_weights))
        lines[-1] = "=" * line_length
        lines += [f"Total params: {total}", f"Trainable params: {trainable}",
                  f"Non-trainable params: {total - trainable}", "_" * line_length]
        for line in lines:
            emit(line)

    # -- configs and saving ---------------------------------------------------------------
    def get_config(self) -> dict:
        """JSON-serialisable architecture: layers (by index), inputs, nodes, outputs."""
        from . import layers as layers_module
        self._ensure_graph()
        layer_ids = {id(layer): k for k, layer in enumerate(self.layers)}
        tensor_refs = {}
        for k, tensor in enumerate(self.inputs):
            tensor_refs[id(tensor)] = ["input", k, 0]
        nodes = []
        for position, node in enumerate(self._nodes):
            for index, tensor in enumerate(node.outputs):
                tensor_refs[id(tensor)] = ["node", position, index]

        def ref(tensor):
            return tensor_refs[id(tensor)]
        for node in self._nodes:
            nodes.append({
                "layer": layer_ids[id(node.layer)],
                "inputs": _structure_map(ref, node.inputs),
                "initial_state": None if node.initial_state is None
                else [ref(t) for t in node.initial_state],
            })
        return {
            "name": self.name,
            "layers": [layers_module.serialize(layer) for layer in self.layers],
            "inputs": [{"name": t.name, "shape": list(t.shape[1:]), "dtype": t.dtype.name,
                        "batch_size": t.shape[0]} for t in self.inputs],
            "nodes": nodes,
            "outputs": [ref(t) for t in self.outputs],
            "inputs_were_list": self._inputs_were_list,
            "outputs_were_list": self._outputs_were_list,
        }

    @classmethod
    def from_config(cls, config):
        from . import layers as layers_module
        layers = [layers_module.deserialize(c) for c in config["layers"]]
        inputs = [engine.Input(tuple(spec["shape"]), dtype=spec["dtype"], name=spec["name"],
                               batch_size=spec.get("batch_size")) for spec in config["inputs"]]
        produced = []

        def resolve(ref):
            if isinstance(ref, list) and ref and isinstance(ref[0], list):
                return [resolve(r) for r in ref]
            kind, position, index = ref
            if kind == "input":
                return inputs[position]
            return produced[position][index]
        for spec in config["nodes"]:
            layer = layers[spec["layer"]]
            state = spec["initial_state"]
            result = engine.symbolic_call(
                layer, resolve(spec["inputs"]),
                initial_state=None if state is None else [resolve(r) for r in state])
            produced.append(result if isinstance(result, list) else [result])
        outputs = [resolve(r) for r in config["outputs"]]
        return cls(inputs if config.get("inputs_were_list", len(inputs) > 1) else inputs[0],
                   outputs if config.get("outputs_were_list", len(outputs) > 1) else outputs[0],
                   name=config.get("name"))

    def _compile_config(self):
        if self._compiled is None:
            return None

        def metric_id(m):
            if isinstance(m, str):
                return m
            raise ValueError(f"save: metric objects cannot be saved ({m.name}); compile with "
                             "metric names to save the compile settings")
        return {
            "optimizer": optimizers_module.serialize(self.optimizer),
            "losses": [None if l is None else losses_module.serialize(l)
                       for l in self._compiled["losses"]],
            "loss_weights": self._compiled["loss_weights"],
            "metrics": [[metric_id(m) for m in ids] for ids in self._compiled["metrics"]],
        }

    def save(self, path) -> None:
        """Write the model to a zip archive: model.json (architecture, compile settings),
        weights/NNNNN.npy in get_weights() order and optimizer/*.npy (the optimizer's
        state, once it has taken a step).  No pickle is used."""
        self._ensure_graph()
        weights = self.get_weights()
        names = [f"weights/{k:05d}.npy" for k in range(len(weights))]
        document = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "class_name": type(self).__name__,
            "config": self.get_config(),
            "compile": self._compile_config(),
            "weights": names,
            "optimizer_state": None,
        }
        arrays = list(zip(names, weights))
        if self.optimizer is not None and self.optimizer.iterations > 0:
            # The optimizer's slots (momenta, ...) so that training resumes identically.
            iterations, state = self.optimizer.get_state(self.trainable_weights)
            slot_files = []
            for k, slots in enumerate(state):
                files = [f"optimizer/{k:05d}_{j}.npy" for j in range(len(slots))]
                arrays += list(zip(files, slots))
                slot_files.append(files)
            document["optimizer_state"] = {"iterations": iterations, "slots": slot_files}
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("model.json", json.dumps(document, indent=1))
            for name, array in arrays:
                buffer = io.BytesIO()
                np.save(buffer, array, allow_pickle=False)
                archive.writestr(name, buffer.getvalue())


    def load_weights(self, path) -> None:
        """Load weights from a Keras 3 ``.weights.h5`` file (``keras_model.save_weights``;
        needs h5py) or from an archive written by ``save``.  The architecture must match."""
        self._ensure_graph()
        if str(path).endswith(".h5"):
            from . import layers as layers_module
            layers_module.load_keras_weights_h5(self.layers, path)
            return
        self.set_weights(_read_archive(path)[1])


def _read_archive(path):
    """(document, weights) of a model archive written by Model.save."""
    with zipfile.ZipFile(path, "r") as archive:
        try:
            document = json.loads(archive.read("model.json"))
        except KeyError:
            raise ValueError(f"{path}: not a fusedrnn model archive (no model.json)") from None
        if document.get("format") != FORMAT_NAME:
            raise ValueError(f"{path}: unknown format {document.get('format')!r}")
        if document.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported format version {document.get('version')}")
        def load(name):
            return np.load(io.BytesIO(archive.read(name)), allow_pickle=False)
        weights = [load(name) for name in document["weights"]]
        optimizer_state = document.get("optimizer_state")
        if optimizer_state:
            document["_optimizer_slots"] = [[load(name) for name in files]
                                            for files in optimizer_state["slots"]]
    return document, weights


class Sequential(Model):
    """A linear stack of layers.  ``Sequential([Input(shape), layer, ...])`` builds
    immediately; without an Input the model builds at its first fit/predict/evaluate
    from the data's shape and dtype (integer data keeps its dtype, for Embedding)."""

    def __init__(self, layers=None, name=None):
        super().__init__(name=name or "sequential")
        self._stack = []
        self._input_tensor = None
        for item in layers or []:
            self.add(item)

    def add(self, layer):
        """Append a layer (or, first, an ``Input`` SymbolicTensor)."""
        if isinstance(layer, SymbolicTensor):
            if self._stack or self._input_tensor is not None:
                raise ValueError("Sequential.add: an Input can only come first")
            if layer.node is None or not layer.node.is_input:
                raise TypeError("Sequential.add: expected an Input() SymbolicTensor or a layer")
            self._input_tensor = layer
        elif _is_layer(layer):
            if getattr(layer, "return_state", False):
                raise ValueError(f"Sequential.add: {layer.name} has return_state=True; a "
                                 "Sequential model needs one output per layer (use the "
                                 "functional Model)")
            self._stack.append(layer)
        else:
            raise TypeError(f"Sequential.add: expected a fusedrnn layer, got "
                            f"{type(layer).__name__}")
        self._graph_ready = False
        if self._input_tensor is not None and self._stack:
            self._build_graph(self._input_tensor)

    def pop(self):
        """Remove the last layer."""
        if not self._stack:
            raise ValueError("Sequential.pop: the model has no layers")
        layer = self._stack.pop()
        self._graph_ready = False
        if self._input_tensor is not None and self._stack:
            self._build_graph(self._input_tensor)
        return layer

    def _build_graph(self, input_tensor):
        tensor = input_tensor
        for layer in self._stack:
            tensor = engine.symbolic_call(layer, tensor)
        self._init_graph(input_tensor, tensor)

    def build(self, input_shape, dtype=None):
        """Build from a full input shape (batch first, None allowed)."""
        if dtype is None:
            dtype = getattr(self._stack[0], "dtype", "float32") if self._stack else "float32"
        self._input_tensor = engine.Input(tuple(input_shape[1:]), dtype=dtype)
        self._build_graph(self._input_tensor)

    def _ensure_built_for(self, x):
        if self._graph_ready:
            return
        if not self._stack:
            raise ValueError(f"{self.name}: the model has no layers")
        if self._input_tensor is not None:
            self._build_graph(self._input_tensor)
            return
        array = np.asarray(x[0] if isinstance(x, (list, tuple)) else x)
        if array.ndim < 2:
            raise ValueError(f"x: expected an array with a batch axis and features, got shape "
                             f"{array.shape}")
        if array.dtype.kind in "biu":
            dtype = array.dtype if array.dtype.kind != "b" else np.int32
            shape = (None,) + (None,) * (array.ndim - 1)   # token ids: any length
        else:
            dtype = getattr(self._stack[0], "dtype", "float32") or "float32"
            shape = (None,) + (None,) * (array.ndim - 2) + (array.shape[-1],)
        self.build(shape, dtype=dtype)

    def _ensure_graph(self, x=None):
        if not self._graph_ready:
            if x is not None:
                self._ensure_built_for(x)
            else:
                raise ValueError(f"{self.name}: the model is not built yet; start it with "
                                 "Input(shape), call build(input_shape), or fit/predict first")

    @property
    def layers(self) -> list:
        return list(self._stack)

    def _compile_output_names(self) -> list:
        # compile() may come before the deferred build: one output, the last layer's.
        if self._graph_ready:
            return self.output_names
        return [self._stack[-1].name] if self._stack else ["output"]

    def __call__(self, inputs, training=False):
        if engine.is_symbolic(inputs):
            raise TypeError(f"{self.name}: calling a model on SymbolicTensors is not supported")
        self._ensure_built_for(inputs)
        return super().__call__(inputs, training=training)

    def get_config(self) -> dict:
        from . import layers as layers_module
        config = {"name": self.name,
                  "layers": [layers_module.serialize(layer) for layer in self._stack]}
        if self._graph_ready:
            tensor = self.inputs[0]
            config["input"] = {"shape": list(tensor.shape[1:]), "dtype": tensor.dtype.name,
                               "batch_size": tensor.shape[0], "name": tensor.name}
        return config

    @classmethod
    def from_config(cls, config):
        from . import layers as layers_module
        model = cls(name=config.get("name"))
        spec = config.get("input")
        if spec is not None:
            model.add(engine.Input(tuple(spec["shape"]), dtype=spec["dtype"],
                                   batch_size=spec.get("batch_size"), name=spec.get("name")))
        for layer_config in config["layers"]:
            model.add(layers_module.deserialize(layer_config))
        return model


_MODEL_CLASSES = {"Model": Model, "Sequential": Sequential}


def load_model(path, compile=True):
    """Rebuild a model written by ``Model.save``: same architecture and weights (and, with
    compile=True, the same optimizer - hyperparameters and state - losses and metrics, so
    that training resumes exactly where it stopped)."""
    document, weights = _read_archive(path)
    cls = _MODEL_CLASSES.get(document.get("class_name"))
    if cls is None:
        raise ValueError(f"{path}: unknown model class {document.get('class_name')!r}")
    model = cls.from_config(document["config"])
    if weights:
        if isinstance(model, Sequential) and not model._graph_ready:
            raise ValueError(f"{path}: the saved Sequential model was never built")
        model.set_weights(weights)
    settings = document.get("compile")
    if compile and settings is not None:
        model.compile(
            optimizer=optimizers_module.deserialize(settings["optimizer"]),
            loss=[None if l is None else losses_module.deserialize(l)
                  for l in settings["losses"]],
            metrics=settings["metrics"],
            loss_weights=settings["loss_weights"],
        )
        if document.get("optimizer_state"):
            model.optimizer.set_state(model.trainable_weights,
                                      document["optimizer_state"]["iterations"],
                                      document["_optimizer_slots"])
    return model

