"""fusedrnn: fused CPU kernels for LSTM, GRU and SimpleRNN.

``fusedrnn.ops`` holds the functional kernels (Keras layout); ``fusedrnn.reference`` the
pure-NumPy executable specification they are tested against."""
from . import ops, reference

__version__ = "0.1.0"
__all__ = ["ops", "reference", "__version__"]
