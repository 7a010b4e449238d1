"""History windows: budgets, tool-call groups kept whole, paging, and API-valid output."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convodb._parts import Part
from convodb._records import Role, StoredMessage, ToolCall, Turn
from convodb.errors import ContextBudgetError, ValidationError
from convodb.formats import format_messages
from convodb.history import Window, WindowBuilder, select_window
from convodb.tokens import EstimateCounter, TokenCounter

from .test_formats import check_all, check_anthropic, check_openai_chat, check_openai_responses

COUNTER = EstimateCounter()
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def msg(
    seq: int,
    role: Role,
    content: str | None = "text",
    *,
    calls: tuple[str, ...] = (),
    answers: str | None = None,
    tokens: int | None = None,
) -> StoredMessage:
    return StoredMessage(
        id=f"m{seq}",
        conversation_id="c1",
        seq=seq,
        role=role,
        content=content,
        tool_calls=tuple(ToolCall(c, f"fn_{c}", '{"q": 1}') for c in calls) or None,
        tool_name=None,
        tool_call_id=answers,
        metadata={},
        key=None,
        token_count=tokens,
        created_at=NOW,
    )


def seqs(window: Window) -> list[int]:
    return [m.seq for m in window.messages]


def cost(message: StoredMessage, counter: TokenCounter = COUNTER) -> int:
    if message.token_count is not None:
        return message.token_count
    return counter.count_message(message)


# -- examples -------------------------------------------------------------------------------


def test_keeps_newest_messages_within_max_messages() -> None:
    history = [msg(i, "user" if i % 2 else "assistant") for i in range(1, 7)]
    window = select_window(history, max_messages=3, counter=COUNTER)
    assert seqs(window) == [4, 5, 6]
    assert window.dropped == 3
    assert window.first_seq == 4


def test_token_budget_counts_system_summary_and_user_message() -> None:
    history = [msg(i, "user", tokens=10) for i in range(1, 11)]
    fixed = sum(
        COUNTER.count_message(m)
        for m in (msg(0, "system", "Be brief."), msg(0, "system", "S"), msg(0, "user", "Hi"))
    )
    window = select_window(
        history,
        max_tokens=fixed + 35,
        system_prompt="Be brief.",
        summary="S",
        user_message="Hi",
        counter=COUNTER,
    )
    assert seqs(window) == [8, 9, 10]
    assert window.token_count == fixed + 30
    assert (window.system_prompt, window.summary, window.user_message) == ("Be brief.", "S", "Hi")


def test_stored_token_count_is_used_instead_of_the_counter() -> None:
    class Exploding:
        name = "exploding"

        def count_text(self, text: str) -> int:
            raise AssertionError("must not count stored messages")

        def count_message(self, message: Any) -> int:
            raise AssertionError("must not count stored messages")

    window = select_window([msg(1, "user", tokens=7)], max_tokens=7, counter=Exploding())
    assert window.token_count == 7


def test_fixed_part_over_budget_raises_context_budget_error_naming_the_minimum() -> None:
    needed = COUNTER.count_message(msg(0, "system", "x " * 50))
    with pytest.raises(ContextBudgetError) as info:
        select_window([], max_tokens=needed - 1, system_prompt="x " * 50, counter=COUNTER)
    assert isinstance(info.value, ValidationError)
    assert info.value.field == "max_tokens"
    assert info.value.required == needed
    assert info.value.limit == needed - 1
    assert str(needed) in str(info.value)
    assert select_window([], max_tokens=needed, system_prompt="x " * 50, counter=COUNTER)


def test_negative_budget_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        select_window([], max_tokens=-1, counter=COUNTER)
    assert info.value.field == "max_tokens"
    with pytest.raises(ValidationError) as info:
        select_window([], max_messages=-2, counter=COUNTER)
    assert info.value.field == "max_messages"


def test_tool_group_is_dropped_whole_when_the_budget_cuts_through_it() -> None:
    history = [
        msg(1, "user", tokens=5),
        msg(2, "assistant", None, calls=("a", "b"), tokens=5),
        msg(3, "tool", answers="a", tokens=5),
        msg(4, "tool", answers="b", tokens=5),
        msg(5, "assistant", tokens=5),
    ]
    assert seqs(select_window(history, max_tokens=15, counter=COUNTER)) == [5]
    assert seqs(select_window(history, max_messages=3, counter=COUNTER)) == [5]
    assert seqs(select_window(history, max_tokens=20, counter=COUNTER)) == [2, 3, 4, 5]
    assert seqs(select_window(history, max_messages=4, counter=COUNTER)) == [2, 3, 4, 5]


def test_out_of_order_and_interleaved_results_keep_their_groups() -> None:
    history = [
        msg(1, "user"),
        msg(2, "assistant", None, calls=("a", "b")),
        msg(3, "tool", answers="b"),
        msg(4, "assistant", None, calls=("c",)),
        msg(5, "tool", answers="c"),
        msg(6, "tool", answers="a"),
        msg(7, "assistant"),
    ]
    window = select_window(history, counter=COUNTER)
    assert seqs(window) == [1, 2, 3, 4, 5, 6, 7]
    chat = format_messages("openai-chat", window.messages)["messages"]
    assert [(m["role"], m.get("tool_call_id")) for m in chat] == [
        ("user", None),
        ("assistant", None),
        ("tool", "a"),
        ("tool", "b"),
        ("assistant", None),
        ("tool", "c"),
        ("assistant", None),
    ]


def test_latest_call_still_running_is_left_out_and_reported() -> None:
    history = [
        msg(1, "user"),
        msg(2, "assistant", None, calls=("a", "b")),
        msg(3, "tool", answers="a"),
    ]
    window = select_window(history, user_message="still there?", counter=COUNTER)
    assert seqs(window) == [1]
    assert window.dropped == 2
    assert [c.id for c in window.unanswered_tool_calls] == ["b"]


def test_orphan_and_duplicate_results_are_dropped() -> None:
    history = [
        msg(1, "tool", answers="gone"),
        msg(2, "user"),
        msg(3, "assistant", None, calls=("a",)),
        msg(4, "tool", "first", answers="a"),
        msg(5, "tool", "retry", answers="a"),
        msg(6, "tool", answers="never-called"),
    ]
    window = select_window(history, counter=COUNTER)
    assert seqs(window) == [2, 3, 5]
    assert window.dropped == 3


def test_result_stored_before_its_call_is_an_orphan_and_the_call_unanswered() -> None:
    history = [msg(1, "tool", answers="a"), msg(2, "assistant", None, calls=("a",))]
    window = select_window(history, counter=COUNTER)
    assert window.messages == []
    assert window.first_seq is None
    assert [c.id for c in window.unanswered_tool_calls] == ["a"]


def test_builder_stops_asking_for_rows_once_the_budget_is_full() -> None:
    builder = WindowBuilder(max_messages=2, counter=COUNTER)
    assert builder.needs_more
    assert builder.feed([msg(10, "user")]) is True
    assert builder.feed([msg(9, "assistant")]) is False
    assert builder.feed([msg(8, "user")]) is False  # an over-read page is ignored
    window = builder.finish(total=10)
    assert seqs(window) == [9, 10]
    assert window.dropped == 8


def test_builder_reads_no_row_past_a_full_window() -> None:
    # A store feeds rows through a lazy decoder: the rows an over-read page holds past the
    # window are never decoded.
    builder = WindowBuilder(max_messages=2, counter=COUNTER)
    rows = iter([msg(10, "user"), msg(9, "assistant"), msg(8, "user"), msg(7, "assistant")])
    assert builder.feed(rows) is False
    assert [m.seq for m in rows] == [8, 7]
    assert seqs(builder.finish()) == [9, 10]


def test_builder_with_no_room_for_history_needs_no_rows() -> None:
    assert not WindowBuilder(max_messages=0, counter=COUNTER).needs_more
    fixed = COUNTER.count_message(msg(0, "user", "hi"))
    assert not WindowBuilder(max_tokens=fixed, user_message="hi", counter=COUNTER).needs_more


def test_builder_rejects_rows_that_are_not_newest_first() -> None:
    builder = WindowBuilder(counter=COUNTER)
    builder.feed([msg(5, "user")])
    with pytest.raises(ValidationError) as info:
        builder.feed([msg(5, "user")])
    assert info.value.field == "messages"


def test_window_formats_itself() -> None:
    window = select_window([msg(1, "user", "hi")], system_prompt="S", counter=COUNTER)
    assert window.format("anthropic") == {
        "system": "S",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }


# -- properties -----------------------------------------------------------------------------

TEXT = st.text(st.sampled_from("abcdefgh xyz.,:{}\n"), min_size=0, max_size=40)


PLAIN_ROLES: dict[str, Role] = {"user": "user", "assistant": "assistant", "system": "system"}


@st.composite
def conversations(draw: st.DrawFn) -> list[StoredMessage]:
    """Histories with nested, interleaved and out-of-order tool-call groups, calls still open,
    orphan and duplicate results, stored and missing token counts."""
    ids = itertools.count()
    open_calls: list[str] = []
    answered: list[str] = []
    history: list[StoredMessage] = []
    kinds = ["user", "assistant", "calls", "result", "result", "orphan", "duplicate", "system"]
    for seq in range(1, draw(st.integers(0, 30)) + 1):
        kind = draw(st.sampled_from(kinds))
        tokens = draw(st.none() | st.integers(1, 40))
        if kind == "calls":
            calls = tuple(
                f"{draw(st.sampled_from(['call_', 'fc:', 'toolu_']))}{next(ids)}"
                for _ in range(draw(st.integers(1, 3)))
            )
            content = draw(st.none() | TEXT)
            history.append(msg(seq, "assistant", content, calls=calls, tokens=tokens))
            open_calls.extend(calls)
        elif kind == "result" and open_calls:
            call_id = open_calls.pop(draw(st.integers(0, len(open_calls) - 1)))
            answered.append(call_id)
            history.append(msg(seq, "tool", draw(TEXT), answers=call_id, tokens=tokens))
        elif kind == "duplicate" and answered:
            call_id = draw(st.sampled_from(answered))
            history.append(msg(seq, "tool", draw(TEXT), answers=call_id, tokens=tokens))
        elif kind == "orphan":
            history.append(msg(seq, "tool", draw(TEXT), answers=f"ghost{seq}", tokens=tokens))
        elif kind in PLAIN_ROLES:
            history.append(msg(seq, PLAIN_ROLES[kind], draw(TEXT), tokens=tokens))
    return history


def check_window(
    history: list[StoredMessage], window: Window, max_messages: int | None, max_tokens: int | None
) -> None:
    kept = window.messages
    fixed_parts: list[tuple[Role, str | tuple[Part, ...] | None]] = [
        ("system", window.system_prompt),
        ("system", window.summary),
        ("user", window.user_message),
    ]
    fixed = sum(COUNTER.count_message(Turn(r, t)) for r, t in fixed_parts if t is not None)
    assert window.token_count == fixed + sum(cost(m) for m in kept)
    if max_tokens is not None:
        assert window.token_count <= max_tokens
    if max_messages is not None:
        assert len(kept) <= max_messages
    assert seqs(window) == sorted(set(seqs(window)))
    assert all(m in history for m in kept)
    assert window.dropped == len(history) - len(kept)
    assert window.first_seq == (kept[0].seq if kept else None)
    if kept:
        assert kept[0].role != "tool"
    # Groups whole: each kept call has exactly one kept result after it, and vice versa.
    calls = {c.id: m.seq for m in kept for c in m.tool_calls or ()}
    results = [m for m in kept if m.role == "tool"]
    assert sorted(calls) == sorted(r.tool_call_id or "" for r in results)
    assert all(calls[r.tool_call_id or ""] < r.seq for r in results)
    # Newest kept: what is left out among newer messages only went to keep the input valid.
    if kept:
        kept_set = {m.seq for m in kept}
        for m in history:
            if m.seq > kept[0].seq and m.seq not in kept_set:
                assert m.role == "tool" or m.tool_calls, m


budgets = st.one_of(st.none(), st.integers(0, 600))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=conversations(),
    max_messages=st.none() | st.integers(0, 12),
    max_tokens=budgets,
    system_prompt=st.none() | TEXT,
    summary=st.none() | TEXT,
    user_message=st.none() | TEXT,
    page=st.integers(1, 7),
)
def test_every_window_is_valid_api_input_within_budget(
    history: list[StoredMessage],
    max_messages: int | None,
    max_tokens: int | None,
    system_prompt: str | None,
    summary: str | None,
    user_message: str | None,
    page: int,
) -> None:
    parts = {"system_prompt": system_prompt, "summary": summary, "user_message": user_message}
    try:
        window = select_window(
            history, max_messages=max_messages, max_tokens=max_tokens, counter=COUNTER, **parts
        )
    except ContextBudgetError as exc:
        assert max_tokens is not None and exc.required > max_tokens
        return
    check_window(history, window, max_messages, max_tokens)

    # A store feeding pages of newest rows, until the builder needs no more, gets the same window.
    builder = WindowBuilder(
        max_messages=max_messages, max_tokens=max_tokens, counter=COUNTER, **parts
    )
    newest_first = history[::-1]
    read = 0
    while builder.needs_more and read < len(newest_first):
        builder.feed(newest_first[read : read + page])
        read += page
    assert builder.finish(total=len(history)) == window

    # A larger budget keeps a superset.
    if max_tokens is not None:
        larger = select_window(
            history, max_messages=max_messages, max_tokens=max_tokens + 50, counter=COUNTER, **parts
        )
        assert set(seqs(window)) <= set(seqs(larger))

    for name in ("openai-chat", "openai-responses", "anthropic", "plain"):
        out = window.format(name)
        listed = out.get("messages", out.get("input"))
        assert isinstance(listed, list)
        if user_message and name == "anthropic":  # merged into the last user turn
            assert listed[-1]["role"] == "user"
            assert listed[-1]["content"][-1] == {"type": "text", "text": user_message}
        elif user_message is not None and name != "anthropic":
            assert listed[-1] == {"role": "user", "content": user_message}
        if name == "openai-chat":
            check_openai_chat(out["messages"])
        elif name == "openai-responses":
            check_openai_responses(out["input"])
        elif name == "anthropic":
            check_anthropic(out)


@settings(max_examples=80, deadline=None)
@given(history=conversations())
def test_unlimited_window_keeps_exactly_the_valid_messages(history: list[StoredMessage]) -> None:
    window = select_window(history, counter=COUNTER)
    check_window(history, window, None, None)
    valid_groups: set[int] = set()
    for m in history:
        if m.role != "tool" and not m.tool_calls:
            valid_groups.add(m.seq)
    # Every call answered by later results (call ids are unique here) is kept with the newest
    # result for each of its ids.
    for m in history:
        if m.tool_calls:
            results = [
                r
                for r in history
                if r.seq > m.seq and r.tool_call_id in {c.id for c in m.tool_calls}
            ]
            newest = {r.tool_call_id: r.seq for r in results}
            if len(newest) == len(m.tool_calls):
                valid_groups.add(m.seq)
                valid_groups.update(newest.values())
    assert set(seqs(window)) == valid_groups


@settings(max_examples=100, deadline=None)
@given(history=conversations(), user_message=st.none() | TEXT)
def test_formatting_a_raw_history_is_valid_api_input(
    history: list[StoredMessage], user_message: str | None
) -> None:
    # Formatters apply the window's rule themselves: orphans, duplicates and unanswered calls
    # in an unwindowed history never reach the API.
    check_all(history, system_prompt="S", summary=None, user_message=user_message)
