"""The service's configuration: one frozen object, read from ``CONVODB_*`` variables or flags."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from convodb import DEFAULT_DATABASE_URL, Database, Limits

__all__ = ["ENVIRONMENT", "Settings"]

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_KEEP_ALIVE_TIMEOUT = 5  # uvicorn's own default
USER_HEADER = "X-Convodb-User"

# field -> environment variable; the one place the service's variables are named.
ENVIRONMENT: dict[str, str] = {
    "database_url": "CONVODB_DATABASE_URL",
    "host": "CONVODB_HOST",
    "port": "CONVODB_PORT",
    "dev": "CONVODB_DEV",
    "api_keys": "CONVODB_API_KEYS",
    "jwt_secret": "CONVODB_JWT_SECRET",
    "jwt_public_key_file": "CONVODB_JWT_PUBLIC_KEY_FILE",
    "jwt_jwks_file": "CONVODB_JWT_JWKS_FILE",
    "jwt_issuer": "CONVODB_JWT_ISSUER",
    "jwt_audience": "CONVODB_JWT_AUDIENCE",
    "jwt_leeway": "CONVODB_JWT_LEEWAY",
    "max_body_bytes": "CONVODB_MAX_BODY_BYTES",
    "body_timeout": "CONVODB_BODY_TIMEOUT",
    "keep_alive_timeout": "CONVODB_KEEP_ALIVE_TIMEOUT",
    "create_schema": "CONVODB_CREATE_SCHEMA",
    "max_connections": "CONVODB_MAX_CONNECTIONS",
    "connect_timeout": "CONVODB_CONNECT_TIMEOUT",
    "pool_timeout": "CONVODB_POOL_TIMEOUT",
    "statement_timeout": "CONVODB_STATEMENT_TIMEOUT",
    "idle_timeout": "CONVODB_IDLE_TIMEOUT",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How the HTTP service runs. Every field has a ``CONVODB_*`` variable (:data:`ENVIRONMENT`).

    ```python
    app = create_app(Settings(database_url="sqlite:///chat.db", jwt_secret=secret))
    ```

    Authentication: requests carry ``Authorization: Bearer <token>``, where the token is a
    convodb API key (``cdb_...``, see ``convodb keys create``) or a JWT verified with
    ``jwt_secret`` (HS256), ``jwt_public_key_file`` (RS256/ES256, PEM) or ``jwt_jwks_file``
    (a JWKS document; the token's ``kid`` picks the key). The user is the JWT's ``sub``.
    """

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8000
    dev: bool = False
    """Anonymous mode for local development: requests without credentials act as the user in
    the ``X-Convodb-User`` header (default ``dev``). Loopback clients only."""
    api_keys: bool = True
    """Accept API keys created with ``convodb keys create``."""
    jwt_secret: str | None = None
    """HS256 shared secret, at least 32 bytes."""
    jwt_public_key_file: Path | None = None
    """PEM public key for RS256 or ES256 tokens."""
    jwt_jwks_file: Path | None = None
    """JWKS document (``{"keys": [...]}``) for RS256 or ES256 tokens, selected by ``kid``."""
    jwt_issuer: str | None = None
    """Required ``iss`` claim, when set."""
    jwt_audience: str | None = None
    """Required ``aud`` claim, when set."""
    jwt_leeway: float = 30.0
    """Seconds of clock skew tolerated on ``exp``/``nbf``/``iat``."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest request body accepted; larger ones get 413."""
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    """Seconds a request body may take to arrive, from the app's first read of it; a slower
    one gets 408 and its connection is closed."""
    keep_alive_timeout: int = DEFAULT_KEEP_ALIVE_TIMEOUT
    """Seconds ``convodb serve`` keeps an idle HTTP/1.1 connection open between requests
    (uvicorn's ``timeout_keep_alive``; another ASGI server has its own setting)."""
    create_schema: bool = True
    """Create convodb's tables at start-up where they do not exist yet."""
    max_connections: int | None = None
    """Most connections the service opens to PostgreSQL, all pools together; ``None``: the
    ``Database`` default (20). Mind the server's ``max_connections`` across processes."""
    connect_timeout: float | None = None
    """Seconds to wait for the database to accept a connection (then 503); ``None``: 10."""
    pool_timeout: float | None = None
    """Seconds a request waits for a pooled connection to come free (then 503); ``None``: 10."""
    statement_timeout: float | None = None
    """Seconds one PostgreSQL statement may run (then 503); ``None``: 30; ``0`` (or ``none``
    in the environment): no limit."""
    idle_timeout: float | None = None
    """Seconds after which an unused pooled connection is closed; ``None``: 300."""
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.jwt_secret is not None and len(self.jwt_secret.encode("utf-8")) < 32:
            raise ValueError("jwt_secret must be at least 32 bytes (RFC 7518 section 3.2)")
        if self.jwt_public_key_file is not None and self.jwt_jwks_file is not None:
            raise ValueError("give jwt_public_key_file or jwt_jwks_file, not both")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
        if not (self.body_timeout > 0 and math.isfinite(self.body_timeout)):
            raise ValueError("body_timeout must be a positive number of seconds")
        if self.keep_alive_timeout < 1:
            raise ValueError("keep_alive_timeout must be at least 1 second")
        for name in ("connect_timeout", "pool_timeout", "idle_timeout", "statement_timeout"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number of seconds, not {value!r}")
            if value == 0 and name != "statement_timeout":
                raise ValueError(f"{name} must be more than 0 seconds")
        if self.max_connections is not None and self.max_connections < 2:
            raise ValueError("max_connections must be at least 2")
        if not (self.dev or self.api_keys or self.jwt_enabled):
            raise ValueError(
                "no way to authenticate: enable API keys, configure a JWT key, or pass --dev"
            )
        if self.dev and not is_loopback(self.host):
            raise ValueError(f"--dev binds to loopback only; {self.host!r} is not a loopback host")

    @property
    def jwt_enabled(self) -> bool:
        return any(
            v is not None for v in (self.jwt_secret, self.jwt_public_key_file, self.jwt_jwks_file)
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``CONVODB_*`` variables (``DATABASE_URL`` too), then ``overrides``.

        Overrides that are ``None`` are ignored, so CLI flags that were not given do not mask
        the environment.
        """
        env = os.environ if environ is None else environ
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, variable in ENVIRONMENT.items():
            raw = env.get(variable)
            if raw is None and name == "database_url":
                raw = env.get("DATABASE_URL")
            if raw is not None:
                values[name] = _parse(variable, raw, str(types[name]))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def but(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def database(self) -> Database:
        """The ``Database`` these settings describe (not yet connected)."""
        options: dict[str, Any] = {
            name: value
            for name in ("max_connections", "connect_timeout", "pool_timeout", "idle_timeout")
            if (value := getattr(self, name)) is not None
        }
        if self.statement_timeout is not None:
            options["statement_timeout"] = self.statement_timeout or None  # 0: no limit
        return Database(self.database_url, **options)


def _parse(variable: str, raw: str, annotation: str) -> Any:
    if annotation.startswith("bool"):
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ValueError(f"{variable} must be true or false, not {raw!r}")
    if annotation.startswith("int"):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{variable} must be an integer, not {raw!r}") from None
    if annotation.startswith("float"):
        if annotation.endswith("None") and raw.strip().lower() in ("none", "off"):
            return 0.0  # "no limit", where a limit may be switched off
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{variable} must be a number, not {raw!r}") from None
    if annotation.startswith("Path"):
        return Path(raw)
    return raw


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
