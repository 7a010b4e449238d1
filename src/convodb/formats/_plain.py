"""Plain ``{"role", "content"}`` text, for logs and models without tool support."""

from __future__ import annotations

from collections.abc import Iterable

from .._records import MessageLike
from ._common import arrange, preamble, tool_calls
from ._content import UserMessage, join, parts_of, text_pieces, user_turns


def to_plain(
    messages: Iterable[MessageLike],
    *,
    system_prompt: str | None = None,
    summary: str | None = None,
    user_message: UserMessage = None,
) -> list[dict[str, str]]:
    """History as ``{"role", "content"}`` text only, for logs and models without tool support.

    Tool calls are written into the assistant's text as ``[tool call NAME(ARGUMENTS)]`` lines;
    tool results keep the role ``tool``. Images, files and audio are short placeholders such as
    ``[image: image/png, 1024x768]``; reasoning, thinking and provider items are left out.

    Args:
        messages: the history, oldest first.
        system_prompt: a first system message, when given.
        summary: a system message after the system prompt, when given.
        user_message: a last user message, when given: text, or parts (records or dicts).

    Returns:
        One dict per message, both values strings.

    Raises:
        ValidationError: a part of ``user_message`` is not shaped like a part.
    """
    out: list[dict[str, str]] = preamble(system_prompt, summary)
    for message in [*arrange(messages), *user_turns(user_message)]:
        content = message.content
        if content is not None and not isinstance(content, str):
            content = join(text_pieces(parts_of(content)))
        lines = [content] if content else []
        lines.extend(f"[tool call {c['name']}({c['arguments']})]" for c in tool_calls(message))
        out.append({"role": message.role, "content": "\n".join(lines)})
    return out
