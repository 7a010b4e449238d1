"""Anthropic Messages: history to ``system`` and ``messages``, and turns back."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._records import NewMessage, ToolCall
from ..errors import ValidationError
from . import _parse as p
from ._common import MessageLike, arrange, tool_calls

ANTHROPIC_LEADING_USER_TEXT = "(earlier messages omitted)"
"""The user turn put before a history that starts with an assistant message, for Anthropic."""
RAW_ARGUMENTS_KEY = "_raw_arguments"
"""Anthropic ``tool_use`` input key holding arguments that are not a JSON object."""

_ANTHROPIC_ID = re.compile(r"[A-Za-z0-9_-]+")


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
        for c in tool_calls(message)
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
    arranged = arrange(messages)
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
    for i, item in enumerate(p.items(data, "messages")):
        where = f"messages[{i}]"
        turn = p.mapping(item, where)
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
            block = p.mapping(raw, f"{where}.content[{j}]")
            kind = block.get("type")
            if kind == "text":
                texts.append(p.string(block.get("text"), f"{where}.content[{j}].text"))
            elif kind == "tool_use" and role == "assistant":
                call = ToolCall(
                    id=p.string(block.get("id"), f"{where}.content[{j}].id"),
                    name=p.string(block.get("name"), f"{where}.content[{j}].name"),
                    arguments=_unwrap_input(block.get("input", {})),
                )
                names[call.id] = call.name
                calls.append(call)
            elif kind == "tool_result" and role == "user":
                call_id = p.string(block.get("tool_use_id"), f"{where}.content[{j}].tool_use_id")
                text = p.text(block.get("content"), f"{where}.content[{j}]", _ANTHROPIC_TEXT)
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
            out.append(p.assistant(texts, calls))
        elif texts:
            out.append(NewMessage(role="user", content="".join(texts)))
    return out
