"""Reading Keras 3 ``.weights.h5`` files (``model.save_weights``) into fusedrnn layers.

Keras 3 stores a Sequential/functional model's weights under ``layers/<key>/...`` where
<key> is the snake-case *class* name made unique in ``model.layers`` order
(``lstm``, ``lstm_1``, ...; keras/src/saving/saving_lib.py ``_save_container_state``), and
each layer's variables as datasets ``vars/0``, ``vars/1``... of the object that owns them:

    Dense, Embedding          layers/dense/vars/{0,1}
    LSTM, GRU, SimpleRNN      layers/lstm/cell/vars/{0,1,2}
    Bidirectional             layers/bidirectional/{forward_layer,backward_layer}/cell/vars/...
    TimeDistributed           layers/time_distributed/layer/(cell/)vars/...

Our layer classes have Keras' class names, so the same keys are recomputed from the list of
layers; weight-less layers (Dropout, InputLayer...) keep their slot in the count.
"""
from __future__ import annotations

from .base import Layer, snake_case

__all__ = ["load_keras_weights_h5"]


def _h5py():
    try:
        import h5py
    except ImportError:  # optional extra
        raise ImportError(
            "load_keras_weights_h5 needs h5py: pip install h5py (or fusedrnn[h5])"
        ) from None
    return h5py


def _numbered_vars(group, path):
    """Arrays vars/0, vars/1, ... of a group, in order ([] when the group has none)."""
    if "vars" not in group:
        return []
    variables = group["vars"]
    names = sorted(variables.keys(), key=int)
    if [int(n) for n in names] != list(range(len(names))):
        raise ValueError(f"{path}/vars: expected datasets named 0..{len(names) - 1}, got {names}")
    return [variables[n][()] for n in names]


def _layer_arrays(layer, group, path):
    """Keras' arrays for one of our layers, in get_weights() order."""
    from .recurrent import _RNN
    from .wrappers import Bidirectional, TimeDistributed

    if isinstance(layer, Bidirectional):
        arrays = []
        for attribute, sub in (("forward_layer", layer.forward_layer),
                               ("backward_layer", layer.backward_layer)):
            if attribute not in group:
                raise ValueError(f"{path}: missing group {attribute!r} for Bidirectional")
            arrays += _layer_arrays(sub, group[attribute], f"{path}/{attribute}")
        return arrays
    if isinstance(layer, TimeDistributed):
        if "layer" not in group:
            raise ValueError(f"{path}: missing group 'layer' for TimeDistributed")
        return _layer_arrays(layer.layer, group["layer"], f"{path}/layer")
    if isinstance(layer, _RNN):
        if "cell" not in group:
            raise ValueError(f"{path}: missing group 'cell' for {type(layer).__name__}")
        return _numbered_vars(group["cell"], f"{path}/cell")
    return _numbered_vars(group, path)


def load_keras_weights_h5(layers, path):
    """Load a Keras 3 ``.weights.h5`` file (from ``model.save_weights``) into ``layers``.

    ``layers`` is the model's layer list in ``model.layers`` order (Keras' order; the file
    addresses layers by class name and position).  Every layer that has weights must be
    built.  Shapes and counts are checked per layer (ValueError naming the layer) before
    anything is assigned, so a bad file leaves the layers unchanged.
    """
    layers = list(layers)
    for layer in layers:
        if not isinstance(layer, Layer):
            raise TypeError(f"layers: expected fusedrnn layers, got {type(layer).__name__}")
    h5py = _h5py()
    staged = []
    with h5py.File(path, "r") as handle:
        if "layers" not in handle:
            raise ValueError(f"{path}: not a Keras 3 weights file (no 'layers' group)")
        root = handle["layers"]
        used = {}
        for layer in layers:
            base = snake_case(type(layer).__name__)
            count = used.get(base)
            used[base] = 0 if count is None else count + 1
            key = base if count is None else f"{base}_{count + 1}"
            if key not in root:
                if not layer.weights:
                    continue  # weight-less layer: only its slot in the count matters
                raise ValueError(
                    f"{path}: no weights for layer {layer.name!r} (looked for layers/{key}; "
                    f"the file has {sorted(root.keys())})"
                )
            arrays = _layer_arrays(layer, root[key], f"layers/{key}")
            if arrays and not layer.built:
                raise ValueError(f"{layer.name}: build the layer before loading weights")
            own = layer.weights
            if len(arrays) != len(own):
                raise ValueError(
                    f"{layer.name}: the file has {len(arrays)} arrays under layers/{key}, the "
                    f"layer has {len(own)} ({layer.weight_names})"
                )
            for name, target, value in zip(layer.weight_names, own, arrays):
                if value.shape != target.shape:
                    raise ValueError(
                        f"{layer.name}: weight {name} expected shape {target.shape}, file "
                        f"layers/{key} has {value.shape}"
                    )
            staged.append((layer, arrays))
    for layer, arrays in staged:
        layer.set_weights(arrays)
