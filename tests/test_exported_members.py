"""The public surface is pinned: a change to it is a deliberate change to this list."""

from __future__ import annotations

import subprocess
import sys

import convodb


def test_exported_members() -> None:
    assert convodb.__all__ == [
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
    for name in convodb.__all__:
        assert getattr(convodb, name) is not None


def _run_without(blocked: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where importing ``blocked`` fails."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, check=False
    )


def test_import_works_with_no_extra_installed() -> None:
    result = _run_without(["asyncpg"], "import convodb; print(len(convodb.__all__))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(len(convodb.__all__))


def test_missing_driver_names_the_extra_to_install() -> None:
    result = _run_without(
        ["asyncpg"],
        "import convodb\n"
        "try:\n"
        "    convodb.Database('postgresql://u@h/db')\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc.extra, exc)\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("MissingDependencyError postgres ")
    assert "pip install 'convodb[postgres]'" in result.stdout
