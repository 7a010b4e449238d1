"""LlamaIndex's chat store on convodb: :class:`ConvodbChatStore`, for ``Memory(chat_store=...)``.

```python
from llama_index.core.memory import Memory
from convodb import Database
from convodb.integrations.llama_index import ConvodbChatStore

db = Database("sqlite:///chat.db")  # or "postgresql://…", "mariadb://…"
memory = Memory.from_defaults(
    session_id="support-42", chat_store=ConvodbChatStore(database=db, user_id="alice")
)
```

It is an ``AsyncDBChatStore``, the interface LlamaIndex's ``Memory`` stores its FIFO queue
through, and behaves as LlamaIndex's own ``SQLAlchemyChatStore`` on the same calls, with the
differences listed below.

**A key is a conversation of the store's user.** Each key of ``user_id`` is two convodb
conversations, ``conversation_id(key)`` for the active messages and ``conversation_id(key,
MessageStatus.ARCHIVED)`` for the archived ones; both carry ``{"llama_index": {"key": …,
"status": …}}`` in their metadata. Another user's store never reads or writes them, and
``get_keys`` lists this user's keys only. The messages are ordinary convodb messages: history,
agent-input windows, export and the HTTP API read them like any others.

**Order.** Active messages are in ``seq`` order, which is the order they were added. Archiving
moves the oldest active messages to the archived conversation (removal and append in one
transaction); each keeps its active ``seq`` in its metadata (``"at"``), and a message added
as archived directly keeps the active conversation's ``last_seq`` at the time (``"after"``).
Reads of archived messages, and of both statuses together, are ordered by those, so they
come back in the order the messages were added, as ``SQLAlchemyChatStore`` orders them by
their timestamps, but without depending on clocks (a message appended to the archived
conversation through convodb's API comes right after the archived message before it). Until
messages are added as archived directly, that is the archived conversation's ``seq`` order
followed by the active one's, and a page (``offset``, ``limit``) is read as a page; after,
and until the archived messages are deleted, a read of archived messages reads them all.

**Consistency.** Every write that changes the archived conversation (or both) locks the
active one first (creating it when missing), and reads of archived messages, of both
statuses, and ``count_messages(key, None)`` take the same lock: they see the key as it was
before a concurrent ``set_messages``, archiving or deletion, or after it, never a mix. Reads
of active messages take no lock.

**Messages.** A ``ChatMessage`` is stored as a convodb message that convodb's formats can send
to a model: roles ``developer``, ``function``, ``chatbot`` and ``model`` are stored as
``system``, ``tool``, ``assistant`` and ``assistant``; text, image, document and audio blocks
become content parts where convodb takes them (a media type it stores, base64 or an http(s)
URL); tool-call blocks and OpenAI-shaped ``additional_kwargs["tool_calls"]`` become
``tool_calls``; a tool message's ``additional_kwargs`` ``tool_call_id`` and ``name`` become
its ``tool_call_id`` and ``tool_name``. A tool or function message without a ``tool_call_id``
is stored as a ``user`` message, since a convodb tool message must answer a call. What else
is needed to give the message back exactly (``ChatMessage.model_validate`` of what is read
equals the original, as for ``SQLAlchemyChatStore``) is kept in the message's metadata under
``"llama_index"``: the original role, blocks convodb has no part for (thinking, video, cache
points, citations, ...), the rest of ``additional_kwargs``. Every message is checked to make
that round trip before it is stored; one that would not is kept whole in the metadata.

**Differences from SQLAlchemyChatStore** (each on purpose):

- ``delete_message(key, idx)``: ``idx`` is not a table-wide row id. A positive ``idx`` is the
  ``seq`` of a message in the key's active conversation, a negative one minus the ``seq`` of
  an archived message (as ``list_messages`` on those conversations shows them).
- ``set_messages``, ``archive_oldest_messages``, ``delete_oldest_messages`` and
  ``delete_messages(key)`` are atomic, and concurrent calls remove different messages.
- ``add_messages(key, [])`` stores nothing (``SQLAlchemyChatStore`` raises an
  ``IntegrityError``).
- Input convodb does not store raises its :class:`~convodb.ValidationError` naming the
  field, before anything is stored: text with NUL characters or lone surrogates, an image
  whose bytes are not the media type it claims, metadata over ``Limits.max_metadata_bytes``
  (blocks without a convodb part are kept there, so a large one of those does not fit).
  Negative ``limit``, ``offset`` or ``n`` are rejected too, where SQLite's ``LIMIT -1``
  would mean "all", and so are ``additional_kwargs`` pydantic cannot serialize (naming the
  message) and a key convodb cannot keep in metadata (NUL, lone surrogates, too long: naming
  ``key``, for reads as well as writes).
- A message whose metadata under ``"llama_index"`` was not written by this store (e.g. set
  through convodb's API) is read as any message written through convodb's API.
- A key whose messages were all deleted keeps its two (empty) conversations; ``get_keys``
  leaves it out, as ``SQLAlchemyChatStore`` does.
"""

from __future__ import annotations

from ...errors import MissingDependencyError

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed where tests run
    raise MissingDependencyError(exc.name or "llama-index-core", "llama-index") from exc

from ._mapping import METADATA_KEY
from ._store import ConvodbChatStore

__all__ = ["METADATA_KEY", "ConvodbChatStore"]
