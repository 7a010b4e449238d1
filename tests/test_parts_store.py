"""Content parts through the store, on every database: saved, read back, windowed and formatted
for each API; binary data kept once per conversation; bad parts rejected with nothing stored.

The payloads are the realistic ones of test_formats_parts (Claude thinking with a tool call
and a screenshot result, OpenAI reasoning with encrypted content, images, a PDF); the requests
are checked with the SDKs' own request types.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from typing import Any

import pytest
from sqlalchemy import func, select

from convodb import (
    ConversationNotFoundError,
    ConversationService,
    Database,
    IdempotencyKeyReuseError,
    ImagePart,
    LimitExceededError,
    Limits,
    NewMessage,
    ReasoningPart,
    TextPart,
    ThinkingPart,
    ValidationError,
)
from convodb._models import attachments
from convodb.formats import from_anthropic, from_openai_responses

from ._store import state
from .test_formats import check_anthropic, check_openai_chat, check_openai_responses
from .test_formats_parts import (
    ANSWER,
    CALLS_WEATHER,
    ENCRYPTED,
    IMAGE_OUTPUT,
    PDF,
    PNG,
    REASONING_CALL,
    SCREENSHOT_RESULT,
    SIGNATURE,
    THINKING,
    WEB_ANSWER,
    assert_scoped,
)

ALICE, BOB = "alice", "bob"
FORMATS = ("openai-chat", "openai-responses", "anthropic", "plain")


def png(width: int, height: int) -> str:
    """A real PNG of that size (grey, 8-bit), base64."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\x80" * width for _ in range(height)))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
    return base64.b64encode(data + chunk(b"IEND", b"")).decode()


def digest(data: str) -> str:
    return hashlib.sha256(base64.b64decode(data)).hexdigest()


async def new_conversation(service: ConversationService, user: str = ALICE) -> str:
    return (await service.create_conversation(user)).id


async def formatted(service: ConversationService, cid: str, **kwargs: Any) -> dict[str, Any]:
    """The conversation's agent input in every format, each checked with its SDK's types."""
    out = {}
    for name in FORMATS:
        out[name] = (await service.get_agent_input(cid, ALICE, format=name, **kwargs)).kwargs
    check_openai_chat(out["openai-chat"]["messages"])
    check_openai_responses(out["openai-responses"]["input"])
    check_anthropic(out["anthropic"])
    return out


async def attachment_rows(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(attachments))).scalar_one())


# -- round trips -----------------------------------------------------------------------------


async def test_claude_thinking_tool_loop_round_trips_and_replays_thinking_first(
    service: ConversationService,
) -> None:
    cid = await new_conversation(service)
    turn = from_anthropic([CALLS_WEATHER, SCREENSHOT_RESULT])
    await service.save_conversation_messages(
        cid, ALICE, [NewMessage(role="user", content="Weather in Paris?"), *turn]
    )

    history = await service.get_conversation_history(cid, ALICE)
    call, result = history[1], history[2]
    assert call.content == (
        ThinkingPart(thinking="Weather needs a tool call.", signature=SIGNATURE),
        TextPart(text="Let me check."),
    )
    # The screenshot's bytes live in the conversation's attachments, not in the row.
    assert isinstance(result.content, tuple)
    image = result.content[1]
    assert image == ImagePart(
        media_type="image/png",
        attachment=digest(PNG),
        size=len(base64.b64decode(PNG)),
        width=1,
        height=1,
    )
    assert result.text == "18 C, clear"

    # The next request of the tool loop: Claude's last assistant turn opens with its thinking,
    # exactly as received, and the screenshot is back in the tool result.
    out = await formatted(service, cid)
    turns = out["anthropic"]["messages"]
    assert turns[1]["content"][0] == THINKING
    assert [b["type"] for b in turns[1]["content"]] == ["thinking", "text", "tool_use"]
    assert turns[2]["content"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert from_anthropic(turns[1:]) == turn  # and back: nothing lost on the way
    assert_scoped(out)

    await service.save_conversation_messages(cid, ALICE, from_anthropic(ANSWER))
    out = await formatted(service, cid, user_message="And tomorrow?")
    assert out["anthropic"]["messages"][3]["content"][0]["signature"] == SIGNATURE + "2"
    assert_scoped(out)


async def test_openai_reasoning_round_trips_and_goes_right_before_its_call(
    service: ConversationService,
) -> None:
    cid = await new_conversation(service)
    parsed = from_openai_responses([*REASONING_CALL.output, IMAGE_OUTPUT, *WEB_ANSWER.output])
    await service.save_conversation_messages(
        cid, ALICE, [NewMessage(role="user", content="Weather?"), *parsed]
    )
    history = await service.get_conversation_history(cid, ALICE)
    assert history[1].content == (
        ReasoningPart(id="rs_01", summary=("Need the weather.",), encrypted_content=ENCRYPTED),
    )
    out = await formatted(service, cid, user_message="Thanks")
    items = out["openai-responses"]["input"]
    assert [i.get("type", i.get("role")) for i in items] == [
        "user",
        "reasoning",
        "function_call",
        "function_call_output",
        "reasoning",
        "web_search_call",
        "assistant",
        "user",
    ]
    assert items[1]["encrypted_content"] == ENCRYPTED
    assert items[3]["output"][1]["image_url"] == f"data:image/png;base64,{PNG}"
    assert items[5] == WEB_ANSWER.output[1].model_dump(mode="json", exclude_unset=True)
    assert_scoped(out)


async def test_images_by_url_and_base64_and_a_pdf_reach_every_format(
    service: ConversationService,
) -> None:
    cid = await new_conversation(service)
    picture = png(1024, 768)
    await service.save_message(
        cid,
        "user",
        [
            {"type": "text", "text": "Compare these, and summarise the report."},
            {"type": "image", "url": "https://example.com/cat.png", "detail": "low"},
            {"type": "image", "data": picture, "media_type": "image/png"},
            {"type": "file", "data": PDF, "media_type": "application/pdf", "filename": "r.pdf"},
        ],
        user_id=ALICE,
    )
    (message,) = await service.get_conversation_history(cid, ALICE)
    assert isinstance(message.content, tuple)
    assert [(p.type, getattr(p, "data", None)) for p in message.content] == [
        ("text", None),
        ("image", None),
        ("image", None),
        ("file", None),
    ]
    assert message.content[2] == ImagePart(
        media_type="image/png",
        attachment=digest(picture),
        size=len(base64.b64decode(picture)),
        width=1024,
        height=768,
    )
    out = await formatted(service, cid)
    chat = out["openai-chat"]["messages"][0]["content"]
    assert chat[1] == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/cat.png", "detail": "low"},
    }
    assert chat[2]["image_url"]["url"] == f"data:image/png;base64,{picture}"
    assert chat[3]["file"]["file_data"] == f"data:application/pdf;base64,{PDF}"
    blocks = out["anthropic"]["messages"][0]["content"]
    assert blocks[2]["source"] == {"type": "base64", "media_type": "image/png", "data": picture}
    assert blocks[3]["source"] == {"type": "base64", "media_type": "application/pdf", "data": PDF}
    responses = out["openai-responses"]["input"][0]["content"]
    assert [p["type"] for p in responses] == [
        "input_text",
        "input_image",
        "input_image",
        "input_file",
    ]
    plain = out["plain"]["messages"][0]["content"]
    assert "[image: https://example.com/cat.png]" in plain and "1024x768" in plain


async def test_a_data_url_image_is_stored_as_data(service: ConversationService) -> None:
    cid = await new_conversation(service)
    stored = await service.save_message(
        cid, "user", [{"type": "image", "url": f"data:image/png;base64,{PNG}"}], user_id=ALICE
    )
    assert stored.content == (
        ImagePart(media_type="image/png", attachment=digest(PNG), size=68, width=1, height=1),
    )


async def test_user_message_parts_are_sent_and_not_stored(
    db: Database, service: ConversationService
) -> None:
    cid = await new_conversation(service)
    await service.save_message(cid, "user", "Hi", user_id=ALICE)
    agent_input = await service.get_agent_input(
        cid,
        ALICE,
        format="anthropic",
        user_message=[
            TextPart(text="What is this?"),
            {"type": "image", "data": PNG, "media_type": "image/png"},
        ],
    )
    last = agent_input.kwargs["messages"][-1]
    assert last["content"][-1]["source"]["data"] == PNG  # merged with the stored "Hi"
    assert agent_input.token_count > service.token_counter.count_text("What is this?")
    assert (await state(db, cid)).messages == 1 and await attachment_rows(db) == 0
    with pytest.raises(ValidationError) as error:
        await service.get_agent_input(
            cid, ALICE, user_message=[{"type": "thinking", "thinking": "x", "signature": "s"}]
        )
    assert error.value.field == "user_message[0].type"


# -- attachments ------------------------------------------------------------------------------


async def test_the_same_data_is_stored_once_per_conversation_and_never_shared(
    db: Database, service: ConversationService
) -> None:
    first, second = await new_conversation(service), await new_conversation(service, BOB)
    screenshot = [{"type": "image", "data": PNG, "media_type": "image/png"}]
    for _ in range(2):
        await service.save_message(first, "user", screenshot, user_id=ALICE)
    await service.save_conversation_messages(
        first,
        ALICE,
        [{"role": "user", "content": screenshot}, {"role": "user", "content": screenshot}],
    )
    assert await attachment_rows(db) == 1
    await service.save_message(second, "user", screenshot, user_id=BOB)
    assert await attachment_rows(db) == 2  # the other user's conversation has its own copy

    stored = await service.get_attachment(first, ALICE, digest(PNG))
    assert (stored.media_type, stored.size, stored.data) == ("image/png", 68, base64.b64decode(PNG))
    assert stored.conversation_id == first and stored.sha256 == digest(PNG)
    for cid, user in ((first, BOB), (second, ALICE), ("missing", ALICE)):
        with pytest.raises(ConversationNotFoundError):
            await service.get_attachment(cid, user, digest(PNG))
    with pytest.raises(ConversationNotFoundError):
        await service.get_attachment(first, ALICE, "0" * 64)
    with pytest.raises(ValidationError) as error:
        await service.get_attachment(first, ALICE, "../etc/passwd")
    assert error.value.field == "sha256"

    await service.delete_conversation(first, ALICE)
    assert await attachment_rows(db) == 1


async def test_attachments_join_the_callers_transaction(db: Database) -> None:
    async with db.session() as session:
        service = ConversationService(session, commit=False)
        cid = (await service.create_conversation(ALICE)).id
        await service.save_message(
            cid, "user", [{"type": "image", "data": PNG, "media_type": "image/png"}], user_id=ALICE
        )
        await session.rollback()
    assert await attachment_rows(db) == 0
    async with db.session() as session:
        service = ConversationService(session, commit=False)
        cid = (await service.create_conversation(ALICE)).id
        await service.save_message(
            cid, "user", [{"type": "image", "data": PNG, "media_type": "image/png"}], user_id=ALICE
        )
        await session.commit()
        history = await service.get_conversation_history(cid, ALICE)
    assert await attachment_rows(db) == 1 and history[0].content is not None


async def test_a_retry_with_the_same_parts_stores_nothing_and_other_parts_are_refused(
    db: Database, service: ConversationService
) -> None:
    cid = await new_conversation(service)
    parts = [
        {"type": "text", "text": "see"},
        {"type": "image", "data": PNG, "media_type": "image/png"},
    ]
    first = await service.save_message(cid, "user", parts, user_id=ALICE, key="k1")
    again = await service.save_message(cid, "user", parts, user_id=ALICE, key="k1")
    assert again == first and (await state(db, cid)).last_seq == 1
    other = [{"type": "image", "data": png(2, 2), "media_type": "image/png"}]
    with pytest.raises(IdempotencyKeyReuseError):
        await service.save_message(cid, "user", other, user_id=ALICE, key="k1")
    batch: list[dict[str, Any]] = [
        {"role": "user", "content": parts},
        {"role": "user", "content": "more"},
    ]
    stored = await service.save_conversation_messages(cid, ALICE, batch, idempotency_key="b1")
    assert (
        await service.save_conversation_messages(cid, ALICE, batch, idempotency_key="b1") == stored
    )
    assert (await state(db, cid)).last_seq == 3


async def test_a_window_loads_only_its_own_attachments(service: ConversationService) -> None:
    cid = await new_conversation(service)
    old, new = png(3, 3), png(4, 4)
    await service.save_message(
        cid, "user", [{"type": "image", "data": old, "media_type": "image/png"}], user_id=ALICE
    )
    await service.save_message(cid, "assistant", "ok", user_id=ALICE)
    await service.save_message(
        cid, "user", [{"type": "image", "data": new, "media_type": "image/png"}], user_id=ALICE
    )
    agent_input = await service.get_agent_input(cid, ALICE, max_messages=1, format="anthropic")
    assert agent_input.first_seq == 3
    content = agent_input.window.messages[0].content
    assert isinstance(content, tuple) and len(content) == 1
    assert isinstance(content[0], ImagePart) and content[0].data == new
    assert old not in str(agent_input.kwargs)


# -- validation ------------------------------------------------------------------------------

DEEP: Any = 1
for _ in range(40):
    DEEP = [DEEP]
BAD_PARTS: list[tuple[str, list[Any], str, str]] = [
    ("user", [], "messages[0].content", "empty"),
    ("user", [{"type": "video", "url": "https://x"}], "messages[0].content[0].type", "one of"),
    ("user", [{"type": "image"}], "messages[0].content[0]", "exactly one source"),
    (
        "user",
        [{"type": "image", "url": "https://x/a.png", "file_id": "file-1"}],
        "messages[0].content[0]",
        "url and file_id",
    ),
    (
        "user",
        [{"type": "image", "data": "not base64!", "media_type": "image/png"}],
        "messages[0].content[0].data",
        "base64",
    ),
    ("user", [{"type": "image", "data": PNG}], "messages[0].content[0].media_type", "required"),
    (
        "user",
        [{"type": "image", "data": PNG, "media_type": "image/tiff"}],
        "messages[0].content[0].media_type",
        "one of",
    ),
    (
        "user",
        [{"type": "image", "data": PNG, "media_type": "image/jpeg"}],
        "messages[0].content[0].data",
        "image/png image, not image/jpeg",
    ),
    (
        "user",
        [{"type": "image", "url": "file:///etc/passwd"}],
        "messages[0].content[0].url",
        "http(s)",
    ),
    (
        "user",
        [{"type": "image", "url": "https://x/a.png", "detail": "max"}],
        "messages[0].content[0].detail",
        "one of",
    ),
    (
        "user",
        [{"type": "file", "data": PNG, "media_type": "application/pdf"}],
        "messages[0].content[0].data",
        "not a PDF",
    ),
    (
        "user",
        [{"type": "file", "data": PDF, "media_type": "application/zip"}],
        "messages[0].content[0].media_type",
        "one of",
    ),
    (
        "user",
        [{"type": "audio", "data": PNG, "format": "wav"}],
        "messages[0].content[0].data",
        "not WAV",
    ),
    (
        "user",
        [{"type": "audio", "data": PNG, "format": "flac"}],
        "messages[0].content[0].format",
        "one of",
    ),
    ("user", [{"type": "text", "text": "a\x00b"}], "messages[0].content[0].text", "NUL"),
    ("user", [{"type": "text", "text": "\ud800"}], "messages[0].content[0].text", "surrogate"),
    (
        "user",
        [{"type": "text", "text": "x", "colour": "red"}],
        "messages[0].content[0]",
        "unknown field",
    ),
    (
        "user",
        [{"type": "image", "attachment": "ab" * 32}],
        "messages[0].content[0].attachment",
        "set by convodb",
    ),
    (
        "user",
        [{"type": "thinking", "thinking": "x", "signature": "s"}],
        "messages[0].content[0].type",
        "assistant",
    ),
    (
        "system",
        [{"type": "image", "url": "https://x/a.png"}],
        "messages[0].content[0].type",
        "not system",
    ),
    (
        "assistant",
        [{"type": "thinking", "thinking": "x"}],
        "messages[0].content[0].signature",
        "required",
    ),
    (
        "assistant",
        [{"type": "thinking", "thinking": "x\x00", "signature": "s"}],
        "messages[0].content[0].thinking",
        "NUL",
    ),
    (
        "assistant",
        [{"type": "reasoning", "id": "rs_1", "summary": "no"}],
        "messages[0].content[0].summary",
        "list",
    ),
    (
        "assistant",
        [{"type": "provider_item", "provider": "gemini", "item": {}}],
        "messages[0].content[0].provider",
        "openai",
    ),
    (
        "assistant",
        [{"type": "provider_item", "provider": "openai", "item": {"a": "\udc00"}}],
        "messages[0].content[0].item.a",
        "surrogate",
    ),
    (
        "assistant",
        [{"type": "provider_item", "provider": "openai", "item": {"a": DEEP}}],
        "messages[0].content[0].item",
        "deeper",
    ),
    ("user", ["just a string"], "messages[0].content[0]", "content part"),
]


@pytest.mark.parametrize(("role", "parts", "field", "message"), BAD_PARTS)
async def test_a_bad_part_is_a_validation_error_naming_it_and_stores_nothing(
    db: Database,
    service: ConversationService,
    role: str,
    parts: list[Any],
    field: str,
    message: str,
) -> None:
    cid = await new_conversation(service)
    good = {"role": "user", "content": [{"type": "image", "data": PNG, "media_type": "image/png"}]}
    with pytest.raises(ValidationError) as error:
        await service.save_conversation_messages(
            cid, ALICE, [{"role": role, "content": parts}, good]
        )
    assert (error.value.field, message in str(error.value)) == (field, True), str(error.value)
    after = await state(db, cid)
    assert (after.last_seq, after.attachments) == (0, 0)


async def test_binary_data_has_its_own_limit(db: Database) -> None:
    async with db.session() as session:
        service = ConversationService(session, limits=Limits(max_attachment_bytes=100, max_parts=2))
        cid = (await service.create_conversation(ALICE)).id
        big = png(1000, 1000)  # about 1 KiB compressed
        with pytest.raises(LimitExceededError) as error:
            await service.save_message(
                cid,
                "user",
                [{"type": "image", "data": big, "media_type": "image/png"}],
                user_id=ALICE,
            )
        assert error.value.field == "messages[0].content[0].data" and error.value.limit == 100
        with pytest.raises(LimitExceededError) as error:
            await service.save_message(
                cid, "user", [{"type": "text", "text": "x"}] * 3, user_id=ALICE
            )
        assert error.value.field == "messages[0].content" and error.value.limit == 2
        # Within the limits, the data is not counted against max_message_bytes.
        small = Limits(max_message_bytes=10)
        service = ConversationService(session, limits=small)
        await service.save_message(
            cid, "user", [{"type": "image", "data": PNG, "media_type": "image/png"}], user_id=ALICE
        )
    assert (await state(db, cid)).last_seq == 1


async def test_token_counts_of_parts_are_stored_with_the_message(
    service: ConversationService,
) -> None:
    cid = await new_conversation(service)
    stored = await service.save_message(
        cid,
        "user",
        [{"type": "image", "data": png(1024, 1024), "media_type": "image/png"}],
        user_id=ALICE,
    )
    (read,) = await service.get_conversation_history(cid, ALICE)
    assert read.token_count == stored.token_count == service.token_counter.count_message(read)
    assert read.token_count is not None and read.token_count > 1000  # an image's worth
