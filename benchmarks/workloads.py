"""The workloads: each one a bounded loop (a count and a time cap) over one store.

Every function returns a flat dict of numbers for one round on one store; the runner
interleaves stores round by round (raw, convodb, peers, raw, ...) so that noise from other
work on this shared machine hits every store alike, and reports the median round.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ._data import content_for, role_for, tokens_for
from .stores import Msg, Store

Result = dict[str, Any]


def _msgs(start: int, count: int) -> list[Msg]:
    return [
        (role_for(start + i), text, tokens_for(text))
        for i in range(count)
        for text in (content_for(10_000_000 + start + i),)
    ]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def _timed(op: Callable[[int], Awaitable[Any]], count: int, cap_s: float) -> list[float]:
    """Latencies of up to ``count`` sequential calls, stopping after ``cap_s`` seconds."""
    latencies: list[float] = []
    deadline = time.perf_counter() + cap_s
    for i in range(count):
        start = time.perf_counter()
        await op(i)
        end = time.perf_counter()
        latencies.append(end - start)
        if end > deadline:
            break
    return latencies


def _summary(latencies: list[float], per_op: int) -> Result:
    total = sum(latencies)
    return {
        "ops": len(latencies),
        "msg_s": len(latencies) * per_op / total if total else float("nan"),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


async def append(store: Store, cid: str, count: int, batch: int, cap_s: float) -> Result:
    """``count`` appends of ``batch`` messages, one after another, to a new conversation."""
    await store.create(cid)
    payloads = [_msgs(i * batch, batch) for i in range(count)]
    await store.append(cid, payloads[0])  # the first append creates peers' session rows
    latencies = await _timed(lambda i: store.append(cid, payloads[i]), count, cap_s)
    return _summary(latencies, batch)


async def latest(
    store: Store, cids: Sequence[str], count: int, cap_s: float, seed: int, n: int = 50
) -> Result:
    """Latest-``n`` of a random conversation among ``cids`` (or of the one given)."""
    rng = random.Random(seed)
    picks = [rng.choice(cids) for _ in range(count)]
    got = await store.latest(picks[0], n)  # warm-up, and a sanity check
    if len(got) != n:
        raise AssertionError(f"{store.name}: latest-{n} returned {len(got)} messages")
    latencies = await _timed(lambda i: store.latest(picks[i], n), count, cap_s)
    return _summary(latencies, 1)


async def window(store: Store, cid: str, count: int, cap_s: float, max_tokens: int) -> Result:
    """A token-budget window of the newest history; ``{}`` when the store offers none."""
    kept = await store.window(cid, max_tokens)
    if kept is None:
        return {}
    latencies = await _timed(lambda i: store.window(cid, max_tokens), count, cap_s)
    return {**_summary(latencies, 1), "messages": kept}


async def concurrent(store: Store, cid: str, writers: int, per_writer: int, cap_s: float) -> Result:
    """``writers`` tasks append to one conversation while a reader follows it.

    Anomalies, from the final history and what the reader saw on the way:
    lost (a message acknowledged but not stored), duplicated, misordered (a writer's own
    messages out of the order it appended them), and inserted behind (a row that appeared
    before one the reader had already seen: a UI following the conversation misses it).
    """
    await store.create(cid)
    done = asyncio.Event()
    acknowledged: list[str] = []
    deadline = time.perf_counter() + cap_s

    async def writer(w: int) -> None:
        for i in range(per_writer):
            if time.perf_counter() > deadline:
                return
            text = f"w{w}:{i}"
            await store.append(cid, [("user", text, 2)])
            acknowledged.append(text)

    behind = 0
    seen: list[str] = []

    async def reader() -> None:
        nonlocal behind
        cursor: Any = None
        while True:
            finished = done.is_set()
            items, cursor = await store.follow(cid, cursor)
            if store.follow_mode == "snapshot":
                # The whole conversation: rows before the end of what was seen, not seen.
                prefix = set(items[: len(seen)])
                behind += len(prefix - set(seen))
                seen_set = set(seen)
                seen.extend(x for x in items if x not in seen_set)
            else:
                seen.extend(items)
            if finished:
                return
            await asyncio.sleep(0.002)

    reading = asyncio.create_task(reader())
    start = time.perf_counter()
    results = await asyncio.gather(*(writer(w) for w in range(writers)), return_exceptions=True)
    elapsed = time.perf_counter() - start
    done.set()
    await reading
    errors = [r for r in results if isinstance(r, BaseException)]

    final = await store.read_all(cid)
    stored = set(final)
    behind += len(stored - set(seen))  # an incremental reader never sees rows behind it
    misordered = 0
    for w in range(writers):
        mine = [int(x.split(":")[1]) for x in final if x.startswith(f"w{w}:")]
        misordered += sum(1 for a, b in zip(mine, mine[1:], strict=False) if b < a)
    return {
        "msg_s": len(acknowledged) / elapsed,
        "messages": len(acknowledged),
        "errors": len(errors),
        "error": repr(errors[0])[:200] if errors else None,
        "lost": len(set(acknowledged) - stored),
        "duplicated": len(final) - len(stored),
        "misordered": misordered,
        "inserted_behind": behind,
    }


def rss_mb() -> float:
    """Resident set size of this process, from /proc (Linux)."""
    with open(f"/proc/{os.getpid()}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def memory(
    store: Store, prefix: str, messages: int, conversations: int, cap_s: float
) -> Result:
    """Append ``messages`` in batches of 10 over many conversations, reading a latest-50
    window after each batch and a token-budget window after every tenth; RSS sampled along
    the way. Growth is measured from the 20% mark (after warm-up: pools, statement caches) to
    the end."""
    cids = [f"{prefix}{i:06d}" for i in range(conversations)]
    for cid in cids:
        await store.create(cid)
    batches = messages // 10
    samples: list[tuple[int, float]] = []
    deadline = time.perf_counter() + cap_s
    appended = 0
    for b in range(batches):
        cid = cids[b % conversations]
        await store.append(cid, _msgs(b * 10, 10))
        await store.latest(cid, 50)
        if b % 10 == 0:
            await store.window(cid, 2000)
        appended += 10
        if b % max(1, batches // 20) == 0:
            gc.collect()
            samples.append((appended, rss_mb()))
        if time.perf_counter() > deadline:
            break
    gc.collect()
    samples.append((appended, rss_mb()))
    warm = next((s for s in samples if s[0] >= appended * 0.2), samples[0])
    return {
        "messages": appended,
        "rss_start_mb": samples[0][1],
        "rss_warm_mb": warm[1],
        "rss_end_mb": samples[-1][1],
        "growth_after_warmup_mb": samples[-1][1] - warm[1],
        "samples": samples,
    }


def median_of(rounds: Sequence[Result], key: str) -> float:
    values = [r[key] for r in rounds if key in r and r[key] == r[key]]
    return statistics.median(values) if values else float("nan")
