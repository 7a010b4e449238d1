"""Conversation ids for the frameworks' own names of a conversation.

A session id (Agents SDK), thread id (LangGraph) or key (LlamaIndex) is any string its user
picks, and it names a conversation *of that user*: two users' ``"default"`` sessions are two
conversations. convodb's conversation ids are one global namespace of 1-64 characters, so an
adapter derives the id from the user and the name with a hash, and keeps the name itself in the
conversation's metadata, under the adapter's own key.
"""

from __future__ import annotations

import hashlib

__all__ = ["conversation_id_for"]


def conversation_id_for(namespace: str, user_id: str, name: str) -> str:
    """The conversation id of the user's conversation ``name`` in an adapter's ``namespace``.

    ``<namespace>-<40 hex digits of SHA-256 over namespace, user and name>``: the same
    arguments always give the same id, and different ones never collide in practice (160
    bits). The parts are length-prefixed, so no choice of strings can make two triples hash
    alike by shifting a separator.

    Args:
        namespace: the adapter's prefix, letters, digits, ``.`` and ``_``, e.g. ``"oa"``.
        user_id: the owner.
        name: the framework's name for the conversation.
    """
    digest = hashlib.sha256()
    for value in (namespace, user_id, name):
        encoded = value.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return f"{namespace}-{digest.hexdigest()[:40]}"
