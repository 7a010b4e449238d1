"""Agent input and compaction through the service, on every database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import insert

from convodb import (
    ConflictError,
    ContextBudgetError,
    ConversationNotFoundError,
    ConversationService,
    Database,
    NewMessage,
    StoredMessage,
    ToolCall,
    ValidationError,
    parse_response,
)
from convodb._models import messages as messages_table
from convodb.tokens import EstimateCounter

from ._capture import captured_statements
from ._store import state
from .test_formats import check_anthropic, check_openai_chat, check_openai_responses

ALICE = "alice"
COUNTER = EstimateCounter()


def tool_turn(n: int) -> list[NewMessage]:
    """A user question, a tool call, its result and the answer: one agent turn."""
    call = ToolCall(f"call_{n}", "lookup", f'{{"q": {n}}}')
    return [
        NewMessage(role="user", content=f"question {n}"),
        NewMessage(role="assistant", tool_calls=[call]),
        NewMessage(role="tool", content=f"result {n}", tool_call_id=call.id, tool_name="lookup"),
        NewMessage(role="assistant", content=f"answer {n}"),
    ]


async def conversation_with_turns(service: ConversationService, turns: int) -> str:
    cid = (await service.create_conversation(ALICE)).id
    for n in range(turns):
        await service.save_conversation_messages(cid, ALICE, tool_turn(n))
    return cid


async def test_token_counts_are_stored_at_write_time(service: ConversationService) -> None:
    cid = (await service.create_conversation(ALICE)).id
    stored = await service.save_conversation_messages(cid, ALICE, tool_turn(0))
    history = await service.get_conversation_history(cid, ALICE)
    counter = service.token_counter
    assert [m.token_count for m in history] == [counter.count_message(m) for m in stored]
    assert all(m.token_count and m.token_count > 0 for m in history)


@pytest.mark.parametrize("fmt", ["openai-chat", "openai-responses", "anthropic", "plain"])
async def test_agent_input_is_valid_for_each_api(service: ConversationService, fmt: str) -> None:
    cid = await conversation_with_turns(service, 5)

    result = await service.get_agent_input(
        cid, ALICE, system_prompt="Be brief.", user_message="next?", max_messages=6, format=fmt
    )

    assert result.format == fmt
    if fmt == "openai-chat":
        check_openai_chat(result.messages)
        assert result.messages[0] == {"role": "system", "content": "Be brief."}
        assert result.messages[-1] == {"role": "user", "content": "next?"}
    elif fmt == "openai-responses":
        check_openai_responses(result.messages)
        assert "input" in result.kwargs
    elif fmt == "anthropic":
        check_anthropic(result.kwargs)
        assert result.system == "Be brief."
    else:
        assert all(set(m) == {"role", "content"} for m in result.messages)
    # 6 messages cut inside turn 3's tool group: the group goes, so the window is turn 4 and
    # turn 3's answer.
    assert [m.seq for m in result.window.messages] == [16, 17, 18, 19, 20]
    assert (result.first_seq, result.dropped) == (16, 15)
    assert result.system is None or fmt == "anthropic"


async def test_window_by_tokens_keeps_the_newest_within_budget(
    service: ConversationService,
) -> None:
    cid = await conversation_with_turns(service, 10)
    history = await service.get_conversation_history(cid, ALICE, limit=100)
    fixed = COUNTER.count_message(NewMessage(role="user", content="go"))
    newest_turn = sum(m.token_count or 0 for m in history[-4:])
    budget = fixed + newest_turn + 1  # room for the newest turn, not for more

    result = await service.get_agent_input(
        cid, ALICE, user_message="go", max_tokens=budget, format="openai-chat"
    )

    assert [m.seq for m in result.window.messages] == [37, 38, 39, 40]
    assert result.token_count == fixed + newest_turn <= budget
    assert result.dropped == 36


async def test_user_message_is_sent_and_not_stored(
    db: Database, service: ConversationService
) -> None:
    cid = await conversation_with_turns(service, 1)
    before = await state(db, cid)
    result = await service.get_agent_input(cid, ALICE, user_message="not stored")
    assert result.messages[-1] == {"role": "user", "content": "not stored"}
    assert await state(db, cid) == before


async def test_fixed_parts_over_budget_is_a_context_budget_error(
    service: ConversationService,
) -> None:
    cid = await conversation_with_turns(service, 1)
    with pytest.raises(ContextBudgetError) as raised:
        await service.get_agent_input(cid, ALICE, system_prompt="x " * 500, max_tokens=50)
    assert raised.value.field == "max_tokens"


async def test_still_running_tool_call_is_left_out(service: ConversationService) -> None:
    cid = await conversation_with_turns(service, 1)
    running = ToolCall("call_running", "slow", "{}")
    await service.save_conversation_messages(
        cid,
        ALICE,
        [
            NewMessage(role="user", content="again"),
            NewMessage(role="assistant", tool_calls=[running]),
        ],
    )
    result = await service.get_agent_input(cid, ALICE)
    check_openai_chat(result.messages)
    assert result.window.unanswered_tool_calls == (running,)
    assert result.window.messages[-1].content == "again"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"format": "gemini"}, "format"),
        ({"max_messages": 0}, "max_messages"),
        ({"max_messages": -5}, "max_messages"),
        ({"max_messages": 10**9}, "max_messages"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"system_prompt": 5}, "system_prompt"),
        ({"user_message": "a\x00"}, "user_message"),
    ],
)
async def test_bad_window_arguments_are_rejected(
    service: ConversationService, kwargs: dict[str, Any], field: str
) -> None:
    cid = await conversation_with_turns(service, 1)
    with pytest.raises(ValidationError) as raised:
        await service.get_agent_input(cid, ALICE, **kwargs)
    assert raised.value.field == field


async def test_a_full_agent_turn_parsed_from_a_response_saves_in_one_call(
    service: ConversationService,
) -> None:
    cid = (await service.create_conversation(ALICE)).id
    response = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
        ],
    }
    turn = [NewMessage(role="user", content="hi"), *parse_response("openai-chat", response)]
    turn.append(NewMessage(role="tool", content="ok", tool_call_id="c1", tool_name="f"))

    await service.save_conversation_messages(cid, ALICE, turn)

    result = await service.get_agent_input(cid, ALICE, format="openai-chat")
    assert result.messages[1]["tool_calls"] == response["tool_calls"]
    assert result.messages[2] == {"role": "tool", "content": "ok", "tool_call_id": "c1"}


# -- a long conversation: the window reads only the rows it needs ----------------------------


async def test_token_window_over_100000_messages_reads_a_bounded_number_of_rows(
    db: Database, service: ConversationService
) -> None:
    total = 100_000
    conversation = await service.create_conversation(ALICE)
    cid = conversation.id
    # Bulk-load the conversation as stored rows; the service then sees a 100,000-message chat.
    rows: list[dict[str, Any]] = [
        {
            "conversation_id": cid,
            "seq": seq,
            "id": f"m{seq}",
            "role": "user" if seq % 2 else "assistant",
            "content": f"message number {seq}",
            "metadata": {},
            "token_count": 9,
            "created_at": conversation.created_at,
        }
        for seq in range(1, total + 1)
    ]
    async with db.engine.begin() as conn:
        for start in range(0, total, 10_000):
            await conn.execute(insert(messages_table), rows[start : start + 10_000])
        await conn.execute(
            messages_table.metadata.tables["conversations"]
            .update()
            .where(messages_table.metadata.tables["conversations"].c.id == cid)
            .values(last_seq=total)
        )

    async with captured_statements(db) as statements, db.session() as session:
        result = await ConversationService(session).get_agent_input(
            cid, ALICE, user_message="latest?", max_tokens=4000, format="openai-chat"
        )
    # Every statement reading messages has a LIMIT: together they bound the rows read.
    reads = [s for s in statements if "FROM messages" in s.sql]
    assert all(s.limit is not None for s in reads), reads
    limits = [s.limit or 0 for s in reads]

    kept = result.window.messages
    assert kept[-1].seq == total and len(kept) >= 400
    assert [m.seq for m in kept] == list(range(total - len(kept) + 1, total + 1))
    assert result.dropped == total - len(kept)
    # The first page shows the rows' token rate; the second is sized from it.
    assert len(limits) <= 2 and sum(limits) <= 2_000, limits


# -- compaction ---------------------------------------------------------------------------------


class Summarizer:
    """A deterministic summarizer that records what it was asked to summarize."""

    def __init__(self) -> None:
        self.calls: list[list[StoredMessage]] = []

    async def __call__(self, messages: list[StoredMessage]) -> str:
        self.calls.append(messages)
        return f"summary of seq {messages[0].seq}..{messages[-1].seq}"


async def test_compaction_starts_windows_with_the_summary_and_keeps_the_transcript(
    service: ConversationService,
) -> None:
    cid = await conversation_with_turns(service, 5)  # seq 1..20
    summarize = Summarizer()

    summary = await service.compact(cid, ALICE, summarize, keep_last=6)

    # keep_last=6 would cut at 14, inside turn 4's group (call 14, result 15): cut before it.
    assert summary is not None and summary.upto_seq == 13
    assert [m.seq for m in summarize.calls[0]] == list(range(1, 14))
    result = await service.get_agent_input(cid, ALICE, system_prompt="sys", format="openai-chat")
    assert result.messages[:2] == [
        {"role": "system", "content": "sys"},
        {"role": "system", "content": "summary of seq 1..13"},
    ]
    assert [m.seq for m in result.window.messages] == list(range(14, 21))
    assert result.dropped == 0
    assert len(await service.get_conversation_history(cid, ALICE, limit=100)) == 20
    assert await service.get_summary(cid, ALICE) == summary


async def test_second_compaction_extends_the_previous_summary(
    service: ConversationService,
) -> None:
    cid = await conversation_with_turns(service, 3)  # seq 1..12
    summarize = Summarizer()
    first = await service.compact(cid, ALICE, summarize, keep_last=4)
    for n in range(3, 5):
        await service.save_conversation_messages(cid, ALICE, tool_turn(n))  # seq 13..20

    second = await service.compact(cid, ALICE, summarize, keep_last=4)

    assert first is not None and second is not None
    assert (first.upto_seq, second.upto_seq) == (8, 16)
    previous, *new = summarize.calls[1]
    assert (previous.role, previous.seq, previous.content) == ("system", 0, first.content)
    assert [m.seq for m in new] == list(range(9, 17))
    assert await service.compact(cid, ALICE, summarize, keep_last=4) is None


async def test_save_summary_rules(service: ConversationService) -> None:
    cid = await conversation_with_turns(service, 2)  # seq 1..8
    await service.save_summary(cid, ALICE, "first half", upto_seq=4)
    with pytest.raises(ConflictError):
        await service.save_summary(cid, ALICE, "older", upto_seq=3)
    with pytest.raises(ValidationError) as raised:
        await service.save_summary(cid, ALICE, "future", upto_seq=9)
    assert raised.value.field == "upto_seq"
    with pytest.raises(ValidationError) as raised:
        await service.save_summary(cid, ALICE, "", upto_seq=5)
    assert raised.value.field == "content"
    assert (await service.get_summary(cid, ALICE)).content == "first half"  # type: ignore[union-attr]


async def test_agent_input_and_summaries_of_another_user_look_missing(
    service: ConversationService,
) -> None:
    cid = await conversation_with_turns(service, 2)
    await service.save_summary(cid, ALICE, "secret summary", upto_seq=4)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: service.get_agent_input(cid, "mallory"),
        lambda: service.compact(cid, "mallory", Summarizer(), keep_last=0),
        lambda: service.save_summary(cid, "mallory", "mine", upto_seq=8),
        lambda: service.get_summary(cid, "mallory"),
    ]
    for call in calls:
        with pytest.raises(ConversationNotFoundError, match=f"Conversation not found: '{cid}'"):
            await call()
    assert (await service.get_summary(cid, ALICE)).content == "secret summary"  # type: ignore[union-attr]
