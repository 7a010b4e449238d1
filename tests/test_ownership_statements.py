"""Rule: no method reads a conversation's rows before ownership is established.

Every statement is captured as the driver receives it. A statement that reads ``messages``
must carry the ownership predicate itself, or follow, in the same call (one transaction), the
conversation-row lock that proved ownership.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from convodb import ConversationNotFoundError, ConversationService, Database, StoredMessage

Call = Callable[[ConversationService, str, str], Awaitable[object]]

CALLS: dict[str, Call] = {
    "get_conversation_history": lambda s, c, u: s.get_conversation_history(c, u),
    "list_messages": lambda s, c, u: s.list_messages(c, u),
    "list_messages_desc": lambda s, c, u: s.list_messages(c, u, order="desc"),
    "list_messages_after": lambda s, c, u: s.list_messages(c, u, after_seq=1),
    "save_message": lambda s, c, u: s.save_message(c, "user", "x", user_id=u),
    "save_keyed_message": lambda s, c, u: s.save_message(c, "user", "x", user_id=u, key="k1"),
    "get_conversation": lambda s, c, u: s.get_conversation(c, u),
    "update_conversation": lambda s, c, u: s.update_conversation(c, u, title="t"),
    "get_or_create_conversation": lambda s, c, u: s.get_or_create_conversation(c, u),
    "delete_conversation": lambda s, c, u: s.delete_conversation(c, u),
    "get_agent_input": lambda s, c, u: s.get_agent_input(c, u, max_tokens=500),
    "get_summary": lambda s, c, u: s.get_summary(c, u),
    "save_summary": lambda s, c, u: s.save_summary(c, u, "summary", upto_seq=1),
    "compact": lambda s, c, u: s.compact(c, u, _summarize, keep_last=0),
}


async def _summarize(messages: list[StoredMessage]) -> str:
    return f"{len(messages)} messages"


@contextmanager
def captured(db: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


def assert_ownership_first(statements: list[str]) -> None:
    locked = False
    for statement in statements:
        owner_checked = "conversations.user_id" in statement
        if statement.startswith("UPDATE conversations") and owner_checked:
            locked = True
        if "FROM messages" in statement or "FROM summaries" in statement:
            assert owner_checked or locked, f"reads rows before ownership: {statement}"


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("caller", ["owner", "other user"])
async def test_no_method_reads_messages_before_ownership(
    db: Database, name: str, caller: str
) -> None:
    async with db.session() as session:
        service = ConversationService(session)
        cid = (await service.create_conversation("alice")).id
        await service.save_message(cid, "user", "x", user_id="alice", key="k1")

        with captured(db) as statements:
            try:
                await CALLS[name](service, cid, "alice" if caller == "owner" else "mallory")
            except ConversationNotFoundError:
                assert caller == "other user"

    assert statements, "the call ran no statement"
    assert_ownership_first(statements)
