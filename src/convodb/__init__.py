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
``convodb.errors``, ``convodb.formats`` (every model-API shape), ``convodb.history``
(windowing) and ``convodb.tokens`` (token counters), and the optional ``convodb.server`` and
``convodb.cli``.
"""

from __future__ import annotations

from ._db import DEFAULT_DATABASE_URL, Database, get_db_session, set_default_database
from ._keys import ApiKey, ApiKeyService, CreatedApiKey, StoredApiKey
from ._models import ROLES, Attachment, Conversation, Message, Summary
from ._parts import (
    AudioPart,
    FilePart,
    ImagePart,
    Part,
    ProviderItemPart,
    ReasoningPart,
    RedactedThinkingPart,
    TextPart,
    ThinkingPart,
)
from ._records import (
    NewMessage,
    Page,
    Role,
    StoredAttachment,
    StoredConversation,
    StoredMessage,
    StoredSummary,
    ToolCall,
)
from ._service import (
    AdminService,
    ConversationService,
    ErasureReport,
    ImportConflict,
    ImportReport,
    PurgeReport,
    StoreStats,
    TableStats,
)
from ._validation import CONVERSATION_ID_PATTERN, Limits
from .errors import (
    ApiKeyRevokedError,
    ConflictError,
    ContextBudgetError,
    ConversationExistsError,
    ConversationNotFoundError,
    ConvodbError,
    IdempotencyKeyReuseError,
    LimitExceededError,
    MessageNotFoundError,
    MissingDependencyError,
    SchemaVersionError,
    StoreBusyError,
    StoreUnavailableError,
    ValidationError,
)
from .formats import FORMATS, build_message_array, format_messages, message_to_dict, parse_response
from .history import AgentInput, Window, WindowBuilder, select_window
from .tokens import TokenCounter, default_counter

__all__ = [
    "CONVERSATION_ID_PATTERN",
    "DEFAULT_DATABASE_URL",
    "FORMATS",
    "ROLES",
    "AdminService",
    "AgentInput",
    "ApiKey",
    "ApiKeyRevokedError",
    "ApiKeyService",
    "Attachment",
    "AudioPart",
    "ConflictError",
    "ContextBudgetError",
    "Conversation",
    "ConversationExistsError",
    "ConversationNotFoundError",
    "ConversationService",
    "ConvodbError",
    "CreatedApiKey",
    "Database",
    "ErasureReport",
    "FilePart",
    "IdempotencyKeyReuseError",
    "ImagePart",
    "ImportConflict",
    "ImportReport",
    "LimitExceededError",
    "Limits",
    "Message",
    "MessageNotFoundError",
    "MissingDependencyError",
    "NewMessage",
    "Page",
    "Part",
    "ProviderItemPart",
    "PurgeReport",
    "ReasoningPart",
    "RedactedThinkingPart",
    "Role",
    "SchemaVersionError",
    "StoreBusyError",
    "StoreStats",
    "StoreUnavailableError",
    "StoredApiKey",
    "StoredAttachment",
    "StoredConversation",
    "StoredMessage",
    "StoredSummary",
    "Summary",
    "TableStats",
    "TextPart",
    "ThinkingPart",
    "TokenCounter",
    "ToolCall",
    "ValidationError",
    "Window",
    "WindowBuilder",
    "build_message_array",
    "default_counter",
    "format_messages",
    "get_db_session",
    "message_to_dict",
    "parse_response",
    "select_window",
    "set_default_database",
]
