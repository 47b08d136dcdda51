"""The buffer pool (csrc/pool.c, fusedrnn._memory): large kernel scratch and the large arrays
the kernels return are recycled, never shared while alive, bounded by the limit, and change
no result."""
import multiprocessing
import os
import threading

import numpy as np
import pytest

import fusedrnn
from fusedrnn import _kernels, ops

MIN_POOLED = 256 * 1024  # FRNN_POOL_MIN_BYTES


@pytest.fixture
def pool_limit():
    """Restores the process-wide limit after a test changes it."""
    previous = fusedrnn.set_buffer_pool_limit(1 << 30)
    fusedrnn.set_buffer_pool_limit(previous)
    yield
    fusedrnn.set_buffer_pool_limit(previous)


def _address(array):
    return array.__array_interface__["data"][0]


def test_a_freed_block_is_handed_out_again(pool_limit):
    fusedrnn.set_buffer_pool_limit(0)          # empty, so the block below is the only one
    fusedrnn.set_buffer_pool_limit(1 << 30)
    first = _kernels.pooled_array((512, 1024), np.float32)   # 2 MiB
    address = _address(first)
    assert first.flags.c_contiguous and first.flags.writeable and address % 64 == 0
    retained = fusedrnn.buffer_pool_info().retained_bytes
    del first
    assert fusedrnn.buffer_pool_info().retained_bytes >= retained + 2 * 2**20
    again = _kernels.pooled_array((512, 1000), np.float32)   # a little smaller: same block
    assert _address(again) == address
    # small arrays are ordinary NumPy arrays
    assert _kernels.pooled_array((10,), np.float64).base is None


def test_the_limit_bounds_what_is_kept(pool_limit):
    fusedrnn.set_buffer_pool_limit(1 << 30)
    arrays = [_kernels.pooled_array((2**20,), np.float32) for _ in range(6)]  # 4 MiB each
    del arrays
    assert fusedrnn.buffer_pool_info().retained_bytes >= 24 * 2**20
    fusedrnn.set_buffer_pool_limit(9 * 2**20)                  # frees the excess at once
    info = fusedrnn.buffer_pool_info()
    assert info.limit_bytes == 9 * 2**20 and info.retained_bytes <= 9 * 2**20
    fusedrnn.set_buffer_pool_limit(0)
    assert fusedrnn.buffer_pool_info().retained_bytes == 0
    block = _kernels.pooled_array((2**20,), np.float32)
    del block                                                  # limit 0: nothing is kept
    assert fusedrnn.buffer_pool_info().retained_bytes == 0


@pytest.mark.parametrize("shape", [(2**30, 2**20), (2**40, 2**40)])
def test_impossible_sizes_raise_like_numpy(shape):
    """Too large for memory: MemoryError from the pool; too large to address: NumPy's own
    ValueError (the pool is not asked)."""
    with pytest.raises((MemoryError, ValueError)):
        _kernels.pooled_array(shape, np.float32)


@pytest.mark.parametrize("value,error", [(-1, ValueError), (1.5, TypeError), (True, TypeError),
                                         ("1", TypeError)])
def test_bad_limits_are_rejected(value, error, pool_limit):
    with pytest.raises(error, match="n_bytes"):
        fusedrnn.set_buffer_pool_limit(value)


def test_arrays_alive_at_once_never_share_memory(pool_limit):
    """Eight threads take, fill, check and drop blocks of a few sizes at once: every block
    holds only what its own thread wrote."""
    fusedrnn.set_buffer_pool_limit(64 * 2**20)
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        kept = []
        for round_ in range(200):
            n = int(rng.choice([MIN_POOLED // 4, 2**18, 2**19 + 3, 2**20]))
            a = _kernels.pooled_array((n,), np.float32)
            a.fill(seed * 1000 + round_)
            kept.append((a, seed * 1000 + round_))
            if len(kept) > 3:
                old, value = kept.pop(int(rng.integers(len(kept))))
                if not (old == value).all():
                    errors.append(seed)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
def test_results_are_the_same_with_and_without_the_pool(cell, pool_limit, rng):
    """Outputs, caches and gradients of several steps, with earlier results kept alive while
    later steps run: bitwise the same as with nothing pooled."""
    gates = {"lstm": 4, "gru": 3, "simple_rnn": 1}[cell]
    fwd, bwd = getattr(ops, cell + "_forward"), getattr(ops, cell + "_backward")
    batch, steps, features, units = 24, 40, 67, 96   # caches and dZ well above 256 KiB
    x = rng.standard_normal((batch, steps, features)).astype(np.float32)
    kernel = (rng.standard_normal((features, gates * units)) * 0.1).astype(np.float32)
    recurrent = (rng.standard_normal((units, gates * units)) * 0.1).astype(np.float32)
    d_out = rng.standard_normal((batch, steps, units)).astype(np.float32)

    def run():
        kept = []
        for step in range(3):
            out = fwd(x * (step + 1), kernel, recurrent, training=True)
            grads = bwd(out.cache, d_out)
            kept.append((out.outputs, grads.x, grads.kernel, grads.recurrent_kernel))
        return [[a.copy() for a in step] for step in kept], kept

    fusedrnn.set_buffer_pool_limit(0)
    want, _ = run()
    fusedrnn.set_buffer_pool_limit(1 << 30)
    run()                                   # fills the pool
    copies, alive = run()
    for step in range(3):
        for a, b, c in zip(copies[step], alive[step], want[step]):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, c)  # not overwritten by later steps


def _child_allocates(queue):
    block = _kernels.pooled_array((2**20,), np.float32)
    block.fill(1.0)
    out = ops.lstm_forward(np.ones((8, 20, 64), np.float32), np.ones((64, 512), np.float32),
                           np.zeros((128, 512), np.float32), training=True)
    queue.put(float(block.sum()) + float(out.outputs[0, 0, 0]))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() only")
def test_a_forked_child_can_use_the_pool(pool_limit):
    """fork() while another thread is inside the pool: the child must not inherit its lock
    held (it would hang on its first large allocation)."""
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            _kernels.pooled_array((2**19,), np.float32)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        context = multiprocessing.get_context("fork")
        for _ in range(5):
            queue = context.Queue()
            child = context.Process(target=_child_allocates, args=(queue,))
            child.start()
            child.join(timeout=60)
            assert child.exitcode == 0, "the forked child hung or failed"
            assert queue.get(timeout=5) > 0
    finally:
        stop.set()
        thread.join()
