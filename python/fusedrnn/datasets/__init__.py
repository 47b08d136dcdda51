"""Datasets read from local files (nothing here downloads anything).

``fusedrnn.datasets.imdb`` reads the aclImdb review tarball into Keras-style integer
sequences."""
from . import imdb

__all__ = ["imdb"]
