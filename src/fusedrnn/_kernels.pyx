# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""fusedrnn's compiled glue: one extension module, so the C kernels (linked in statically)
exist once in the process and share one thread setting.  Each cell's glue lives in its
own include file."""
from fusedrnn._common cimport *

include "_runtime.pxi"
include "_activations.pxi"
include "_lstm.pxi"
include "_gru.pxi"
include "_rnn.pxi"
