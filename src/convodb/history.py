"""History windows: the newest messages that fit a budget, in a shape model APIs accept.

A window is what one model request sends: the system prompt and pinned summary first, then
the newest stored messages that fit ``max_messages`` and ``max_tokens``, then the new user
message. Pure functions, no I/O; what this module guarantees for every window:

* The system prompt, the summary and the new user message are always in it and counted in the
  budget; if they alone exceed ``max_tokens``, :class:`~convodb.errors.ContextBudgetError`.
* Kept messages are a suffix of the history in ``seq`` order, less the messages that would make
  the input invalid. A tool-call group (an assistant message with ``tool_calls`` and one result
  for each call, matched by ``tool_call_id``, wherever the results sit) is kept whole or not at
  all, so a window never starts with a tool result and never splits a call from its result.
* Tool results whose call is not in the history (orphans) are dropped; of two results for one
  call the newest is kept. An assistant message whose calls do not all have a stored result is
  dropped with the results it has: the APIs reject a call without its result. This is also what
  happens while the newest turn's tools are still running; the dropped calls are reported in
  :attr:`Window.unanswered_tool_calls` so an agent can tell.
* Nothing newer than a kept message is left out, except a message of a group that could not
  be kept whole (or an orphan).

Token counts come from ``StoredMessage.token_count`` when stored (computed at write time),
else from the counter. :class:`WindowBuilder` takes messages newest first, page by page, and
says when it needs no more, so a store reads only the rows a window needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._parts import Part
from ._records import StoredMessage, ToolCall, Turn
from ._tool_groups import ToolGroups
from .errors import ContextBudgetError, ValidationError
from .formats import format_messages
from .tokens import TokenCounter, default_counter

__all__ = [
    "AgentInput",
    "ToolGroups",
    "Window",
    "WindowBuilder",
    "compaction_cut",
    "select_window",
]


@dataclass(frozen=True, slots=True)
class Window:
    """The part of a history to send, with the fixed parts of the prompt.

    ```python
    window = select_window(history, max_tokens=8000, system_prompt="Be brief.",
                           user_message="And tomorrow?")
    response = client.chat.completions.create(model="gpt-4o", **window.format("openai-chat"))
    ```
    """

    messages: list[StoredMessage]
    """Kept history messages, oldest first (increasing ``seq``)."""
    dropped: int
    """History messages left out: older than the window, or dropped to keep the input valid."""
    first_seq: int | None
    """``seq`` of the first kept message; ``None`` when no history message was kept."""
    token_count: int
    """Tokens of the whole window: system prompt, summary, kept messages and user message."""
    system_prompt: str | None = None
    summary: str | None = None
    """Pinned text standing in for older history; sent right after the system prompt."""
    user_message: str | tuple[Part, ...] | None = None
    """The new user turn (not stored), sent last: text or parts."""
    unanswered_tool_calls: tuple[ToolCall, ...] = field(default=())
    """Calls left out because not all of their results are stored (e.g. still running)."""

    def format(self, format_name: str) -> dict[str, Any]:
        """This window as keyword arguments for a model API; see :func:`convodb.format_messages`.

        Raises:
            ValidationError: ``format_name`` is not a known format.
        """
        return format_messages(
            format_name,
            self.messages,
            system_prompt=self.system_prompt,
            summary=self.summary,
            user_message=self.user_message,
        )


def _check_positive(name: str, value: int | None) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(name, f"must be an integer or None, not {type(value).__name__}")
    if value < 0:
        raise ValidationError(name, f"must not be negative; got {value}")


class WindowBuilder:
    """Builds a :class:`Window` from messages fed newest first, a page at a time.

    A store reads the newest rows in pages (``ORDER BY seq DESC``) and feeds them until the
    builder needs no more, so a window costs one index range scan of the rows it uses:

    ```python
    builder = WindowBuilder(max_tokens=8000, system_prompt=prompt, user_message=text)
    before = None
    while builder.needs_more:
        rows = await read_newest(conversation_id, before_seq=before, limit=100)
        builder.feed(rows)
        if len(rows) < 100:
            break
        before = rows[-1].seq
    window = builder.finish(total=conversation.message_count)
    ```

    Raises:
        ContextBudgetError: from the constructor, when the system prompt, summary and user
            message alone exceed ``max_tokens``.
        ValidationError: a negative or non-integer budget, or messages fed out of order.
    """

    def __init__(
        self,
        *,
        max_messages: int | None = None,
        max_tokens: int | None = None,
        system_prompt: str | None = None,
        summary: str | None = None,
        user_message: str | Sequence[Part] | None = None,
        counter: TokenCounter | None = None,
    ) -> None:
        _check_positive("max_messages", max_messages)
        _check_positive("max_tokens", max_tokens)
        self._counter = counter if counter is not None else default_counter()
        self._max_messages = max_messages
        self._max_tokens = max_tokens
        self._system_prompt = system_prompt
        self._summary = summary
        self._user_message = (
            user_message
            if user_message is None or isinstance(user_message, str)
            else tuple(user_message)
        )
        fixed = sum(
            self._counter.count_message(m)
            for m in (
                Turn("system", system_prompt),
                Turn("system", summary),
                Turn("user", self._user_message),
            )
            if m.content is not None
        )
        if max_tokens is not None and fixed > max_tokens:
            raise ContextBudgetError(required=fixed, max_tokens=max_tokens)
        self._tokens = fixed
        # Every message costs at least one token: with no room left, nothing more can fit.
        self._full = max_messages == 0 or (max_tokens is not None and fixed >= max_tokens)
        self._kept: list[StoredMessage] = []  # newest first
        self._groups: ToolGroups[StoredMessage] = ToolGroups()
        self._seen = 0
        self._last_seq: int | None = None

    @property
    def tokens_left(self) -> int | None:
        """Tokens the budget still has room for; ``None`` without a token budget."""
        return None if self._max_tokens is None else self._max_tokens - self._tokens

    @property
    def messages_left(self) -> int | None:
        """Messages the budget still has room for; ``None`` without a message budget."""
        return None if self._max_messages is None else self._max_messages - len(self._kept)

    @property
    def needs_more(self) -> bool:
        """``False`` once the budget is full: older messages cannot join the window."""
        return not self._full

    def _cost(self, message: StoredMessage) -> int:
        if message.token_count is not None:
            return message.token_count
        return self._counter.count_message(message)

    def _fits(self, count: int, tokens: int) -> bool:
        if self._max_messages is not None and len(self._kept) + count > self._max_messages:
            return False
        return self._max_tokens is None or self._tokens + tokens <= self._max_tokens

    def _take(self, group: Sequence[StoredMessage], tokens: int) -> None:
        if not self._fits(len(group), tokens):
            self._full = True
            return
        self._kept.extend(group)
        self._tokens += tokens
        if self._max_messages is not None and len(self._kept) >= self._max_messages:
            self._full = True
        if self._max_tokens is not None and self._tokens >= self._max_tokens:
            self._full = True

    def feed(self, messages: Iterable[StoredMessage]) -> bool:
        """Consider older messages, newest first, continuing from the previous call.

        Args:
            messages: the next messages, in decreasing ``seq`` order. Once the builder is
                full, the rest are not read (a store may over-read a page: a lazy iterable
                decodes only the rows the window takes).

        Returns:
            :attr:`needs_more`: whether older messages could still join the window.

        Raises:
            ValidationError: ``seq`` does not decrease.
        """
        if self._full:
            return False
        for message in messages:
            if self._last_seq is not None and message.seq >= self._last_seq:
                raise ValidationError(
                    "messages",
                    f"must be fed newest first: seq {message.seq} after seq {self._last_seq}",
                )
            self._last_seq = message.seq
            self._seen += 1
            group = self._groups.push(message)
            if group is not None:
                cost = self._cost(group[0]) if len(group) == 1 else sum(map(self._cost, group))
                self._take(group, cost)
                if self._full:
                    return False
        return True

    def finish(self, *, total: int | None = None) -> Window:
        """The window so far.

        Args:
            total: how many messages the conversation holds (``message_count``), so that
                :attr:`Window.dropped` counts the rows never read too; by default only the fed
                messages are counted.

        Returns:
            The window; results still waiting for their call at this point are orphans (their
            call is older than the window or not stored) and are left out.
        """
        kept = sorted(self._kept, key=lambda m: m.seq)
        seen = self._seen if total is None else max(total, self._seen)
        return Window(
            messages=kept,
            dropped=seen - len(kept),
            first_seq=kept[0].seq if kept else None,
            token_count=self._tokens,
            system_prompt=self._system_prompt,
            summary=self._summary,
            user_message=self._user_message,
            unanswered_tool_calls=tuple(self._groups.unanswered),
        )


def select_window(
    messages: Sequence[StoredMessage],
    *,
    max_messages: int | None = None,
    max_tokens: int | None = None,
    system_prompt: str | None = None,
    summary: str | None = None,
    user_message: str | Sequence[Part] | None = None,
    counter: TokenCounter | None = None,
) -> Window:
    """The newest messages of a history that fit the budget, with tool-call groups kept whole.

    Args:
        messages: the history, oldest first (as the service returns it).
        max_messages: at most this many history messages; ``None`` for no limit.
        max_tokens: at most this many tokens in the whole window, system prompt, summary and
            user message included; ``None`` for no limit.
        system_prompt: sent first, always.
        summary: pinned text for older history, sent after the system prompt, always.
        user_message: the new user turn, sent last, always: text or part records.
        counter: counts messages without a stored ``token_count`` and the fixed parts;
            :func:`convodb.default_counter` by default.

    Returns:
        The :class:`Window`.

    Raises:
        ContextBudgetError: system prompt, summary and user message alone exceed
            ``max_tokens``.
        ValidationError: a negative budget, or messages not in increasing ``seq`` order.
    """
    builder = WindowBuilder(
        max_messages=max_messages,
        max_tokens=max_tokens,
        system_prompt=system_prompt,
        summary=summary,
        user_message=user_message,
        counter=counter,
    )
    builder.feed(reversed(messages))
    return builder.finish(total=len(messages))


@dataclass(frozen=True, slots=True)
class AgentInput:
    """A window formatted for one model API: what ``ConversationService.get_agent_input`` returns.

    ```python
    agent_input = await service.get_agent_input(cid, user_id, format="anthropic",
                                                system_prompt=prompt, user_message=text,
                                                max_tokens=8000)
    client.messages.create(model="claude-sonnet-4-5", max_tokens=1024, **agent_input.kwargs)
    ```
    """

    format: str
    """One of :data:`convodb.formats.FORMATS`."""
    kwargs: dict[str, Any]
    """Keyword arguments for the API's client: ``messages`` (``input`` for the Responses API),
    and ``system`` for Anthropic when there is system text."""
    token_count: int
    """Tokens of the whole window, system prompt, summary and new message included."""
    dropped: int
    """Stored messages after the summary (all, when there is none) left out of the window."""
    first_seq: int | None
    """``seq`` of the first history message sent; ``None`` when none is."""
    window: Window
    """The window itself: the stored messages sent, and the calls left out as unanswered."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The list to send: chat messages, or the Responses API's input items."""
        items: list[dict[str, Any]] = self.kwargs.get("messages", self.kwargs.get("input", []))
        return items

    @property
    def system(self) -> str | None:
        """Anthropic's separate system prompt; ``None`` for the other formats."""
        system: str | None = self.kwargs.get("system")
        return system

    @classmethod
    def from_window(cls, window: Window, format_name: str) -> AgentInput:
        """Format ``window`` for ``format_name``.

        Raises:
            ValidationError: ``format_name`` is not a known format.
        """
        return cls(
            format=format_name,
            kwargs=window.format(format_name),
            token_count=window.token_count,
            dropped=window.dropped,
            first_seq=window.first_seq,
            window=window,
        )


def compaction_cut(messages: Sequence[StoredMessage], cut: int) -> int:
    """The highest ``seq`` at or below ``cut`` that splits no tool-call group.

    A summary covering messages up to the returned ``seq`` leaves every tool result together
    with its call: both summarized, or both kept as messages.

    Args:
        messages: the messages around the cut, oldest first (those after the previous summary).
        cut: the ``seq`` the summary would like to cover up to.
    """
    calls: dict[str, int] = {}
    spans: list[tuple[int, int]] = []  # (seq of a call, seq of its result)
    for message in messages:
        if message.role == "assistant" and message.tool_calls:
            for call in message.tool_calls:
                calls[call.id] = message.seq
        elif message.role == "tool" and message.tool_call_id in calls:
            spans.append((calls[message.tool_call_id], message.seq))
    # Moving the cut before a call may put it inside an earlier group: repeat until stable.
    moved = True
    while moved:
        moved = False
        for call_seq, result_seq in spans:
            if call_seq <= cut < result_seq:
                cut, moved = call_seq - 1, True
    return cut
