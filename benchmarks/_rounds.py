"""What the framework adapters' benchmarks share: their command line and results file.

Each benchmark (``integrations_*``) loads a history into every store, runs interleaved rounds
of the framework's operations, and renders a table; this runs it per database and writes the
table with how it was made.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["ms", "run_cli"]


def ms(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``samples`` (seconds), in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def run_cli(
    argv: Sequence[str] | None,
    *,
    module: str,
    description: str | None,
    default_db: str,
    results: Path,
    run_dialect: Callable[[str, int, int], Coroutine[Any, Any, Any]],
    table: Callable[[dict[str, Any]], str],
    title: str,
    loaded: str,
    explanation: str,
) -> int:
    """Parse ``--db --history --rounds --out``, run every database, print the table and write
    it to ``--out`` under ``title``, with the command, the size (``loaded``: what one history
    turn holds), the platform and ``explanation``."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{module}", description=description)
    parser.add_argument("--db", default=default_db)
    parser.add_argument("--history", type=int, default=200, help="turns loaded first")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--out", type=Path, default=results)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    measured: dict[str, Any] = {
        dialect: asyncio.run(run_dialect(dialect, args.history, args.rounds))
        for dialect in args.db.split(",")
    }
    rendered = table(measured)
    print(rendered)
    given = " ".join(argv if argv is not None else sys.argv[1:])
    command = f"python -m benchmarks.{module} {given}".strip()
    args.out.write_text(
        f"# {title}\n\n"
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `{command}`, "
        f"{args.history} turns loaded ({loaded} each), {args.rounds} interleaved rounds, "
        f"Python {platform.python_version()}, {platform.machine()}, "
        f"{time.perf_counter() - started:.0f} s.\n\n"
        f"{explanation}\n\n{rendered}\n"
    )
    print(f"written to {args.out}")
    return 0
