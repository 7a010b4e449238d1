"""``convodb export`` and ``convodb import`` on a million messages: throughput and peak RSS.

For each database and size, one conversation of that many messages (the hardest case for
constant memory: nothing may grow with the conversation) is bulk-loaded on the bare driver
into a fresh database; ``convodb export`` writes it to a file and ``convodb import`` reads it
into a second fresh database, each as a real process, timed, with its peak RSS read from the
kernel (``VmHWM``, the process's own high-water mark). The import's figure covers both of its
passes (every line is checked before anything is written). Peak RSS at the small size and at
the full size side by side show whether memory is flat.

```sh
python -m benchmarks.export_import                       # 1,000,000 messages, SQLite + PostgreSQL
python -m benchmarks.export_import --messages 200000 --db sqlite
```
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._data import fresh_database, load_core

# Runs the CLI and reports its peak RSS as the kernel counts it for the process's own memory
# (VmHWM), on its last line of stderr. Not wait4's ru_maxrss: Linux carries the parent's peak
# across fork and exec into it, and the parent here has just bulk-loaded the data.
_MEASURED_CLI = (
    "import atexit, sys\n"
    "def peak():\n"
    "    status = open('/proc/self/status').read()\n"
    "    print('VmHWM', status.split('VmHWM:')[1].split()[0], file=sys.stderr)\n"
    "atexit.register(peak)\n"
    "sys.argv = ['convodb', *sys.argv[1:]]\n"
    "from convodb.cli import main\n"
    "main()\n"
)


def _run_measured(args: Sequence[str]) -> tuple[float, float]:
    """Run ``convodb ARGS``; (seconds, peak RSS in MiB)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _MEASURED_CLI, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"convodb {' '.join(args)} failed: {result.stderr}")
    peak_kib = int(result.stderr.strip().splitlines()[-1].split()[1])
    return elapsed, peak_kib / 1024


async def _one(dialect: str, messages: int, workdir: Path) -> dict[str, Any]:
    export_file = workdir / f"{dialect}-{messages}.jsonl"
    async with fresh_database(dialect) as source:
        await _create_schema(source.convodb_url)
        await load_core(source, [("bench-conversation", messages)])
        export_s, export_rss = _run_measured(
            ["export", "-o", str(export_file), "--database-url", source.convodb_url]
        )
    size_mb = export_file.stat().st_size / 2**20
    async with fresh_database(dialect) as target:
        await _create_schema(target.convodb_url)
        import_s, import_rss = _run_measured(
            ["import", str(export_file), "--database-url", target.convodb_url]
        )
    export_file.unlink()
    return {
        "db": dialect,
        "messages": messages,
        "file_mb": round(size_mb, 1),
        "export_msg_s": round(messages / export_s),
        "export_peak_rss_mb": round(export_rss, 1),
        "import_msg_s": round(messages / import_s),
        "import_peak_rss_mb": round(import_rss, 1),
    }


async def _create_schema(url: str) -> None:
    from convodb import Database

    async with Database(url) as db:
        await db.create_all()


async def _main(databases: list[str], sizes: list[int]) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="convodb_transfer_") as workdir:
        for dialect in databases:
            for size in sizes:
                print(f"{dialect}: {size:,} messages ...", file=sys.stderr, flush=True)
                results.append(await _one(dialect, size, Path(workdir)))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--db", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    sizes = [args.messages // 10, args.messages]
    results = asyncio.run(_main(args.db.split(","), sizes))
    columns = list(results[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in results:
        print(
            "| "
            + " | ".join(f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in columns)
            + " |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
