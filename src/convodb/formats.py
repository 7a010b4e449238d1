"""Stored messages in the shapes model APIs accept, and model responses back into messages.

Pure functions: no I/O. Each ``to_*`` function turns history (oldest first), a system prompt,
a pinned summary and the new user message into one API's input, and guarantees that input is
well-formed for that API whatever the history holds:

* Tool results are placed right after the assistant message that made the calls, in call
  order (the APIs require it; stored order is kept for everything else). Results whose call is
  missing, duplicate results (the newest wins) and calls without all their results are left
  out, by the same rule as :mod:`convodb.history` windows.
* The system prompt and the summary come first; the user message comes last.

Anthropic's Messages API needs more: ``system`` is a separate parameter (stored system
messages join it, in order); consecutive turns of one role are merged into one turn; tool
results travel as ``tool_result`` blocks in a user turn, before any text; the first turn must
be a user turn, so a history that starts with an assistant message gets a short placeholder
user turn (:data:`ANTHROPIC_LEADING_USER_TEXT`) rather than losing that message; and tool
arguments must be a JSON object, so arguments that are not one are sent as
``{"_raw_arguments": "<the text>"}`` (:data:`RAW_ARGUMENTS_KEY`) — the model sees what it
sent, and :func:`from_anthropic` turns that back into the original text. Anthropic ids allow only
``[A-Za-z0-9_-]``; other call ids are replaced by a stable digest, for calls and results alike.

The ``from_*`` functions parse a model's output (and the tool results an agent adds) into
:class:`~convodb.NewMessage` lists, so a whole agent turn is saved with one append. Reasoning
items and blocks, and calls to provider-hosted tools (web search, code interpreter, ...), are
not stored: they are not function calls convodb can replay, and their visible result is part of
the message text.

``build_message_array`` and ``message_to_dict`` are the seed's helpers, fixed: the seed
dropped ``tool_calls`` and ``tool_call_id``, which made its arrays invalid input for the
OpenAI Chat Completions API as soon as a tool was used. They keep that behaviour: they neither
reorder nor drop messages.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from ._records import NewMessage, Role, ToolCall
from .errors import ValidationError
from .history import ToolGroups

__all__ = [
    "ANTHROPIC_LEADING_USER_TEXT",
    "FORMATS",
    "RAW_ARGUMENTS_KEY",
    "MessageLike",
    "build_message_array",
    "format_messages",
    "from_anthropic",
    "from_openai_chat",
    "from_openai_responses",
    "message_to_dict",
    "parse_response",
    "to_anthropic",
    "to_openai_chat",
    "to_openai_chat_messages",
    "to_openai_responses_input",
    "to_plain",
]


class MessageLike(Protocol):
    """What the formatters read: a :class:`~convodb.StoredMessage` or a ``convodb.Message`` row."""

    @property
    def role(self) -> str: ...
    @property
    def content(self) -> str | None: ...
    @property
    def tool_call_id(self) -> str | None: ...
    @property
    def tool_name(self) -> str | None: ...


def _tool_calls(message: MessageLike) -> list[dict[str, str]]:
    calls: Iterable[ToolCall | Mapping[str, str]] = getattr(message, "tool_calls", None) or ()
    return [c.to_dict() if isinstance(c, ToolCall) else dict(c) for c in calls]


def to_openai_chat(message: MessageLike) -> dict[str, Any]:
    """One message as an OpenAI Chat Completions message param."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if getattr(message, "tool_calls", None):
        calls = _tool_calls(message)
        out["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in calls
        ]
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
    return out


def build_message_array(
    db_messages: Iterable[MessageLike],
    user_message: str | None,
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """Stored messages as an OpenAI Chat Completions ``messages`` array.

    ```python
    history = await service.get_conversation_history(cid, user_id)
    messages = build_message_array(history, "What's the weather?", system_prompt="Be brief.")
    ```

    Args:
        db_messages: the history, oldest first (as ``get_conversation_history`` returns it).
        user_message: the new user turn, appended last; ``None`` to add none.
        system_prompt: put first as a system message, when given.

    Returns:
        ``{"role", "content"}`` dicts, with ``tool_calls`` on assistant messages that made
        calls and ``tool_call_id`` on tool results.
    """
    array: list[dict[str, Any]] = []
    if system_prompt is not None:
        array.append({"role": "system", "content": system_prompt})
    array.extend(to_openai_chat(m) for m in db_messages)
    if user_message is not None:
        array.append({"role": "user", "content": user_message})
    return array


def message_to_dict(message: MessageLike) -> dict[str, Any]:
    """A stored message as a JSON-ready dict (timestamps in ISO 8601)."""
    metadata = getattr(message, "metadata", None)
    if not isinstance(metadata, dict):  # the ORM row calls it metadata_
        metadata = getattr(message, "metadata_", None) or {}
    created_at = getattr(message, "created_at", None)
    return {
        "id": getattr(message, "id", None),
        "conversation_id": getattr(message, "conversation_id", None),
        "seq": getattr(message, "seq", None),
        "role": message.role,
        "content": message.content,
        "tool_calls": _tool_calls(message) or None,
        "tool_name": message.tool_name,
        "tool_call_id": message.tool_call_id,
        "metadata": metadata,
        "created_at": created_at.isoformat() if created_at is not None else None,
    }


FORMATS = ("anthropic", "openai-chat", "openai-responses", "plain")
"""The names :func:`format_messages` accepts."""
ANTHROPIC_LEADING_USER_TEXT = "(earlier messages omitted)"
"""The user turn put before a history that starts with an assistant message, for Anthropic."""
RAW_ARGUMENTS_KEY = "_raw_arguments"
"""Anthropic ``tool_use`` input key holding arguments that are not a JSON object."""

_ANTHROPIC_ID = re.compile(r"[A-Za-z0-9_-]+")


# -- shared shaping -------------------------------------------------------------------------


def _arrange(messages: Iterable[MessageLike]) -> list[MessageLike]:
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


def _preamble(system_prompt: str | None, summary: str | None) -> list[dict[str, Any]]:
    return [{"role": "system", "content": t} for t in (system_prompt, summary) if t is not None]


def _user_turn(user_message: str | None) -> list[dict[str, Any]]:
    return [] if user_message is None else [{"role": "user", "content": user_message}]


# -- OpenAI Chat Completions ----------------------------------------------------------------


def to_openai_chat_messages(
    messages: Iterable[MessageLike],
    *,
    system_prompt: str | None = None,
    summary: str | None = None,
    user_message: str | None = None,
) -> list[dict[str, Any]]:
    """History as the ``messages`` of an OpenAI Chat Completions request.

    ```python
    messages = to_openai_chat_messages(window.messages, system_prompt="Be brief.",
                                       user_message="And tomorrow?")
    client.chat.completions.create(model="gpt-4o", messages=messages)
    ```

    Args:
        messages: the history, oldest first.
        system_prompt: a first system message, when given.
        summary: a system message after the system prompt, when given.
        user_message: a last user message, when given.

    Returns:
        ``ChatCompletionMessageParam`` dicts: assistant calls as ``tool_calls``, results as
        ``tool`` messages with ``tool_call_id``.
    """
    return [
        *_preamble(system_prompt, summary),
        *(to_openai_chat(m) for m in _arrange(messages)),
        *_user_turn(user_message),
    ]


# -- OpenAI Responses -----------------------------------------------------------------------


def to_openai_responses_input(
    messages: Iterable[MessageLike],
    *,
    system_prompt: str | None = None,
    summary: str | None = None,
    user_message: str | None = None,
) -> list[dict[str, Any]]:
    """History as the ``input`` items of an OpenAI Responses API request.

    Args:
        messages: the history, oldest first.
        system_prompt: a first system message item, when given.
        summary: a system message item after the system prompt, when given.
        user_message: a last user message item, when given.

    Returns:
        ``ResponseInputParam`` items: text as ``{"role", "content"}`` messages, each call as a
        ``function_call`` item (after the assistant's text, if any), each result as a
        ``function_call_output`` item.
    """
    items = _preamble(system_prompt, summary)
    for message in _arrange(messages):
        calls = _tool_calls(message)
        if message.role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.tool_call_id,
                    "output": message.content or "",
                }
            )
            continue
        if message.content or not calls:
            items.append({"role": message.role, "content": message.content or ""})
        items.extend(
            {
                "type": "function_call",
                "call_id": c["id"],
                "name": c["name"],
                "arguments": c["arguments"],
            }
            for c in calls
        )
    items.extend(_user_turn(user_message))
    return items


# -- Anthropic Messages ---------------------------------------------------------------------


def _anthropic_id(call_id: str) -> str:
    if _ANTHROPIC_ID.fullmatch(call_id):
        return call_id
    return "toolu_" + hashlib.sha256(call_id.encode("utf-8")).hexdigest()[:24]


def _anthropic_input(arguments: str) -> dict[str, Any]:
    # OpenAI models send "" for a call without parameters.
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    return {RAW_ARGUMENTS_KEY: arguments}


def _anthropic_blocks(message: MessageLike) -> list[dict[str, Any]]:
    # Anthropic rejects empty text blocks, so empty content adds none.
    if message.role == "tool":
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": _anthropic_id(message.tool_call_id or ""),
        }
        if message.content:
            block["content"] = message.content
        return [block]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    blocks.extend(
        {
            "type": "tool_use",
            "id": _anthropic_id(c["id"]),
            "name": c["name"],
            "input": _anthropic_input(c["arguments"]),
        }
        for c in _tool_calls(message)
    )
    return blocks


def to_anthropic(
    messages: Iterable[MessageLike],
    *,
    system_prompt: str | None = None,
    summary: str | None = None,
    user_message: str | None = None,
) -> dict[str, Any]:
    """History as the ``system`` and ``messages`` of an Anthropic Messages request.

    ```python
    client.messages.create(model="claude-sonnet-4-5", max_tokens=1024,
                           **to_anthropic(window.messages, system_prompt="Be brief."))
    ```

    Args:
        messages: the history, oldest first.
        system_prompt: the start of ``system``, when given.
        summary: added to ``system`` after the system prompt, when given.
        user_message: a last user turn, when given.

    Returns:
        ``{"messages": [...]}`` with ``MessageParam`` dicts whose roles alternate, starting
        with ``user``, plus ``"system"`` when there is any system text (system prompt, summary
        and stored system messages, separated by blank lines).
    """
    system_parts = [t for t in (system_prompt, summary) if t]
    turns: list[dict[str, Any]] = []
    arranged = _arrange(messages)
    user_turn = [] if user_message is None else [NewMessage(role="user", content=user_message)]
    for message in [*arranged, *user_turn]:
        if message.role == "system":
            if message.content:
                system_parts.append(message.content)
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _anthropic_blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        # Tool results must open a user turn; sorted() is stable, so order is otherwise kept.
        turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    if turns and turns[0]["role"] == "assistant":
        lead = [{"type": "text", "text": ANTHROPIC_LEADING_USER_TEXT}]
        turns.insert(0, {"role": "user", "content": lead})
    out: dict[str, Any] = {"messages": turns}
    if system_parts:
        out["system"] = "\n\n".join(system_parts)
    return out


# -- plain ----------------------------------------------------------------------------------


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
    out: list[dict[str, str]] = _preamble(system_prompt, summary)
    for message in _arrange(messages):
        lines = [message.content] if message.content else []
        lines.extend(f"[tool call {c['name']}({c['arguments']})]" for c in _tool_calls(message))
        out.append({"role": message.role, "content": "\n".join(lines)})
    out.extend(_user_turn(user_message))
    return out


# -- dispatch -------------------------------------------------------------------------------


def format_messages(
    format_name: str,
    messages: Iterable[MessageLike],
    *,
    system_prompt: str | None = None,
    summary: str | None = None,
    user_message: str | None = None,
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
        user_message: sent last, when given.

    Returns:
        The keyword arguments.

    Raises:
        ValidationError: ``format_name`` is not one of :data:`FORMATS` (field ``format``).
    """
    parts: dict[str, str | None] = {
        "system_prompt": system_prompt,
        "summary": summary,
        "user_message": user_message,
    }
    if format_name == "openai-chat":
        return {"messages": to_openai_chat_messages(messages, **parts)}
    if format_name == "openai-responses":
        return {"input": to_openai_responses_input(messages, **parts)}
    if format_name == "anthropic":
        return to_anthropic(messages, **parts)
    if format_name == "plain":
        return {"messages": to_plain(messages, **parts)}
    raise ValidationError("format", f"must be one of {list(FORMATS)}; got {format_name!r}")


# -- the way back ---------------------------------------------------------------------------


def _data(value: Any) -> Any:
    """SDK objects (pydantic models) as plain data; plain data as is."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return value


def _items(value: Any, field: str) -> list[Any]:
    value = _data(value)
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_data(v) for v in value]
    raise ValidationError(field, f"must be a message or a list of them, not {type(value).__name__}")


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    value = _data(value)
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"must be an object, not {type(value).__name__}")
    return value


def _text(value: Any, field: str, kinds: Mapping[str, str]) -> str | None:
    """Text of a content value: a string, or the text of the parts whose type is in ``kinds``
    (type -> key holding the text), joined."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, Sequence):
        raise ValidationError(field, f"must be a string or a list of parts, not {value!r}")
    texts: list[str] = []
    for i, part in enumerate(value):
        part = _mapping(part, f"{field}[{i}]")
        key = kinds.get(str(part.get("type")))
        if key is not None and isinstance(part.get(key), str):
            texts.append(part[key])
    return "".join(texts)


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {type(value).__name__}")
    return value


def _role(value: Any, field: str) -> Role:
    if value == "developer":  # OpenAI's newer name for system instructions
        return "system"
    if value in ("system", "user", "assistant", "tool"):
        role: Role = value
        return role
    raise ValidationError(field, f"must be system, developer, user, assistant or tool: {value!r}")


def _assistant(texts: list[str], calls: list[ToolCall]) -> NewMessage:
    content = "".join(texts)
    # A stored message needs content unless it carries calls.
    return NewMessage(
        role="assistant",
        content=content or (None if calls else ""),
        tool_calls=list(calls) or None,  # a copy: callers reuse their list
    )


_CHAT_TEXT = {"text": "text", "refusal": "refusal"}


def from_openai_chat(data: Any) -> list[NewMessage]:
    """OpenAI Chat Completions messages as messages to append.

    ```python
    completion = client.chat.completions.create(model="gpt-4o", messages=messages)
    new = from_openai_chat(completion.choices[0].message)
    ```

    Args:
        data: a ``ChatCompletion`` (its first choice is used), one message, or a list of
            messages (e.g. the assistant message and the ``tool`` results the agent added),
            as dicts or SDK objects. A refusal is stored as the assistant's text.

    Returns:
        One :class:`~convodb.NewMessage` per message, in order; tool results carry the
        ``tool_name`` of their call when the call is in ``data``.

    Raises:
        ValidationError: ``data`` is not shaped like Chat Completions messages.
    """
    data = _data(data)
    if isinstance(data, Mapping) and "choices" in data:
        choices = data["choices"]
        if not choices:
            raise ValidationError("choices", "is empty: the completion has no message")
        data = _mapping(choices[0], "choices[0]").get("message")
    names: dict[str, str] = {}
    out: list[NewMessage] = []
    for i, item in enumerate(_items(data, "messages")):
        where = f"messages[{i}]"
        message = _mapping(item, where)
        role = _role(message.get("role"), f"{where}.role")
        text = _text(message.get("content"), f"{where}.content", _CHAT_TEXT)
        if role == "tool":
            call_id = _string(message.get("tool_call_id"), f"{where}.tool_call_id")
            out.append(
                NewMessage(
                    role="tool",
                    content=text or "",
                    tool_call_id=call_id,
                    tool_name=names.get(call_id),
                )
            )
        elif role == "assistant":
            calls = []
            for j, raw in enumerate(message.get("tool_calls") or ()):
                call = _mapping(raw, f"{where}.tool_calls[{j}]")
                function = _mapping(call.get("function"), f"{where}.tool_calls[{j}].function")
                calls.append(
                    ToolCall(
                        id=_string(call.get("id"), f"{where}.tool_calls[{j}].id"),
                        name=_string(function.get("name"), f"{where}.tool_calls[{j}].name"),
                        arguments=str(function.get("arguments") or ""),
                    )
                )
                names[calls[-1].id] = calls[-1].name
            if text is None and isinstance(message.get("refusal"), str):
                text = message["refusal"]
            out.append(_assistant([text or ""], calls))
        else:
            out.append(NewMessage(role=role, content=text or ""))
    return out


_RESPONSES_TEXT = {"output_text": "text", "input_text": "text", "refusal": "refusal"}


def from_openai_responses(data: Any) -> list[NewMessage]:
    """OpenAI Responses API output items as messages to append.

    Consecutive assistant ``message`` and ``function_call`` items become one assistant message
    carrying the calls; ``function_call_output`` items (the results an agent adds) become tool
    messages. ``reasoning`` items and provider-hosted tool calls are skipped.

    Args:
        data: a ``Response`` (its ``output`` is used) or a list of items, as dicts or SDK
            objects.

    Returns:
        The messages, in order.

    Raises:
        ValidationError: ``data`` is not shaped like Responses API items.
    """
    data = _data(data)
    if isinstance(data, Mapping) and "output" in data:
        data = data["output"]
    names: dict[str, str] = {}
    out: list[NewMessage] = []
    texts: list[str] = []
    calls: list[ToolCall] = []

    def flush() -> None:
        if texts or calls:
            out.append(_assistant(texts, calls))
        texts.clear()
        calls.clear()

    for i, item in enumerate(_items(data, "output")):
        where = f"output[{i}]"
        entry = _mapping(item, where)
        kind = entry.get("type", "message")
        if kind == "message":
            role = _role(entry.get("role"), f"{where}.role")
            text = _text(entry.get("content"), f"{where}.content", _RESPONSES_TEXT) or ""
            if role == "assistant":
                if calls:  # text after calls starts a new assistant message
                    flush()
                texts.append(text)
            else:
                flush()
                out.append(NewMessage(role=role, content=text))
        elif kind == "function_call":
            call = ToolCall(
                id=_string(entry.get("call_id"), f"{where}.call_id"),
                name=_string(entry.get("name"), f"{where}.name"),
                arguments=str(entry.get("arguments") or ""),
            )
            names[call.id] = call.name
            calls.append(call)
        elif kind == "function_call_output":
            flush()
            call_id = _string(entry.get("call_id"), f"{where}.call_id")
            output = _text(entry.get("output"), f"{where}.output", _RESPONSES_TEXT) or ""
            out.append(
                NewMessage(
                    role="tool", content=output, tool_call_id=call_id, tool_name=names.get(call_id)
                )
            )
    flush()
    return out


def _unwrap_input(value: Any) -> str:
    if isinstance(value, Mapping) and set(value) == {RAW_ARGUMENTS_KEY}:
        raw = value[RAW_ARGUMENTS_KEY]
        if isinstance(raw, str):
            return raw
    return json.dumps(value, ensure_ascii=False)


_ANTHROPIC_TEXT = {"text": "text"}


def from_anthropic(data: Any) -> list[NewMessage]:
    """Anthropic Messages turns as messages to append.

    An assistant turn (e.g. the API's response) becomes one assistant message: its text blocks
    joined, its ``tool_use`` blocks as calls (``input`` as JSON text). A user turn becomes one
    tool message per ``tool_result`` block (``metadata={"is_error": True}`` when flagged),
    followed by a user message with its text, if any. Thinking blocks are skipped.

    Args:
        data: one turn — a ``Message`` response or a ``MessageParam`` — or a list of turns,
            as dicts or SDK objects.

    Returns:
        The messages, in order; tool results carry the ``tool_name`` of their call when the
        call is in ``data``.

    Raises:
        ValidationError: ``data`` is not shaped like Anthropic turns.
    """
    names: dict[str, str] = {}
    out: list[NewMessage] = []
    for i, item in enumerate(_items(data, "messages")):
        where = f"messages[{i}]"
        turn = _mapping(item, where)
        role = turn.get("role")
        content = turn.get("content")
        if role not in ("user", "assistant"):
            raise ValidationError(f"{where}.role", f"must be user or assistant: {role!r}")
        if isinstance(content, str):
            out.append(NewMessage(role=role, content=content))
            continue
        if not isinstance(content, Sequence):
            raise ValidationError(f"{where}.content", "must be a string or a list of blocks")
        texts: list[str] = []
        calls: list[ToolCall] = []
        for j, raw in enumerate(content):
            block = _mapping(raw, f"{where}.content[{j}]")
            kind = block.get("type")
            if kind == "text":
                texts.append(_string(block.get("text"), f"{where}.content[{j}].text"))
            elif kind == "tool_use" and role == "assistant":
                call = ToolCall(
                    id=_string(block.get("id"), f"{where}.content[{j}].id"),
                    name=_string(block.get("name"), f"{where}.content[{j}].name"),
                    arguments=_unwrap_input(block.get("input", {})),
                )
                names[call.id] = call.name
                calls.append(call)
            elif kind == "tool_result" and role == "user":
                call_id = _string(block.get("tool_use_id"), f"{where}.content[{j}].tool_use_id")
                text = _text(block.get("content"), f"{where}.content[{j}]", _ANTHROPIC_TEXT)
                out.append(
                    NewMessage(
                        role="tool",
                        content=text or "",
                        tool_call_id=call_id,
                        tool_name=names.get(call_id),
                        metadata={"is_error": True} if block.get("is_error") else None,
                    )
                )
        if role == "assistant":
            out.append(_assistant(texts, calls))
        elif texts:
            out.append(NewMessage(role="user", content="".join(texts)))
    return out


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
