"""What every format shares: a message's calls, tool results next to their calls, the fixed
prompt parts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .._records import MessageLike, ToolCall
from .._tool_groups import ToolGroups


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
