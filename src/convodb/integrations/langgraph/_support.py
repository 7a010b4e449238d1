"""What ``ConvodbSaver``'s methods share: reading a config, the conversation's messages in
seq order, checkpoint manifests and metadata (de)serialization."""

from __future__ import annotations

import base64
import builtins
from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.serde.base import SerializerProtocol

from ..._models import NAMESPACE_LENGTH
from ..._records import StoredMessage
from ..._service import ConversationService
from ...errors import ValidationError
from ._messages import is_json

__all__ = [
    "PAGE",
    "address",
    "as_new",
    "check_length",
    "thread_config",
    "dump_metadata",
    "expand_ranges",
    "live_messages",
    "load_metadata",
    "seq_ranges",
]

_TYPED = "__langgraph_serde__"  # a metadata value JSON cannot hold, serialized by serde
PAGE = 1000


def address(config: RunnableConfig) -> tuple[str, str, str | None]:
    configurable = config.get("configurable") or {}
    thread_id = configurable.get("thread_id")
    if thread_id is None or thread_id == "":
        raise ValidationError("config.configurable.thread_id", "is required")
    ns = configurable.get("checkpoint_ns") or ""
    check_length("config.configurable.checkpoint_ns", ns, NAMESPACE_LENGTH)
    checkpoint_id = configurable.get("checkpoint_id") or None
    return str(thread_id), ns, checkpoint_id


def check_length(field: str, value: str, limit: int) -> None:
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise ValidationError(field, f"is {len(value)} characters; the saver stores up to {limit}")


def thread_config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
        }
    }


async def live_messages(
    service: ConversationService,
    cid: str,
    uid: str,
    *,
    after: int = 0,
    upto: int | None = None,
    with_data: bool = False,
) -> builtins.list[StoredMessage]:
    """The conversation's messages after seq ``after`` (up to seq ``upto``), oldest first."""
    found: builtins.list[StoredMessage] = []
    while True:
        page = await service.list_messages(
            cid, uid, limit=PAGE, after_seq=after, with_data=with_data
        )
        found.extend(page.items)
        if len(page.items) < PAGE or (upto is not None and page.items[-1].seq >= upto):
            break
        after = page.items[-1].seq
    return found if upto is None else [m for m in found if m.seq <= upto]


def as_new(message: StoredMessage) -> dict[str, Any]:
    return {
        "role": message.role,
        "content": message.content,
        "tool_calls": [c.to_dict() for c in message.tool_calls] if message.tool_calls else None,
        "tool_name": message.tool_name,
        "tool_call_id": message.tool_call_id,
        "metadata": message.metadata,
        "key": message.key,
    }


def seq_ranges(seqs: Sequence[int]) -> builtins.list[builtins.list[int]]:
    """Ascending seqs as inclusive ``[first, last]`` runs."""
    ranges: builtins.list[builtins.list[int]] = []
    for seq in seqs:
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return ranges


def expand_ranges(manifest: dict[str, Any]) -> builtins.list[int]:
    return [seq for first, last in manifest.get("seqs", ()) for seq in range(first, last + 1)]


def dump_metadata(serde: SerializerProtocol, metadata: Any) -> dict[str, Any]:
    """The metadata as JSON; a value JSON cannot hold exactly is kept serialized."""
    dumped: dict[str, Any] = {}
    for key, value in dict(metadata).items():
        if not is_json(value):
            type_, data = serde.dumps_typed(value)
            value = {_TYPED: [type_, base64.b64encode(data).decode("ascii")]}
        dumped[str(key)] = value
    return dumped


def load_metadata(serde: SerializerProtocol, stored: dict[str, Any]) -> dict[str, Any]:
    loaded = {}
    for key, value in stored.items():
        if isinstance(value, dict) and set(value) == {_TYPED}:
            type_, data = value[_TYPED]
            value = serde.loads_typed((type_, base64.b64decode(data)))
        loaded[key] = value
    return loaded
