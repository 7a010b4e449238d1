"""Tool-call pairing: the one rule that windows and formats both apply.

It sits below both (``history`` builds windows with it, ``formats`` arranges API input with
it, and ``history`` imports ``formats``), so neither has to import the other for it.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from ._records import MessageLike, ToolCall

__all__ = ["ToolGroups"]

M = TypeVar("M", bound=MessageLike)


class ToolGroups(Generic[M]):
    """The one pairing rule for tool calls and results, fed messages newest first.

    A result answers the newest call with its id that precedes it; of two results for one
    call the newest wins; a result whose call never comes is an orphan and is dropped; a call
    message without a result for each of its calls is dropped with the results it has (the
    APIs reject it) and its calls are kept in :attr:`unanswered`. Both windows
    (:class:`convodb.WindowBuilder`) and the formatters (:mod:`convodb.formats`) use it, so
    they can never disagree. Public as ``convodb.history.ToolGroups``.
    """

    def __init__(self) -> None:
        self._pending: dict[str, M] = {}  # call id -> its newest result
        self.unanswered: list[ToolCall] = []

    def push(self, message: M) -> list[M] | None:
        """The group ``message`` completes, oldest first, or ``None`` when it completes none.

        A plain message is a group of one; a call message with all its results is the call
        followed by its results in call order; a result waits for its call (``None``).
        """
        role = message.role
        if role == "tool":
            if message.tool_call_id is not None:
                self._pending.setdefault(message.tool_call_id, message)
            return None
        stored_calls = getattr(message, "tool_calls", None) if role == "assistant" else None
        if not stored_calls:  # most messages: a group of one
            return [message]
        calls = [
            c if isinstance(c, ToolCall) else ToolCall(c["id"], c["name"], c["arguments"])
            for c in stored_calls
        ]
        results = [self._pending.pop(c.id, None) for c in calls]
        if any(r is None for r in results):
            self.unanswered.extend(c for c, r in zip(calls, results, strict=True) if r is None)
            return None
        return [message, *(r for r in results if r is not None)]
