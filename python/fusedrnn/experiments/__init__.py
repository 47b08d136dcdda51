"""The study notes' experiments, each runnable as ``fusedrnn experiment NAME``.

=================  =========================================================================
``imdb-seqlen``    IMDB sentiment on long reviews truncated to 10 ... 1000 tokens:
                   SimpleRNN vs GRU vs LSTM (short-term memory)
``gradient-flow``  ||dL/dh_t|| against t for the three cells, at initialisation and after
                   training (vanishing gradients)
``long-memory``    adding problem and recall task over growing sequence lengths
``exploding``      recurrent weights with spectral radius > 1, with and without clipping
``padding``        a dense network over padded input vs an RNN with and without masking
=================  =========================================================================

Usage::

    fusedrnn experiment NAME [--quick | --full] [--out DIR] [--data PATH] [--seed N]
                             [--threads N]
    fusedrnn experiment all --quick --out /tmp/reports     # every experiment, DIR/NAME/
    fusedrnn experiment list

Each writes ``report.md``, PNG plots and ``results.json`` into ``--out`` (default
``reports/NAME`` under the current directory) and prints progress on stderr.  ``--quick``
is a smoke run (well under a minute each, numbers meaningful only as a check that the
pipeline works); ``--full`` (the default) is what the README's results come from.
``--data`` is the IMDB tarball (else ``$FUSEDRNN_IMDB``), used by ``imdb-seqlen``.

From Python: ``fusedrnn.experiments.run(name, out_dir, quick=True)``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Dict, Optional

from .. import threads as thread_limit

__all__ = ["EXPERIMENTS", "run", "main"]

# name -> (module, one-line description)
EXPERIMENTS: Dict[str, tuple] = {
    "imdb-seqlen": ("imdb_seqlen", "IMDB accuracy vs truncation length, SimpleRNN/GRU/LSTM"),
    "gradient-flow": ("gradient_flow", "||dL/dh_t|| vs t at initialisation and after training"),
    "long-memory": ("long_memory", "adding problem and recall task vs sequence length"),
    "exploding": ("exploding", "spectral radius > 1: loss and gradient norm, +/- clipping"),
    "padding": ("padding", "dense net on padded input vs RNN with/without masking"),
}


def run(name: str, out_dir, *, quick: bool = False, data=None, seed: int = 0,
        threads: int = 1, verbose: bool = True) -> Path:
    """Run one experiment, write its report into ``out_dir``; returns report.md's path.

    threads: kernel and BLAS threads while it runs (``fusedrnn.threads``).  The default 1
    suits the experiments' small models (at most 32 units): a second thread gains little
    there and, on a busy machine, costs much more in per-step synchronisation."""
    if name not in EXPERIMENTS:
        raise ValueError(f"name: unknown experiment {name!r}; choose from "
                         f"{', '.join(EXPERIMENTS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads == 0:
        raise ValueError(f"threads: expected a positive count or -1 (all cores), got "
                         f"{threads!r}")
    module = importlib.import_module(f".{EXPERIMENTS[name][0]}", __name__)
    from ._report import Progress, Report, require_matplotlib
    require_matplotlib()
    mode = "quick" if quick else "full"
    config = dict(module.CONFIGS[mode], seed=seed, threads=threads)
    progress = Progress(name, enabled=verbose)
    report = Report(out_dir, name, mode, config)
    progress.log(f"{mode} mode, writing to {report.out_dir}")
    start = time.perf_counter()
    with thread_limit(threads):
        module.run(config, report, progress, data=data)
    path = report.write(module.TITLE, module.SUMMARY, time.perf_counter() - start)
    progress.log(f"done: {path}")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusedrnn experiment",
        description="Run one of the study notes' experiments and write a report "
                    "(report.md, PNG plots, results.json).",
        epilog="experiments: " + "; ".join(f"{k}: {v[1]}" for k, v in EXPERIMENTS.items()),
    )
    parser.add_argument("name", help="an experiment name, 'all', or 'list'")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="smoke-test sizes: well under a minute per experiment")
    mode.add_argument("--full", action="store_true", help="full sizes (the default)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: reports/NAME; with 'all', DIR/NAME)")
    parser.add_argument("--data", default=None,
                        help="IMDB tarball or folder for imdb-seqlen (default: $FUSEDRNN_IMDB)")
    parser.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="kernel/BLAS threads (default 1: the models are small; "
                             "-1 = all cores)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return parser


def main(argv: Optional[list] = None) -> int:
    """Entry point of ``fusedrnn experiment ...`` (argv: the arguments after the word
    ``experiment``).  Returns the process exit status."""
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.name == "list":
        for name, (_, description) in EXPERIMENTS.items():
            print(f"{name:15s} {description}")
        return 0
    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    if args.name != "all" and args.name not in EXPERIMENTS:
        parser.error(f"unknown experiment {args.name!r}; choose from "
                     f"{', '.join(EXPERIMENTS)}, all, list")
    if args.seed < 0:
        parser.error(f"--seed: expected a non-negative int, got {args.seed}")
    if args.threads == 0:
        parser.error("--threads: expected a positive count or -1 (all cores), got 0")
    for name in names:
        if args.name == "all":
            out = (args.out or Path("reports")) / name
        else:
            out = args.out or Path("reports") / name
        try:
            path = run(name, out, quick=args.quick, data=args.data, seed=args.seed,
                       threads=args.threads, verbose=not args.quiet)
        except FileNotFoundError as exc:  # e.g. no IMDB file: say what to pass, no traceback
            print(f"fusedrnn experiment {name}: {exc}\nOn the command line: --data PATH.",
                  file=sys.stderr)
            return 2
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
