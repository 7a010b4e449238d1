"""Content parts through every format: media in each API's shape, placeholders for what an API
cannot take, provider reasoning replayed only to its provider, and the way back.

Requests are validated with the SDKs' own request types (``check_*`` from test_formats); the
payloads parsed here are shaped like what the APIs return.
"""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass
from typing import Any, cast

import pytest
from anthropic.types import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionMessageParam
from openai.types.responses import Response, ResponseInputParam
from pydantic import ConfigDict, TypeAdapter

from convodb._parts import (
    AudioPart,
    FilePart,
    ImagePart,
    Part,
    ProviderItemPart,
    ReasoningPart,
    RedactedThinkingPart,
    TextPart,
    ThinkingPart,
    part_to_dict,
)
from convodb._records import NewMessage, ToolCall
from convodb.errors import ValidationError
from convodb.formats import (
    build_message_array,
    format_messages,
    from_anthropic,
    from_openai_chat,
    from_openai_responses,
    message_to_dict,
    to_anthropic,
    to_openai_chat,
)
from convodb.formats._content import placeholder
from convodb.history import select_window

from .test_formats import (
    _consume,
    check_anthropic,
    check_openai_chat,
    check_openai_responses,
    new,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
PDF = b64(b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")
WAV = b64(b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00")
NOTES = "Meeting notes: ship on Friday."

# Markers that must appear only in their own provider's requests.
SIGNATURE = "EqQBCkYIBxgCKkAanthropicSignature=="
REDACTED = "EmwKAhgBEgyAnthropicRedacted=="
ENCRYPTED = "gAAAAABoOpenAIEncryptedReasoning=="
SEARCH_ID = "srvtoolu_01WebSearch"
WEB_CALL = "ws_01OpenAIWebSearch"

FORMATS = ("openai-chat", "openai-responses", "anthropic", "plain")
# The OpenAI request types checked again, rejecting keys they do not define, as the API does.
# (Anthropic's content types admit response blocks, which allow extra keys.)
STRICT: dict[str, TypeAdapter[Any]] = {
    "openai-chat": TypeAdapter(list[ChatCompletionMessageParam], config=ConfigDict(extra="forbid")),
    "openai-responses": TypeAdapter(ResponseInputParam, config=ConfigDict(extra="forbid")),
}


@dataclass(frozen=True)
class Stored:
    """A stored message with parts, as ``StoredMessage`` will hold them (a ``MessageLike``)."""

    role: str
    content: str | tuple[Part, ...] | None
    tool_calls: tuple[ToolCall, ...] | None = None
    tool_call_id: str | None = None
    tool_name: str | None = None
    seq: int = 0
    token_count: int | None = 1


def stored(messages: list[NewMessage]) -> list[Stored]:
    """Parsed messages as the store returns them: parts as a tuple, calls as ``ToolCall``."""
    out = []
    for seq, m in enumerate(messages, 1):
        content = m.content
        if content is not None and not isinstance(content, str):
            content = cast("tuple[Part, ...]", tuple(content))
        calls = tuple(c if isinstance(c, ToolCall) else ToolCall(**c) for c in m.tool_calls or ())
        out.append(Stored(m.role, content, calls or None, m.tool_call_id, m.tool_name, seq=seq))
    return out


def every_format(messages: list[Stored], **fixed: Any) -> dict[str, Any]:
    """Each format's request, each checked against its SDK's request types."""
    out = {name: format_messages(name, messages, **fixed) for name in FORMATS}
    check_openai_chat(out["openai-chat"]["messages"])
    check_openai_responses(out["openai-responses"]["input"])
    check_anthropic(out["anthropic"])
    for name in ("openai-chat", "openai-responses"):
        _consume(STRICT[name].validate_python(out[name].get("messages", out[name].get("input"))))
    assert all(isinstance(m["content"], str) for m in out["plain"]["messages"])
    return out


def content(message: NewMessage) -> Any:
    """A parsed message's content (typed loosely until ``NewMessage`` declares parts)."""
    return message.content


def dumped(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def assert_scoped(out: dict[str, Any]) -> None:
    """Reasoning and provider items of one provider appear in that provider's request only."""
    anthropic_only = (SIGNATURE, REDACTED, SEARCH_ID, '"thinking"')
    openai_only = (ENCRYPTED, WEB_CALL, '"reasoning"')
    for name, request in out.items():
        text = dumped(request)
        if name != "anthropic":
            assert not [m for m in anthropic_only if m in text], name
        if name != "openai-responses":
            assert not [m for m in openai_only if m in text], name


# -- Anthropic: thinking, tools, web search --------------------------------------------------


def anthropic_message(content: list[dict[str, Any]], stop_reason: str = "end_turn") -> Message:
    return Message.model_validate(
        {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 20},
            "content": content,
        }
    )


THINKING = {"type": "thinking", "thinking": "Weather needs a tool call.", "signature": SIGNATURE}
CALLS_WEATHER = anthropic_message(
    [
        THINKING,
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    stop_reason="tool_use",
)
SCREENSHOT_RESULT = {
    "role": "user",
    "content": [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_01A",
            "content": [
                {"type": "text", "text": "18 C, clear"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
            ],
        }
    ],
}
ANSWER = anthropic_message(
    [
        {"type": "thinking", "thinking": "The tool says 18 C.", "signature": SIGNATURE + "2"},
        {"type": "text", "text": "It is 18 C and clear in Paris."},
    ]
)


def test_anthropic_thinking_and_tool_use_are_kept_and_replayed_first_in_their_turn() -> None:
    parsed = from_anthropic([CALLS_WEATHER, SCREENSHOT_RESULT])
    assert parsed == [
        new(
            role="assistant",
            content=[
                ThinkingPart(thinking="Weather needs a tool call.", signature=SIGNATURE),
                TextPart(text="Let me check."),
            ],
            tool_calls=[ToolCall("toolu_01A", "get_weather", '{"city": "Paris"}')],
        ),
        new(
            role="tool",
            content=[
                TextPart(text="18 C, clear"),
                ImagePart(data=PNG, media_type="image/png"),
            ],
            tool_call_id="toolu_01A",
            tool_name="get_weather",
        ),
    ]
    # The request that continues the tool loop: its last assistant turn starts with thinking.
    history = stored([new(role="user", content="Weather in Paris?"), *parsed])
    out = every_format(history)
    turns = out["anthropic"]["messages"]
    assert turns[1]["content"][0] == THINKING  # exactly as received
    assert [b["type"] for b in turns[1]["content"]] == ["thinking", "text", "tool_use"]
    assert turns[2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_01A",
            "content": [
                {"type": "text", "text": "18 C, clear"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
            ],
        }
    ]
    assert from_anthropic(turns[1:]) == parsed  # and back
    assert_scoped(out)

    # The whole exchange, with the answer: every turn with thinking starts with it.
    history = stored(
        [new(role="user", content="Weather in Paris?"), *parsed, *from_anthropic(ANSWER)]
    )
    out = every_format(history, user_message="And tomorrow?")
    assert out["anthropic"]["messages"][3]["content"][0]["signature"] == SIGNATURE + "2"
    assert_scoped(out)


def test_anthropic_merged_turn_starts_with_the_thinking_of_the_message_it_belongs_to() -> None:
    # An app stored a text message, then the model's turn with thinking and a call: Anthropic
    # gets them as one assistant turn, which must open with the thinking block.
    history = stored(
        [
            new(role="user", content="Weather in Paris?"),
            new(role="assistant", content="One moment."),
            *from_anthropic([CALLS_WEATHER, SCREENSHOT_RESULT]),
        ]
    )
    turns = to_anthropic(history)["messages"]
    assert [b["type"] for b in turns[1]["content"]] == ["thinking", "text", "text", "tool_use"]
    assert turns[1]["content"][0] == THINKING
    assert [b.get("text") for b in turns[1]["content"][1:3]] == ["One moment.", "Let me check."]
    check_anthropic({"messages": turns})


def test_redacted_thinking_is_replayed_to_anthropic_only() -> None:
    redacted = anthropic_message(
        [
            {"type": "redacted_thinking", "data": REDACTED},
            {"type": "text", "text": "Here is my answer."},
        ]
    )
    (assistant,) = from_anthropic(redacted)
    assert content(assistant) == [
        RedactedThinkingPart(data=REDACTED),
        TextPart(text="Here is my answer."),
    ]
    history = stored([new(role="user", content="Hi"), assistant])
    out = every_format(history, user_message="Thanks")
    assert out["anthropic"]["messages"][1]["content"][0] == {
        "type": "redacted_thinking",
        "data": REDACTED,
    }
    assert out["openai-chat"]["messages"][1] == {
        "role": "assistant",
        "content": "Here is my answer.",
    }
    assert_scoped(out)


def test_anthropic_web_search_blocks_are_replayed_verbatim_in_place() -> None:
    search = anthropic_message(
        [
            {"type": "text", "text": "I'll search."},
            {
                "type": "server_tool_use",
                "id": SEARCH_ID,
                "name": "web_search",
                "input": {"query": "paris weather"},
            },
            {
                "type": "web_search_tool_result",
                "tool_use_id": SEARCH_ID,
                "content": [
                    {
                        "type": "web_search_result",
                        "url": "https://weather.example/paris",
                        "title": "Paris weather",
                        "encrypted_content": "EqgfCioIARgBIiQ3YTAwMjY1Mi1mZjM5LTQ1NGUtODgx",
                        "page_age": "April 30, 2025",
                    }
                ],
            },
            {"type": "text", "text": " "},  # the API returns blank text between blocks
            {"type": "text", "text": "It is sunny."},
        ]
    )
    (assistant,) = from_anthropic(search)
    assert isinstance(assistant.content, list)
    kinds = [p.type for p in assistant.content]
    assert kinds == ["text", "provider_item", "provider_item", "text", "text"]
    history = stored([new(role="user", content="Weather?"), assistant])
    out = every_format(history, user_message="Thanks")
    blocks = out["anthropic"]["messages"][1]["content"]
    assert [b["type"] for b in blocks] == [
        "text",
        "server_tool_use",
        "web_search_tool_result",
        "text",
    ]
    assert blocks[1:3] == [
        p.item for p in assistant.content[1:3] if isinstance(p, ProviderItemPart)
    ]
    assert out["openai-responses"]["input"][1] == {
        "role": "assistant",
        "content": "I'll search. It is sunny.",
    }
    assert_scoped(out)


# -- OpenAI Responses: reasoning, function calls, hosted tools -------------------------------


def openai_response(output: list[dict[str, Any]]) -> Response:
    return Response.model_validate(
        {
            "id": "resp_01",
            "object": "response",
            "created_at": 1,
            "model": "gpt-5",
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "output": output,
        }
    )


REASONING_CALL = openai_response(
    [
        {
            "type": "reasoning",
            "id": "rs_01",
            "summary": [{"type": "summary_text", "text": "Need the weather."}],
            "encrypted_content": ENCRYPTED,
        },
        {
            "type": "function_call",
            "id": "fc_01",
            "call_id": "call_01",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
            "status": "completed",
        },
    ]
)
IMAGE_OUTPUT = {
    "type": "function_call_output",
    "call_id": "call_01",
    "output": [
        {"type": "input_text", "text": "18 C"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
    ],
}
WEB_ANSWER = openai_response(
    [
        {"type": "reasoning", "id": "rs_02", "summary": [], "encrypted_content": ENCRYPTED + "2"},
        {
            "type": "web_search_call",
            "id": WEB_CALL,
            "status": "completed",
            "action": {"type": "search", "query": "paris weather tomorrow"},
        },
        {
            "type": "message",
            "id": "msg_01",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "18 C today.", "annotations": []}],
        },
    ]
)


def test_openai_reasoning_goes_right_before_the_call_that_followed_it() -> None:
    parsed = from_openai_responses([*REASONING_CALL.output, IMAGE_OUTPUT, *WEB_ANSWER.output])
    reasoning = ReasoningPart(
        id="rs_01", summary=("Need the weather.",), encrypted_content=ENCRYPTED
    )
    assert parsed[0] == new(
        role="assistant",
        content=[reasoning],
        tool_calls=[ToolCall("call_01", "get_weather", '{"city":"Paris"}')],
    )
    assert parsed[1] == new(
        role="tool",
        content=[TextPart(text="18 C"), ImagePart(data=PNG, media_type="image/png", detail="auto")],
        tool_call_id="call_01",
        tool_name="get_weather",
    )
    assert isinstance(parsed[2].content, list)
    assert [p.type for p in parsed[2].content] == ["reasoning", "provider_item", "text"]

    history = stored([new(role="user", content="Weather?"), *parsed])
    out = every_format(history, user_message="Thanks")
    items = out["openai-responses"]["input"]
    assert items[1:4] == [
        {
            "type": "reasoning",
            "id": "rs_01",
            "summary": [{"type": "summary_text", "text": "Need the weather."}],
            "encrypted_content": ENCRYPTED,
        },
        {
            "type": "function_call",
            "call_id": "call_01",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {
            "type": "function_call_output",
            "call_id": "call_01",
            "output": [
                {"type": "input_text", "text": "18 C"},
                {
                    "type": "input_image",
                    "image_url": f"data:image/png;base64,{PNG}",
                    "detail": "auto",
                },
            ],
        },
    ]
    assert [i.get("type", i.get("role")) for i in items[4:]] == [
        "reasoning",
        "web_search_call",
        "assistant",
        "user",
    ]
    assert items[5] == WEB_ANSWER.output[1].model_dump(mode="json", exclude_unset=True)
    assert_scoped(out)


def test_reasoning_with_nothing_after_it_is_left_out() -> None:
    cut_short = openai_response(
        [{"type": "reasoning", "id": "rs_09", "summary": [], "encrypted_content": ENCRYPTED}]
    )
    history = stored([new(role="user", content="Hi"), *from_openai_responses(cut_short)])
    out = every_format(history, user_message="Hello?")
    assert [i.get("type") for i in out["openai-responses"]["input"]] == [None, None]


# -- media in every API ----------------------------------------------------------------------


IMAGE_URL = ImagePart(url="https://example.com/cat.png", detail="low")
IMAGE_DATA = ImagePart(data=PNG, media_type="image/png", width=1, height=1)
REPORT = FilePart(data=PDF, media_type="application/pdf", filename="report.pdf", pages=1)


def test_images_by_url_and_base64_in_each_api_shape() -> None:
    history = [Stored("user", (TextPart(text="Compare"), IMAGE_URL, IMAGE_DATA))]
    out = every_format(history)
    assert out["openai-chat"]["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    assert out["openai-responses"]["input"][0]["content"] == [
        {"type": "input_text", "text": "Compare"},
        {"type": "input_image", "detail": "low", "image_url": "https://example.com/cat.png"},
        {"type": "input_image", "detail": "auto", "image_url": f"data:image/png;base64,{PNG}"},
    ]
    assert out["anthropic"]["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]
    assert out["plain"]["messages"][0]["content"] == (
        "Compare\n[image: https://example.com/cat.png]\n[image: image/png, 1x1]"
    )


def test_a_pdf_in_each_api_shape() -> None:
    out = every_format([Stored("user", (REPORT, TextPart(text="Summarize.")))])
    assert out["openai-chat"]["messages"][0]["content"][0] == {
        "type": "file",
        "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "report.pdf"},
    }
    assert out["openai-responses"]["input"][0]["content"][0] == {
        "type": "input_file",
        "file_data": f"data:application/pdf;base64,{PDF}",
        "filename": "report.pdf",
    }
    assert out["anthropic"]["messages"][0]["content"][0] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
        "title": "report.pdf",
    }
    assert out["plain"]["messages"][0]["content"] == (
        "[file: report.pdf, application/pdf, 1 pages]\nSummarize."
    )


def test_a_text_file_is_sent_as_text_where_an_api_takes_pdfs_only() -> None:
    notes = FilePart(data=b64(NOTES.encode()), media_type="text/plain", filename="notes.txt")
    out = every_format([Stored("user", (notes,))])
    assert out["openai-chat"]["messages"][0]["content"] == (
        f"[file: notes.txt, text/plain]\n{NOTES}"
    )
    assert out["anthropic"]["messages"][0]["content"][0]["source"] == {
        "type": "text",
        "media_type": "text/plain",
        "data": NOTES,
    }
    assert out["openai-responses"]["input"][0]["content"][0]["type"] == "input_file"


UNLOADED = ImagePart(media_type="image/png", attachment="ab" * 32, size=68, width=640, height=480)
AUDIO = AudioPart(data=WAV, format="wav")


@pytest.mark.parametrize(
    ("part", "fmt", "text"),
    [
        (AUDIO, "anthropic", "[audio: wav]"),
        (AUDIO, "openai-responses", "[audio: wav]"),
        (AUDIO, "plain", "[audio: wav]"),
        (UNLOADED, "openai-chat", "[image: image/png, 640x480]"),
        (UNLOADED, "openai-responses", "[image: image/png, 640x480]"),
        (UNLOADED, "anthropic", "[image: image/png, 640x480]"),
        (
            FilePart(url="https://example.com/a.pdf"),
            "openai-chat",
            "[file: https://example.com/a.pdf]",
        ),
        (
            FilePart(url="https://example.com/a.csv"),
            "anthropic",
            "[file: https://example.com/a.csv]",
        ),
        (ImagePart(file_id="file-abc123"), "anthropic", "[image: file-abc123]"),
        (ImagePart(file_id="file-abc123"), "openai-chat", "[image: file-abc123]"),
        (FilePart(file_id="file_011CNha8"), "openai-responses", "[file: file_011CNha8]"),
        (FilePart(file_id="file_011CNha8"), "openai-chat", "[file: file_011CNha8]"),
    ],
)
def test_a_part_an_api_cannot_take_becomes_a_placeholder_naming_it(
    part: Part, fmt: str, text: str
) -> None:
    out = every_format([Stored("user", (TextPart(text="Look:"), part))])
    assert text in dumped(out[fmt])


def test_provider_file_ids_go_to_their_provider_only() -> None:
    history = [Stored("user", (ImagePart(file_id="file-abc"), FilePart(file_id="file_011xyz")))]
    out = every_format(history)
    assert out["openai-responses"]["input"][0]["content"] == [
        {"type": "input_image", "detail": "auto", "file_id": "file-abc"},
        {"type": "input_text", "text": "[file: file_011xyz]"},
    ]
    assert out["anthropic"]["messages"][0]["content"] == [
        {"type": "text", "text": "[image: file-abc]"},
        {"type": "document", "source": {"type": "file", "file_id": "file_011xyz"}},
    ]


def test_media_outside_user_messages_and_tool_results_are_placeholders() -> None:
    history = [
        Stored("system", (TextPart(text="Rules."), IMAGE_DATA)),
        Stored("user", "Hi"),
        Stored("assistant", (TextPart(text="Here:"), IMAGE_URL)),
    ]
    out = every_format(history, user_message="ok")
    assert out["anthropic"]["system"] == "Rules.\n[image: image/png, 1x1]"
    assert out["openai-chat"]["messages"][0]["content"] == [
        {"type": "text", "text": "Rules."},
        {"type": "text", "text": "[image: image/png, 1x1]"},
    ]
    assert out["openai-responses"]["input"][2] == {
        "role": "assistant",
        "content": "Here:\n[image: https://example.com/cat.png]",
    }


def test_chat_tool_media_follow_the_results_in_one_user_message() -> None:
    history = stored(
        [
            new(role="user", content="Open both pages"),
            new(
                role="assistant",
                content=None,
                tool_calls=[ToolCall("c1", "screenshot", "{}"), ToolCall("c2", "pdf", "{}")],
            ),
            new(role="tool", content=[IMAGE_DATA], tool_call_id="c1", tool_name="screenshot"),
            new(role="tool", content=[TextPart(text="ok"), REPORT], tool_call_id="c2"),
        ]
    )
    messages = every_format(history, user_message="Well?")["openai-chat"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user", "user"]
    assert messages[2]["content"] == "[image: image/png, 1x1; in the next user message]"
    assert messages[4]["content"] == [
        {"type": "text", "text": "Attachments of the result of tool call c1 (screenshot):"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "text", "text": "Attachments of the result of tool call c2:"},
        {
            "type": "file",
            "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "report.pdf"},
        },
    ]
    # One message alone names its media instead (the seed's helper never adds messages).
    assert to_openai_chat(history[2])["content"] == "[image: image/png, 1x1]"


def test_user_message_takes_parts_as_records_or_dicts() -> None:
    as_dicts = [{"type": "text", "text": "What is this?"}, part_to_dict(IMAGE_URL)]
    for user_message in (as_dicts, [TextPart(text="What is this?"), IMAGE_URL]):
        out = every_format([], user_message=user_message)
        assert out["anthropic"]["messages"][-1]["content"][1]["type"] == "image"
        assert out["openai-chat"]["messages"][-1]["content"][1]["type"] == "image_url"
        assert out["openai-responses"]["input"][-1]["content"][1]["type"] == "input_image"
        assert out["plain"]["messages"][-1]["content"] == (
            "What is this?\n[image: https://example.com/cat.png]"
        )
    array = build_message_array([], as_dicts, system_prompt="S")
    assert array[-1]["content"][1]["type"] == "image_url"


@pytest.mark.parametrize(
    ("user_message", "field"),
    [
        ([{"type": "video", "url": "x"}], "user_message[0].type"),
        ([{"type": "text", "text": "a", "colour": "red"}], "user_message[0]"),
        ([{"type": "text"}], "user_message[0]"),
        (["just a string"], "user_message[0]"),
    ],
)
def test_user_message_parts_of_unknown_shape_are_validation_errors(
    user_message: Any, field: str
) -> None:
    for name in FORMATS:
        with pytest.raises(ValidationError) as info:
            format_messages(name, [], user_message=user_message)
        assert info.value.field == field


def test_message_to_dict_writes_parts_as_dicts() -> None:
    message = Stored("user", (TextPart(text="see"), IMAGE_URL))
    assert message_to_dict(message)["content"] == [
        {"type": "text", "text": "see"},
        {"type": "image", "url": "https://example.com/cat.png", "detail": "low"},
    ]


# -- the way back: media -------------------------------------------------------------------


def test_from_openai_chat_keeps_images_files_and_audio() -> None:
    user = {
        "role": "user",
        "content": [
            {"type": "text", "text": "What's in these?"},
            {
                "type": "image_url",
                "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"},
            },
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {
                "type": "file",
                "file": {
                    "filename": "report.pdf",
                    "file_data": f"data:application/pdf;base64,{PDF}",
                },
            },
            {"type": "file", "file": {"file_id": "file-abc"}},
            {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}},
        ],
    }
    (message,) = from_openai_chat(user)
    assert content(message) == [
        TextPart(text="What's in these?"),
        ImagePart(data=PNG, media_type="image/png", detail="high"),
        ImagePart(url="https://example.com/cat.png"),
        FilePart(data=PDF, media_type="application/pdf", filename="report.pdf"),
        FilePart(file_id="file-abc"),
        AudioPart(data=WAV, format="wav"),
    ]
    out = every_format(stored([message]))
    assert out["openai-chat"]["messages"][0]["content"][1:] == user["content"][1:]


def test_from_openai_responses_keeps_input_images_and_files() -> None:
    item = {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "Read this"},
            {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
            {
                "type": "input_file",
                "filename": "report.pdf",
                "file_data": f"data:application/pdf;base64,{PDF}",
            },
            {"type": "input_file", "file_url": "https://example.com/spec.pdf"},
        ],
    }
    (message,) = from_openai_responses([item])
    assert content(message) == [
        TextPart(text="Read this"),
        IMAGE_URL,
        FilePart(data=PDF, media_type="application/pdf", filename="report.pdf"),
        FilePart(url="https://example.com/spec.pdf"),
    ]
    assert every_format(stored([message]))["openai-responses"]["input"] == [item]


def test_from_anthropic_keeps_user_images_and_documents() -> None:
    turn = {
        "role": "user",
        "content": [
            {"type": "text", "text": "Compare these."},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                "title": "report.pdf",
            },
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": NOTES},
            },
        ],
    }
    (message,) = from_anthropic(turn)
    assert content(message) == [
        TextPart(text="Compare these."),
        ImagePart(url="https://example.com/cat.png"),
        FilePart(data=PDF, media_type="application/pdf", filename="report.pdf"),
        FilePart(data=b64(NOTES.encode()), media_type="text/plain"),
    ]
    assert every_format(stored([message]))["anthropic"]["messages"] == [turn]


def test_text_only_content_stays_a_string() -> None:
    assert from_anthropic(anthropic_message([{"type": "text", "text": "Hi"}]))[0].content == "Hi"
    assert from_openai_chat({"role": "user", "content": [{"type": "text", "text": "a"}]})[0] == (
        new(role="user", content="a")
    )


# -- properties ------------------------------------------------------------------------------


_ids = itertools.count()


def _unique() -> int:
    return next(_ids)


@st.composite
def media(draw: st.DrawFn) -> Part:
    """A medium with something unique in it, so the checks can find it or its placeholder."""
    n = _unique()
    data = b64(f"bytes-{n}".encode())
    choices: list[Part] = [
        ImagePart(data=data, media_type="image/png", width=n + 1, height=1),
        ImagePart(url=f"https://example.com/{n}.png"),
        ImagePart(file_id=f"file-{n}"),
        ImagePart(file_id=f"file_{n}"),
        ImagePart(media_type="image/jpeg", attachment=f"{n:064x}", width=n + 1, height=2),
        FilePart(data=data, media_type="application/pdf", filename=f"{n}.pdf"),
        FilePart(url=f"https://example.com/{n}.pdf"),
        FilePart(url=f"https://example.com/{n}.csv", media_type="text/csv"),
        FilePart(data=b64(f"note {n}".encode()), media_type="text/markdown", filename=f"{n}.md"),
        FilePart(file_id=f"file-{n}", filename=f"{n}.pdf"),
        AudioPart(data=data, format="mp3"),
    ]
    return draw(st.sampled_from(choices))


@st.composite
def scoped(draw: st.DrawFn) -> list[Part]:
    n = _unique()
    search = f"{SEARCH_ID}{n}"
    return draw(
        st.sampled_from(
            [
                [ThinkingPart(thinking=f"t{n}", signature=f"{SIGNATURE}{n}")],
                [RedactedThinkingPart(data=f"{REDACTED}{n}")],
                [ReasoningPart(id=f"rs_{n}", summary=("s",), encrypted_content=f"{ENCRYPTED}{n}")],
                [
                    ProviderItemPart(
                        provider="openai",
                        item={
                            "type": "web_search_call",
                            "id": f"{WEB_CALL}{n}",
                            "status": "completed",
                            "action": {"type": "search", "query": "q"},
                        },
                    )
                ],
                [
                    ProviderItemPart(
                        provider="anthropic",
                        item={
                            "type": "server_tool_use",
                            "id": search,
                            "name": "web_search",
                            "input": {"query": "q"},
                        },
                    ),
                    ProviderItemPart(
                        provider="anthropic",
                        item={
                            "type": "web_search_tool_result",
                            "tool_use_id": search,
                            "content": [],
                        },
                    ),
                ],
            ]
        )
    )


TEXTS = st.sampled_from(["", " ", "hello", "a\nb", "é"])


def contents(role: str) -> st.SearchStrategy[str | tuple[Part, ...] | None]:
    text = TEXTS.map(lambda t: TextPart(text=t))
    if role == "assistant":
        part = st.one_of(text.map(lambda p: [p]), scoped(), media().map(lambda p: [p]))
        parts = st.lists(part, max_size=4).map(lambda ps: tuple(p for group in ps for p in group))
    else:
        parts = st.lists(st.one_of(text, media()), max_size=4).map(tuple)
    return st.one_of(TEXTS, parts)


@st.composite
def histories(draw: st.DrawFn) -> list[Stored]:
    history: list[Stored] = []
    pending: list[str] = []
    for seq in range(1, draw(st.integers(0, 14)) + 1):
        kind = draw(st.sampled_from(["user", "assistant", "calls", "result", "result", "system"]))
        if kind == "calls":
            calls = tuple(
                ToolCall(f"call_{_unique()}", "f", "{}") for _ in range(draw(st.integers(1, 2)))
            )
            pending.extend(c.id for c in calls)
            content = draw(st.none() | contents("assistant"))
            history.append(Stored("assistant", content, calls, seq=seq))
        elif kind == "result":
            answers = pending.pop(draw(st.integers(0, len(pending) - 1))) if pending else "orphan"
            history.append(Stored("tool", draw(contents("tool")), tool_call_id=answers, seq=seq))
        else:
            history.append(Stored(kind, draw(contents(kind)), seq=seq))
    return history


def _medium_shown(part: Part, text: str) -> bool:
    """The part or a placeholder naming it is in ``text``."""
    shown = [placeholder(part)]
    if isinstance(part, ImagePart | FilePart):
        shown += [v for v in (part.data, part.url, part.file_id) if v]
        if isinstance(part, FilePart) and part.data and part.media_type == "text/markdown":
            shown.append(base64.b64decode(part.data).decode())
    elif isinstance(part, AudioPart) and part.data:
        shown.append(part.data)
    return any(s in text for s in shown)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=histories(),
    max_messages=st.none() | st.integers(0, 10),
    user_message=st.none() | contents("user"),
)
def test_every_window_with_parts_is_valid_input_for_every_api(
    history: list[Stored], max_messages: int | None, user_message: Any
) -> None:
    window = select_window(cast(Any, history), max_messages=max_messages)
    kept: list[Stored] = cast(Any, window.messages)
    out = every_format(kept, user_message=user_message)
    assert_scoped(out)
    # Groups whole: each kept call has its result kept, and every kept result its call.
    calls = {c.id for m in kept for c in m.tool_calls or ()}
    assert calls == {m.tool_call_id for m in kept if m.role == "tool"}
    # Nothing silently dropped: each medium is sent, or named by a placeholder, everywhere.
    for name in FORMATS:
        text = dumped(out[name])
        for message in kept:
            if isinstance(message.content, tuple):
                for part in message.content:
                    if isinstance(part, ImagePart | FilePart | AudioPart):
                        assert _medium_shown(part, text), (name, part)
    # Anthropic's thinking and OpenAI's reasoning reach their own provider, unchanged.
    anthropic, responses = dumped(out["anthropic"]), dumped(out["openai-responses"])
    for message in kept:
        for part in message.content if isinstance(message.content, tuple) else ():
            if isinstance(part, ThinkingPart) and message.role == "assistant":
                assert (
                    dumped(
                        {"type": "thinking", "thinking": part.thinking, "signature": part.signature}
                    )
                    in anthropic
                )
            if isinstance(part, ReasoningPart) and message.tool_calls:
                assert part.encrypted_content is not None
                assert part.encrypted_content in responses
