"""Memory: repeated forward+backward calls do not grow the resident set.

Each check runs in a fresh interpreter that calls the ops in a loop and reads its RSS from
/proc/self/statm after a warm-up and at the end.  A leak of the smallest kernel
allocation (one 64-byte scratch row per call) or of one Python object per call shows up as
megabytes over the call counts used here; a leaked result or cache buffer of the medium
problem shows up as hundreds of megabytes.

The full 100,000-call run of a tiny problem is marked slow (20-70 us per call: a few
seconds to a minute per cell depending on the machine's load).  CI runs:
  - 2,000 calls of a one-row problem with 128 units on one thread, where every per-call
    buffer of the kernels or the glue is at least 1 KiB (a leak: > 2 MiB);
  - 30 calls of a problem big enough for the fused time loop to run on two threads
    (per-thread scratch), whose leaked results or cache would be > 8 MiB;
  - 40 calls of a problem whose outputs, caches, scratch and gradients come from the buffer
    pool (csrc/pool.c: blocks of 256 KiB and more, kept for reuse): a block the pool lost
    track of, or kept beside an equal one instead of reusing it, would be > 10 MiB."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from test_reliability_inputs import CELLS

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="RSS is read from /proc/self/statm (Linux)")

LOOP_SCRIPT = """
    import json, os, sys
    import numpy as np
    import fusedrnn
    from fusedrnn import ops

    GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}
    PAGE = os.sysconf("SC_PAGE_SIZE")

    def rss_bytes():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    name, calls, batch, steps, features, units, masked, threads = sys.argv[1:9]
    calls, batch, steps, features, units = map(int, (calls, batch, steps, features, units))
    fusedrnn.set_num_threads(int(threads))
    gates = GATES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, steps, features))
    k = rng.standard_normal((features, gates * units)) * 0.1
    r = rng.standard_normal((units, gates * units)) * 0.1
    bias = np.zeros((2, gates * units)) if name == "gru" else np.zeros(gates * units)
    h0 = rng.standard_normal((batch, units))
    state = (h0, h0.copy()) if name == "lstm" else h0
    mask = rng.random((batch, steps)) > 0.3 if masked == "1" else None
    fwd, bwd = getattr(ops, name + "_forward"), getattr(ops, name + "_backward")
    d_out = np.ones((batch, steps, units))

    def one_call(k_call):
        training = k_call % 4 != 3          # every fourth call is inference only
        out = fwd(x, k, r, bias, initial_state=state, mask=mask, training=training,
                  go_backwards=bool(k_call % 2))
        if training:
            grads = bwd(out.cache, d_out, np.ones_like(out.h_n))
            assert np.isfinite(grads.kernel).all()
        try:                                # a rejected call must not leak either
            fwd(x, k.astype(np.float32), r)
        except TypeError:
            pass

    warmup = max(calls // 10, 100)
    for k_call in range(warmup):
        one_call(k_call)
    start = rss_bytes()
    for k_call in range(calls):
        one_call(k_call)
    print(json.dumps({"start": start, "end": rss_bytes()}))
"""


def rss_growth(cell_name, calls, batch, steps, features, units, masked=True, threads=1) -> int:
    """RSS growth over `calls` loop iterations after a warm-up of a tenth of them."""
    args = [cell_name, calls, batch, steps, features, units, int(masked), threads]
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(LOOP_SCRIPT), *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rss = json.loads(proc.stdout)
    return rss["end"] - rss["start"]


MiB = 2**20
CELL_NAMES = sorted({c.name for c in CELLS})


@pytest.mark.parametrize("name", CELL_NAMES)
def test_repeated_calls_do_not_grow(name):
    growth = rss_growth(name, 2_000, batch=1, steps=2, features=3, units=128)
    assert growth < 1 * MiB, f"RSS grew {growth / MiB:.2f} MiB over 2,000 calls"


@pytest.mark.parametrize("name", CELL_NAMES)
def test_two_thread_path_does_not_grow(name):
    growth = rss_growth(name, 30, batch=32, steps=4, features=8, units=64, threads=2)
    assert growth < 1 * MiB, f"RSS grew {growth / MiB:.2f} MiB over 30 calls"


@pytest.mark.parametrize("name", CELL_NAMES)
def test_pooled_buffers_do_not_grow(name):
    # float64: the gate cache alone is 32 * 40 * 4 * 96 * 8 bytes = 3.9 MB
    growth = rss_growth(name, 40, batch=32, steps=40, features=16, units=96, threads=2)
    assert growth < 1 * MiB, f"RSS grew {growth / MiB:.2f} MiB over 40 calls"


@pytest.mark.slow
@pytest.mark.parametrize("name", CELL_NAMES)
def test_100k_calls_do_not_grow(name):
    growth = rss_growth(name, 100_000, batch=2, steps=3, features=4, units=5)
    assert growth < 1 * MiB, f"RSS grew {growth / MiB:.2f} MiB over 100,000 calls"
