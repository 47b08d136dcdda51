"""Layer wrappers: Bidirectional and TimeDistributed (keras/src/layers/rnn/*.py, Keras 3.15)."""
from __future__ import annotations

import numpy as np

from .base import Layer, deserialize, register, serialize

__all__ = ["Bidirectional", "TimeDistributed"]

_MERGE_MODES = ("concat", "sum", "ave", "mul", None)


def _removeprefix(text, prefix):
    return text[len(prefix):] if text.startswith(prefix) else text


@register
class Bidirectional(Layer):
    """Runs a recurrent layer forwards and a copy of it backwards and merges the outputs.

    As Keras: the backward layer is rebuilt from ``layer``'s config with ``go_backwards``
    flipped (unless ``backward_layer`` is given); when returning sequences its output is
    re-reversed into input time order before merging, and both layers output zeros at
    masked steps (``zero_output_for_mask = return_sequences``).  ``return_state`` gives
    ``[output, *forward_states, *backward_states]`` (``[y_fw, y_bw, *states]`` with
    merge_mode=None); ``initial_state`` is split in halves the same way.  get_weights() is
    the forward layer's weights, then the backward layer's.  The two layers get fresh
    weights (Keras does not reuse ``layer``'s weights either)."""

    supports_masking = True

    def __init__(self, layer, merge_mode="concat", backward_layer=None, **kwargs):
        required = ("go_backwards", "return_sequences", "return_state", "stateful")
        if not isinstance(layer, Layer) or not all(hasattr(layer, a) for a in required):
            raise ValueError(
                "layer: Bidirectional expects a recurrent fusedrnn layer (LSTM, GRU, SimpleRNN), "
                f"got {layer!r}"
            )
        if backward_layer is not None and (
                not isinstance(backward_layer, Layer)
                or not all(hasattr(backward_layer, a) for a in required)):
            raise ValueError(
                f"backward_layer: expected a recurrent fusedrnn layer or None, got {backward_layer!r}"
            )
        if merge_mode not in _MERGE_MODES:
            raise ValueError(
                f"merge_mode: expected one of {list(_MERGE_MODES)}, got {merge_mode!r}"
            )
        kwargs.setdefault("dtype", layer.dtype)
        super().__init__(**kwargs)
        config = serialize(layer)
        config["config"]["name"] = "forward_" + _removeprefix(layer.name, "forward_")
        self.forward_layer = deserialize(config)
        if backward_layer is None:
            config = serialize(layer)
            config["config"]["go_backwards"] = not layer.go_backwards
            config["config"]["name"] = "backward_" + _removeprefix(layer.name, "backward_")
            self.backward_layer = deserialize(config)
        else:
            self.backward_layer = backward_layer
        if self.forward_layer.go_backwards == self.backward_layer.go_backwards:
            raise ValueError(
                "backward_layer: the forward and backward layers must have different "
                f"go_backwards values, both are {self.forward_layer.go_backwards}"
            )
        for attribute in ("stateful", "return_sequences", "return_state"):
            fw, bw = getattr(self.forward_layer, attribute), getattr(self.backward_layer, attribute)
            if fw != bw:
                raise ValueError(
                    f"backward_layer: {attribute} must match the forward layer's: forward {fw}, "
                    f"backward {bw}"
                )
        for sub in (self.forward_layer, self.backward_layer):
            sub.zero_output_for_mask = sub.return_sequences
        self.merge_mode = merge_mode
        self.stateful = layer.stateful
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state

    def _sublayers(self):
        return [self.forward_layer, self.backward_layer]

    def build(self, input_shape):
        for sub in self._sublayers():
            if not sub.built:
                sub.build(input_shape)
        super().build(input_shape)

    @property
    def states(self):
        if self.forward_layer.states is not None and self.backward_layer.states is not None:
            return list(self.forward_layer.states) + list(self.backward_layer.states)
        return None

    def reset_state(self):
        if not self.stateful:
            raise AttributeError(f"{self.name}: reset_state() needs a stateful layer")
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    reset_states = reset_state

    def compute_output_shape(self, input_shape):
        shape = self.forward_layer.compute_output_shape(input_shape)
        state_shapes = []
        if self.return_state:
            shape, state_shapes = shape[0], list(shape[1:])
        if self.merge_mode == "concat":
            output = [tuple(shape[:-1]) + (shape[-1] * 2,)]
        elif self.merge_mode is None:
            output = [tuple(shape), tuple(shape)]
        else:
            output = [tuple(shape)]
        if self.return_state:
            return output + state_shapes + state_shapes
        return output[0] if len(output) == 1 else output

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if self.return_sequences:
            output_mask = [mask, mask] if self.merge_mode is None else [mask]
        else:
            output_mask = [None, None] if self.merge_mode is None else [None]
        if self.return_state:
            count = len(self.forward_layer._state_names) + len(self.backward_layer._state_names)
            return output_mask + [None] * count
        return output_mask[0] if len(output_mask) == 1 else output_mask

    def forward(self, inputs, *, mask=None, training=False, initial_state=None):
        if not self.built:
            self.build((None,) + tuple(np.shape(inputs))[1:])
        forward_state = backward_state = None
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)) or len(initial_state) % 2:
                raise ValueError(
                    f"{self.name}: initial_state expected a list of forward states followed by "
                    "backward states (an even count)"
                )
            half = len(initial_state) // 2
            forward_state, backward_state = list(initial_state[:half]), list(initial_state[half:])
        y, tape_fw = self.forward_layer.forward(inputs, mask=mask, training=training,
                                                initial_state=forward_state)
        y_rev, tape_bw = self.backward_layer.forward(inputs, mask=mask, training=training,
                                                     initial_state=backward_state)
        states = []
        if self.return_state:
            states = list(y[1:]) + list(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = y_rev[:, ::-1]  # back into input time order
        if self.merge_mode == "concat":
            output = [np.concatenate([y, y_rev], axis=-1)]
        elif self.merge_mode == "sum":
            output = [y + y_rev]
        elif self.merge_mode == "ave":
            output = [(y + y_rev) / 2]
        elif self.merge_mode == "mul":
            output = [y * y_rev]
        else:
            output = [np.ascontiguousarray(y), np.ascontiguousarray(y_rev)]
        if self.return_state or self.merge_mode is None:
            outputs = output + states
        else:
            outputs = output[0]
        tape = None
        if training:
            tape = (tape_fw, tape_bw, y, y_rev, initial_state is not None)
        return outputs, tape

    _skips_input_gradient = True

    def backward(self, tape, d_outputs, input_gradient=True):
        self._check_tape(tape, self)
        tape_fw, tape_bw, y, y_rev, had_state = tape
        n_out = 2 if self.merge_mode is None else 1
        if self.return_state or self.merge_mode is None:
            d_outputs = list(d_outputs)
            d_merged, d_states = d_outputs[:n_out], d_outputs[n_out:]
        else:
            d_merged, d_states = [d_outputs], []
        n_fw = len(self.forward_layer._state_names) if self.return_state else 0
        if self.merge_mode is None:
            d_y, d_y_rev = d_merged
        elif d_merged[0] is None:
            d_y = d_y_rev = None
        else:
            d = np.asarray(d_merged[0], self.dtype)
            if self.merge_mode == "concat":
                units = y.shape[-1]
                d_y, d_y_rev = d[..., :units], d[..., units:]
            elif self.merge_mode == "sum":
                d_y = d_y_rev = d
            elif self.merge_mode == "ave":
                d_y = d_y_rev = d / 2
            else:  # mul
                d_y, d_y_rev = d * y_rev, d * y
        if d_y_rev is not None and self.return_sequences:
            d_y_rev = np.asarray(d_y_rev)[:, ::-1]
        if self.return_state:
            d_fw = [d_y, *d_states[:n_fw]]
            d_bw = [d_y_rev, *d_states[n_fw:]]
        else:
            d_fw, d_bw = d_y, d_y_rev
        dx_fw, d_init_fw, dw_fw = self.forward_layer.backward(tape_fw, d_fw, input_gradient)
        dx_bw, d_init_bw, dw_bw = self.backward_layer.backward(tape_bw, d_bw, input_gradient)
        d_initial = (list(d_init_fw) + list(d_init_bw)) if had_state else None
        d_weights = (dw_fw + dw_bw) if self.trainable else []
        return (dx_fw + dx_bw) if input_gradient else None, d_initial, d_weights

    def get_config(self):
        config = super().get_config()
        config.update({
            "merge_mode": self.merge_mode,
            "layer": serialize(self.forward_layer),
            "backward_layer": serialize(self.backward_layer),
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = deserialize(config.pop("layer"))
        backward = config.pop("backward_layer", None)
        if backward is not None:
            backward = deserialize(backward)
        return cls(layer, backward_layer=backward, **config)


@register
class TimeDistributed(Layer):
    """Applies ``layer`` to every time slice: (batch, time, ...) -> (batch, time, ...).

    The slices are processed together as one (batch*time, ...) batch, which gives the same
    numbers as Keras' per-step loop for the stateless layers it is meant for (Dense,
    Dropout with a per-element mask, ...).  The incoming mask is passed on unchanged."""

    supports_masking = True

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, Layer):
            raise ValueError(f"layer: TimeDistributed expects a fusedrnn Layer, got {layer!r}")
        if getattr(layer, "return_state", False) or getattr(layer, "stateful", False):
            raise ValueError("layer: TimeDistributed does not support return_state or stateful layers")
        kwargs.setdefault("dtype", layer.dtype)
        super().__init__(**kwargs)
        self.layer = layer

    def _sublayers(self):
        return [self.layer]

    @staticmethod
    def _child_shape(input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 3:
            raise ValueError(
                f"TimeDistributed: expected inputs with at least 3 dimensions (batch, time, ...), "
                f"got shape {input_shape}"
            )
        return (None,) + input_shape[2:]

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(self._child_shape(input_shape))
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        child = self.layer.compute_output_shape(self._child_shape(input_shape))
        return (input_shape[0], input_shape[1]) + tuple(child[1:])

    def forward(self, inputs, *, mask=None, training=False, initial_state=None):
        self._check_no_initial_state(initial_state)
        x = np.asarray(inputs)
        self._child_shape(x.shape)
        if not self.built:
            self.build((None,) + x.shape[1:])
        if mask is not None and np.shape(mask)[:2] != x.shape[:2]:
            raise ValueError(
                f"{self.name}: mask shape {np.shape(mask)} does not match the inputs' (batch, time) "
                f"= {x.shape[:2]}"
            )
        batch, steps = x.shape[:2]
        flat = x.reshape((batch * steps,) + x.shape[2:])
        y, inner_tape = self.layer.forward(flat, training=training)
        if isinstance(y, list):
            raise ValueError(f"{self.name}: the wrapped layer must return a single array")
        y = y.reshape((batch, steps) + y.shape[1:])
        return y, ((inner_tape, x.shape) if training else None)

    def backward(self, tape, d_outputs):
        self._check_tape(tape, self)
        inner_tape, input_shape = tape
        d = np.asarray(d_outputs, self.dtype)
        batch, steps = d.shape[:2]
        dx, _, d_weights = self.layer.backward(inner_tape, d.reshape((batch * steps,) + d.shape[2:]))
        if dx is not None:
            dx = dx.reshape(input_shape)
        return dx, None, (d_weights if self.trainable else [])

    def get_config(self):
        config = super().get_config()
        config["layer"] = serialize(self.layer)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = deserialize(config.pop("layer"))
        return cls(layer, **config)
