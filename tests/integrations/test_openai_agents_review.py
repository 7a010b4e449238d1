"""``ConvodbSession`` on hostile and awkward input, on every database: many items convodb
takes only verbatim, limits and session ids it cannot use, adapter metadata written by
someone else, and numbers a database would normalise."""

from __future__ import annotations

import json
import uuid
from base64 import b64encode
from typing import Any, cast

import pytest
from agents import TResponseInputItem

from convodb import ConversationService, Database, LimitExceededError, Limits, ValidationError
from convodb._message_input import check_message
from convodb.integrations.openai_agents import ConvodbSession, _items


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def new_session(db: Database, **kwargs: Any) -> ConvodbSession:
    return ConvodbSession(f"s-{uuid.uuid4().hex}", database=db, user_id="alice", **kwargs)


async def add(session: ConvodbSession, items: list[Any]) -> None:
    await session.add_items(cast("list[TResponseInputItem]", items))


async def items_of(session: ConvodbSession) -> list[Any]:
    return cast("list[Any]", await session.get_items())


# A JPEG labelled image/png: convodb refuses the image part, so the item is stored verbatim.
MISLABELLED = "data:image/png;base64," + b64encode(b"\xff\xd8\xff\xe0" + b"\0" * 64).decode()


def mislabelled(i: int) -> dict[str, Any]:
    return {
        "role": "user",
        "content": [{"type": "input_image", "image_url": MISLABELLED, "detail": "auto"}],
        "n": i,
    }


def count_validations(monkeypatch: pytest.MonkeyPatch, bound: int) -> list[int]:
    """Count the adapter's message validations; fail fast once there are more than ``bound``."""
    calls = [0]

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        assert calls[0] <= bound, f"more than {bound} validations"
        return check_message(*args, **kwargs)

    monkeypatch.setattr(_items, "check_message", counting)
    return calls


async def test_many_items_stored_verbatim_are_validated_a_bounded_number_of_times(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [mislabelled(i) for i in range(1000)]
    calls = count_validations(monkeypatch, 2 * len(items))
    session = new_session(db)
    await add(session, items)
    # Each item's own message is validated once, then the few messages of verbatim items.
    assert len(items) < calls[0] <= len(items) + 10
    assert as_json(await items_of(session)) == as_json(items)


async def test_items_stored_verbatim_among_others_are_validated_a_bounded_number_of_times(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    items: list[dict[str, Any]] = []
    for i in range(300):
        items += [{"role": "user", "content": f"m{i}"}, mislabelled(i)]
        items += [{"type": "function_call", "call_id": f"c{i}", "name": "f", "arguments": "{}"}]
        items += [{"type": "function_call_output", "call_id": f"c{i}", "output": "ok"}]
    calls = count_validations(monkeypatch, 3 * len(items))
    session = new_session(db)
    await add(session, items)
    assert calls[0] <= 2 * len(items)
    assert as_json(await items_of(session)) == as_json(items)


async def test_an_item_convodb_refuses_even_verbatim_is_named_in_a_batch_of_verbatim_items(
    db: Database,
) -> None:
    session = new_session(db)
    items = [mislabelled(0), mislabelled(1), {"type": "x_call", "text": "a\x00b"}, mislabelled(3)]
    with pytest.raises(ValidationError) as error:
        await add(session, items)
    assert error.value.field == "items[2]"
    assert await session.get_items() == []


# -- limits and session ids ------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["5", True, False, 2.0, [1]])
async def test_a_limit_that_is_not_an_integer_is_a_validation_error(
    db: Database, limit: Any
) -> None:
    session = new_session(db)
    await add(session, [{"role": "user", "content": "hi"}])
    with pytest.raises(ValidationError) as error:
        await session.get_items(limit)
    assert error.value.field == "limit"
    assert await session.get_items(1) == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("session_id", ["x" * 70_000, "é" * 33_000])
async def test_a_session_id_too_long_for_the_metadata_is_refused_when_created(
    db: Database, session_id: str
) -> None:
    with pytest.raises(LimitExceededError) as error:
        ConvodbSession(session_id, database=db, user_id="alice")
    assert error.value.field == "session_id"
    assert error.value.limit == 64 * 1024


@pytest.mark.parametrize("session_id", ["a\x00b", "a\ud800b", 42])
async def test_a_session_id_convodb_cannot_store_is_refused_when_created(
    db: Database, session_id: Any
) -> None:
    with pytest.raises(ValidationError) as error:
        ConvodbSession(session_id, database=db, user_id="alice")
    assert error.value.field == "session_id"


async def test_the_longest_session_id_that_fits_is_stored_and_read(db: Database) -> None:
    session_id = "x" * 65_000
    session = ConvodbSession(session_id, database=db, user_id="alice")
    await add(session, [{"role": "user", "content": "hi"}])
    again = ConvodbSession(session_id, database=db, user_id="alice")
    assert await again.get_items() == [{"role": "user", "content": "hi"}]
    async with db.session() as s:
        conversation = await ConversationService(s).get_conversation(
            session.conversation_id, "alice"
        )
    assert conversation.metadata == {"openai_agents": {"session_id": session_id}}
    small = Limits(max_metadata_bytes=1024)
    with pytest.raises(LimitExceededError) as error:
        ConvodbSession("y" * 1000, database=db, user_id="alice", limits=small)
    assert (error.value.field, error.value.limit) == ("session_id", 1024)


# -- adapter metadata written by someone else ------------------------------------------------

TEXT = [{"type": "text", "text": "one"}]
TWO_TEXTS = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
REASONING = [{"type": "reasoning", "id": "rs_1", "summary": ["s"]}]
CALL = [{"id": "c1", "name": "f", "arguments": "{}"}]


def entries(*items: Any, v: Any = 1) -> dict[str, Any]:
    return {"openai_agents": {"v": v, "items": list(items)}}


# (role, content, tool calls, the adapter's metadata) of messages written through convodb
MALFORMED: dict[str, tuple[str, Any, Any, Any]] = {
    "patch of a number": ("user", "hi", None, entries({"t": "m", "d": {"{": 5}})),
    "reasoning entry on a text part": ("assistant", TEXT, None, entries({"t": "r"})),
    "empty short text": (
        "assistant",
        TEXT,
        None,
        entries({"t": "a", "n": 0, "s": 1}, {"t": "a", "n": 1}),
    ),
    "short text of two": ("assistant", TWO_TEXTS, None, entries({"t": "a", "n": 2, "s": 1})),
    "provider entry on a text part": ("assistant", TEXT, None, entries({"t": "p"})),
    "text entry on reasoning": ("assistant", REASONING, None, entries({"t": "a"})),
    "n not a number": ("assistant", TEXT, None, entries({"t": "a", "n": "1"})),
    "n a bool": ("assistant", TEXT, None, entries({"t": "a", "n": True})),
    "refusals a string": ("assistant", TEXT, None, entries({"t": "a", "rf": "abc"})),
    "entry not an object": ("assistant", TEXT, None, entries("a")),
    "kind not a string": ("assistant", TEXT, None, entries({"t": ["a"]})),
    "items not a list": ("user", "hi", None, {"openai_agents": {"v": 1, "items": {"t": "m"}}}),
    "other version": ("user", "hi", None, entries({"t": "m", "d": {"=": {"x": 1}}}, v=2)),
    "role not developer": ("user", "hi", None, entries({"t": "m", "role": 7})),
    "patch to a non-object": ("user", "hi", None, entries({"t": "m", "d": {"=": 5}})),
    "patch with two ops": ("user", "hi", None, entries({"t": "m", "d": {"=": {}, "[": {}}})),
    "patch of an added key": ("user", "hi", None, entries({"t": "m", "d": {"{": {"x": 1}}})),
    "missing keys unhashable": (
        "user",
        "hi",
        None,
        entries({"t": "m", "d": {"{": {}, "-": [{}]}}),
    ),
    "list index out of range": (
        "assistant",
        TEXT,
        None,
        entries({"t": "a", "d": {"{": {"content": {"[": {"7": {"=": 1}}}}}}),
    ),
    "list index not a number": (
        "assistant",
        TEXT,
        None,
        entries({"t": "a", "d": {"{": {"content": {"[": {"x": {"=": 1}}}}}}),
    ),
    "string patch too long": (
        "user",
        "hi",
        None,
        entries({"t": "m", "d": {"{": {"content": {"~": "a", "n": 9}}}}),
    ),
    "string patch of a list": (
        "user",
        "hi",
        None,
        entries({"t": "m", "d": {"{": {"role": {"[": {}}}}}),
    ),
    "patch text not JSON": ("user", "hi", None, entries({"t": "m", "d": "{"})),
    "patch text NaN": ("user", "hi", None, entries({"t": "m", "d": '{"=": NaN}'})),
    "patch text deep": ("user", "hi", None, entries({"t": "m", "d": "[" * 60_000})),
    "patch a number": ("user", "hi", None, entries({"t": "m", "d": 3})),
    "call entry without a call": ("assistant", TEXT, None, entries({"t": "a"}, {"t": "c"})),
    "text entry over a call": ("assistant", None, CALL, entries({"t": "a"})),
    "entries for assistant text": ("assistant", "hi", CALL, entries({"t": "c"})),
    "tool output on a user message": ("user", "hi", None, entries({"t": "o"})),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_adapter_metadata_reads_as_if_there_were_none(
    db: Database, case: str
) -> None:
    role, content, calls, metadata = MALFORMED[case]
    message: dict[str, Any] = {"role": role, "content": content, "tool_calls": calls}
    written, plain = new_session(db), new_session(db)
    async with db.session() as s:
        service = ConversationService(s)
        for session, meta in ((written, metadata), (plain, {})):
            await service.get_or_create_conversation(session.conversation_id, "alice")
            await service.save_conversation_messages(
                session.conversation_id, "alice", [{**message, "metadata": meta}]
            )
    expected = await items_of(plain)
    assert expected  # every case has items
    assert await items_of(written) == expected
    assert await written.get_items(1) == expected[-1:]
    popped = [await written.pop_item() for _ in expected]
    assert popped == expected[::-1]
    assert await written.pop_item() is None


async def test_patches_stored_as_objects_are_still_read(db: Database) -> None:
    session = new_session(db)
    metadata = entries({"t": "m", "d": {"{": {"type": {"=": "message"}}, "-": []}})
    async with db.session() as s:
        service = ConversationService(s)
        await service.get_or_create_conversation(session.conversation_id, "alice")
        await service.save_conversation_messages(
            session.conversation_id,
            "alice",
            [{"role": "user", "content": "hi", "metadata": metadata}],
        )
    assert await items_of(session) == [{"role": "user", "content": "hi", "type": "message"}]


# -- numbers ---------------------------------------------------------------------------------

NUMBERS: dict[str, Any] = {
    "big": 1e16,
    "negative_zero": -0.0,
    "tiny": 5e-324,
    "huge_int": 2**64 + 1,
    "float": 0.1,
    "one": 1.0,
    "nested": [{"x": 1e300, "y": -1.5e-7}],
}


async def test_numbers_in_what_an_item_adds_to_its_parts_come_back_exactly(db: Database) -> None:
    items = [
        {"role": "user", "content": "numbers", **NUMBERS},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}", **NUMBERS},
        {"type": "function_call_output", "call_id": "c1", "output": "ok", "t": 1e16},
    ]
    session = new_session(db)
    await add(session, items)
    assert as_json(await items_of(session)) == as_json(items)
    assert as_json(await session.pop_item()) == as_json(items[-1])
    assert as_json(await session.pop_item()) == as_json(items[-2])
    assert as_json(await items_of(session)) == as_json(items[:1])
    async with db.session() as s:
        (message,) = (
            await ConversationService(s).list_messages(session.conversation_id, "alice")
        ).items
    (entry,) = message.metadata["openai_agents"]["items"]
    assert isinstance(entry["d"], str)  # JSON text, whose numbers no database parses


async def test_numbers_in_an_item_stored_verbatim_are_equal_and_exact_but_on_postgresql(
    db: Database,
) -> None:
    # A verbatim item is a provider_item part, stored by convodb's core: PostgreSQL's JSONB
    # normalises its numbers (1e16 comes back as the integer 10000000000000000, -0.0 as 0.0).
    item = {"type": "some_future_item", **NUMBERS}
    session = new_session(db)
    await add(session, [item])
    (got,) = await items_of(session)
    if db.dialect_name != "postgresql":
        assert as_json(got) == as_json(item)
    else:  # the same numbers, some an int where the item has a float
        assert json.loads(as_json(got), parse_int=float) == json.loads(
            as_json(item), parse_int=float
        )
        assert got["big"] == 10**16 and type(got["big"]) is int
        assert as_json(got["negative_zero"]) == "0.0"
