"""The buffer pool that the kernels' large arrays come from.

A training step allocates tens to hundreds of MB (the outputs, the cache saved for
backward, dZ of every step, the gradients) and frees them before the next step.  Fresh
memory that large costs a page fault and a zeroed page per 4 KiB (2 MiB with huge pages)
on its first touch: 15% of an LSTM training forward at batch 8, 512 units.  So the kernels
and the arrays they return take blocks of 256 KiB and more from a pool, which keeps freed
blocks (up to a limit, 1 GiB by default) and hands them out again; the least recently
freed go back to the system first.  An array from the pool is an ordinary NumPy array
whose memory returns to the pool when the last reference to it goes.

The pool never holds more than was once in use at the same time, and never more than its
limit.  ``set_buffer_pool_limit(0)`` frees what it holds and keeps nothing from then on.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

from . import _kernels

__all__ = ["BufferPoolInfo", "buffer_pool_info", "set_buffer_pool_limit"]


class BufferPoolInfo(NamedTuple):
    retained_bytes: int  # freed blocks kept for reuse
    limit_bytes: int     # the most it keeps


def buffer_pool_info() -> BufferPoolInfo:
    """How many bytes the pool keeps for reuse now, and its limit."""
    retained, limit = _kernels.pool_info()
    return BufferPoolInfo(int(retained), int(limit))


def set_buffer_pool_limit(n_bytes: int) -> int:
    """Keep at most ``n_bytes`` of freed buffers for reuse (0: keep none, and free what is
    kept now; lowering the limit frees the excess at once).  Process-wide.  Returns the
    previous limit."""
    if isinstance(n_bytes, bool) or not isinstance(n_bytes, numbers.Integral):
        raise TypeError(f"n_bytes: expected an int (a byte count), got {type(n_bytes).__name__}")
    n_bytes = int(n_bytes)
    if n_bytes < 0:
        raise ValueError(f"n_bytes: expected a byte count >= 0, got {n_bytes}")
    return int(_kernels.set_pool_limit(n_bytes))
