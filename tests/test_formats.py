"""Output formats (OpenAI Chat, OpenAI Responses, Anthropic, plain) and parsing responses back.

The ``check_*`` helpers validate a formatted request against the SDKs' own request types and the
ordering rules those types cannot express; the history properties reuse them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from anthropic.types import Message, MessageParam
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.responses import Response, ResponseInputParam
from pydantic import TypeAdapter

from convodb._parts import ReasoningPart, TextPart, ThinkingPart
from convodb._records import NewMessage, Role, StoredMessage, ToolCall
from convodb.errors import ValidationError
from convodb.formats import (
    ANTHROPIC_LEADING_USER_TEXT,
    FORMATS,
    RAW_ARGUMENTS_KEY,
    build_message_array,
    format_messages,
    from_anthropic,
    from_openai_chat,
    from_openai_responses,
    message_to_dict,
    parse_response,
    to_anthropic,
    to_openai_chat,
    to_openai_chat_messages,
    to_openai_responses_input,
    to_plain,
)

CHAT = TypeAdapter(list[ChatCompletionMessageParam])
RESPONSES = TypeAdapter(ResponseInputParam)
ANTHROPIC = TypeAdapter(list[MessageParam])
NOW = datetime(2025, 1, 1, tzinfo=UTC)


# -- checks shared with the history properties ----------------------------------------------


def _consume(value: Any) -> None:
    """Walk a validated value: pydantic validates ``Iterable`` fields lazily, on iteration."""
    if isinstance(value, dict):
        for v in value.values():
            _consume(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _consume(v)
    elif isinstance(value, Iterator):
        _consume(list(value))


def check_openai_chat(messages: list[dict[str, Any]]) -> None:
    """Valid ``ChatCompletionMessageParam`` list; every call's results follow it at once."""
    _consume(CHAT.validate_python(messages))
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and m.get("tool_calls"):
            ids = [c["id"] for c in m["tool_calls"]]
            following = messages[i + 1 : i + 1 + len(ids)]
            assert [f["role"] for f in following] == ["tool"] * len(ids)
            assert [f["tool_call_id"] for f in following] == ids
        if m["role"] == "tool":
            assert messages[i - 1]["role"] in ("assistant", "tool")


def check_openai_responses(items: list[dict[str, Any]]) -> None:
    """Valid ``ResponseInputParam``; every call has one output after it, and vice versa; a
    reasoning item is followed by an item of the same response (the API rejects it alone)."""
    _consume(RESPONSES.validate_python(items))
    called: set[str] = set()
    outputs: list[str] = []
    for i, item in enumerate(items):
        if item.get("type") == "reasoning":
            following = items[i + 1] if i + 1 < len(items) else {"role": "end"}
            assert following.get("role", "assistant") == "assistant", following
            assert following.get("type") != "function_call_output"
        if item.get("type") == "function_call":
            called.add(item["call_id"])
        elif item.get("type") == "function_call_output":
            assert item["call_id"] in called
            outputs.append(item["call_id"])
    assert sorted(called) == sorted(outputs)


def check_anthropic(request: dict[str, Any]) -> None:
    """Valid ``MessageParam`` list; roles alternate from ``user``; each turn's ``tool_use``
    ids are answered by ``tool_result`` blocks, first in the next user turn; an assistant turn
    with thinking starts with it; no text block is blank."""
    turns = request["messages"]
    _consume(ANTHROPIC.validate_python(turns))
    assert set(request) <= {"system", "messages"}
    if turns:
        assert turns[0]["role"] == "user"
    for a, b in itertools.pairwise(turns):
        assert a["role"] != b["role"]
    for i, turn in enumerate(turns):
        assert turn["content"], "Anthropic rejects empty turns"
        types = [block["type"] for block in turn["content"]]
        assert types == sorted(types, key=lambda t: t != "tool_result")
        assert all(b["text"] for b in turn["content"] if b["type"] == "text")
        if turn["role"] == "assistant" and {"thinking", "redacted_thinking"} & set(types):
            assert types[0] in ("thinking", "redacted_thinking"), types
        else:
            assert not {"thinking", "redacted_thinking"} & set(types), types
        uses = [b["id"] for b in turn["content"] if b["type"] == "tool_use"]
        results = [b["tool_use_id"] for b in turn["content"] if b["type"] == "tool_result"]
        if uses:
            answer = turns[i + 1]["content"]
            assert sorted(b["tool_use_id"] for b in answer if b["type"] == "tool_result") == sorted(
                uses
            )
        if results:
            previous = [b.get("id") for b in turns[i - 1]["content"] if b["type"] == "tool_use"]
            assert sorted(results) == sorted(previous)


def check_all(messages: Sequence[Any], **parts: str | None) -> None:
    check_openai_chat(format_messages("openai-chat", messages, **parts)["messages"])
    check_openai_responses(format_messages("openai-responses", messages, **parts)["input"])
    check_anthropic(format_messages("anthropic", messages, **parts))
    plain = format_messages("plain", messages, **parts)["messages"]
    assert all(set(m) == {"role", "content"} for m in plain)
    assert all(isinstance(v, str) for m in plain for v in m.values())


# -- a sample conversation ------------------------------------------------------------------


def stored(
    seq: int,
    role: Role,
    content: str | None,
    *,
    calls: Sequence[ToolCall] = (),
    answers: str | None = None,
    tool_name: str | None = None,
) -> StoredMessage:
    return StoredMessage(
        id=f"m{seq}",
        conversation_id="c1",
        seq=seq,
        role=role,
        content=content,
        tool_calls=tuple(calls) or None,
        tool_name=tool_name,
        tool_call_id=answers,
        metadata={},
        key=None,
        token_count=None,
        created_at=NOW,
    )


WEATHER = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
TIME = ToolCall("call_2", "get_time", "")
HISTORY = [
    stored(1, "user", "Weather and time in Paris?"),
    stored(2, "assistant", "Let me check.", calls=[WEATHER, TIME]),
    stored(3, "tool", "14:02", answers="call_2", tool_name="get_time"),  # out of order
    stored(4, "tool", "18 C", answers="call_1", tool_name="get_weather"),
    stored(5, "assistant", "18 C and 14:02."),
]


def test_openai_chat_messages() -> None:
    out = to_openai_chat_messages(
        HISTORY, system_prompt="Be brief.", summary="S", user_message="Hi"
    )
    assert out == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                },
            ],
        },
        {"role": "tool", "content": "18 C", "tool_call_id": "call_1"},
        {"role": "tool", "content": "14:02", "tool_call_id": "call_2"},
        {"role": "assistant", "content": "18 C and 14:02."},
        {"role": "user", "content": "Hi"},
    ]
    check_openai_chat(out)


def test_openai_responses_input() -> None:
    out = to_openai_responses_input(HISTORY, system_prompt="Be brief.", user_message="Hi")
    assert out == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather and time in Paris?"},
        {"role": "assistant", "content": "Let me check."},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": ""},
        {"type": "function_call_output", "call_id": "call_1", "output": "18 C"},
        {"type": "function_call_output", "call_id": "call_2", "output": "14:02"},
        {"role": "assistant", "content": "18 C and 14:02."},
        {"role": "user", "content": "Hi"},
    ]
    check_openai_responses(out)


def test_anthropic_request() -> None:
    out = to_anthropic(HISTORY, system_prompt="Be brief.", summary="S", user_message="Hi")
    assert out == {
        "system": "Be brief.\n\nS",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather and time in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18 C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "14:02"},
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "18 C and 14:02."}],
            },
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        ],
    }
    check_anthropic(out)


def test_anthropic_merges_turns_and_moves_stored_system_messages_to_system() -> None:
    history = [
        stored(1, "system", "Policy v2."),
        stored(2, "user", "one"),
        stored(3, "user", "two"),
        stored(4, "assistant", ""),  # empty: Anthropic rejects empty text blocks
        stored(5, "assistant", "three"),
    ]
    out = to_anthropic(history, system_prompt="Base.", user_message="four")
    assert out == {
        "system": "Base.\n\nPolicy v2.",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "three"}]},
            {"role": "user", "content": [{"type": "text", "text": "four"}]},
        ],
    }


def test_anthropic_history_starting_with_assistant_gets_a_placeholder_user_turn() -> None:
    out = to_anthropic([stored(7, "assistant", "Hello! How can I help?")], user_message="Hi")
    assert out["messages"][0] == {
        "role": "user",
        "content": [{"type": "text", "text": ANTHROPIC_LEADING_USER_TEXT}],
    }
    check_anthropic(out)


def test_anthropic_user_text_after_tool_results_follows_them_in_one_turn() -> None:
    call = ToolCall("toolu_1", "search", '{"q": "x"}')
    history = [
        stored(1, "user", "go"),
        stored(2, "assistant", None, calls=[call]),
        stored(3, "tool", "found", answers="toolu_1"),
    ]
    turns = to_anthropic(history, user_message="thanks")["messages"]
    assert turns[-1]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "found"},
        {"type": "text", "text": "thanks"},
    ]


def test_anthropic_non_object_arguments_are_wrapped_and_round_trip() -> None:
    calls = [ToolCall("a", "f", "not json"), ToolCall("b", "g", "[1, 2]")]
    history = [
        stored(1, "user", "go"),
        stored(2, "assistant", None, calls=calls),
        stored(3, "tool", "1", answers="a"),
        stored(4, "tool", "2", answers="b"),
    ]
    out = to_anthropic(history)
    check_anthropic(out)
    uses = [b for b in out["messages"][1]["content"] if b["type"] == "tool_use"]
    assert [u["input"] for u in uses] == [
        {RAW_ARGUMENTS_KEY: "not json"},
        {RAW_ARGUMENTS_KEY: "[1, 2]"},
    ]
    (assistant,) = from_anthropic(out["messages"][1])
    assert assistant.tool_calls == [ToolCall("a", "f", "not json"), ToolCall("b", "g", "[1, 2]")]


def test_anthropic_ids_outside_its_alphabet_are_mapped_consistently() -> None:
    history = [
        stored(1, "user", "go"),
        stored(2, "assistant", None, calls=[ToolCall("fc:42/x", "f", "{}")]),
        stored(3, "tool", "ok", answers="fc:42/x"),
    ]
    out = to_anthropic(history)
    check_anthropic(out)
    use_id = out["messages"][1]["content"][0]["id"]
    assert use_id != "fc:42/x"
    assert out["messages"][2]["content"][0]["tool_use_id"] == use_id
    assert use_id == to_anthropic(history)["messages"][1]["content"][0]["id"]


def test_plain_renders_tool_calls_as_text() -> None:
    assert to_plain(HISTORY[:4], system_prompt="Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": 'Let me check.\n[tool call get_weather({"city": "Paris"})]\n'
            "[tool call get_time()]",
        },
        {"role": "tool", "content": "18 C"},
        {"role": "tool", "content": "14:02"},
    ]


def test_formatters_drop_orphans_duplicates_and_unanswered_calls() -> None:
    history = [
        stored(1, "tool", "orphan", answers="gone"),
        stored(2, "user", "hi"),
        stored(3, "assistant", None, calls=[ToolCall("a", "f", "{}")]),
        stored(4, "tool", "old", answers="a"),
        stored(5, "tool", "new", answers="a"),
        stored(6, "assistant", None, calls=[ToolCall("b", "f", "{}")]),  # still running
    ]
    chat = to_openai_chat_messages(history)
    assert [(m["role"], m["content"]) for m in chat] == [
        ("user", "hi"),
        ("assistant", None),
        ("tool", "new"),
    ]
    check_all(history)


def test_format_messages_dispatches_by_name() -> None:
    parts: dict[str, str | None] = {"system_prompt": "S", "summary": None, "user_message": "U"}
    assert format_messages("openai-chat", HISTORY, **parts) == {
        "messages": to_openai_chat_messages(HISTORY, **parts)
    }
    assert format_messages("openai-responses", HISTORY, **parts) == {
        "input": to_openai_responses_input(HISTORY, **parts)
    }
    assert format_messages("anthropic", HISTORY, **parts) == to_anthropic(HISTORY, **parts)
    assert format_messages("plain", HISTORY, **parts) == {"messages": to_plain(HISTORY, **parts)}
    assert set(FORMATS) == {"openai-chat", "openai-responses", "anthropic", "plain"}
    check_all(HISTORY, **parts)


def test_unknown_format_name_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as info:
        format_messages("gemini", HISTORY)
    assert info.value.field == "format"
    assert "openai-chat" in str(info.value)
    with pytest.raises(ValidationError) as info:
        parse_response("plain", {})
    assert info.value.field == "format"


def test_seed_helpers_keep_their_behaviour() -> None:
    # build_message_array neither reorders nor drops: it is the seed's contract.
    out = build_message_array(HISTORY, "Hi", system_prompt="S")
    assert [m["role"] for m in out] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "user",
    ]
    assert out[3] == {"role": "tool", "content": "14:02", "tool_call_id": "call_2"}
    assert to_openai_chat(HISTORY[0]) == {"role": "user", "content": "Weather and time in Paris?"}
    as_dict = message_to_dict(HISTORY[1])
    assert as_dict["tool_calls"] == [WEATHER.to_dict(), TIME.to_dict()]
    assert as_dict["created_at"] == NOW.isoformat()


# -- the way back ---------------------------------------------------------------------------


def new(**fields: Any) -> NewMessage:
    """A ``NewMessage`` whose content may be parts: typed loosely until ``convodb._records``
    declares part content (issue 10)."""
    return NewMessage(**fields)


def same(
    parsed: list[NewMessage],
    expected: Sequence[StoredMessage],
    arguments: Callable[[str], Any] = str,
) -> None:
    def shape(m: Any) -> tuple[Any, ...]:
        calls = tuple((c.id, c.name, arguments(c.arguments)) for c in m.tool_calls or ())
        return (m.role, m.content, calls, m.tool_call_id, m.tool_name)

    assert [shape(m) for m in parsed] == [shape(m) for m in expected]


def test_openai_chat_round_trip() -> None:
    arranged = [HISTORY[0], HISTORY[1], HISTORY[3], HISTORY[2], HISTORY[4]]
    same(from_openai_chat(to_openai_chat_messages(HISTORY)), arranged)


def test_openai_chat_completion_sdk_object() -> None:
    completion = ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_9",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"c": 1}'},
                            }
                        ],
                    },
                }
            ],
        }
    )
    turn = [
        completion.choices[0].message,
        {"role": "tool", "tool_call_id": "call_9", "content": "sunny"},
    ]
    assert from_openai_chat(completion) == from_openai_chat(turn)[:1]
    assert from_openai_chat(turn) == [
        NewMessage(
            role="assistant",
            content=None,
            tool_calls=[ToolCall("call_9", "get_weather", '{"c": 1}')],
        ),
        NewMessage(role="tool", content="sunny", tool_call_id="call_9", tool_name="get_weather"),
    ]


def test_openai_chat_refusal_and_content_parts() -> None:
    assert from_openai_chat({"role": "assistant", "content": None, "refusal": "No."}) == [
        NewMessage(role="assistant", content="No.")
    ]
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert from_openai_chat([{"role": "developer", "content": parts}]) == [
        NewMessage(role="system", content="ab")
    ]


def test_openai_responses_round_trip() -> None:
    arranged = [HISTORY[0], HISTORY[1], HISTORY[3], HISTORY[2], HISTORY[4]]
    same(from_openai_responses(to_openai_responses_input(HISTORY)), arranged)


def test_openai_responses_sdk_object_keeps_reasoning() -> None:
    response = Response.model_validate(
        {
            "id": "resp_1",
            "object": "response",
            "created_at": 1,
            "model": "gpt-4o",
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "output": [
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [{"type": "summary_text", "text": "hm"}],
                },
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
                },
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_5",
                    "name": "lookup",
                    "arguments": '{"q": "x"}',
                },
            ],
        }
    )
    results = [{"type": "function_call_output", "call_id": "call_5", "output": "42"}]
    assert from_openai_responses(list(response.output) + results) == [
        new(
            role="assistant",
            content=[ReasoningPart(id="rs_1", summary=("hm",)), TextPart(text="Checking.")],
            tool_calls=[ToolCall("call_5", "lookup", '{"q": "x"}')],
        ),
        NewMessage(role="tool", content="42", tool_call_id="call_5", tool_name="lookup"),
    ]
    assert from_openai_responses(response) == from_openai_responses(response.output)


def test_anthropic_round_trip() -> None:
    arranged = [HISTORY[0], HISTORY[1], HISTORY[3], HISTORY[2], HISTORY[4]]
    parsed = from_anthropic(to_anthropic(HISTORY)["messages"])
    # Anthropic carries arguments as a JSON object, so they come back re-serialised ("" as {}).
    same(parsed, arranged, arguments=lambda a: json.loads(a or "{}"))


def test_anthropic_sdk_message_and_tool_result_turn() -> None:
    response = Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
            "content": [
                {"type": "thinking", "thinking": "hm", "signature": "sig"},
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "x"}},
            ],
        }
    )
    results_turn = {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": [{"type": "text", "text": "none"}],
                "is_error": True,
            },
            {"type": "text", "text": "try again"},
        ],
    }
    assert from_anthropic([response, results_turn]) == [
        new(
            role="assistant",
            content=[ThinkingPart(thinking="hm", signature="sig"), TextPart(text="Looking.")],
            tool_calls=[ToolCall("toolu_1", "search", '{"q": "x"}')],
        ),
        NewMessage(
            role="tool",
            content="none",
            tool_call_id="toolu_1",
            tool_name="search",
            metadata={"is_error": True},
        ),
        NewMessage(role="user", content="try again"),
    ]
    assert parse_response("anthropic", response) == from_anthropic(response)


@pytest.mark.parametrize(
    ("name", "data", "field"),
    [
        ("openai-chat", 42, "messages"),
        ("openai-chat", [{"role": "robot", "content": "x"}], "messages[0].role"),
        ("openai-chat", [{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        ("openai-chat", {"choices": []}, "choices"),
        ("openai-responses", [{"type": "function_call", "name": "f"}], "output[0].call_id"),
        ("anthropic", [{"role": "system", "content": "x"}], "messages[0].role"),
        ("anthropic", [{"role": "user", "content": 3}], "messages[0].content"),
    ],
)
def test_malformed_responses_name_the_field(name: str, data: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_response(name, data)
    assert info.value.field == field
