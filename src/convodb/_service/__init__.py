"""``ConversationService``: the one home of the store's rules.

- **Ownership** is part of every statement that reads or writes a conversation's rows
  (``WHERE id = :cid AND user_id = :uid``, or an ``EXISTS`` on it in the same statement). A
  conversation of another user is indistinguishable from a missing one.
- **Order** is ``seq``, assigned from ``conversations.last_seq`` by the append's first statement,
  ``UPDATE ... SET last_seq = last_seq + n`` (with ``RETURNING``, or ``LAST_INSERT_ID`` on
  MariaDB/MySQL: see ``convodb.storage``). That row is the lock: a
  concurrent append to the same conversation waits for this one to commit, so ``seq`` values
  are gap-free as appended, never repeat (``remove_messages`` leaves gaps; it never lowers
  ``last_seq``), and commit in order. A reader that has seen ``seq`` k will never
  later find a message below k appear.
- **A batch append is one transaction**: everything is validated before the first statement;
  ``updated_at`` moves in the same transaction; nothing is read back (the service already
  knows every value it wrote).
- **Idempotency**: a message may carry a ``key``; appending a key that the conversation already
  holds stores nothing and returns the stored message.

The methods live in one module per concern (``_conversations``, ``_messages``, ``_removal``,
``_windows``: agent input and summaries), on a shared base (``_base``: the session,
transactions, the lock and ownership-checked reads). The hot path is SQLAlchemy Core on the
tables and returns slotted dataclasses (see ``convodb._records``). Every write method is one
transaction: with ``commit=True`` (the default, as in the seed) the service commits it; with
``commit=False`` it joins the caller's transaction and the caller commits or rolls back.
"""

from __future__ import annotations

from ._admin import AdminService, ErasureReport, PurgeReport, StoreStats, TableStats
from ._base import Order
from ._conversations import ConversationMethods
from ._import import ImportConflict, ImportReport
from ._messages import MessageMethods
from ._removal import RemovalMethods
from ._windows import Summarizer, WindowMethods

__all__ = [
    "AdminService",
    "ConversationService",
    "ErasureReport",
    "ImportConflict",
    "ImportReport",
    "Order",
    "PurgeReport",
    "StoreStats",
    "Summarizer",
    "TableStats",
]


class ConversationService(ConversationMethods, MessageMethods, RemovalMethods, WindowMethods):
    """Conversations and their messages, for one session.

    ```python
    async with db.session() as session:
        service = ConversationService(session)
        conversation = await service.get_or_create_conversation(None, user_id="u1")
        await service.save_message(conversation.id, "user", "Hi!", user_id="u1")
        history = await service.get_conversation_history(conversation.id, "u1", limit=50)
    ```

    Args:
        session: an ``AsyncSession`` on a database with convodb's tables.
        limits: input limits; the defaults suit a public chat product.
        commit: commit each write method's transaction (the default, as in the seed). Pass
            ``False`` to run the writes inside your own transaction; then roll it back if a
            write raises.
        token_counter: counts each message's tokens once, when it is stored, for token-budget
            windows; :func:`convodb.default_counter` by default.
        api_key_id: the id of an API key (``convodb._keys``, ``api_keys`` table) the calls
            are made under, by a server that verified its secret before and remembers it.
            Every call then also checks, at its start, that the key is not revoked or deleted
            and raises :class:`~convodb.ApiKeyRevokedError` if it is, having done nothing.
            The hot calls (appends, history reads, agent input) check it in their first
            statement, the others in a statement of their own. The database needs the
            ``api_keys`` table (``create_all(api_keys=True)``).
    """
