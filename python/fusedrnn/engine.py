"""Symbolic tensors and the layer-call graph behind the functional ``Model``.

``Input(shape)`` starts a graph: calling a layer on a ``SymbolicTensor`` does not compute
anything, it builds the layer from the symbolic shape and records a ``Node`` (the layer, its
input tensors, its initial-state tensors and its output tensors).  ``fusedrnn.models.Model``
walks the recorded nodes from its outputs back to its inputs, runs them forward on NumPy
arrays and backpropagates through them in reverse.

A SymbolicTensor knows its shape (batch axis None unless ``batch_size`` was given), dtype,
the node and output index that produced it, and its symbolic mask: a boolean
SymbolicTensor when the producing layer's ``compute_mask`` returns a mask (e.g. after
``Embedding(mask_zero=True)``), else None.  Whether a mask exists is found by asking
``layer.compute_mask`` on a small placeholder batch, so it follows the layer's own rules.
"""
from __future__ import annotations

import itertools

import numpy as np

__all__ = ["SymbolicTensor", "Node", "Input", "is_symbolic", "symbolic_call", "flatten"]

_name_counter = itertools.count()


def _unique_name(prefix: str) -> str:
    return f"{prefix}_{next(_name_counter)}"


def _normalise_dtype(dtype, argname="dtype") -> np.dtype:
    try:
        return np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{argname}: expected a NumPy dtype or its name, got {dtype!r}") from None


class SymbolicTensor:
    """A placeholder for an array in a layer graph.

    shape: tuple with None for unknown axes (the batch axis first); dtype: np.dtype;
    node: the Node that produced it (an input node for ``Input``); index: which of the
    node's outputs it is; mask: a boolean SymbolicTensor (batch, time) or None."""

    __slots__ = ("shape", "dtype", "node", "index", "name", "mask")

    def __init__(self, shape, dtype, node=None, index=0, name=None, mask=None):
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = _normalise_dtype(dtype)
        self.node = node
        self.index = index
        self.name = name or _unique_name("tensor")
        self.mask = mask

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self):
        producer = self.node.layer.name if self.node and self.node.layer else "input"
        return (f"<SymbolicTensor shape={self.shape} dtype={self.dtype.name} "
                f"from={producer!r}>")

    def __array__(self, *args, **kwargs):
        raise TypeError(
            "A SymbolicTensor has no values: it is a placeholder in a layer graph. Build a "
            "fusedrnn.models.Model(inputs, outputs) and call predict() on arrays."
        )


class Node:
    """One call of a layer in a graph (or an input, when ``layer`` is None).

    inputs: the layer's input tensors as passed (a tensor or a list); initial_state: list of
    tensors or None; call_kwargs: other call arguments (``training`` if given explicitly);
    outputs: list of the SymbolicTensors it produced (one, or [output, *states])."""

    __slots__ = ("layer", "inputs", "initial_state", "call_kwargs", "outputs", "returns_list")

    def __init__(self, layer, inputs, initial_state, call_kwargs):
        self.layer = layer
        self.inputs = inputs
        self.initial_state = initial_state
        self.call_kwargs = call_kwargs
        self.outputs = []
        self.returns_list = False

    @property
    def is_input(self) -> bool:
        return self.layer is None

    @property
    def input_tensors(self) -> list:
        """Every SymbolicTensor the node reads: inputs first, then initial states."""
        tensors = flatten(self.inputs) if self.inputs is not None else []
        if self.initial_state is not None:
            tensors = tensors + flatten(self.initial_state)
        return tensors


def flatten(structure) -> list:
    """A tensor or a (nested) list/tuple of them, as a flat list."""
    if isinstance(structure, (list, tuple)):
        out = []
        for item in structure:
            out.extend(flatten(item))
        return out
    return [structure]


def is_symbolic(value) -> bool:
    """True when `value` (or any entry of a list/tuple) is a SymbolicTensor."""
    if isinstance(value, SymbolicTensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(is_symbolic(v) for v in value)
    return False


def Input(shape, dtype="float32", name=None, batch_size=None) -> SymbolicTensor:  # noqa: N802
    """Start a graph: a SymbolicTensor of shape (batch_size, *shape).

    shape: a tuple of the per-sample dimensions, None for a variable length (e.g. (None, 8)
    for sequences of any length with 8 features).  dtype: "float32", "float64", or an
    integer dtype for token ids."""
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"shape: expected a tuple of ints (None for unknown), got "
                        f"{type(shape).__name__}")
    for d in shape:
        if d is not None and (not isinstance(d, (int, np.integer)) or d < 1):
            raise ValueError(f"shape: expected positive ints or None, got {tuple(shape)}")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"batch_size: expected a positive int or None, got {batch_size!r}")
    node = Node(None, None, None, {})
    tensor = SymbolicTensor((batch_size, *shape), dtype, node=node, index=0,
                            name=name or _unique_name("input"))
    node.outputs = [tensor]
    return tensor


def _placeholder(tensor: SymbolicTensor) -> np.ndarray:
    """A small concrete array standing in for `tensor` (unknown axes of length 1)."""
    shape = tuple(1 if d is None else d for d in tensor.shape)
    # Only whether compute_mask returns a mask matters, not its values; ids of 1 are valid
    # for any Embedding.
    if tensor.dtype.kind in "iu":
        return np.ones(shape, dtype=tensor.dtype)
    return np.zeros(shape, dtype=tensor.dtype)


def _placeholder_mask(tensor: SymbolicTensor):
    if tensor.mask is None:
        return None
    return np.ones(tuple(1 if d is None else d for d in tensor.mask.shape), dtype=bool)


def _symbolic_output_masks(layer, inputs, output_tensors):
    """SymbolicTensor masks of the outputs, from layer.compute_mask on placeholders."""
    if isinstance(inputs, (list, tuple)):
        concrete = [_placeholder(t) for t in inputs]
        concrete_mask = [_placeholder_mask(t) for t in inputs]
        if all(m is None for m in concrete_mask):
            concrete_mask = None
    else:
        concrete = _placeholder(inputs)
        concrete_mask = _placeholder_mask(inputs)
    masks = layer.compute_mask(concrete, concrete_mask)
    if not isinstance(masks, (list, tuple)):
        masks = [masks] + [None] * (len(output_tensors) - 1)
    result = []
    reference = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
    for mask in masks:
        if mask is None:
            result.append(None)
            continue
        mask = np.asarray(mask)
        # The mask covers the leading (batch, time, ...) axes of the layer's input.
        shape = (None,) + tuple(reference.shape[1:mask.ndim])
        result.append(SymbolicTensor(shape, np.bool_, name=_unique_name("mask")))
    return result + [None] * (len(output_tensors) - len(result))


def _as_shape_list(shape):
    """compute_output_shape may return one shape or a list of shapes (return_state)."""
    if isinstance(shape, list) and shape and isinstance(shape[0], (tuple, list)):
        return [tuple(s) for s in shape], True
    if isinstance(shape, tuple) and shape and isinstance(shape[0], (tuple, list)):
        return [tuple(s) for s in shape], True
    return [tuple(shape)], False


def symbolic_call(layer, inputs, mask=None, training=None, initial_state=None, **kwargs):
    """Record a call of `layer` on SymbolicTensor(s); return the output SymbolicTensor (or a
    list [output, *states] for return_state layers).

    The layer is built from the inputs' symbolic shapes when it is not built yet.  An
    explicit `mask` is not supported in graphs: masks flow from the layers that create them
    (Embedding(mask_zero=True), Masking), as in Keras."""
    if kwargs:
        raise TypeError(f"{layer.name}: unsupported call arguments {sorted(kwargs)}")
    if mask is not None:
        raise ValueError(
            f"{layer.name}: pass masks in a graph through a mask-producing layer "
            "(Embedding(mask_zero=True) or Masking), not as mask="
        )
    for tensor in flatten(inputs):
        if not isinstance(tensor, SymbolicTensor):
            raise TypeError(f"{layer.name}: when called on symbolic inputs every input must be "
                            f"a SymbolicTensor, got {type(tensor).__name__}")
    if initial_state is not None:
        if not isinstance(initial_state, (list, tuple)):
            initial_state = [initial_state]
        for k, tensor in enumerate(initial_state):
            if not isinstance(tensor, SymbolicTensor):
                raise TypeError(f"initial_state[{k}]: expected a SymbolicTensor in a graph, got "
                                f"{type(tensor).__name__}")
        initial_state = list(initial_state)
    input_shape = ([t.shape for t in inputs] if isinstance(inputs, (list, tuple))
                   else inputs.shape)
    if not layer.built:
        layer.build(input_shape)
    shapes, returns_list = _as_shape_list(layer.compute_output_shape(input_shape))
    # `training` is decided by the model at run time (fit: True, predict: False), as for
    # a Keras layer called without an explicit training argument.
    node = Node(layer, list(inputs) if isinstance(inputs, tuple) else inputs, initial_state, {})
    dtype = np.dtype(getattr(layer, "dtype", "float32") or "float32")
    outputs = [SymbolicTensor(shape, dtype, node=node, index=k,
                              name=_unique_name(f"{layer.name}_out"))
               for k, shape in enumerate(shapes)]
    for tensor, out_mask in zip(outputs, _symbolic_output_masks(layer, inputs, outputs)):
        tensor.mask = out_mask
    node.outputs = outputs
    node.returns_list = returns_list
    return outputs if returns_list else outputs[0]


# -- graph traversal (Keras' ops/function.py map_graph, simplified) ---------------------------
def map_graph(inputs, outputs):
    """Nodes in execution order and the layers in Keras' ``model.layers`` order.

    Returns (nodes, layers): `nodes` from the inputs to the outputs (every node after the
    nodes it reads from), `layers` sorted by decreasing depth and, within a depth, by the
    order a depth-first walk from the outputs first meets them - Keras' rule, so that
    ``get_weights()`` concatenates per-layer weights in the same order as Keras."""
    input_ids = {id(t) for t in inputs}
    finished, in_progress = set(), set()
    ordered = []           # nodes from inputs to outputs (post-order DFS)
    layer_index = {}       # id(layer) -> first traversal index
    layers_by_id = {}

    def visit(tensor):
        node = tensor.node
        if node is None:
            raise ValueError(f"{tensor!r} was not produced by Input() or a layer call")
        if id(node) in finished:
            return
        if node.is_input or id(tensor) in input_ids:
            if id(tensor) not in input_ids:
                raise ValueError(
                    f"Graph disconnected: {tensor.name} comes from an Input() that is not in "
                    "the model's inputs"
                )
            finished.add(id(node))
            return
        if id(node) in in_progress:
            raise ValueError(f"the graph has a cycle at layer {node.layer.name!r}")
        layer_index.setdefault(id(node.layer), len(layer_index))
        layers_by_id[id(node.layer)] = node.layer
        in_progress.add(id(node))
        for parent in node.input_tensors:
            visit(parent)
        in_progress.discard(id(node))
        finished.add(id(node))
        ordered.append(node)

    for output in outputs:
        visit(output)

    # Depths: an output node has depth 0; a node's parents are deeper than it.
    node_depth, layer_depth = {}, {}
    producers = {id(n): n for n in ordered}
    for node in reversed(ordered):
        depth = max(node_depth.get(id(node), 0), layer_depth.get(id(node.layer), 0))
        node_depth[id(node)] = depth
        layer_depth[id(node.layer)] = depth
        for parent in node.input_tensors:
            if parent.node is not None and id(parent.node) in producers:
                node_depth[id(parent.node)] = max(node_depth.get(id(parent.node), 0), depth + 1)
    layers = sorted(layers_by_id.values(),
                    key=lambda l: (-layer_depth[id(l)], layer_index[id(l)]))
    return ordered, layers
