"""The ``fusedrnn`` command (also ``python -m fusedrnn``): dispatches to subcommands.

    fusedrnn bench [...]        time the kernels against NumPy and PyTorch
    fusedrnn experiment [...]   run the experiments of fusedrnn.experiments

Subcommand modules are imported only when chosen, so ``fusedrnn --help`` is instant and a
missing optional part breaks only its own subcommand.
"""
from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

# name -> (module, one-line description)
SUBCOMMANDS = {
    "bench": ("fusedrnn.bench",
              "time the fused kernels (forward and training step) against the NumPy "
              "reference and PyTorch"),
    "experiment": ("fusedrnn.experiments", "run the training experiments"),
}


def usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = [
        "usage: fusedrnn <command> [options]",
        "",
        "Fused CPU kernels for LSTM, GRU and SimpleRNN.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {description}"
              for name, (_, description) in SUBCOMMANDS.items()]
    lines += ["", "Run 'fusedrnn <command> --help' for a command's options."]
    return "\n".join(lines)


def _load(command: str):
    """The subcommand's main function, or SystemExit with a clear message."""
    module_name = SUBCOMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing subcommand module is "not available"; a missing dependency inside
        # it is reported as what it is.
        if exc.name == module_name:
            raise SystemExit(
                f"fusedrnn {command}: {module_name} is not available in this installation"
            ) from None
        raise SystemExit(f"fusedrnn {command}: cannot import {module_name}: {exc}") from None
    entry = getattr(module, "main", None)
    if not callable(entry):
        raise SystemExit(f"fusedrnn {command}: {module_name} has no main(argv) entry point")
    return entry


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``fusedrnn <command> ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"fusedrnn {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(usage(), file=sys.stderr)
        print(f"\nfusedrnn: error: unknown command {command!r}; expected one of "
              f"{', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    status = _load(command)(rest)
    return 0 if status is None else int(status)


if __name__ == "__main__":
    sys.exit(main())
