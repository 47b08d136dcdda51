"""fusedrnn: fused CPU kernels for LSTM, GRU and SimpleRNN.

``fusedrnn.ops`` holds the functional kernels (Keras layout); ``fusedrnn.reference`` the
pure-NumPy executable specification they are tested against.  ``fusedrnn.layers``,
``fusedrnn.models``, ``fusedrnn.optimizers``, ``fusedrnn.losses``, ``fusedrnn.metrics`` and
``fusedrnn.callbacks`` mirror Keras.  ``fusedrnn.torch`` is the PyTorch drop-in: import it
explicitly (``import fusedrnn.torch``) so torch stays an optional dependency.
``set_num_threads``/``threads`` set the kernels' threads; ``set_buffer_pool_limit`` and
``buffer_pool_info`` the pool their large arrays are recycled through (see ``_memory``)."""
from . import callbacks, layers, losses, metrics, models, ops, optimizers, reference
from ._memory import buffer_pool_info, set_buffer_pool_limit
from ._threads import get_num_threads, set_num_threads, threads

__version__ = "0.1.0"
__all__ = ["ops", "reference", "layers", "models", "optimizers", "losses", "metrics",
           "callbacks", "get_num_threads", "set_num_threads", "threads", "buffer_pool_info",
           "set_buffer_pool_limit", "__version__"]
