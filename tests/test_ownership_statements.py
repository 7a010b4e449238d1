"""Rule: no method reads a conversation's rows before ownership is established.

Every statement is captured as the database receives it (``tests/_capture.py``). A statement
that reads ``messages`` must carry the ownership predicate itself, or follow, in the same call
(one transaction), the conversation-row lock that proved ownership.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from convodb import ConversationNotFoundError, ConversationService, Database, StoredMessage
from convodb.errors import MessageNotFoundError

from ._capture import captured_statements

Call = Callable[[ConversationService, str, str], Awaitable[object]]

CALLS: dict[str, Call] = {
    "get_conversation_history": lambda s, c, u: s.get_conversation_history(c, u),
    "list_messages": lambda s, c, u: s.list_messages(c, u),
    "list_messages_desc": lambda s, c, u: s.list_messages(c, u, order="desc"),
    "list_messages_after": lambda s, c, u: s.list_messages(c, u, after_seq=1),
    "get_message": lambda s, c, u: s.get_message(c, u, 1),
    "get_missing_message": lambda s, c, u: s.get_message(c, u, 2),
    "save_message": lambda s, c, u: s.save_message(c, "user", "x", user_id=u),
    "save_keyed_message": lambda s, c, u: s.save_message(c, "user", "x", user_id=u, key="k1"),
    "get_conversation": lambda s, c, u: s.get_conversation(c, u),
    "update_conversation": lambda s, c, u: s.update_conversation(c, u, title="t"),
    "get_or_create_conversation": lambda s, c, u: s.get_or_create_conversation(c, u),
    "delete_conversation": lambda s, c, u: s.delete_conversation(c, u),
    "get_agent_input": lambda s, c, u: s.get_agent_input(c, u, max_tokens=500),
    "get_summary": lambda s, c, u: s.get_summary(c, u),
    "list_summaries": lambda s, c, u: s.list_summaries(c, u),
    "save_summary": lambda s, c, u: s.save_summary(c, u, "summary", upto_seq=1),
    "compact": lambda s, c, u: s.compact(c, u, _summarize, keep_last=0),
}


async def _summarize(messages: list[StoredMessage]) -> str:
    return f"{len(messages)} messages"


def assert_ownership_first(statements: list[str]) -> None:
    locked = False
    for statement in statements:
        owner_checked = "user_id" in statement
        # The row lock: UPDATE ... RETURNING, or SELECT ... FOR UPDATE where there is none.
        lock = "UPDATE conversations" in statement or (
            "FROM conversations" in statement and statement.endswith("FOR UPDATE")
        )
        if lock and owner_checked:
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

    async with captured_statements(db) as statements, db.session() as session:
        service = ConversationService(session)
        try:
            await CALLS[name](service, cid, "alice" if caller == "owner" else "mallory")
        except ConversationNotFoundError:
            assert caller == "other user"
        except MessageNotFoundError:
            assert caller == "owner" and name == "get_missing_message"

    sql = [s.sql for s in statements if not s.sql.startswith(("BEGIN", "COMMIT", "ROLLBACK"))]
    assert sql, "the call ran no statement"
    assert_ownership_first(sql)
