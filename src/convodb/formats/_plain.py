"""Plain ``{"role", "content"}`` text, for logs and models without tool support."""

from __future__ import annotations

from collections.abc import Iterable

from ._common import MessageLike, arrange, preamble, tool_calls, user_turn


def to_plain(
    messages: Iterable[MessageLike],
    *,
    system_prompt: str | None = None,
    summary: str | None = None,
    user_message: str | None = None,
) -> list[dict[str, str]]:
    """History as ``{"role", "content"}`` text only, for logs and models without tool support.

    Tool calls are written into the assistant's text as ``[tool call NAME(ARGUMENTS)]`` lines;
    tool results keep the role ``tool``.

    Args:
        messages: the history, oldest first.
        system_prompt: a first system message, when given.
        summary: a system message after the system prompt, when given.
        user_message: a last user message, when given.

    Returns:
        One dict per message, both values strings.
    """
    out: list[dict[str, str]] = preamble(system_prompt, summary)
    for message in arrange(messages):
        lines = [message.content] if message.content else []
        lines.extend(f"[tool call {c['name']}({c['arguments']})]" for c in tool_calls(message))
        out.append({"role": message.role, "content": "\n".join(lines)})
    out.extend(user_turn(user_message))
    return out
