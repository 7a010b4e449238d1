"""``python -m benchmarks.median OUT.json RUN.json RUN.json RUN.json``: the median of whole runs.

Each run's table already shows the median of its interleaved rounds; this takes several runs'
JSON results (same mode, same machine) and writes one result whose every figure is the median
of the runs' figures, then prints its table. Anomaly and error counts are summed instead: an
anomaly in any run counts. Everything else (lists, text) is taken from the first run, and
``meta.runs`` records the runs merged.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report import ANOMALIES, render

SUMMED = set(ANOMALIES)  # HTTP error counts are "errors" too


def merge(runs: Sequence[Any], key: str = "") -> Any:
    """The runs' values merged: medians of numbers, sums of anomaly counts, else the first."""
    first = runs[0]
    if isinstance(first, dict):
        keys = [k for k in first if all(isinstance(r, dict) and k in r for r in runs)]
        return {k: merge([r[k] for r in runs], k) for k in keys}
    numbers = [r for r in runs if isinstance(r, int | float) and not isinstance(r, bool)]
    if len(numbers) == len(runs) and not isinstance(first, bool):
        if key in SUMMED:
            return sum(numbers)
        return statistics.median(numbers)
    return first


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.median", description=__doc__)
    parser.add_argument("out", type=Path, help="where to write the merged JSON")
    parser.add_argument("runs", type=Path, nargs="+", help="the runs' JSON results")
    args = parser.parse_args(argv)
    runs = [json.loads(path.read_text()) for path in args.runs]
    modes = {run["meta"]["mode"] for run in runs}
    if len(modes) != 1:
        parser.error(f"runs of different modes: {sorted(modes)}")
    merged = merge(runs)
    merged["meta"]["runs"] = [
        {"file": str(path), "date": run["meta"]["date"], "seconds": run["meta"].get("seconds")}
        for path, run in zip(args.runs, runs, strict=True)
    ]
    args.out.write_text(json.dumps(merged, indent=1, default=str))
    print(render(merged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
