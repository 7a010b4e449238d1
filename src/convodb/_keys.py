"""API keys for the HTTP service: created and revoked by an operator, verified per request.

A key is shown once, when it is created, as ``cdb_<key id>_<secret>``; the store keeps only
the SHA-256 digest of the secret. The secret is 32 random bytes, so a fast digest is enough:
slow password hashes (bcrypt, scrypt) protect secrets people choose, which can be guessed, and
this one cannot. Verification looks the key up by its id (the primary key) and compares digests
with :func:`hmac.compare_digest`; an unknown id is compared against a dummy digest, so the
answer takes the same time whether the id exists or not.

A key is either bound to one user (every request it signs acts as that user) or is a service
key (``user_id`` is ``None``) for a trusted backend, which names the user on each request.

The ``api_keys`` table (``convodb._models.ApiKey``) is the HTTP service's, not the library's:
``Database.create_all()`` leaves it out and ``create_all(api_keys=True)`` adds it, as
``convodb serve`` and ``convodb keys`` do. It is small and read by its id only, and shares no
key with the conversation tables: on a Citus cluster it is a reference table, replicated to
every node.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ._cursor import decode_cursor, encode_cursor
from ._db import read_transaction, write_transaction
from ._ids import new_id
from ._models import API_KEY_ID_LENGTH, API_KEY_NAME_LENGTH, ApiKey, api_keys
from ._records import Page
from ._types import utcnow
from ._validation import Limits, check_limit, check_text, check_user_id
from .storage import backend_for

__all__ = [
    "ApiKey",
    "ApiKeyService",
    "CreatedApiKey",
    "StoredApiKey",
    "api_keys",
    "parse_token",
    "secret_digest",
]

TOKEN_PREFIX = "cdb_"
"""Every convodb API key starts with this, so a bearer token is told from a JWT at a glance."""
# Compared against when the key id is unknown, so that a miss costs what a hit costs.
_DUMMY_DIGEST = hashlib.sha256(b"convodb: no such key").hexdigest()


_COLUMNS = (
    api_keys.c.id,
    api_keys.c.user_id,
    api_keys.c.name,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
)
# The per-request lookup, one module-level statement: the hot path compiles it once per
# dialect and, when the caller owns the transaction, runs it on the Database's own driver
# connections (one round trip in autocommit on PostgreSQL, one thread hop on SQLite).
_VERIFY = select(*_COLUMNS, api_keys.c.secret_hash).where(api_keys.c.id == bindparam("id"))


@dataclass(frozen=True, slots=True)
class StoredApiKey:
    """An API key as listed: everything but the secret."""

    id: str
    user_id: str | None
    """The bound user; ``None`` for a service key, which names the user per request."""
    name: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def is_service_key(self) -> bool:
        return self.user_id is None


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    """A new key and its token; the token is shown this once and cannot be recovered."""

    key: StoredApiKey
    token: str
    """``cdb_<key id>_<secret>``: send it as ``Authorization: Bearer <token>``."""


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed token, else ``None``."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or len(key_id) != API_KEY_ID_LENGTH or not secret or len(secret) > 256:
        return None
    return key_id, secret


class ApiKeyService:
    """Create, verify, list and revoke the HTTP service's API keys.

    ```python
    async with db.session() as session:
        keys = ApiKeyService(session)
        created = await keys.create("alice", name="support bot")
        print(created.token)  # shown once
        assert (await keys.verify(created.token)).user_id == "alice"
    ```

    Args:
        session: an ``AsyncSession`` on a database with convodb's tables.
        commit: commit each write (the default); ``False`` joins the caller's transaction.
    """

    def __init__(self, session: AsyncSession, *, commit: bool = True) -> None:
        self.session = session
        self._commit = commit

    async def create(self, user_id: str | None = None, *, name: str | None = None) -> CreatedApiKey:
        """A new key bound to ``user_id``, or a service key when ``user_id`` is ``None``.

        Raises:
            ValidationError: ``user_id`` or ``name`` is invalid.
        """
        uid = None if user_id is None else check_user_id(user_id)
        label = None if name is None else check_text("name", name, max_length=API_KEY_NAME_LENGTH)
        key_id = new_id().replace("-", "")
        secret = secrets.token_urlsafe(32)
        record = StoredApiKey(key_id, uid, label, utcnow(), None)
        values = {
            "id": key_id,
            "user_id": uid,
            "name": label,
            "secret_hash": secret_digest(secret),
            "created_at": record.created_at,
            "revoked_at": None,
        }
        async with self._write():
            await self.session.execute(api_keys.insert().values(values))
        return CreatedApiKey(record, f"{TOKEN_PREFIX}{key_id}_{secret}")

    async def verify(self, token: str) -> StoredApiKey | None:
        """The key a token belongs to, or ``None`` if it is malformed, unknown, wrong or revoked.

        Raises:
            StoreUnavailableError: the database cannot be reached.
        """
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        # Read on every call, never cached: a revoked key fails its very next request.
        async with self._read() as own:
            rows = await backend_for(self.session).rows(
                self.session, _VERIFY, {"id": key_id}, own=own
            )
        row = rows[0] if rows else None
        stored_digest = _DUMMY_DIGEST if row is None else row[-1]
        matches = hmac.compare_digest(secret_digest(secret), stored_digest)
        if row is None or not matches:
            return None
        key = StoredApiKey(*row[:-1])
        return None if key.revoked_at is not None else key

    async def revoke(self, key_id: str) -> StoredApiKey | None:
        """Revoke a key: it stops working at once. Revoking twice keeps the first time.

        Returns:
            The revoked key, or ``None`` if there is no key with this id.
        """
        statement = (
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        async with self._write():
            row = await backend_for(self.session).update_returning(
                self.session, statement, _COLUMNS, api_keys.c.id == key_id
            )
            if row is None:
                select_key = select(*_COLUMNS).where(api_keys.c.id == key_id)
                row = (await self.session.execute(select_key)).one_or_none()
        return None if row is None else StoredApiKey(*row)

    async def list_keys(
        self, *, limit: int = 50, cursor: str | None = None, include_revoked: bool = False
    ) -> Page[StoredApiKey]:
        """Keys, oldest first, one page at a time."""
        n = check_limit(limit, Limits())
        statement = select(*_COLUMNS)
        if not include_revoked:
            statement = statement.where(api_keys.c.revoked_at.is_(None))
        if cursor is not None:
            position = decode_cursor(cursor, "api-keys", {"t": datetime, "i": str})
            at = position["t"]
            statement = statement.where(
                or_(
                    api_keys.c.created_at > at,
                    and_(api_keys.c.created_at == at, api_keys.c.id > position["i"]),
                )
            )
        statement = statement.order_by(api_keys.c.created_at, api_keys.c.id).limit(n + 1)
        async with self._read():
            rows: Sequence[Any] = (await self.session.execute(statement)).all()
        items = [StoredApiKey(*row) for row in rows[:n]]
        next_cursor = None
        if len(rows) > n:
            last = items[-1]
            next_cursor = encode_cursor("api-keys", t=last.created_at, i=last.id)
        return Page(items=items, next_cursor=next_cursor)

    def _write(self) -> AbstractAsyncContextManager[None]:
        return write_transaction(self.session, commit=self._commit)

    def _read(self) -> AbstractAsyncContextManager[bool]:
        return read_transaction(self.session, commit=self._commit)
