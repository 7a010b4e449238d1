"""What every format shares: the message protocol, tool-call pairing, the fixed prompt parts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from .._parts import Part
from .._records import ToolCall
from ..history import ToolGroups


class MessageLike(Protocol):
    """What the formatters read: a :class:`~convodb.StoredMessage` or a ``convodb.Message`` row.

    ``content`` is text or a sequence of parts (``convodb`` part records, or dicts of the
    same shape, as a :class:`~convodb.NewMessage` may hold); ``tool_calls``,
    when the object has it, is a sequence of :class:`~convodb.ToolCall` or dicts.
    """

    @property
    def role(self) -> str: ...
    @property
    def content(self) -> str | Sequence[Part | Mapping[str, Any]] | None: ...
    @property
    def tool_call_id(self) -> str | None: ...
    @property
    def tool_name(self) -> str | None: ...


def tool_calls(message: MessageLike) -> list[dict[str, str]]:
    """The message's calls as ``{"id", "name", "arguments"}`` dicts."""
    calls: Iterable[ToolCall | Mapping[str, str]] = getattr(message, "tool_calls", None) or ()
    return [c.to_dict() if isinstance(c, ToolCall) else dict(c) for c in calls]


def arrange(messages: Iterable[MessageLike]) -> list[MessageLike]:
    """Messages in an order every API accepts: each call's results right after it, in call order.

    Applies :class:`convodb.history.ToolGroups`, the rule windows use too: orphan results and
    calls lacking a result are dropped.
    """
    messages = list(messages)
    if not any(m.role == "tool" or getattr(m, "tool_calls", None) for m in messages):
        return messages  # no calls or results: nothing to pair or drop
    pairing: ToolGroups[MessageLike] = ToolGroups()
    groups = [g for m in reversed(messages) if (g := pairing.push(m)) is not None]
    return [m for group in reversed(groups) for m in group]


def preamble(system_prompt: str | None, summary: str | None) -> list[dict[str, Any]]:
    """The system prompt and the summary as system messages."""
    return [{"role": "system", "content": t} for t in (system_prompt, summary) if t is not None]
