"""``ConvodbSession`` against the Agents SDK's own ``SQLiteSession``, on every database.

The SDK's reference store keeps each item as ``json.dumps(item)`` in a row of its own, so what
it returns is what a session must return. The same operations run on both and their results
are compared as JSON text (``1``, ``1.0`` and ``true`` differ; an absent key differs from a
``null`` one), over a corpus of the item shapes the SDK produces and accepts.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from typing import Any, cast

import pytest
from agents import SQLiteSession, TResponseInputItem
from agents.memory import Session, SessionSettings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convodb import (
    ConversationService,
    Database,
    ImagePart,
    Limits,
    StoredMessage,
    ValidationError,
)
from convodb.integrations.openai_agents import ConvodbSession
from tests._capture import captured_statements

PNG = (  # a 2x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAABCAIAAAB7QOjdAAAADUlEQVR4nGP4z8AARAAI/gH/xp559wAAAABJRU5ErkJggg=="
)
PDF = "JVBERi0xLjQKMSAwIG9iajw8L1R5cGUvQ2F0YWxvZz4+ZW5kb2JqCnRyYWlsZXI8PC9Sb290IDEgMCBSPj4KJSVFT0YK"

# The trace of a real run (docs/design/integrations-survey.md §1.5): a user turn, one step
# with reasoning, a hosted web search and two function calls with their outputs, the answer.
TRACE: list[dict[str, Any]] = [
    {"content": "Weather in Paris and Rome?", "role": "user"},
    {
        "id": "rs_1",
        "summary": [{"text": "think", "type": "summary_text"}],
        "type": "reasoning",
        "encrypted_content": "ENC==",
    },
    {
        "id": "ws_1",
        "action": {"type": "search", "query": "weather"},
        "status": "completed",
        "type": "web_search_call",
    },
    {
        "arguments": '{"city":"Paris"}',
        "call_id": "call_1",
        "name": "get_weather",
        "type": "function_call",
        "id": "fc_1",
        "status": "completed",
    },
    {
        "arguments": '{"city":"Rome"}',
        "call_id": "call_2",
        "name": "get_weather",
        "type": "function_call",
        "id": "fc_2",
        "status": "completed",
    },
    {"call_id": "call_1", "output": "sunny in Paris", "type": "function_call_output"},
    {"call_id": "call_2", "output": "sunny in Rome", "type": "function_call_output"},
    {
        "id": "msg_1",
        "content": [
            {"annotations": [], "text": "Sunny both.", "type": "output_text", "logprobs": []}
        ],
        "role": "assistant",
        "status": "completed",
        "type": "message",
    },
]
TRACE_BATCHES = [TRACE[:1], TRACE[1:7], TRACE[7:]]

# Item shapes of every kind: input messages with parts, output messages with annotations,
# logprobs and refusals, reasoning in all its forms, hosted and local tool calls, and items
# convodb takes only verbatim.
CORPUS: list[dict[str, Any]] = [
    {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "What is in these? ✓ 日本語 🙂"},
            {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "high"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "low"},
            {"type": "input_image", "image_url": f"data:image/PNG;base64,{PNG}", "detail": "auto"},
            {"type": "input_image", "file_id": "file-abc", "detail": "original"},
            {"type": "input_file", "file_data": f"data:application/pdf;base64,{PNG[:0]}{PDF}"},
            {"type": "input_file", "file_id": "file-xyz", "filename": "report.pdf"},
            {"type": "input_file", "file_url": "https://example.com/r.pdf", "detail": "high"},
            {"type": "input_text", "text": "cache me", "prompt_cache_breakpoint": {"ttl": "5m"}},
        ],
    },
    {"role": "system", "content": "You are terse."},
    {"role": "developer", "content": [{"type": "input_text", "text": "Use tools."}]},
    {"role": "user", "content": "plain", "type": "message", "status": None},
    {"role": "assistant", "content": "an earlier answer"},
    {
        "id": "msg_a",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "phase": "final_answer",
        "content": [
            {
                "type": "output_text",
                "text": "See [1].",
                "annotations": [
                    {
                        "type": "url_citation",
                        "url": "https://example.com",
                        "title": "Ex",
                        "start_index": 4,
                        "end_index": 7,
                    }
                ],
                "logprobs": [{"token": "See", "logprob": -0.25, "bytes": [83], "top_logprobs": []}],
            },
            {"type": "refusal", "refusal": "I cannot help with the rest."},
        ],
    },
    {
        "id": "rs_full",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "a"}, {"type": "summary_text", "text": "b"}],
        "content": [{"type": "reasoning_text", "text": "step by step"}],
        "encrypted_content": "gAAAA" + "x" * 200,
        "status": "completed",
    },
    {"id": "rs_empty", "type": "reasoning", "summary": [], "encrypted_content": None},
    {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"},
    {
        "type": "function_call",
        "call_id": "c2",
        "name": "lookup",
        "arguments": '{"q": 1.0}',
        "namespace": "crm",
        "caller": {"type": "direct"},
    },
    {"type": "function_call_output", "call_id": "c1", "output": "found"},
    {
        "type": "function_call_output",
        "call_id": "c2",
        "status": None,
        "output": [
            {"type": "input_text", "text": "a chart"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
        ],
    },
    {
        "id": "fs_1",
        "type": "file_search_call",
        "queries": ["q"],
        "status": "completed",
        "results": [{"file_id": "f", "score": 0.5, "text": "t", "attributes": {"n": 1}}],
    },
    {
        "id": "cu_1",
        "type": "computer_call",
        "call_id": "cc_1",
        "action": {"type": "click", "button": "left", "x": 1, "y": 2},
        "pending_safety_checks": [],
        "status": "completed",
    },
    {
        "type": "computer_call_output",
        "call_id": "cc_1",
        "output": {"type": "computer_screenshot", "image_url": f"data:image/png;base64,{PNG}"},
    },
    {
        "id": "ci_1",
        "type": "code_interpreter_call",
        "code": "print(1)",
        "container_id": "cntr",
        "outputs": [{"type": "logs", "logs": "1\n"}],
        "status": "completed",
    },
    {"id": "ig_1", "type": "image_generation_call", "result": PNG, "status": "completed"},
    {"id": "ml_1", "type": "mcp_list_tools", "server_label": "s", "tools": [], "error": None},
    {
        "id": "ma_1",
        "type": "mcp_approval_request",
        "arguments": "{}",
        "name": "t",
        "server_label": "s",
    },
    {"type": "mcp_approval_response", "approval_request_id": "ma_1", "approve": True},
    {
        "id": "mc_1",
        "type": "mcp_call",
        "arguments": "{}",
        "name": "t",
        "server_label": "s",
        "output": "ok",
    },
    {
        "id": "ls_1",
        "type": "local_shell_call",
        "call_id": "lc_1",
        "action": {"type": "exec", "command": ["ls"], "env": {}},
        "status": "completed",
    },
    {"id": "lso_1", "type": "local_shell_call_output", "output": "a\nb"},
    {"type": "shell_call", "call_id": "sh_1", "action": {"commands": ["pwd"]}},
    {"type": "shell_call_output", "call_id": "sh_1", "output": [{"stdout": "/", "stderr": ""}]},
    {
        "type": "apply_patch_call",
        "call_id": "ap_1",
        "status": "completed",
        "operation": {"type": "update_file", "path": "a.py", "diff": "-a\n+b"},
    },
    {"type": "apply_patch_call_output", "call_id": "ap_1", "status": "completed"},
    {"type": "custom_tool_call", "call_id": "ct_1", "name": "grammar", "input": "x"},
    {"type": "custom_tool_call_output", "call_id": "ct_1", "output": "y"},
    {"type": "compaction", "encrypted_content": "COMPACTED=="},
    {"type": "item_reference", "id": "msg_old"},
    {"id": "ref_2"},
    {"type": "tool_search_call", "arguments": {"q": "x"}},
    {"type": "additional_tools", "role": "developer", "tools": []},
    {"type": "some_future_item", "payload": {"nested": [1, 2.5, True, None, "s"]}},
    # convodb takes these only verbatim (an image type it does not store, audio content,
    # a file's data that is no data: URL, an output without a call id, a nameless call):
    {
        "role": "user",
        "content": [{"type": "input_image", "image_url": "data:image/bmp;base64,Qk0="}],
    },
    {
        "role": "user",
        "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
    },
    {"role": "user", "content": [{"type": "input_file", "file_data": PDF, "filename": "r.pdf"}]},
    {"role": "system", "content": [{"type": "input_image", "image_url": "https://e.com/a.png"}]},
    {"role": "user", "content": []},
    {"type": "function_call_output", "call_id": None, "output": "lost"},
    {"type": "function_call", "call_id": "c3", "name": "", "arguments": "{}"},
    {"type": "message", "role": "assistant", "content": []},
    {"role": "user", "content": "x" * 100_000},
]


async def add(session: Session, items: list[Any]) -> None:
    """``add_items`` with plain dicts (the SDK types items as TypedDicts)."""
    await session.add_items(cast("list[TResponseInputItem]", items))


async def pop(session: Session) -> dict[str, Any] | None:
    return cast("dict[str, Any] | None", await session.pop_item())


def part_types(message: StoredMessage) -> list[str]:
    return [p.type for p in message.content] if isinstance(message.content, tuple) else []


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def new_id() -> str:
    return f"s-{uuid.uuid4().hex}"


async def apply(session: Session, op: tuple[str, Any]) -> Any:
    name, arg = op
    if name == "add":
        await add(session, arg)
        return None
    if name == "get":
        return await session.get_items(arg) if arg != "default" else await session.get_items()
    if name == "pop":
        return await session.pop_item()
    await session.clear_session()
    return None


async def differential(db: Database, ops: Sequence[tuple[str, Any]], **kwargs: Any) -> None:
    """Run ``ops`` on a SQLiteSession and a ConvodbSession; every result must be equal."""
    sid = new_id()
    reference = SQLiteSession(sid, **kwargs)
    ours = ConvodbSession(sid, database=db, user_id="alice", **kwargs)
    try:
        for step, op in enumerate(ops):
            expected, got = await apply(reference, op), await apply(ours, op)
            assert as_json(got) == as_json(expected), f"step {step}: {op[0]}({op[1]!r})"
        assert as_json(await ours.get_items()) == as_json(await reference.get_items())
    finally:
        reference.close()


LIMITS = [None, 0, 1, 2, 3, 5, 8, 1000, -1]


async def test_the_trace_round_trips_with_every_limit(db: Database) -> None:
    ops: list[tuple[str, Any]] = [("add", batch) for batch in TRACE_BATCHES]
    ops += [("get", n) for n in LIMITS]
    await differential(db, ops)


async def test_every_item_shape_round_trips_alone_and_in_one_batch(db: Database) -> None:
    ops: list[tuple[str, Any]] = [("add", [item]) for item in CORPUS]
    ops += [("get", None), ("add", CORPUS)]
    ops += [("get", n) for n in (*LIMITS, len(CORPUS) + 1, 2 * len(CORPUS))]
    await differential(db, ops)


async def test_pop_returns_items_newest_first_until_empty_and_adds_continue(db: Database) -> None:
    ops: list[tuple[str, Any]] = [("add", batch) for batch in TRACE_BATCHES]
    ops += [("add", CORPUS[:12])]
    ops += [("pop", None)] * 25
    ops += [("get", None), ("add", TRACE[1:5]), ("pop", None), ("get", 2), ("get", None)]
    await differential(db, ops)


async def test_clear_empties_the_session_and_it_fills_again(db: Database) -> None:
    ops: list[tuple[str, Any]] = [("add", TRACE), ("clear", None), ("get", None)]
    ops += [("pop", None), ("clear", None), ("add", TRACE[:3]), ("get", 2), ("get", None)]
    await differential(db, ops)


async def test_session_settings_limit_applies_when_no_limit_is_given(db: Database) -> None:
    ops: list[tuple[str, Any]] = [("add", TRACE), ("get", "default"), ("get", 5), ("get", None)]
    await differential(db, ops, session_settings=SessionSettings(limit=3))
    await differential(db, ops, session_settings={"limit": 0})
    await differential(db, ops, session_settings={"limit": -2})


OPERATIONS = st.one_of(
    st.tuples(st.just("add"), st.lists(st.sampled_from(TRACE + CORPUS[:36]), max_size=6)),
    st.tuples(st.just("get"), st.sampled_from([None, 0, 1, 2, 3, 4, 7, -1, "default"])),
    st.tuples(st.just("pop"), st.none()),
    st.tuples(st.just("clear"), st.none()),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(OPERATIONS, max_size=14))
async def test_any_sequence_of_operations_matches_sqlite_session(
    db: Database, ops: list[tuple[str, Any]]
) -> None:
    await differential(db, ops)


async def test_the_session_is_a_session_of_the_sdk(db: Database) -> None:
    session: Session = ConvodbSession("s", database=db, user_id="alice")
    assert isinstance(session, Session)
    assert session.session_settings == SessionSettings()


# -- how convodb sees what the SDK wrote -----------------------------------------------------


async def test_items_are_stored_as_messages_convodb_reads(db: Database) -> None:
    session = ConvodbSession("weather", database=db, user_id="alice")
    for batch in TRACE_BATCHES:
        await add(session, batch)
    async with db.session() as s:
        service = ConversationService(s)
        messages = (await service.list_messages(session.conversation_id, "alice")).items
        conversation = await service.get_conversation(session.conversation_id, "alice")
        chat = await service.get_agent_input(session.conversation_id, "alice")
        responses = await service.get_agent_input(
            session.conversation_id, "alice", format="openai-responses"
        )

    assert conversation.metadata == {"openai_agents": {"session_id": "weather"}}
    assert [m.role for m in messages] == ["user", "assistant", "tool", "tool", "assistant"]
    user, step, paris, rome, answer = messages
    assert user.content == "Weather in Paris and Rome?"
    assert isinstance(step.content, tuple)
    assert [p.type for p in step.content] == ["reasoning", "provider_item"]
    assert [(c.id, c.name) for c in step.tool_calls or ()] == [
        ("call_1", "get_weather"),
        ("call_2", "get_weather"),
    ]
    assert (paris.tool_call_id, paris.tool_name, paris.content) == (
        "call_1",
        "get_weather",
        "sunny in Paris",
    )
    assert rome.tool_call_id == "call_2"
    assert answer.text == "Sunny both."

    assert chat.kwargs["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny in Paris"},
        {"role": "tool", "tool_call_id": "call_2", "content": "sunny in Rome"},
        {"role": "assistant", "content": "Sunny both."},
    ]
    # The Responses API gets the reasoning and the hosted search back, in place.
    assert responses.kwargs["input"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "think"}],
            "encrypted_content": "ENC==",
        },
        TRACE[2],
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {
            "type": "function_call",
            "call_id": "call_2",
            "name": "get_weather",
            "arguments": '{"city":"Rome"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny in Paris"},
        {"type": "function_call_output", "call_id": "call_2", "output": "sunny in Rome"},
        {"role": "assistant", "content": "Sunny both."},
    ]


async def test_input_parts_are_stored_as_convodb_parts(db: Database) -> None:
    session = ConvodbSession("parts", database=db, user_id="alice")
    await add(session, CORPUS[:3])
    async with db.session() as s:
        messages = (
            await ConversationService(s).list_messages(session.conversation_id, "alice")
        ).items
    user, system, developer = messages
    assert isinstance(user.content, tuple)
    assert [p.type for p in user.content] == [
        "text",
        "image",
        "image",
        "image",
        "image",
        "file",
        "file",
        "file",
        "text",
    ]
    image = user.content[2]
    assert isinstance(image, ImagePart)
    assert (image.media_type, image.detail) == ("image/png", "low")
    assert (system.role, system.content) == ("system", "You are terse.")
    assert developer.role == "system"
    assert developer.text == "Use tools."


async def test_an_item_convodb_takes_only_verbatim_is_an_openai_provider_item(
    db: Database,
) -> None:
    session = ConvodbSession("verbatim", database=db, user_id="alice")
    bmp = CORPUS[-9]
    await add(session, [bmp])
    async with db.session() as s:
        service = ConversationService(s)
        (message,) = (await service.list_messages(session.conversation_id, "alice")).items
        responses = await service.get_agent_input(
            session.conversation_id, "alice", format="openai-responses"
        )
    assert message.role == "assistant"
    assert part_types(message) == ["provider_item"]
    assert responses.kwargs["input"] == [bmp]
    assert await session.get_items() == [bmp]


async def test_items_after_a_function_call_start_a_new_assistant_message(db: Database) -> None:
    call = {"type": "function_call", "call_id": "c9", "name": "f", "arguments": "{}"}
    text = {"role": "assistant", "content": "after the call"}
    session = ConvodbSession("order", database=db, user_id="alice")
    await add(session, [TRACE[1], call, text])
    async with db.session() as s:
        messages = (
            await ConversationService(s).list_messages(session.conversation_id, "alice")
        ).items
    assert [(m.role, len(m.tool_calls or ()), m.text) for m in messages] == [
        ("assistant", 1, ""),
        ("assistant", 0, "after the call"),
    ]
    assert await session.get_items() == [TRACE[1], call, text]


async def test_large_residuals_are_stored_verbatim_not_in_metadata(db: Database) -> None:
    reasoning = {
        "id": "rs_big",
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "thought " * 10_000}],
    }
    session = ConvodbSession("big", database=db, user_id="alice")
    await add(session, [reasoning, TRACE[3]])
    async with db.session() as s:
        (message,) = (
            await ConversationService(s).list_messages(session.conversation_id, "alice")
        ).items
    assert len(json.dumps(message.metadata)) < 1000
    assert part_types(message) == ["provider_item"]
    assert await session.get_items() == [reasoning, TRACE[3]]


async def test_a_conversation_written_through_convodb_reads_as_items(db: Database) -> None:
    session = ConvodbSession("shared", database=db, user_id="alice")
    await add(session, TRACE[:1])
    async with db.session() as s:
        await ConversationService(s).save_conversation_messages(
            session.conversation_id,
            "alice",
            [
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hm", "signature": "sig"},
                        {"type": "text", "text": "Let me check."},
                    ],
                    "tool_calls": [{"id": "t1", "name": "f", "arguments": "{}"}],
                },
                {"role": "tool", "tool_call_id": "t1", "content": "done"},
                {"role": "assistant", "content": "All done."},
            ],
        )
    assert await session.get_items() == [
        TRACE[0],
        {
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}],
        },
        {"type": "function_call", "call_id": "t1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "t1", "output": "done"},
        {"role": "assistant", "content": "All done."},
    ]
    assert await pop(session) == {"role": "assistant", "content": "All done."}
    assert await pop(session) == {"type": "function_call_output", "call_id": "t1", "output": "done"}
    assert await pop(session) == {
        "type": "function_call",
        "call_id": "t1",
        "name": "f",
        "arguments": "{}",
    }
    # What is left of the message keeps its thinking block for Anthropic.
    async with db.session() as s:
        page = await ConversationService(s).list_messages(
            session.conversation_id, "alice", order="desc", limit=1
        )
    assert part_types(page.items[0]) == ["thinking", "text"]


# -- pop under concurrency, ownership, absence, errors ---------------------------------------


async def test_concurrent_pops_return_each_item_once(db: Database) -> None:
    sid = new_id()
    writer = ConvodbSession(sid, database=db, user_id="alice")
    await add(writer, [{"role": "user", "content": "first"}])
    await add(writer, [{"role": "user", "content": "second"}])
    sessions = [ConvodbSession(sid, database=db, user_id="alice") for _ in range(2)]
    popped = await asyncio.gather(*(pop(s) for s in sessions))
    assert sorted(p["content"] for p in popped if p is not None) == ["first", "second"]
    assert await writer.get_items() == []


async def test_concurrent_pops_from_one_message_of_many_items_return_each_once(
    db: Database,
) -> None:
    sid = new_id()
    writer = ConvodbSession(sid, database=db, user_id="alice")
    step = [TRACE[1], TRACE[2], TRACE[3], TRACE[4], CORPUS[8]]
    await add(writer, step)  # one assistant message
    sessions = [ConvodbSession(sid, database=db, user_id="alice") for _ in range(len(step) + 2)]
    popped = await asyncio.gather(*(pop(s) for s in sessions))
    assert sorted(as_json(p) for p in popped if p is not None) == sorted(map(as_json, step))
    assert popped.count(None) == 2
    assert await writer.get_items() == []


async def test_two_users_with_the_same_session_id_have_separate_sessions(db: Database) -> None:
    alice = ConvodbSession("default", database=db, user_id="alice")
    bob = ConvodbSession("default", database=db, user_id="bob")
    assert alice.conversation_id != bob.conversation_id
    await add(alice, TRACE[:2])
    assert await bob.get_items() == []
    assert await bob.pop_item() is None
    await bob.clear_session()
    await add(bob, [{"role": "user", "content": "bob's"}])
    assert await bob.get_items() == [{"role": "user", "content": "bob's"}]
    assert await alice.get_items() == TRACE[:2]
    assert await bob.pop_item() == {"role": "user", "content": "bob's"}
    assert await alice.get_items() == TRACE[:2]
    async with db.session() as s:
        service = ConversationService(s)
        assert [c.id for c in (await service.list_conversations("bob")).items] == [
            bob.conversation_id
        ]
        assert [c.id for c in (await service.list_conversations("alice")).items] == [
            alice.conversation_id
        ]


async def test_a_missing_session_reads_empty_and_nothing_creates_it(db: Database) -> None:
    session = ConvodbSession("never", database=db, user_id="carol")
    assert await session.get_items() == []
    assert await session.get_items(3) == []
    assert await session.pop_item() is None
    await session.clear_session()
    await add(session, [])
    async with db.session() as s:
        assert (await ConversationService(s).list_conversations("carol")).items == []


async def test_a_bad_item_is_a_validation_error_naming_it_and_nothing_is_stored(
    db: Database,
) -> None:
    session = ConvodbSession("bad", database=db, user_id="alice")
    with pytest.raises(ValidationError) as not_an_item:
        await add(session, [TRACE[0], "text"])
    assert not_an_item.value.field == "items[1]"
    with pytest.raises(ValidationError) as nul:
        await add(session, [TRACE[0], {"role": "user", "content": "a\x00b"}])
    assert nul.value.field == "items[1]"
    with pytest.raises(ValidationError) as not_json:
        await add(session, [{"role": "user", "content": "x", "at": object()}])
    assert not_json.value.field == "items[0]"
    assert await session.get_items() == []
    with pytest.raises(ValidationError) as user:
        ConvodbSession("s", database=db, user_id="")
    assert user.value.field == "user_id"


async def test_an_item_over_the_message_limit_is_a_limit_error(db: Database) -> None:
    limits = Limits(max_message_bytes=1000)
    session = ConvodbSession("small", database=db, user_id="alice", limits=limits)
    with pytest.raises(ValidationError) as error:
        await add(session, [TRACE[0], {"type": "compaction", "encrypted_content": "e" * 2000}])
    assert error.value.field == "items[1]"
    # Several items that fit one by one are spread over several messages instead.
    calls = [
        {"type": "function_call", "call_id": f"c{i}", "name": "f", "arguments": "a" * 300}
        for i in range(6)
    ]
    await add(session, calls)
    assert await session.get_items() == calls


async def test_more_items_than_one_append_takes_are_stored_in_one_transaction(
    db: Database,
) -> None:
    session = ConvodbSession("long", database=db, user_id="alice")
    items = [{"role": "user", "content": f"m{i}"} for i in range(1500)]
    await add(session, items)
    assert await session.get_items() == items
    assert await session.get_items(3) == items[-3:]


async def test_a_small_limit_reads_only_the_newest_messages(db: Database) -> None:
    session = ConvodbSession("tail", database=db, user_id="alice")
    await add(session, [{"role": "user", "content": f"m{i}"} for i in range(300)])
    async with captured_statements(db) as statements:
        assert await session.get_items(4) == [
            {"role": "user", "content": f"m{i}"} for i in range(296, 300)
        ]
    limits = [s.limit for s in statements if s.limit is not None]
    assert limits and max(limits) <= 5
