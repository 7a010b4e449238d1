"""Who is asking: the user comes from the credential only, never from the body or the path.

``Authorization: Bearer <token>`` carries either a convodb API key (``cdb_...``) or a JWT:

- an API key bound to a user acts as that user; a service key acts as the user named in the
  ``X-Convodb-User`` header, which it must send;
- a JWT is verified with the configured key and algorithms only (``alg: none`` and
  algorithms of another key type are refused), must carry ``exp`` and ``sub``, and must match
  the configured ``iss`` and ``aud``; the user is ``sub``.

Without credentials the answer is 401, except in ``--dev`` mode, where a request from a
loopback client acts as the ``X-Convodb-User`` header's user, or ``dev``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jwt
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from convodb import ApiKeyService

from ._problems import FORBIDDEN, UNAUTHORIZED, Problem
from ._settings import USER_HEADER, Settings, is_loopback

__all__ = ["Authenticator"]

_API_KEY_PREFIX = "cdb_"
_HMAC_ALGORITHMS = ["HS256"]
_PUBLIC_KEY_ALGORITHMS = ["RS256", "ES256"]
DEV_USER = "dev"


def _unauthorized(detail: str) -> Problem:
    return Problem(UNAUTHORIZED, detail, headers={"WWW-Authenticate": 'Bearer realm="convodb"'})


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
                    raise _unauthorized("token has no 'kid' header to pick a key from the JWKS")
                try:
                    key = key[kid]
                except KeyError:
                    raise _unauthorized(f"token's key {kid!r} is not in the JWKS") from None
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
            raise _unauthorized("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise _unauthorized(f"invalid token: {exc}") from None
        except jwt.PyJWTError as exc:  # e.g. InvalidKeyError: the token's alg does not fit the key
            raise _unauthorized(f"invalid token: {type(exc).__name__}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise _unauthorized("token's 'sub' claim must name the user")
        return subject


class Authenticator:
    """Turns a request's credentials into a user id, or raises a 401/403 problem."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jwt = _JwtVerifier.from_settings(settings)

    async def user(self, request: Request, session: AsyncSession) -> str:
        """The request's user, from its credentials only.

        Args:
            request: the request.
            session: the request's session, shared with the service it then calls.
        """
        authorization = request.headers.get("authorization")
        named_user = request.headers.get(USER_HEADER)
        if authorization is None:
            if self.settings.dev and request.client and is_loopback(request.client.host):
                return named_user or DEV_USER
            raise _unauthorized("send 'Authorization: Bearer <API key or JWT>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("the Authorization header must be 'Bearer <API key or JWT>'")
        if token.startswith(_API_KEY_PREFIX):
            return await self._api_key_user(token, named_user, session)
        if self.jwt is None:
            raise _unauthorized("this server does not accept JWTs; use an API key")
        user = self.jwt.user(token)
        if named_user is not None and named_user != user:
            raise Problem(FORBIDDEN, f"a JWT acts as its 'sub'; drop the {USER_HEADER} header")
        return user

    async def _api_key_user(self, token: str, named_user: str | None, session: AsyncSession) -> str:
        if not self.settings.api_keys:
            raise _unauthorized("this server does not accept API keys; use a JWT")
        key = await ApiKeyService(session).verify(token)
        if key is None:
            raise _unauthorized("unknown, revoked or malformed API key")
        if key.user_id is None:
            if not named_user:
                raise _unauthorized(f"a service key must name the user in the {USER_HEADER} header")
            return named_user
        if named_user is not None and named_user != key.user_id:
            raise Problem(
                FORBIDDEN, f"this API key is bound to one user; drop the {USER_HEADER} header"
            )
        return key.user_id
