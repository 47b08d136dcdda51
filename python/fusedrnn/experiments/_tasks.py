"""Synthetic sequence tasks with a known answer, generated from a seeded NumPy Generator."""
from __future__ import annotations

import numpy as np

ADDING_BASELINE_MSE = 1.0 / 6.0  # always predicting 1: the variance of a sum of two U(0, 1)


def adding_problem(rng, n: int, steps: int, dtype=np.float32):
    """Hochreiter & Schmidhuber's adding problem.

    x: (n, steps, 2): channel 0 uniform values in [0, 1), channel 1 a marker that is 1 at
    one random step in the first half and one in the second half.  y: (n,) the sum of the
    two marked values.  The answer needs memory of the first marker across ~steps/2 steps."""
    if steps < 2:
        raise ValueError(f"steps: expected >= 2, got {steps}")
    values = rng.uniform(0.0, 1.0, size=(n, steps))
    half = steps // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, steps, size=n)
    marker = np.zeros((n, steps))
    rows = np.arange(n)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    x = np.stack([values, marker], axis=-1).astype(dtype)
    y = (values[rows, first] + values[rows, second]).astype(dtype)
    return x, y


def recall_task(rng, n: int, steps: int, symbols: int = 8):
    """Remember the first token: tokens (n, steps) in 1..symbols, label = tokens[:, 0] - 1.

    Every later token is drawn from the same symbols, so only memory of step 0 helps;
    chance accuracy is 1/symbols.  (The many-to-one form of the copy/recall task.)"""
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    tokens = rng.integers(1, symbols + 1, size=(n, steps))
    return tokens, tokens[:, 0] - 1


def variable_length_sequences(rng, n: int, min_len: int, max_len: int, task: str,
                              padding: str = "post", dtype=np.float32):
    """Variable-length real sequences zero-padded to max_len, for the padding experiment.

    Values are uniform in [-1, 1] (never exactly 0, so padding is distinguishable).
    task "sum": y = 1 if the sum of the valid values is > 0 (order-free);
    task "last": y = 1 if the last valid value is > 0 (position depends on the length).
    Returns x (n, max_len, 1), y (n,), mask (n, max_len) True on valid steps, lengths (n,)."""
    if not 1 <= min_len <= max_len:
        raise ValueError(f"min_len, max_len: expected 1 <= min_len <= max_len, got "
                         f"{min_len}, {max_len}")
    if padding not in ("pre", "post"):
        raise ValueError(f"padding: expected 'pre' or 'post', got {padding!r}")
    lengths = rng.integers(min_len, max_len + 1, size=n)
    values = rng.uniform(-1.0, 1.0, size=(n, max_len))
    values[values == 0.0] = 0.5
    positions = np.arange(max_len)[None, :]
    if padding == "post":
        mask = positions < lengths[:, None]
    else:
        mask = positions >= (max_len - lengths)[:, None]
    values = np.where(mask, values, 0.0)
    if task == "sum":
        y = (values.sum(axis=1) > 0).astype(np.int64)
    elif task == "last":
        last_index = (lengths - 1) if padding == "post" else np.full(n, max_len - 1)
        y = (values[np.arange(n), last_index] > 0).astype(np.int64)
    else:
        raise ValueError(f"task: expected 'sum' or 'last', got {task!r}")
    return values[..., None].astype(dtype), y, mask, lengths


def post_to_pre_padding(x, lengths):
    """Move each post-padded row's valid steps to the end: (n, T, ...) -> pre-padded."""
    out = np.zeros_like(x)
    steps = x.shape[1]
    for i, length in enumerate(lengths):
        out[i, steps - length:] = x[i, :length]
    return out


def pad_sequences(sequences, maxlen: int, truncating: str = "pre", padding: str = "pre"):
    """Keras' pad_sequences for int lists: (n, maxlen) int64, 0 = padding.

    truncating="pre" keeps the *last* maxlen tokens (Keras' default); "post" the first."""
    out = np.zeros((len(sequences), maxlen), dtype=np.int64)
    for i, seq in enumerate(sequences):
        seq = seq[-maxlen:] if truncating == "pre" else seq[:maxlen]
        if not len(seq):
            continue
        if padding == "pre":
            out[i, -len(seq):] = seq
        else:
            out[i, :len(seq)] = seq
    return out
