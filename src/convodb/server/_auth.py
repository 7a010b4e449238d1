"""Who is asking: the user comes from the credential only, never from the body or the path.

``Authorization: Bearer <token>`` carries either a convodb API key (``cdb_...``) or a JWT:

- an API key bound to a user acts as that user; a service key acts as the user named in the
  ``X-Convodb-User`` header, which it must send;
- a JWT is verified with the configured key and algorithms only (``alg: none`` and
  algorithms of another key type are refused), must carry ``exp`` and ``sub``, and must match
  the configured ``iss`` and ``aud``; the user is ``sub``.

Without credentials the answer is 401, except in ``--dev`` mode, where a request from a
loopback client acts as the ``X-Convodb-User`` header's user, or ``dev``.

An API key's first request reads it from the database (:meth:`ApiKeyService.verify`). The
server then remembers the key's id, the digest of its secret and its user, which never change,
but not that it is live: later requests compare the secret with the remembered digest and
give the service the key's id (``ConversationService(api_key_id=...)``), whose statements
check that the key is not revoked or deleted as they do the work. A key revoked in any process
fails its next request (401), and a request costs the one round trip of its work.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

import jwt
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from convodb import ApiKeyService
from convodb._keys import parse_token, secret_digest

from ._problems import FORBIDDEN, Problem, revoked_key, unauthorized
from ._settings import USER_HEADER, Settings, is_loopback

__all__ = ["Authenticator", "Identity"]

_API_KEY_PREFIX = "cdb_"
_HMAC_ALGORITHMS = ["HS256"]
_PUBLIC_KEY_ALGORITHMS = ["RS256", "ES256"]
DEV_USER = "dev"


KNOWN_KEYS = 10_000
"""API keys an authenticator remembers; past that, the longest-known is forgotten first."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request acts as."""

    user: str
    api_key_id: str | None = None
    """An API key whose secret matched but whose liveness the work must still check (see the
    module's docstring); ``None`` when there is nothing left to check."""


@dataclass(frozen=True, slots=True)
class _KnownKey:
    digest: str
    user_id: str | None


@dataclass(frozen=True, slots=True)
class _JwtVerifier:
    key: Any  # str (HS256 secret), a PEM public key, or a PyJWKSet
    algorithms: list[str]
    issuer: str | None
    audience: str | None
    leeway: float

    @classmethod
    def from_settings(cls, settings: Settings) -> _JwtVerifier | None:
        key: Any
        if settings.jwt_secret is not None:
            key, algorithms = settings.jwt_secret, _HMAC_ALGORITHMS
        elif settings.jwt_public_key_file is not None:
            key, algorithms = settings.jwt_public_key_file.read_text(), _PUBLIC_KEY_ALGORITHMS
        elif settings.jwt_jwks_file is not None:
            document = json.loads(settings.jwt_jwks_file.read_text())
            key, algorithms = jwt.PyJWKSet.from_dict(document), _PUBLIC_KEY_ALGORITHMS
        else:
            return None
        return cls(key, algorithms, settings.jwt_issuer, settings.jwt_audience, settings.jwt_leeway)

    def user(self, token: str) -> str:
        key = self.key
        try:
            if isinstance(key, jwt.PyJWKSet):
                kid = jwt.get_unverified_header(token).get("kid")
                if not isinstance(kid, str):
                    raise unauthorized("token has no 'kid' header to pick a key from the JWKS")
                try:
                    key = key[kid]
                except KeyError:
                    raise unauthorized(f"token's key {kid!r} is not in the JWKS") from None
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise unauthorized(f"invalid token: {exc}") from None
        except jwt.PyJWTError as exc:  # e.g. InvalidKeyError: the token's alg does not fit the key
            raise unauthorized(f"invalid token: {type(exc).__name__}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise unauthorized("token's 'sub' claim must name the user")
        return subject


class Authenticator:
    """Turns a request's credentials into a user id, or raises a 401/403 problem."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jwt = _JwtVerifier.from_settings(settings)
        self._known: dict[str, _KnownKey] = {}

    def forget(self, key_id: str) -> None:
        """Stop remembering a key (it was found revoked): its next request reads it again."""
        self._known.pop(key_id, None)

    async def identify(self, request: Request, session: AsyncSession) -> Identity:
        """Who the request acts as, from its credentials only.

        Args:
            request: the request.
            session: the request's session, shared with the service it then calls.
        """
        authorization = request.headers.get("authorization")
        named_user = request.headers.get(USER_HEADER)
        if authorization is None:
            if self.settings.dev and request.client and is_loopback(request.client.host):
                return Identity(named_user or DEV_USER)
            raise unauthorized("send 'Authorization: Bearer <API key or JWT>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("the Authorization header must be 'Bearer <API key or JWT>'")
        if token.startswith(_API_KEY_PREFIX):
            return await self._api_key_identity(token, named_user, session)
        if self.jwt is None:
            raise unauthorized("this server does not accept JWTs; use an API key")
        user = self.jwt.user(token)
        if named_user is not None and named_user != user:
            raise Problem(FORBIDDEN, f"a JWT acts as its 'sub'; drop the {USER_HEADER} header")
        return Identity(user)

    async def _api_key_identity(
        self, token: str, named_user: str | None, session: AsyncSession
    ) -> Identity:
        if not self.settings.api_keys:
            raise unauthorized("this server does not accept API keys; use a JWT")
        parsed = parse_token(token)
        if parsed is None:
            raise revoked_key()
        key_id, secret = parsed
        digest = secret_digest(secret)
        known = self._known.get(key_id)
        if known is not None and hmac.compare_digest(digest, known.digest):
            return Identity(_acting_user(known.user_id, named_user), api_key_id=key_id)
        key = await ApiKeyService(session).verify(token)  # a wrong secret comes here too
        if key is None:
            raise revoked_key()
        user = _acting_user(key.user_id, named_user)
        if key.id == key_id and key_id not in self._known:
            if len(self._known) >= KNOWN_KEYS:
                del self._known[next(iter(self._known))]
            self._known[key_id] = _KnownKey(digest, key.user_id)
        return Identity(user)


def _acting_user(bound_user: str | None, named_user: str | None) -> str:
    """The user a request signed by a key bound to ``bound_user`` (``None``: a service key)
    acts as, given the user its header names."""
    if bound_user is None:
        if not named_user:
            raise unauthorized(f"a service key must name the user in the {USER_HEADER} header")
        return named_user
    if named_user is not None and named_user != bound_user:
        raise Problem(
            FORBIDDEN, f"this API key is bound to one user; drop the {USER_HEADER} header"
        )
    return bound_user
