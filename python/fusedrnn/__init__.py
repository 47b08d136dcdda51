"""fusedrnn: fused CPU kernels for LSTM, GRU and SimpleRNN.

``fusedrnn.ops`` holds the functional kernels (Keras layout); ``fusedrnn.reference`` the
pure-NumPy executable specification they are tested against.  ``fusedrnn.layers`` and
``fusedrnn.models`` mirror Keras; ``fusedrnn.torch`` is a PyTorch drop-in (imported on
demand, so torch stays optional)."""
from . import ops, reference
from ._threads import get_num_threads, set_num_threads, threads

__version__ = "0.1.0"
__all__ = ["ops", "reference", "get_num_threads", "set_num_threads", "threads", "__version__"]
