"""Faults between the HTTP service and PostgreSQL: backends killed under load, a network
partition, refused connections, a database that allows none.

Whatever happens, a client gets its answer or a 503 problem with ``Retry-After`` within the
timeouts -- never a 500, never a hang -- the service recovers without a restart, and a retried
``Idempotency-Key`` stores its messages exactly once. The service reaches PostgreSQL through
a TCP proxy of the test's own (``tests/_proxy.py``); backends are terminated only in the test's
own database, since other runs share the server.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from convodb import Database

from ._proxy import Proxy, proxy_to
from .test_lifecycle import _admin

TIMEOUTS = {"connect_timeout": 1.0, "pool_timeout": 1.0, "statement_timeout": 1.0}
# The longest a request may take while the database is unreachable: a checkout that waits for
# a connection (pool), a statement that waits for its answer (statement + 1 s of grace), and
# slack for a loaded machine.
DEADLINE = 8.0
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="


@asynccontextmanager
async def _service(proxy: Proxy, postgres_url: str) -> AsyncIterator[tuple[Any, str]]:
    """The app on a Database that reaches PostgreSQL through ``proxy``, and an API key."""
    from convodb.server import create_app
    from tests._http import Api, make_client, settings

    url = make_url(postgres_url).set(host="127.0.0.1", port=proxy.port)
    async with Database(url, **TIMEOUTS) as db:  # type: ignore[arg-type]
        app = create_app(settings(), database=db)
        async with make_client(app) as client:
            api = Api(db, app, client)
            yield api, await api.key("alice")


async def _terminate_backends(postgres_url: str) -> int:
    name = make_url(postgres_url).database
    async with _admin(postgres_url) as admin:
        killed: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    return killed


def _check(response: httpx.Response, *ok: int) -> bool:
    """Whether the response is a success; otherwise it must be a clean 503 problem."""
    if response.status_code in ok:
        return True
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) >= 1
    return False


class Client:
    """Requests as one user, counting what the service answered."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}
        self.unavailable = 0

    async def create(self) -> str | None:
        response = await self.client.post("/v1/conversations", headers=self.headers)
        if not self._ok(response, 201):
            return None
        cid: str = response.json()["id"]
        return cid

    async def append(self, cid: str, key: str | None, content: str) -> bool:
        headers = dict(self.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        body = {"messages": [{"role": "user", "content": content}]}
        response = await self.client.post(
            f"/v1/conversations/{cid}/messages", headers=headers, json=body
        )
        return self._ok(response, 200, 201)

    async def read(self, cid: str) -> bool:
        history = await self.client.get(f"/v1/conversations/{cid}/messages", headers=self.headers)
        window = await self.client.post(
            f"/v1/conversations/{cid}/agent-input",
            headers=self.headers,
            json={"format": "openai-chat", "max_messages": 20},
        )
        return self._ok(history, 200) and self._ok(window, 200)

    async def attachment(self, cid: str, sha256: str) -> bool:
        response = await self.client.get(
            f"/v1/conversations/{cid}/attachments/{sha256}", headers=self.headers
        )
        return self._ok(response, 200)

    async def ready(self) -> bool:
        return self._ok(await self.client.get("/readyz"), 200)

    async def contents(self, cid: str) -> list[tuple[int, str]]:
        response = await self.client.get(
            f"/v1/conversations/{cid}/messages", headers=self.headers, params={"limit": 1000}
        )
        assert response.status_code == 200, response.text
        return [(m["seq"], m["content"]) for m in response.json()["items"]]

    def _ok(self, response: httpx.Response, *ok: int) -> bool:
        if _check(response, *ok):
            return True
        self.unavailable += 1
        return False


async def _eventually(attempt: Any, seconds: float = 15.0) -> None:
    """Retry ``attempt()`` until it succeeds; the service must recover within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await attempt():
        assert time.monotonic() < deadline, "the service did not recover"
        await asyncio.sleep(0.1)


async def test_killed_backends_under_load_give_503s_and_lose_or_double_nothing(
    postgres_url: str,
) -> None:
    async with proxy_to("127.0.0.1", _port(postgres_url)) as proxy:
        async with _service(proxy, postgres_url) as (api, token):
            client = Client(api.client, token)
            cids = [cid for _ in range(4) if (cid := await client.create()) is not None]
            assert len(cids) == 4
            stop = asyncio.Event()
            pending: dict[str, tuple[str, str]] = {}  # Idempotency-Key -> (cid, content)
            acknowledged: dict[str, set[str]] = {cid: set() for cid in cids}
            unkeyed = {cid: [0, 0] for cid in cids}  # acknowledged, unanswered

            async def writer(cid: str) -> None:
                i = 0
                while not stop.is_set():
                    key, content = f"{cid}:{i}", f"keyed {i}"
                    if await client.append(cid, key, content):
                        acknowledged[cid].add(content)
                    else:
                        pending[key] = (cid, content)
                    # The hot path: an append without a key, and the reads.
                    ok = await client.append(cid, None, f"plain {i}")
                    unkeyed[cid][0 if ok else 1] += 1
                    await client.read(cid)
                    i += 1

            writers = [asyncio.create_task(writer(cid)) for cid in cids]
            killed = 0
            for _ in range(10):
                await asyncio.sleep(random.uniform(0.1, 0.3))
                killed += await _terminate_backends(postgres_url)
            stop.set()
            await asyncio.gather(*writers)
            assert killed >= 10

            # Every request that got a 503 is retried with its key: stored exactly once.
            for key, (cid, content) in pending.items():

                async def retry(cid: str = cid, key: str = key, content: str = content) -> bool:
                    return await client.append(cid, key, content)

                await _eventually(retry)
                acknowledged[cid].add(content)

            for cid in cids:
                stored = await client.contents(cid)
                assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))
                keyed = [c for _, c in stored if c is not None and c.startswith("keyed ")]
                assert sorted(keyed) == sorted(acknowledged[cid])  # none lost, none doubled
                plain = len(stored) - len(keyed)
                done, unanswered = unkeyed[cid]
                assert done <= plain <= done + unanswered
            assert client.unavailable > 0  # the faults did reach the service


async def test_a_partition_gives_503s_within_the_timeouts_then_heals(postgres_url: str) -> None:
    async with proxy_to("127.0.0.1", _port(postgres_url)) as proxy:
        async with _service(proxy, postgres_url) as (api, token):
            client = Client(api.client, token)
            cid = await client.create()
            assert cid is not None
            assert await client.append(cid, "before", "before")
            pictures = await client.create()
            assert pictures is not None
            image = {"type": "image", "data": PNG, "media_type": "image/png"}
            appended = await api.client.post(
                f"/v1/conversations/{pictures}/messages",
                headers=client.headers,
                json={"messages": [{"role": "user", "content": [image]}]},
            )
            sha256 = appended.json()["messages"][0]["content"][0]["attachment"]
            assert await client.attachment(pictures, sha256)

            proxy.partition()
            calls = {
                "append": client.append(cid, "during", "during"),
                "append without key": client.append(cid, None, "plain"),
                "read": client.read(cid),
                "attachment": client.attachment(pictures, sha256),
                "create": client.create(),
                "readyz": client.ready(),
            }
            started = time.monotonic()
            results = await asyncio.wait_for(asyncio.gather(*calls.values()), DEADLINE * 2)
            elapsed = time.monotonic() - started
            assert not any(results), dict(zip(calls, results, strict=True))
            assert elapsed < DEADLINE

            proxy.heal()
            await _eventually(client.ready)
            await _eventually(lambda: client.append(cid, "during", "during"))
            assert await client.append(cid, "after", "after")
            assert await client.attachment(pictures, sha256)
            contents = [c for _, c in await client.contents(cid) if c != "plain"]
            assert contents == ["before", "during", "after"]


async def test_refused_connections_are_503s_then_recover(postgres_url: str) -> None:
    async with proxy_to("127.0.0.1", _port(postgres_url)) as proxy:
        async with _service(proxy, postgres_url) as (api, token):
            client = Client(api.client, token)
            cid = await client.create()
            assert cid is not None

            proxy.refuse()
            started = time.monotonic()
            assert not await client.read(cid)
            assert not await client.append(cid, "k", "refused")
            assert not await client.ready()
            assert time.monotonic() - started < DEADLINE

            proxy.heal()
            await _eventually(lambda: client.append(cid, "k", "refused"))
            assert [c for _, c in await client.contents(cid)] == ["refused"]


async def test_a_database_that_allows_no_connections_is_503_then_recovers(
    postgres_url: str,
) -> None:
    name = make_url(postgres_url).database
    maintenance = str(make_url(postgres_url).set(database="postgres").render_as_string(False))
    async with proxy_to("127.0.0.1", _port(postgres_url)) as proxy:
        async with _service(proxy, postgres_url) as (api, token):
            client = Client(api.client, token)
            cid = await client.create()
            assert cid is not None
            async with _admin(maintenance) as admin:
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                try:
                    await admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                        name,
                    )
                    for _ in range(3):  # SQLSTATE 55000 on every new connection
                        assert not await client.read(cid)
                        assert not await client.append(cid, "k", "allowed again")
                        assert not await client.ready()
                finally:
                    await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await _eventually(lambda: client.append(cid, "k", "allowed again"))
            assert [c for _, c in await client.contents(cid)] == ["allowed again"]


def _port(url: str) -> int:
    port = make_url(url).port
    return 5432 if port is None else port
