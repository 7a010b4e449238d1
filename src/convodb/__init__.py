"""convodb: conversation storage for LLM agents on stateless workers.

```python
from convodb import ConversationService, Database

async with Database("sqlite:///chat.db") as db:
    await db.create_all()
    async with db.session() as session:
        service = ConversationService(session)
        conversation = await service.get_or_create_conversation(None, user_id="alice")
        await service.save_message(conversation.id, "user", "Hi!", user_id="alice")
```

Everything public is importable from here; the submodules are private, except
``convodb.errors`` and ``convodb.formats``.
"""

from __future__ import annotations

from ._db import DEFAULT_DATABASE_URL, Database, get_db_session, set_default_database
from ._keys import ApiKey, ApiKeyService, CreatedApiKey, StoredApiKey
from ._models import ROLES, Conversation, Message
from ._records import NewMessage, Page, Role, StoredConversation, StoredMessage, ToolCall
from ._service import ConversationService
from ._validation import Limits
from .errors import (
    ConflictError,
    ConversationExistsError,
    ConversationNotFoundError,
    ConvodbError,
    IdempotencyKeyReuseError,
    LimitExceededError,
    MissingDependencyError,
    StoreBusyError,
    StoreUnavailableError,
    ValidationError,
)
from .formats import build_message_array, message_to_dict

__all__ = [
    "DEFAULT_DATABASE_URL",
    "ROLES",
    "ApiKey",
    "ApiKeyService",
    "ConflictError",
    "Conversation",
    "ConversationExistsError",
    "ConversationNotFoundError",
    "ConversationService",
    "ConvodbError",
    "CreatedApiKey",
    "Database",
    "IdempotencyKeyReuseError",
    "LimitExceededError",
    "Limits",
    "Message",
    "MissingDependencyError",
    "NewMessage",
    "Page",
    "Role",
    "StoreBusyError",
    "StoreUnavailableError",
    "StoredApiKey",
    "StoredConversation",
    "StoredMessage",
    "ToolCall",
    "ValidationError",
    "build_message_array",
    "get_db_session",
    "message_to_dict",
    "set_default_database",
]
