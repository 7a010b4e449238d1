"""The peers, each through its own public API, on a fresh database of its own.

Each peer's current API was read from its installed source (the versions are recorded in the
results). Each appears twice: in its best usage, ``(shared)``, one long-lived handle per
conversation (or one for all, where the handle is not bound to a conversation) made before
the workloads and kept for the run, as a long-running agent process holds it; and in
per-request usage, ``(per request)``, a new handle for every call, as a stateless request
handler makes one. Both share the peer's one engine (a process-wide pool either way), so the
two rows differ only in the handle's life. The quick run keeps only the best usage unless
``--per-request`` is given. What each peer can and cannot do shapes how it is driven:

- OpenAI Agents SDK ``SQLAlchemySession`` (``agents.extensions.memory``): ``add_items`` locks the
  session row, inserts, touches ``updated_at``; ``get_items(limit=n)`` is an indexed latest-N
  on ``(session_id, created_at)``. A handle is bound to one session id; a new one builds its
  ``Table`` objects and session factory.
- OpenAI Agents SDK ``SQLiteSession`` (SQLite only): sync ``sqlite3`` in ``asyncio.to_thread``,
  serialized by a per-file lock; a handle is bound to one session id, runs ``CREATE TABLE IF
  NOT EXISTS`` on a connection of its own when made, and opens a thread-local connection per
  worker thread on first use. Shared handles are closed at the end, per-request ones after the
  call.
- LangChain ``SQLChatMessageHistory`` with an ``AsyncEngine``: no index on ``session_id`` and
  no latest-N read, so latest-50 is ``aget_messages()[-50:]``. A handle is bound to one session
  id and checks for its table (``create_all``) on its first call. One message converter is
  shared by every handle (the default builds a declarative class per instance).
- LlamaIndex ``SQLAlchemyChatStore``: ``get_messages(limit=n)`` returns the *oldest* n, so
  latest-50 is ``count_messages`` then ``get_messages(offset=count - 50, limit=50)``. One
  handle serves every conversation; a new one sets up its table (``create_all``) on first use.

Warming the shared handles runs one cheap public call each (``get_items(limit=1)``, or
``aadd_messages([])``, which adds nothing) so that a handle's one-time set-up is not timed.

On MariaDB only LangChain runs: the OpenAI Agents SDK's and LlamaIndex's tables declare a
``String`` column without a length (``agent_sessions.session_id``, ``llama_chat.key``), which
SQLAlchemy cannot create on MySQL/MariaDB ("VARCHAR requires a length on dialect mysql"), so
neither works there as shipped; creating their tables by hand would be benchmarking a fork.

None of them offers an "after this position" read: the concurrent-writers reader polls the
whole conversation through the public API (``follow_mode = "snapshot"``).
Bulk loads write each peer's own table layout and serialization on the bare driver.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from ._data import EPOCH, Target, bulk_insert, content_for, role_for
from .stores import IDLE, POOL_SIZE, Msg, Store


def _mod(name: str) -> Any:
    """Peers are benchmark-only dependencies, typed loosely."""
    return importlib.import_module(name)


_ENGINES: dict[str, list[Any]] = {}
"""One engine per database, shared by a peer's two usages: ``[engine, users]``."""


def _engine(target: Target) -> Any:
    entry = _ENGINES.get(target.sqlalchemy_url)
    if entry is None:
        create = _mod("sqlalchemy.ext.asyncio").create_async_engine
        if target.dialect == "sqlite":
            engine = create(target.sqlalchemy_url, connect_args={"timeout": 30})
        else:
            engine = create(target.sqlalchemy_url, pool_size=IDLE, max_overflow=POOL_SIZE - IDLE)
        entry = _ENGINES[target.sqlalchemy_url] = [engine, 0]
    entry[1] += 1
    return entry[0]


async def _release(target: Target) -> None:
    entry = _ENGINES[target.sqlalchemy_url]
    entry[1] -= 1
    if not entry[1]:
        del _ENGINES[target.sqlalchemy_url]
        await entry[0].dispose()


class _Handles:
    """A peer's handles: one per key, kept (shared), or a new one per call (per request)."""

    def __init__(self, make: Callable[[str], Any], per_request: bool) -> None:
        self._make, self._per_request = make, per_request
        self.kept: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        if self._per_request:
            return self._make(key)
        handle = self.kept.get(key)
        if handle is None:
            handle = self.kept[key] = self._make(key)
        return handle


_HOLE = "@@CONTENT@@"


def _fill(template: str, text: str) -> str:
    """The peer's own serialization of a message, with ``text`` put where the hole was."""
    return template.replace(json.dumps(_HOLE), json.dumps(text), 1)


def _naive(n: int) -> datetime:
    return (EPOCH + timedelta(microseconds=n * 1000)).replace(tzinfo=None)


def _ts(target: Target, n: int) -> Any:
    at = _naive(n)
    return at if target.dialect in ("postgresql", "mariadb") else at.isoformat(sep=" ")


def _messages(
    conversations: Sequence[tuple[str, int]], first: int
) -> Iterator[tuple[int, str, int, str]]:
    n = first
    for cid, count in conversations:
        for seq in range(1, count + 1):
            n += 1
            yield n, cid, seq, content_for(n)


class OpenAIAgentsSQLAlchemy(Store):
    name, group = "openai-agents SQLAlchemySession (shared)", "openai-sa"
    follow_mode = "snapshot"
    # Not MariaDB: its session_id is a length-less String primary key, which SQLAlchemy
    # refuses to create on MySQL ("VARCHAR requires a length on dialect mysql").
    dialects = ("sqlite", "postgresql")

    async def open(self) -> None:
        cls = _mod("agents.extensions.memory").SQLAlchemySession
        self.engine = _engine(self.target)
        self._sessions = _Handles(lambda cid: cls(cid, engine=self.engine), self.per_request)
        await cls("setup", engine=self.engine, create_tables=True).add_items(
            [{"role": "user", "content": "setup"}]
        )

    async def close(self) -> None:
        await _release(self.target)

    async def warm(self, cids: Sequence[str]) -> None:
        if not self.per_request:
            for cid in cids:
                await self._sessions.get(cid).get_items(limit=1)

    async def create(self, cid: str) -> None:
        pass  # add_items creates the session row

    async def append(self, cid: str, msgs: Sequence[Msg]) -> None:
        await self._sessions.get(cid).add_items([{"role": r, "content": c} for r, c, _ in msgs])

    async def latest(self, cid: str, n: int) -> list[str]:
        return [item["content"] for item in await self._sessions.get(cid).get_items(limit=n)]

    async def read_all(self, cid: str) -> list[str]:
        return [item["content"] for item in await self._sessions.get(cid).get_items()]

    async def bulk_load(self, conversations: Sequence[tuple[str, int]], first: int) -> None:
        await bulk_insert(
            self.target, "agent_sessions", ("session_id",), ((cid,) for cid, _ in conversations)
        )
        await bulk_insert(
            self.target,
            "agent_messages",
            ("session_id", "message_data", "created_at"),
            (
                (cid, json.dumps({"role": role_for(seq), "content": text}), _ts(self.target, n))
                for n, cid, seq, text in _messages(conversations, first)
            ),
        )


class OpenAIAgentsSQLAlchemyPerRequest(OpenAIAgentsSQLAlchemy):
    name, per_request = "openai-agents SQLAlchemySession (per request)", True


class OpenAIAgentsSQLite(Store):
    name, group, dialects = "openai-agents SQLiteSession (shared)", "openai-sqlite", ("sqlite",)
    follow_mode = "snapshot"

    async def open(self) -> None:
        cls = _mod("agents").SQLiteSession
        self._sessions = _Handles(lambda cid: cls(cid, db_path=self.target.path), self.per_request)
        await self._call("setup", "add_items", [{"role": "user", "content": "setup"}])

    async def close(self) -> None:
        for session in self._sessions.kept.values():
            session.close()

    async def warm(self, cids: Sequence[str]) -> None:
        if not self.per_request:
            for cid in cids:
                await self._call(cid, "get_items", limit=1)

    async def _call(self, cid: str, method: str, *args: Any, **kwargs: Any) -> Any:
        session = self._sessions.get(cid)
        try:
            return await getattr(session, method)(*args, **kwargs)
        finally:
            if self.per_request:
                session.close()

    async def create(self, cid: str) -> None:
        pass

    async def append(self, cid: str, msgs: Sequence[Msg]) -> None:
        await self._call(cid, "add_items", [{"role": r, "content": c} for r, c, _ in msgs])

    async def latest(self, cid: str, n: int) -> list[str]:
        return [item["content"] for item in await self._call(cid, "get_items", limit=n)]

    async def read_all(self, cid: str) -> list[str]:
        return [item["content"] for item in await self._call(cid, "get_items")]

    async def bulk_load(self, conversations: Sequence[tuple[str, int]], first: int) -> None:
        await bulk_insert(
            self.target, "agent_sessions", ("session_id",), ((cid,) for cid, _ in conversations)
        )
        await bulk_insert(
            self.target,
            "agent_messages",
            ("session_id", "message_data"),
            (
                (cid, json.dumps({"role": role_for(seq), "content": text}))
                for _n, cid, seq, text in _messages(conversations, first)
            ),
        )


class OpenAIAgentsSQLitePerRequest(OpenAIAgentsSQLite):
    name, per_request = "openai-agents SQLiteSession (per request)", True


class LangChainSQL(Store):
    name, group = "langchain SQLChatMessageHistory (shared)", "langchain"
    follow_mode = "snapshot"
    dialects = ("sqlite", "postgresql", "mariadb")  # TEXT columns only: runs on MariaDB as is

    async def open(self) -> None:
        sql = _mod("langchain_community.chat_message_histories.sql")
        messages = _mod("langchain_core.messages")
        history_cls = sql.SQLChatMessageHistory
        converter = sql.DefaultMessageConverter("message_store")
        self._human, self._ai = messages.HumanMessage, messages.AIMessage
        self._to_dict = messages.message_to_dict
        self.engine = _engine(self.target)
        self._histories = _Handles(
            lambda cid: history_cls(
                session_id=cid, connection=self.engine, custom_message_converter=converter
            ),
            self.per_request,
        )
        await self._histories.get("setup").aadd_message(self._human(content="setup"))

    async def close(self) -> None:
        await _release(self.target)

    async def warm(self, cids: Sequence[str]) -> None:
        if not self.per_request:
            for cid in cids:
                await self._histories.get(cid).aadd_messages([])  # its table check, once

    def _message(self, role: str, content: str) -> Any:
        return (self._human if role == "user" else self._ai)(content=content)

    async def create(self, cid: str) -> None:
        pass

    async def append(self, cid: str, msgs: Sequence[Msg]) -> None:
        history = self._histories.get(cid)
        if len(msgs) == 1:
            await history.aadd_message(self._message(msgs[0][0], msgs[0][1]))
        else:
            await history.aadd_messages([self._message(r, c) for r, c, _ in msgs])

    async def latest(self, cid: str, n: int) -> list[str]:
        return [m.content for m in (await self._histories.get(cid).aget_messages())[-n:]]

    async def read_all(self, cid: str) -> list[str]:
        return [m.content for m in await self._histories.get(cid).aget_messages()]

    async def bulk_load(self, conversations: Sequence[tuple[str, int]], first: int) -> None:
        templates = {
            role: json.dumps(self._to_dict(self._message(role, _HOLE)))
            for role in ("user", "assistant")
        }
        await bulk_insert(
            self.target,
            "message_store",
            ("session_id", "message"),
            (
                (cid, _fill(templates[role_for(seq)], text))
                for _n, cid, seq, text in _messages(conversations, first)
            ),
        )


class LangChainSQLPerRequest(LangChainSQL):
    name, per_request = "langchain SQLChatMessageHistory (per request)", True


class LlamaIndexSQL(Store):
    name, group = "llamaindex SQLAlchemyChatStore (shared)", "llamaindex"
    follow_mode = "snapshot"
    # Not MariaDB: its key column is a length-less String (indexed), which SQLAlchemy
    # refuses to create on MySQL ("VARCHAR requires a length on dialect mysql").
    dialects = ("sqlite", "postgresql")
    TABLE = "llama_chat"

    async def open(self) -> None:
        chat_store = _mod("llama_index.core.storage.chat_store.sql")
        self._message_cls = _mod("llama_index.core.llms").ChatMessage
        self.engine = _engine(self.target)
        # Not bound to a conversation: the shared usage is one handle for all of them.
        self._stores = _Handles(
            lambda _key: chat_store.SQLAlchemyChatStore(
                table_name=self.TABLE, async_engine=self.engine
            ),
            self.per_request,
        )
        await self._store().add_message("setup", self._message_cls(role="user", content="setup"))

    async def close(self) -> None:
        await _release(self.target)

    def _store(self) -> Any:
        return self._stores.get("")

    async def create(self, cid: str) -> None:
        pass

    async def append(self, cid: str, msgs: Sequence[Msg]) -> None:
        if len(msgs) == 1:
            role, content, _ = msgs[0]
            await self._store().add_message(cid, self._message_cls(role=role, content=content))
        else:
            await self._store().add_messages(
                cid, [self._message_cls(role=r, content=c) for r, c, _ in msgs]
            )

    async def latest(self, cid: str, n: int) -> list[str]:
        store = self._store()  # one handle for the operation's two calls
        count = await store.count_messages(cid)
        messages = await store.get_messages(cid, offset=max(0, count - n), limit=n)
        return [m.content for m in messages]

    async def read_all(self, cid: str) -> list[str]:
        return [m.content for m in await self._store().get_messages(cid)]

    async def bulk_load(self, conversations: Sequence[tuple[str, int]], first: int) -> None:
        templates = {
            role: json.dumps(self._message_cls(role=role, content=_HOLE).model_dump(mode="json"))
            for role in ("user", "assistant")
        }

        def rows() -> Iterator[tuple[Any, ...]]:
            for n, cid, seq, text in _messages(conversations, first):
                role = role_for(seq)
                stamp = 1_700_000_000_000_000_000 + n * 1000
                yield cid, stamp, role, "active", _fill(templates[role], text)

        await bulk_insert(
            self.target, self.TABLE, ("key", "timestamp", "role", "status", "data"), rows()
        )


class LlamaIndexSQLPerRequest(LlamaIndexSQL):
    name, per_request = "llamaindex SQLAlchemyChatStore (per request)", True


PEERS: tuple[type[Store], ...] = (
    OpenAIAgentsSQLAlchemy,
    OpenAIAgentsSQLAlchemyPerRequest,
    OpenAIAgentsSQLite,
    OpenAIAgentsSQLitePerRequest,
    LangChainSQL,
    LangChainSQLPerRequest,
    LlamaIndexSQL,
    LlamaIndexSQLPerRequest,
)
