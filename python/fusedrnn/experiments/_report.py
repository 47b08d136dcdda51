"""What every experiment shares: its output folder (report.md, PNG plots, results.json)
and the progress lines it prints while running."""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np


class Progress:
    """Timestamped progress lines on a stream (stderr by default, so stdout stays clean).

    ``step(done, total, text)`` prints a counter with the elapsed time and a crude ETA."""

    def __init__(self, name: str, stream=None, enabled: bool = True):
        self.name = name
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def log(self, text: str) -> None:
        if self.enabled:
            print(f"[{self.name} {self.elapsed():7.1f}s] {text}", file=self.stream, flush=True)

    def step(self, done: int, total: int, text: str) -> None:
        remaining = ""
        if 0 < done < total:
            eta = self.elapsed() / done * (total - done)
            remaining = f", ~{eta:.0f}s left"
        self.log(f"({done}/{total}{remaining}) {text}")


def _jsonable(value):
    """NumPy scalars/arrays to Python; non-finite floats to None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; floats with 3 decimals, or 3 significant digits
    when very large or small."""
    def cell(value):
        if isinstance(value, (float, np.floating)):
            if not math.isfinite(value):
                return "n/a"
            if value != 0 and not 1e-3 <= abs(value) < 1e5:
                return f"{value:.3g}"
            return f"{value:.3f}"
        return str(value)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    """Collects one experiment's text, figures and numbers and writes them to ``out_dir``.

    Files: ``report.md`` (title, setup, sections with tables and embedded plots),
    ``<name>.png`` for every figure, ``results.json`` (``{"experiment", "mode", "config",
    "results", "elapsed_seconds", "environment"}``)."""

    def __init__(self, out_dir, experiment: str, mode: str, config: Dict[str, Any]):
        self.out_dir = Path(out_dir)
        self.experiment = experiment
        self.mode = mode
        self.config = config
        self.sections: List[str] = []
        self.figures: List[str] = []
        self.results: Dict[str, Any] = {}
        # The folder is created on the first file written: a run that fails early (e.g.
        # no IMDB file) leaves nothing behind.

    def text(self, markdown: str) -> None:
        self.sections.append(markdown.strip())

    def table(self, header, rows, caption: Optional[str] = None) -> None:
        self.sections.append(((caption.strip() + "\n\n") if caption else "")
                             + markdown_table(header, rows))

    def figure(self, fig, name: str, caption: str) -> str:
        """Save a figure from ``new_figure`` as ``<name>.png`` and embed it in the report."""
        filename = f"{name}.png"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(self.out_dir / filename, dpi=110, bbox_inches="tight")
        self.figures.append(filename)
        self.sections.append(f"![{caption}]({filename})\n\n*{caption}*")
        return filename

    def write(self, title: str, summary: str, elapsed: float) -> Path:
        """Write report.md and results.json; returns the report's path."""
        environment = {"python": platform.python_version(), "numpy": np.__version__,
                       "machine": platform.machine(), "cpus": os.cpu_count()}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        payload = {"experiment": self.experiment, "mode": self.mode, "config": self.config,
                   "results": self.results, "figures": self.figures,
                   "elapsed_seconds": elapsed, "environment": environment}
        with open(self.out_dir / "results.json", "w") as f:
            json.dump(_jsonable(payload), f, indent=2, allow_nan=False)
        config_lines = "\n".join(f"- `{k}`: {v}" for k, v in self.config.items())
        if self.mode == "quick":
            config_lines += ("\n\n> Quick mode: smoke-test sizes. The numbers show that the "
                             "pipeline runs, not what the experiment finds; see `--full`.")
        body = "\n\n".join(self.sections)
        report = (f"# {title}\n\n{summary.strip()}\n\n"
                  f"Mode: **{self.mode}**; run time {elapsed:.0f} s; "
                  f"`fusedrnn experiment {self.experiment} --{self.mode}`.\n\n"
                  f"## Setup\n\n{config_lines}\n\n{body}\n")
        path = self.out_dir / "report.md"
        path.write_text(report)
        return path


def require_matplotlib():
    """Import matplotlib or say how to install it (called before an experiment starts, not
    after it ran)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("the experiments draw their plots with matplotlib: "
                          "pip install 'fusedrnn[plots]' (or matplotlib)") from exc
    return matplotlib


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6):
    """A figure with a (nrows, ncols) array of axes.  A bare ``Figure`` (not pyplot): it
    renders with Agg without touching the global backend or needing a display."""
    require_matplotlib()
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * ncols, height * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def mean_and_spread(values) -> Dict[str, float]:
    """mean, sample standard deviation (0 for one value), min, max and n of a list."""
    values = np.asarray(values, dtype=float)
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
        "n": int(values.size),
    }
