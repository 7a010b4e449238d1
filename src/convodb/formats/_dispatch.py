"""The formats by name: ``format_messages`` and ``parse_response``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .._records import MessageLike, NewMessage
from ..errors import ValidationError
from ._anthropic import from_anthropic, to_anthropic
from ._content import UserMessage
from ._openai_chat import from_openai_chat, to_openai_chat_messages
from ._openai_responses import from_openai_responses, to_openai_responses_input
from ._plain import to_plain

FORMATS = ("anthropic", "openai-chat", "openai-responses", "plain")
"""The names :func:`format_messages` accepts."""


def format_messages(
    format_name: str,
    messages: Iterable[MessageLike],
    *,
    system_prompt: str | None = None,
    summary: str | None = None,
    user_message: UserMessage = None,
) -> dict[str, Any]:
    """History in a named format, as keyword arguments for that API's client.

    ```python
    kwargs = format_messages("anthropic", history, system_prompt="Be brief.", user_message="Hi")
    client.messages.create(model="claude-sonnet-4-5", max_tokens=1024, **kwargs)
    ```

    Args:
        format_name: ``"openai-chat"`` (returns ``{"messages"}``), ``"openai-responses"``
            (``{"input"}``), ``"anthropic"`` (``{"messages"}`` and ``"system"`` when there is
            system text) or ``"plain"`` (``{"messages"}``).
        messages: the history, oldest first.
        system_prompt: sent first, when given.
        summary: sent after the system prompt, when given.
        user_message: sent last, when given: text, or parts (records or dicts, shaped like
            ``convodb`` parts; their values are checked by the service, not here).

    Returns:
        The keyword arguments.

    Raises:
        ValidationError: ``format_name`` is not one of :data:`FORMATS` (field ``format``), or
            a part of ``user_message`` is not shaped like a part (``user_message[i]``).
    """
    fixed = {"system_prompt": system_prompt, "summary": summary}
    if format_name == "openai-chat":
        return {"messages": to_openai_chat_messages(messages, **fixed, user_message=user_message)}
    if format_name == "openai-responses":
        return {"input": to_openai_responses_input(messages, **fixed, user_message=user_message)}
    if format_name == "anthropic":
        return to_anthropic(messages, **fixed, user_message=user_message)
    if format_name == "plain":
        return {"messages": to_plain(messages, **fixed, user_message=user_message)}
    raise ValidationError("format", f"must be one of {list(FORMATS)}; got {format_name!r}")


_PARSERS: dict[str, Callable[[Any], list[NewMessage]]] = {
    "openai-chat": from_openai_chat,
    "openai-responses": from_openai_responses,
    "anthropic": from_anthropic,
}


def parse_response(format_name: str, data: Any) -> list[NewMessage]:
    """A model's output in a named format as messages to append; see the ``from_*`` functions.

    Args:
        format_name: ``"openai-chat"``, ``"openai-responses"`` or ``"anthropic"``.
        data: what that API returned (and any tool results the agent added).

    Returns:
        The messages, in order.

    Raises:
        ValidationError: unknown ``format_name`` (field ``format``), or malformed ``data``.
    """
    parser = _PARSERS.get(format_name)
    if parser is None:
        raise ValidationError("format", f"must be one of {sorted(_PARSERS)}; got {format_name!r}")
    return parser(data)
