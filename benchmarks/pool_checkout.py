"""``python -m benchmarks.pool_checkout``: what one checkout costs on the PostgreSQL hot path.

convodb's own pool (``convodb.storage._postgresql.PgConnections``) against asyncpg's ``Pool``
as convodb would use it (no reset query, an acquire timeout), interleaved in rounds on one
connection each, with one ``SELECT 1`` round trip for scale. Design rule 13 keeps a pool of our
own only where it is clearly ahead of the library; ``results/pool-comparison.md`` has the figures
and the end-to-end runs that decided it.
"""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg  # type: ignore[import-untyped]

from convodb.storage import Timeouts
from convodb.storage._postgresql import PgConnections

URL = os.environ.get("CONVODB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CHECKOUTS = 20_000


async def _no_reset(_connection: object) -> None:
    pass


async def main() -> None:
    timeouts = Timeouts(connect=10, pool=10, statement=30, idle=300)
    own = PgConnections({"dsn": URL}, max_size=4, timeouts=timeouts)
    library = await asyncpg.create_pool(URL, min_size=1, max_size=4, reset=_no_reset)
    try:
        async with own.connection() as connection:  # opened once, outside the timing
            await connection.fetchval("SELECT 1")
        for round_ in range(1, 4):
            started = time.perf_counter()
            for _ in range(CHECKOUTS):
                async with own.connection():
                    pass
            mine = (time.perf_counter() - started) / CHECKOUTS * 1e6
            started = time.perf_counter()
            for _ in range(CHECKOUTS):
                async with library.acquire(timeout=10):
                    pass
            theirs = (time.perf_counter() - started) / CHECKOUTS * 1e6
            async with own.connection() as connection:
                started = time.perf_counter()
                for _ in range(2000):
                    await connection.fetchval("SELECT 1")
                trip = (time.perf_counter() - started) / 2000 * 1e6
            print(
                f"round {round_}: checkout and return: own pool {mine:.1f} us, asyncpg Pool "
                f"{theirs:.1f} us ({theirs / mine:.0f}x); one SELECT 1 round trip {trip:.0f} us"
            )
    finally:
        await own.close()
        await library.close()


if __name__ == "__main__":
    asyncio.run(main())
