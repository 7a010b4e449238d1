"""Bad input: a typed error naming the field (and the limit), and nothing stored."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import to_json

from convodb import (
    ConversationService,
    ConvodbError,
    Database,
    LimitExceededError,
    Limits,
    ValidationError,
)
from convodb._cursor import decode_cursor, encode_cursor
from convodb._validation import (
    MAX_JSON_DEPTH,
    MAX_SEQ,
    check_conversation_id,
    check_json_text_depth,
    check_metadata,
)

from ._store import state

Append = Callable[[ConversationService, str], Awaitable[object]]


def batch(*messages: dict[str, Any]) -> Append:
    return lambda service, cid: service.save_conversation_messages(cid, "alice", list(messages))


def ok(text: str = "fine") -> dict[str, Any]:
    return {"role": "user", "content": text}


BAD_APPENDS: dict[str, tuple[Append, str]] = {
    "unknown role": (batch(ok(), {"role": "wizard", "content": "x"}), "messages[1].role"),
    "missing role": (batch({"content": "x"}), "messages[0].role"),
    "tool without tool_call_id": (
        batch({"role": "tool", "content": "42", "tool_name": "calc"}),
        "messages[0].tool_call_id",
    ),
    "tool_call_id on a user message": (
        batch({"role": "user", "content": "x", "tool_call_id": "c1"}),
        "messages[0].tool_call_id",
    ),
    "tool calls on a user message": (
        batch(
            {
                "role": "user",
                "content": "x",
                "tool_calls": [{"id": "1", "name": "f", "arguments": "{}"}],
            }
        ),
        "messages[0].tool_calls",
    ),
    "tool call without name": (
        batch(
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "arguments": "{}"}]}
        ),
        "messages[0].tool_calls[0].name",
    ),
    "tool call in a provider's shape": (
        batch(
            {"role": "assistant", "tool_calls": [{"id": "1", "type": "function", "function": {}}]}
        ),
        "messages[0].tool_calls[0]",
    ),
    "duplicate tool call ids": (
        batch(
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "1", "name": "f", "arguments": "{}"},
                    {"id": "1", "name": "g", "arguments": "{}"},
                ],
            }
        ),
        "messages[0].tool_calls[1].id",
    ),
    "content is a number": (batch(ok(), {"role": "user", "content": 42}), "messages[1].content"),
    "content is a dict": (batch({"role": "user", "content": {"text": "x"}}), "messages[0].content"),
    "content is bytes": (batch({"role": "user", "content": b"x"}), "messages[0].content"),
    "content missing": (batch({"role": "user"}), "messages[0].content"),
    "NUL in content": (batch(ok(), ok("a\x00b")), "messages[1].content"),
    "NUL in tool arguments": (
        batch(
            {
                "role": "assistant",
                "tool_calls": [{"id": "1", "name": "f", "arguments": '{"a":"\x00"}'}],
            }
        ),
        "messages[0].tool_calls[0].arguments",
    ),
    "NUL in metadata": (batch({**ok(), "metadata": {"k": "v\x00"}}), "messages[0].metadata.k"),
    "lone surrogate in content": (batch(ok("bad \ud800 text")), "messages[0].content"),
    "lone surrogate in tool name": (
        batch({"role": "tool", "content": "x", "tool_call_id": "c", "tool_name": "\udfff"}),
        "messages[0].tool_name",
    ),
    "metadata is a list": (batch({**ok(), "metadata": [1, 2]}), "messages[0].metadata"),
    "metadata is a string": (batch({**ok(), "metadata": '{"a": 1}'}), "messages[0].metadata"),
    "metadata with NaN": (
        batch({**ok(), "metadata": {"x": float("nan")}}),
        "messages[0].metadata.x",
    ),
    "metadata with a non-JSON value": (
        batch({**ok(), "metadata": {"x": object()}}),
        "messages[0].metadata.x",
    ),
    "unknown message field": (batch({**ok(), "colour": "red"}), "messages[0]"),
    "empty key": (batch({**ok(), "key": ""}), "messages[0].key"),
    "key in the batch keys' namespace": (batch({**ok(), "key": "idem:t1:0"}), "messages[0].key"),
    "repeated key in a batch": (
        batch({**ok(), "key": "k"}, {**ok(), "key": "k"}),
        "messages[1].key",
    ),
    "messages not a list": (
        lambda s, cid: s.save_conversation_messages(cid, "alice", ok()),  # type: ignore[arg-type]
        "messages",
    ),
    "message not a mapping": (batch(ok(), "hello"), "messages[1]"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", sorted(BAD_APPENDS))
async def test_bad_message_is_rejected_naming_the_field_and_stores_nothing(
    db: Database, service: ConversationService, case: str
) -> None:
    append, field = BAD_APPENDS[case]
    cid = (await service.create_conversation("alice")).id
    await service.save_message(cid, "user", "before", user_id="alice")
    before = await state(db, cid)

    with pytest.raises(ValidationError) as raised:
        await append(service, cid)

    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")
    assert await state(db, cid) == before


LIMITS = Limits(
    max_message_bytes=100,
    max_metadata_bytes=50,
    max_batch_messages=3,
    max_tool_calls=2,
    max_page_size=10,
)

OVER_LIMIT: dict[str, tuple[Append, str, int]] = {
    "content over the message size": (batch(ok("é" * 51)), "messages[0]", 100),
    "tool calls over the message size": (
        batch(
            {"role": "assistant", "tool_calls": [{"id": "1", "name": "f", "arguments": "x" * 99}]}
        ),
        "messages[0]",
        100,
    ),
    "batch over the batch size": (batch(ok(), ok(), ok(), ok()), "messages", 3),
    "metadata over its size": (
        batch({**ok(), "metadata": {"k": "v" * 60}}),
        "messages[0].metadata",
        50,
    ),
    "too many tool calls": (
        batch(
            {
                "role": "assistant",
                "tool_calls": [{"id": str(i), "name": "f", "arguments": "{}"} for i in range(3)],
            }
        ),
        "messages[0].tool_calls",
        2,
    ),
}


@pytest.mark.parametrize("case", sorted(OVER_LIMIT))
async def test_input_over_a_configured_limit_names_the_limit_and_stores_nothing(
    db: Database, case: str
) -> None:
    append, field, limit = OVER_LIMIT[case]
    async with db.session() as session:
        service = ConversationService(session, limits=LIMITS)
        cid = (await service.create_conversation("alice")).id
        before = await state(db, cid)

        with pytest.raises(LimitExceededError) as raised:
            await append(service, cid)

    assert (raised.value.field, raised.value.limit) == (field, limit)
    assert str(limit) in str(raised.value)
    assert await state(db, cid) == before


async def test_default_message_limit_is_one_mebibyte(
    db: Database, service: ConversationService
) -> None:
    cid = (await service.create_conversation("alice")).id
    exactly = await service.save_message(cid, "user", "x" * 1024 * 1024, user_id="alice")
    before = await state(db, cid)

    with pytest.raises(LimitExceededError) as raised:
        await service.save_message(cid, "user", "x" * (1024 * 1024 + 1), user_id="alice")

    assert raised.value.limit == 1024 * 1024
    assert exactly.seq == 1 and await state(db, cid) == before


BAD_IDS = {
    "empty": "",
    "too long": "a" * 65,
    "space": "has space",
    "slash": "../etc",
    "leading dash": "-abc",
    "unicode": "çhat",
    "NUL": "a\x00b",
    "not a string": 42,
}


@pytest.mark.parametrize("case", sorted(BAD_IDS))
async def test_malformed_conversation_id_is_rejected_everywhere(
    db: Database, service: ConversationService, case: str
) -> None:
    bad = BAD_IDS[case]
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: service.create_conversation("alice", conversation_id=bad),  # type: ignore[arg-type]
        lambda: service.get_or_create_conversation(bad, "alice"),  # type: ignore[arg-type]
        lambda: service.get_conversation(bad, "alice"),  # type: ignore[arg-type]
        lambda: service.save_message(bad, "user", "x", user_id="alice"),  # type: ignore[arg-type]
        lambda: service.get_conversation_history(bad, "alice"),  # type: ignore[arg-type]
        lambda: service.list_messages(bad, "alice"),  # type: ignore[arg-type]
        lambda: service.delete_conversation(bad, "alice"),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(ValidationError) as raised:
            await call()
        assert raised.value.field == "conversation_id"
    assert (await state(db, "anything")).conversations == 0


async def test_longest_valid_conversation_id_is_accepted(service: ConversationService) -> None:
    cid = "A" + "b.c_d:e-" * 7 + "fghijkl"
    assert len(cid) == 64
    assert (await service.create_conversation("alice", conversation_id=cid)).id == cid


@pytest.mark.parametrize("limit", [-1, 0, 1001, 10**9, True, 2.5, "50"])
async def test_absurd_history_limit_is_rejected(service: ConversationService, limit: Any) -> None:
    cid = (await service.create_conversation("alice")).id
    for call in (
        lambda: service.get_conversation_history(cid, "alice", limit=limit),
        lambda: service.list_messages(cid, "alice", limit=limit),
        lambda: service.list_conversations("alice", limit=limit),
    ):
        with pytest.raises(ValidationError) as raised:
            await call()
        assert raised.value.field == "limit"


@pytest.mark.parametrize(
    ("user_id", "why"),
    [("", "empty"), ("u" * 256, "too long"), (None, "not a string"), ("a\x00", "NUL")],
)
async def test_bad_user_id_is_rejected(
    db: Database, service: ConversationService, user_id: Any, why: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        await service.create_conversation(user_id)
    assert raised.value.field == "user_id"
    assert (await state(db, "x")).conversations == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"title": "t" * 1025}, "title"),
        ({"title": 5}, "title"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"metadata": {"k": "\ud800"}}, "metadata.k"),
    ],
)
async def test_bad_conversation_fields_are_rejected(
    db: Database, service: ConversationService, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        await service.create_conversation("alice", **kwargs)
    assert raised.value.field == field
    existing = await service.create_conversation("alice", title="keep")
    with pytest.raises(ValidationError):
        await service.update_conversation(existing.id, "alice", **kwargs)
    assert (await service.get_conversation(existing.id, "alice")) == existing
    assert (await state(db, existing.id)).conversations == 1


@pytest.mark.parametrize("cursor", ["", "not-base64!", "eyJ2IjoyfQ", "W10", "e30", "x" * 2000])
async def test_malformed_cursor_is_a_validation_error(
    service: ConversationService, cursor: str
) -> None:
    cid = (await service.create_conversation("alice")).id
    for call in (
        lambda: service.list_messages(cid, "alice", cursor=cursor),
        lambda: service.list_conversations("alice", cursor=cursor),
    ):
        with pytest.raises(ValidationError) as raised:
            await call()
        assert raised.value.field == "cursor"


async def test_bad_order_and_after_seq_are_rejected(service: ConversationService) -> None:
    cid = (await service.create_conversation("alice")).id
    with pytest.raises(ValidationError, match="order"):
        await service.list_messages(cid, "alice", order="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="after_seq"):
        await service.list_messages(cid, "alice", after_seq=-1)
    with pytest.raises(ValidationError, match="after_seq"):
        await service.list_messages(cid, "alice", after_seq=1, order="desc")


def test_every_error_is_a_convodb_error() -> None:
    assert issubclass(LimitExceededError, ValidationError)
    assert issubclass(ValidationError, ConvodbError) and issubclass(ValidationError, ValueError)


@pytest.mark.parametrize(
    "candidate",
    [*BAD_IDS.values(), "a", "A" * 64, "0193a8c2-7d4e-7b1a-9c3f-2e5d8a1b4c6f", "x.y:z_1"],
)
def test_published_id_pattern_agrees_with_the_check(candidate: Any) -> None:
    from convodb import CONVERSATION_ID_PATTERN
    from convodb._validation import check_conversation_id

    matches = isinstance(candidate, str) and re.search(CONVERSATION_ID_PATTERN, candidate)
    try:
        check_conversation_id(candidate)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == bool(matches)


# -- cursors: whatever comes back decodes to bounded values or a cursor error ----------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
FIELDS: dict[str, Any] = {"s": int, "t": datetime, "i": str, "c": check_conversation_id}


def cursor_of(document: object) -> str:
    raw = json.dumps(document).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@settings(max_examples=500, deadline=None)
@given(
    st.fixed_dictionaries(
        {"v": st.just(1), "k": st.just("list")},
        optional={
            "s": st.integers() | JSON_VALUES,
            "t": st.datetimes(timezones=st.none() | st.timezones()).map(datetime.isoformat)
            | JSON_VALUES,
            "i": JSON_VALUES,
            "c": JSON_VALUES,
        },
    )
)
def test_decoded_cursor_fields_are_bounded_or_a_cursor_error(document: dict[str, Any]) -> None:
    try:
        position = decode_cursor(cursor_of(document), "list", FIELDS)
    except ValidationError as exc:
        assert exc.field == "cursor"
        return
    assert 0 <= position["s"] <= MAX_SEQ and type(position["s"]) is int
    assert position["t"].tzinfo is UTC
    assert 0 < len(position["i"]) <= 64 and "\x00" not in position["i"]
    position["i"].encode()  # no lone surrogate
    assert check_conversation_id(position["c"]) == position["c"]


def test_cursor_round_trips_an_aware_time_in_utc() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-7)))
    cursor = encode_cursor("list", s=5, t=at, i="x", c="c-1")

    position = decode_cursor(cursor, "list", FIELDS)

    assert position == {"s": 5, "t": at.astimezone(UTC), "i": "x", "c": "c-1"}
    assert position["t"].tzinfo is UTC


@pytest.mark.parametrize(
    "field", ["max_page_size", "max_batch_messages", "max_window_tokens", "max_metadata_bytes"]
)
@pytest.mark.parametrize("value", [0, -1, 2**63, True, 1.5, "10"], ids=repr)
def test_limits_must_be_positive_integers_that_fit_in_sql(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as raised:
        Limits(**{field: value})
    assert raised.value.field == f"Limits.{field}"


# -- JSON depth: every stored JSON value, checked before anything is stored ------------------
#
# Metadata nested 253-998 deep used to be stored and then fail to serialise on every read (a
# 500 for good); nested ~5,000 deep the check itself raised RecursionError.


def nested(depth: int) -> dict[str, Any]:
    """A JSON object ``depth`` levels deep: ``{}`` is 1, ``{"a": [{}]}`` is 3."""
    if depth == 1:
        return {}
    inner: Any = {}
    for level in range(depth - 2):
        inner = {"a": inner} if level % 2 else [inner]
    return {"a": inner}


def nested_arguments(depth: int) -> str:
    return '{"q": ' * (depth - 1) + '{"q": "[[[[{{{{"}' + "}" * (depth - 1)


def call(arguments: str) -> dict[str, Any]:
    return {"role": "assistant", "tool_calls": [{"id": "1", "name": "f", "arguments": arguments}]}


Store = Callable[[ConversationService, str, int], Awaitable[object]]
JSON_PLACES: dict[str, tuple[Store, str]] = {
    "conversation metadata": (
        lambda s, cid, d: s.create_conversation("alice", metadata=nested(d)),
        "metadata",
    ),
    "conversation metadata, get or create": (
        lambda s, cid, d: s.get_or_create_conversation("c-new", "alice", metadata=nested(d)),
        "metadata",
    ),
    "conversation metadata, update": (
        lambda s, cid, d: s.update_conversation(cid, "alice", metadata=nested(d)),
        "metadata",
    ),
    "message metadata": (
        lambda s, cid, d: s.save_conversation_messages(
            cid, "alice", [ok(), {**ok(), "metadata": nested(d)}]
        ),
        "messages[1].metadata",
    ),
    "tool call arguments": (
        lambda s, cid, d: s.save_conversation_messages(cid, "alice", [call(nested_arguments(d))]),
        "messages[0].tool_calls[0].arguments",
    ),
    "summary metadata": (
        lambda s, cid, d: s.save_summary(cid, "alice", "sum", upto_seq=1, metadata=nested(d)),
        "metadata",
    ),
}


@pytest.mark.parametrize("depth", [33, 253, 998, 5_000, 100_000])
@pytest.mark.parametrize("place", sorted(JSON_PLACES))
async def test_json_nested_deeper_than_the_limit_is_rejected_and_stores_nothing(
    db: Database, service: ConversationService, place: str, depth: int
) -> None:
    store, field = JSON_PLACES[place]
    cid = (await service.create_conversation("alice", conversation_id="c-1")).id
    await service.save_message(cid, "user", "first", user_id="alice")
    before = await state(db, cid)

    with pytest.raises(LimitExceededError) as raised:
        await store(service, cid, depth)

    assert raised.value.field == field and raised.value.limit == 32
    assert "32" in str(raised.value)
    assert await state(db, cid) == before
    assert await state(db, "c-new") == await state(db, "nothing-here")


@pytest.mark.parametrize("place", sorted(JSON_PLACES))
async def test_json_nested_to_the_limit_is_stored_and_reads_back(
    service: ConversationService, place: str
) -> None:
    store, _ = JSON_PLACES[place]
    cid = (await service.create_conversation("alice", conversation_id="c-1")).id
    await service.save_message(cid, "user", "first", user_id="alice")

    await store(service, cid, 32)

    conversations = (await service.list_conversations("alice")).items
    history = await service.get_conversation_history(cid, "alice")
    summary = await service.get_summary(cid, "alice")
    to_json({"items": [*conversations, *history, summary]})  # as the HTTP service encodes


async def test_json_at_the_highest_configurable_depth_reads_back(db: Database) -> None:
    async with db.session() as session:
        service = ConversationService(session, limits=Limits(max_json_depth=MAX_JSON_DEPTH))
        cid = (await service.create_conversation("alice", metadata=nested(MAX_JSON_DEPTH))).id
        await service.save_message(cid, "user", "x", user_id="alice", metadata=nested(200))
        page = await service.list_messages(cid, "alice")
        to_json({"items": [*page.items, await service.get_conversation(cid, "alice")]})


def test_json_depth_is_configurable_up_to_what_json_encoders_accept() -> None:
    shallow = Limits(max_json_depth=2)
    assert check_metadata("m", {"a": [1]}, shallow) == {"a": [1]}
    with pytest.raises(LimitExceededError) as raised:
        check_metadata("m", {"a": [[1]]}, shallow)
    assert raised.value.limit == 2
    assert Limits(max_json_depth=MAX_JSON_DEPTH).max_json_depth == MAX_JSON_DEPTH
    with pytest.raises(LimitExceededError):
        Limits(max_json_depth=MAX_JSON_DEPTH + 1)


@pytest.mark.parametrize(
    "arguments",
    [
        '{"q": "' + "[" * 100 + '"}',  # brackets in a string do not nest
        '{"q": "\\"' + "{" * 100 + '"}',  # nor after an escaped quote
        "see [1] " + "[" * 100,  # not JSON: a parser stops at the first character
        '"' + "[" * 100 + '"',  # a JSON string
        "",
        "{}",
    ],
)
def test_tool_arguments_nest_as_a_parser_would(arguments: str) -> None:
    check_json_text_depth("arguments", arguments, 32)


def test_tool_arguments_nesting_counts_what_a_parser_would_descend_into() -> None:
    for arguments in ["  [" * 33, "[" * 33 + "]" * 40, '[{"a": ' * 17, "{" + '"a": [' * 40]:
        with pytest.raises(LimitExceededError):
            check_json_text_depth("arguments", arguments, 32)


def test_json_checks_are_linear_on_adversarial_input() -> None:
    shared: list[Any] = []
    for _ in range(40):
        shared = [shared, shared]  # 2**40 values, if walked
    arguments = [
        "[" + '"\\\\",' * 200_000 + "1]",  # many strings, each ending in an escape
        "[" * 31 + '"' + "\\[" * 400_000,  # an unterminated string of escapes
        "[1]" * 300_000,  # many shallow brackets
    ]
    start = time.perf_counter()
    with pytest.raises(LimitExceededError) as raised:
        check_metadata("metadata", {"a": shared}, Limits(max_json_depth=MAX_JSON_DEPTH))
    assert raised.value.limit == Limits().max_metadata_bytes
    for text in arguments:
        check_json_text_depth("arguments", text, 32)
    assert time.perf_counter() - start < 2.0
