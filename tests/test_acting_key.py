"""A service acting under an API key (``api_key_id``): every call checks, at its start, that
the key is live, and a revoked or deleted key makes it raise having done nothing.

``convodb serve`` relies on it: it remembers a key's digest once verified, and the statements
of the request's work check the key (see ``convodb.server._auth``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from convodb import (
    AdminService,
    ApiKeyRevokedError,
    ApiKeyService,
    ConversationNotFoundError,
    ConversationService,
    Database,
)
from convodb._keys import api_keys

from ._capture import captured_statements

Call = Callable[[ConversationService, str], Awaitable[object]]
USER = "alice"
TOOL_CALL = {"id": "c1", "name": "lookup", "arguments": "{}"}

# Every kind of call: the hot ones check the key in their own first statement, the others in
# one of their own; appends take each of the backends' paths (plain, with columns, keyed).
CALLS: dict[str, Call] = {
    "save_message": lambda s, c: s.save_message(c, "user", "hi", user_id=USER),
    "save_batch": lambda s, c: s.save_conversation_messages(
        c, USER, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    ),
    "save_tool_call": lambda s, c: s.save_message(
        c, "assistant", None, user_id=USER, tool_calls=[TOOL_CALL]
    ),
    "save_with_metadata": lambda s, c: s.save_message(
        c, "user", "hi", user_id=USER, metadata={"a": 1}
    ),
    "save_keyed_message": lambda s, c: s.save_message(c, "user", "hi", user_id=USER, key="k9"),
    "save_idempotent_batch": lambda s, c: s.save_conversation_messages(
        c, USER, [{"role": "user", "content": "a"}], idempotency_key="batch-1"
    ),
    "save_nothing": lambda s, c: s.save_conversation_messages(c, USER, []),
    "get_conversation_history": lambda s, c: s.get_conversation_history(c, USER),
    "list_messages": lambda s, c: s.list_messages(c, USER),
    "list_messages_desc": lambda s, c: s.list_messages(c, USER, order="desc"),
    "get_message": lambda s, c: s.get_message(c, USER, 1),
    "get_agent_input": lambda s, c: s.get_agent_input(c, USER, max_messages=10),
    "get_agent_input_tokens": lambda s, c: s.get_agent_input(c, USER, max_tokens=500),
    "get_conversation": lambda s, c: s.get_conversation(c, USER),
    "list_conversations": lambda s, c: s.list_conversations(USER),
    "create_conversation": lambda s, c: s.create_conversation(USER),
    "update_conversation": lambda s, c: s.update_conversation(c, USER, title="t2"),
    "delete_conversation": lambda s, c: s.delete_conversation(c, USER),
    "remove_messages": lambda s, c: s.remove_messages(c, USER, seqs=[1]),
    "clear_messages": lambda s, c: s.clear_messages(c, USER),
    "get_summary": lambda s, c: s.get_summary(c, USER),
    "list_summaries": lambda s, c: s.list_summaries(c, USER),
    "save_summary": lambda s, c: s.save_summary(c, USER, "summary", upto_seq=1),
}


async def _setup(db: Database) -> tuple[str, str]:
    """A conversation of alice's with two messages, and a live key bound to her."""
    async with db.session() as session:
        service = ConversationService(session)
        cid = (await service.create_conversation(USER, title="t")).id
        await service.save_message(cid, "user", "one", user_id=USER, key="k1")
        await service.save_message(cid, "assistant", "two", user_id=USER)
        key = (await ApiKeyService(session).create(USER)).key.id
    return cid, key


async def _state(db: Database) -> Any:
    """Everything of alice's a call could change."""
    async with db.session() as session:
        service = ConversationService(session)
        conversations = (await service.list_conversations(USER)).items
        messages = {c.id: (await service.list_messages(c.id, USER)).items for c in conversations}
        summaries = {c.id: (await service.list_summaries(c.id, USER)).items for c in conversations}
    return conversations, messages, summaries


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_a_live_key_lets_every_call_through(db: Database, name: str) -> None:
    cid, key = await _setup(db)
    async with db.session() as session:
        await CALLS[name](ConversationService(session, api_key_id=key), cid)


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("how", ["revoked", "deleted"])
async def test_a_revoked_or_deleted_key_fails_every_call_having_done_nothing(
    db: Database, name: str, how: str
) -> None:
    cid, key = await _setup(db)
    async with db.session() as session:
        if how == "revoked":
            assert await ApiKeyService(session).revoke(key) is not None
        else:
            await session.execute(api_keys.delete().where(api_keys.c.id == key))
            await session.commit()
    before = await _state(db)
    async with db.session() as session:
        with pytest.raises(ApiKeyRevokedError) as raised:
            await CALLS[name](ConversationService(session, api_key_id=key), cid)
    assert raised.value.key_id == key
    assert await _state(db) == before


async def test_a_deleted_key_fails_like_a_revoked_one(db: Database) -> None:
    cid, key = await _setup(db)
    async with db.session() as session:
        await AdminService(session).erase_user(USER)  # deletes alice's keys with her data
        with pytest.raises(ApiKeyRevokedError):
            await ConversationService(session, api_key_id=key).get_agent_input(cid, USER)
        with pytest.raises(ApiKeyRevokedError):
            await ConversationService(session, api_key_id=key).save_message(
                cid, "user", "x", user_id=USER
            )


@pytest.mark.parametrize("name", ["save_message", "get_conversation_history", "get_agent_input"])
async def test_the_key_is_checked_before_the_conversation_is(db: Database, name: str) -> None:
    # A revoked key learns nothing, not even whether a conversation exists; a live one on a
    # conversation that is not its user's gets the usual not-found.
    cid, key = await _setup(db)
    async with db.session() as session:
        with pytest.raises(ConversationNotFoundError):
            await CALLS[name](ConversationService(session, api_key_id=key), "missing")
        await ApiKeyService(session).revoke(key)
        with pytest.raises(ApiKeyRevokedError):
            await CALLS[name](ConversationService(session, api_key_id=key), "missing")
        with pytest.raises(ApiKeyRevokedError):
            await CALLS[name](ConversationService(session, api_key_id=key), cid)


async def test_admin_service_checks_the_key_too(db: Database) -> None:
    cid, key = await _setup(db)
    async with db.session() as session:
        await ApiKeyService(session).revoke(key)
        with pytest.raises(ApiKeyRevokedError):
            await AdminService(session, api_key_id=key).erase_user(USER)
        assert (await ConversationService(session).get_conversation(cid, USER)).id == cid


HOT = ["save_message", "save_batch", "get_conversation_history", "list_messages", "get_agent_input"]


@pytest.mark.parametrize("name", HOT)
async def test_hot_calls_check_the_key_in_the_statements_they_run_anyway(
    db: Database, name: str
) -> None:
    """The same statements as without a key, each read of the key inside one that does the
    work: no round trip of its own."""
    cid, key = await _setup(db)
    runs = []
    for acting in (None, key):
        async with captured_statements(db) as statements, db.session() as session:
            await CALLS[name](ConversationService(session, api_key_id=acting), cid)
        runs.append([s.sql for s in statements])
    plain, keyed = runs
    assert len(keyed) == len(plain), keyed
    checks = [s for s in keyed if "api_keys" in s]
    assert checks, keyed
    assert all("conversations" in s for s in checks), checks


async def test_erasing_the_keys_own_user_erases_everything(db: Database) -> None:
    # The key goes first, with the user's other keys; the rest of the erasure must not stop
    # at it (the call checked it once, at its start).
    cid, key = await _setup(db)
    async with db.session() as session:
        report = await AdminService(session, api_key_id=key).erase_user(USER)
        assert (report.conversations, report.messages, report.api_keys) == (1, 2, 1)
        assert (await ConversationService(session).list_conversations(USER)).items == []
        with pytest.raises(ApiKeyRevokedError):
            await ConversationService(session, api_key_id=key).get_conversation(cid, USER)
