"""The one hierarchy of errors convodb raises.

Every error a caller can act on derives from :class:`ConvodbError`. Driver errors never escape
the service: they are translated once, in ``convodb.storage``, by error code (SQLSTATE, SQLite
error name, MySQL errno).

```
ConvodbError
├── ValidationError (ValueError)          bad input: names the field and the limit; nothing stored
│   ├── LimitExceededError                a size / count limit was exceeded
│   └── ContextBudgetError                system prompt, summary and new message alone
│                                         exceed the token budget of a history window
├── ConversationNotFoundError (LookupError, PermissionError)
│                                         missing, or owned by another user: indistinguishable
├── MessageNotFoundError (LookupError)    the user's conversation has no message at that seq
├── ConflictError                         the request contradicts what is stored
│   ├── ConversationExistsError           create with an id that is taken
│   └── IdempotencyKeyReuseError          a message key reused for a different message
├── ApiKeyRevokedError                     the API key a service acts under is revoked or gone
├── StoreBusyError                        transient contention (SQLite busy, deadlock): retry
├── StoreUnavailableError                 the database cannot be reached or timed out
├── SchemaVersionError                    the database's schema is not the one this convodb
│                                         needs (behind: run `convodb db upgrade`; or newer)
└── MissingDependencyError (ImportError)  an optional extra is not installed
```
"""

from __future__ import annotations

__all__ = [
    "ApiKeyRevokedError",
    "ConflictError",
    "ContextBudgetError",
    "ConversationExistsError",
    "ConversationNotFoundError",
    "ConvodbError",
    "IdempotencyKeyReuseError",
    "LimitExceededError",
    "MessageNotFoundError",
    "MissingDependencyError",
    "SchemaVersionError",
    "StoreBusyError",
    "StoreUnavailableError",
    "ValidationError",
]


class ConvodbError(Exception):
    """Base class of every error convodb raises on purpose."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or type(self).__name__).strip())


class ValidationError(ConvodbError, ValueError):
    """The input is invalid; nothing was stored.

    Attributes:
        field: where the bad value is, e.g. ``"messages[2].content"``.
        limit: the limit that was broken, when the error is about a limit.
    """

    def __init__(self, field: str, message: str, *, limit: int | None = None) -> None:
        self.field = field
        self.limit = limit
        super().__init__(f"{field}: {message}")


class LimitExceededError(ValidationError):
    """The input is larger than a configured limit; nothing was stored."""


class ConversationNotFoundError(ConvodbError, LookupError, PermissionError):
    """Conversation not found.

    Raised alike for a conversation that does not exist and for one owned by another user, so
    that an id never reveals whether someone else's conversation exists. It is a ``LookupError``
    and, for code written against the seed (which raised ``PermissionError``), a
    ``PermissionError`` too.
    """

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"Conversation not found: {conversation_id!r}")


class MessageNotFoundError(ConvodbError, LookupError):
    """Message not found.

    The conversation is the caller's, but holds no message with this ``seq``: its messages are
    numbered 1 to its ``last_seq``, and a removed message leaves its seq unused. (A
    conversation that is missing or another user's raises :class:`ConversationNotFoundError`
    instead, whatever the ``seq``.)

    Attributes:
        conversation_id: the conversation.
        seq: the ``seq`` asked for.
    """

    def __init__(self, conversation_id: str, seq: int) -> None:
        self.conversation_id = conversation_id
        self.seq = seq
        super().__init__(
            f"Message not found: conversation {conversation_id!r} has no message with seq {seq}; "
            "its messages are numbered 1 to its last_seq, with gaps where messages were removed"
        )


class ConflictError(ConvodbError):
    """The request conflicts with what is stored."""


class ConversationExistsError(ConflictError):
    """A conversation with this id already exists; choose another id or let convodb make one."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(
            f"Conversation id already taken: {conversation_id!r}; omit the id to get a fresh one"
        )


class IdempotencyKeyReuseError(ConflictError):
    """A message key was reused for a message with different content.

    A retry must send the same message under the same key; a new message needs a new key.
    """

    def __init__(self, key: str, *, batch: bool = False) -> None:
        self.key = key
        if batch:
            message = (
                f"Idempotency key {key!r} was used for a different batch; a retry must resend "
                "the same messages, a new batch needs a new key"
            )
        else:
            message = (
                f"Message key {key!r} is already stored with different content; "
                "a retry must resend the same message, a new message needs a new key"
            )
        super().__init__(message)


class ApiKeyRevokedError(ConvodbError):
    """The API key the service acts under (its ``api_key_id``) is revoked or deleted.

    Raised before anything of the call was stored or returned: the key is checked by the
    call's first statement, or by a statement of its own before the others.

    Attributes:
        key_id: the key's id.
    """

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"API key {key_id!r} is revoked or deleted")


class StoreBusyError(ConvodbError):
    """The database is busy with a conflicting transaction; retry the operation.

    Nothing of the failed operation was stored.
    """


class StoreUnavailableError(ConvodbError):
    """The database cannot be reached, or stopped answering in time.

    A write that fails so may still have been stored (the connection can drop after the
    database committed): retry it with an idempotency key (``key``, ``idempotency_key``) to
    store it exactly once.
    """


class SchemaVersionError(ConvodbError):
    """The database's schema is not the one this convodb needs; run `convodb db upgrade`.

    convodb never runs on a mismatched schema. Behind the code's (made by an older convodb,
    or empty): migrate it with ``convodb db upgrade`` or ``await Database.upgrade()`` (an
    embedded SQLite database is upgraded on first use instead). At a revision the code does
    not know: a newer convodb migrated it, and this one must be upgraded to use it.

    Attributes:
        current: the database's revision; ``None`` when it has none (empty, or made by
            convodb 0.1.0, which had no migrations).
        head: the revision this convodb needs.
    """

    def __init__(self, message: str | None = None, *, current: str | None, head: str) -> None:
        self.current = current
        self.head = head
        super().__init__(message)


class MissingDependencyError(ConvodbError, ImportError):
    """An optional dependency is missing.

    Attributes:
        extra: the pip extra that installs it, e.g. ``"postgres"``.
    """

    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{package!r} is not installed; install it with: pip install 'convodb[{extra}]'"
        )


class ContextBudgetError(ValidationError):
    """The fixed part of a prompt alone exceeds the token budget; no window fits.

    The system prompt, the pinned summary and the new user message are always sent, so a
    ``max_tokens`` smaller than their sum cannot be met by dropping history. Raise the budget to
    at least :attr:`required` or shorten those parts.

    Attributes:
        required: the smallest ``max_tokens`` that fits the fixed part (with no history).
        limit: the ``max_tokens`` that was asked for.
    """

    def __init__(self, *, required: int, max_tokens: int) -> None:
        self.required = required
        super().__init__(
            "max_tokens",
            f"is {max_tokens}, but the system prompt, summary and new user message alone take "
            f"{required} tokens; raise max_tokens to at least {required} or shorten them",
            limit=max_tokens,
        )
