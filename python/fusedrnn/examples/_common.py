"""Shared pieces of the examples: the command line and padded token sequences."""
from __future__ import annotations

import argparse

import numpy as np


def parse_args(argv, description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--full", action="store_true",
                        help="more data and epochs (the default is a quick run of seconds)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, default=None,
                        help="kernel and BLAS threads (default: the library's default); "
                             "these small models often run fastest on 1")
    return parser.parse_args(argv)


def run_from_command_line(argv, doc, title, run):
    """Parse the example's options, run it (with --threads if given) and print results."""
    from fusedrnn import threads

    args = parse_args(argv, doc.splitlines()[0])
    kwargs = dict(quick=not args.full, seed=args.seed, verbose=0 if args.quiet else 1)
    if args.threads is None:
        results = run(**kwargs)
    else:
        with threads(args.threads):
            results = run(**kwargs)
    print_results(title, results)
    return results


def print_results(title, results):
    print(f"\n{title}")
    for key, value in results.items():
        print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")


def padded_tokens(rng, n, max_length, low, high, min_length=1):
    """(ids, lengths): n rows of random ids in [low, high) padded with 0 to max_length."""
    lengths = rng.integers(min_length, max_length + 1, n)
    ids = np.zeros((n, max_length), dtype=np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(low, high, length)
    return ids, lengths


def split(arrays, fraction):
    """Split every array at the same row: (first 1 - fraction, last fraction)."""
    cut = int(len(arrays[0]) * (1 - fraction))
    return [a[:cut] for a in arrays], [a[cut:] for a in arrays]
