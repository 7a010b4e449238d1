"""Text-only append and read costs of the installed convodb, for an A/B between two checkouts.

Run it once per checkout, alternating, and compare the medians (the machine is shared)::

    PYTHONPATH=/path/to/old/src python -m benchmarks.text_only_ab old
    python -m benchmarks.text_only_ab new

It prints the best of 5 rounds of 1,000 ten-message appends and of 2,000 latest-50 reads on an
embedded SQLite file, in microseconds per call, through the public API.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time

from convodb import ConversationService, Database


async def main(label: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        async with Database(f"sqlite:///{directory}/ab.db") as db:
            await db.create_all()
            async with db.session() as session:
                service = ConversationService(session)
                cid = (await service.create_conversation("u")).id
                batch = [{"role": "user", "content": f"hello there number {i}"} for i in range(10)]
                for _ in range(200):  # warm up, and give reads 2,000 rows to choose from
                    await service.save_conversation_messages(cid, "u", batch)
                appends, reads = [], []
                for _ in range(5):
                    start = time.perf_counter()
                    for _ in range(1000):
                        await service.save_conversation_messages(cid, "u", batch)
                    appends.append((time.perf_counter() - start) / 1000 * 1e6)
                    start = time.perf_counter()
                    for _ in range(2000):
                        await service.get_conversation_history(cid, "u", 50)
                    reads.append((time.perf_counter() - start) / 2000 * 1e6)
    print(f"{label}: batch-10 append {min(appends):.0f} us, latest-50 {min(reads):.0f} us")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "convodb"))
