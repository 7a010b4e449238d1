"""The Typer application behind the ``convodb`` command: the schema, API keys and ``serve``
here, the operator's commands in ``_operator``.

Commands translate flags into calls on convodb's public API (``Database``, ``ApiKeyService``,
``AdminService``, ``convodb.server``); errors are turned into a one-line message and exit
status 1 in one place, :func:`convodb.cli._common.run`.
"""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.engine import make_url

from convodb import (
    DEFAULT_DATABASE_URL,
    ApiKeyService,
    Database,
    MissingDependencyError,
    StoredApiKey,
)

from . import _operator  # noqa: F401 (registers the operator's commands on app)
from ._common import (
    API_KEY_PREFIX,
    DatabaseUrl,
    app,
    db_app,
    fail,
    keys_app,
    run,
    table,
    when,
    with_database,
)

__all__ = ["app"]


@app.command("init-db")
def init_db(database_url: DatabaseUrl = DEFAULT_DATABASE_URL) -> None:
    """Create convodb's tables where they do not exist yet."""

    async def work(db: Database) -> str:
        return repr(db)

    shown = run(lambda: with_database(database_url, work, create=True))
    typer.echo(f"convodb tables ready in {shown}")


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = DEFAULT_DATABASE_URL) -> None:
    """Migrate the database to the schema this convodb needs; an empty one gets it whole.

    Run it before starting a new convodb on PostgreSQL (SQLite upgrades itself on first use).
    One transaction, no statement timeout; concurrent runs wait for each other.
    """

    async def work() -> tuple[str | None, str]:
        async with Database(database_url) as db:
            before, head = await db.schema_version()
            await db.upgrade()
            return before, head

    before, head = run(work)
    if before == head:
        typer.echo(f"already at {head} (head)")
    else:
        typer.echo(f"upgraded: {before or 'none'} -> {head} (head)")


@db_app.command("current")
def db_current(database_url: DatabaseUrl = DEFAULT_DATABASE_URL) -> None:
    """Print the database's schema version and the one this convodb needs."""

    async def work() -> tuple[str | None, str]:
        async with Database(database_url) as db:
            return await db.schema_version()

    current, head = run(work)
    typer.echo(f"current: {current or 'none'} (head: {head})")
    if current != head:
        typer.echo(
            "not at the head: `convodb db upgrade` migrates it (or says why it cannot)", err=True
        )


@keys_app.command("create")
def keys_create(
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Bind the key to this user.")
    ] = None,
    service: Annotated[
        bool,
        typer.Option(
            "--service",
            help="A service key for a trusted backend: it names the user on each request "
            "in the X-Convodb-User header.",
        ),
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="What the key is for.")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print the token only, for scripts.")
    ] = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Create an API key and print its token, once: only a digest of it is stored."""
    if (user is None) == (not service):
        raise fail("give either --user USER or --service")

    async def work(db: Database) -> Any:
        async with db.session() as session:
            return await ApiKeyService(session).create(user, name=name)

    created = run(lambda: with_database(database_url, work, create=True, api_keys=True))
    if quiet:
        typer.echo(created.token)
        return
    who = "a service key" if created.key.is_service_key else f"user {created.key.user_id!r}"
    typer.echo(f"Created API key {created.key.id} for {who}.")
    typer.echo("Token (shown once, store it now):", err=True)
    typer.echo(created.token)


@keys_app.command("list")
def keys_list(
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """List API keys, oldest first (never their secrets)."""

    async def work(db: Database) -> list[StoredApiKey]:
        found: list[StoredApiKey] = []
        cursor = None
        async with db.session() as session:
            keys = ApiKeyService(session)
            while True:
                page = await keys.list_keys(limit=500, cursor=cursor, include_revoked=all_keys)
                found.extend(page.items)
                if page.next_cursor is None:
                    return found
                cursor = page.next_cursor

    found = run(lambda: with_database(database_url, work, create=True, api_keys=True))
    if not found:
        typer.echo("No API keys. Create one with: convodb keys create --user USER")
        return
    rows = [
        (
            k.id,
            "(service)" if k.user_id is None else k.user_id,
            k.name or "",
            when(k.created_at),
            when(k.revoked_at),
        )
        for k in found
    ]
    typer.echo(table(("ID", "USER", "NAME", "CREATED", "REVOKED"), rows))


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[
        str,
        typer.Argument(
            metavar="KEY_ID",
            help="The key's id, as `convodb keys list` shows; a whole token works too (only "
            "its id is used).",
        ),
    ],
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Revoke an API key: requests signed with it fail from now on."""
    key_id, shown = _key_id(key_id)

    async def work(db: Database) -> StoredApiKey | None:
        async with db.session() as session:
            return await ApiKeyService(session).revoke(key_id)

    revoked = run(lambda: with_database(database_url, work, create=True, api_keys=True))
    if revoked is None:
        raise fail(f"no API key with id {shown}; see: convodb keys list --all")
    typer.echo(f"Revoked API key {revoked.id} ({when(revoked.revoked_at)}).")


def _key_id(key: str) -> tuple[str, str]:
    """The key id in ``key`` (an id, or a whole ``cdb_<id>_<secret>`` token), and how to show
    it: never the secret, which is only ever printed once, by ``keys create``."""
    if not key.startswith(API_KEY_PREFIX):
        return key, repr(key)
    key_id, _, _secret = key.removeprefix(API_KEY_PREFIX).partition("_")
    return key_id, f"{key_id!r} (from the token {API_KEY_PREFIX}{key_id}_...)"


@app.command("serve")
def serve(
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    host: Annotated[
        str, typer.Option(envvar="CONVODB_HOST", help="Interface to bind.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="CONVODB_PORT", help="TCP port.")] = 8000,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            envvar="CONVODB_DEV",
            help="DEVELOPMENT ONLY: accept requests without credentials from this machine, "
            "as the X-Convodb-User header's user (default 'dev'). Binds to loopback only.",
        ),
    ] = False,
    api_keys: Annotated[
        bool,
        typer.Option(
            "--api-keys/--no-api-keys", envvar="CONVODB_API_KEYS", help="Accept API keys."
        ),
    ] = True,
    jwt_public_key_file: Annotated[
        Path | None,
        typer.Option(
            envvar="CONVODB_JWT_PUBLIC_KEY_FILE", help="PEM public key for RS256/ES256 JWTs."
        ),
    ] = None,
    jwt_jwks_file: Annotated[
        Path | None,
        typer.Option(envvar="CONVODB_JWT_JWKS_FILE", help="JWKS file for RS256/ES256 JWTs."),
    ] = None,
    jwt_issuer: Annotated[
        str | None, typer.Option(envvar="CONVODB_JWT_ISSUER", help="Required JWT 'iss'.")
    ] = None,
    jwt_audience: Annotated[
        str | None, typer.Option(envvar="CONVODB_JWT_AUDIENCE", help="Required JWT 'aud'.")
    ] = None,
    max_body_bytes: Annotated[
        int | None,
        typer.Option(envvar="CONVODB_MAX_BODY_BYTES", help="Largest request body (413 above)."),
    ] = None,
    body_timeout: Annotated[
        float | None,
        typer.Option(
            envvar="CONVODB_BODY_TIMEOUT",
            help="Seconds a request body may take to arrive (408 after). [default: 30]",
        ),
    ] = None,
    keep_alive_timeout: Annotated[
        int | None,
        typer.Option(
            envvar="CONVODB_KEEP_ALIVE_TIMEOUT",
            help="Seconds an idle keep-alive connection stays open. [default: 5]",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
) -> None:
    """Run the HTTP service.

    HS256 JWTs are verified with the secret in CONVODB_JWT_SECRET (an environment variable
    only: a flag would show the secret in the process list).
    """
    try:
        import uvicorn

        from convodb.server import Settings, create_app
    except ImportError as exc:
        if isinstance(exc, MissingDependencyError):
            raise fail(str(exc)) from None
        raise fail(str(MissingDependencyError(exc.name or "uvicorn", "server"))) from None
    try:
        settings = Settings.from_env(
            database_url=database_url,
            host=host,
            port=port,
            dev=dev,
            api_keys=api_keys,
            jwt_public_key_file=jwt_public_key_file,
            jwt_jwks_file=jwt_jwks_file,
            jwt_issuer=jwt_issuer,
            jwt_audience=jwt_audience,
            max_body_bytes=max_body_bytes,
            body_timeout=body_timeout,
            keep_alive_timeout=keep_alive_timeout,
        )
        # The app's lifespan would create the tables at start-up, but uvicorn reports a failure
        # there as a 130-line traceback. This command does it first instead, so a database
        # that cannot be reached is one line through the CLI's one error handler, and exit 1.
        application = create_app(settings.but(create_schema=False))  # reads the JWT key files
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    if settings.create_schema:
        keys = settings.api_keys
        run(lambda: with_database(settings.database(), _ready, create=True, api_keys=keys))
    if settings.dev:
        banner = "!" * 78
        typer.secho(
            f"{banner}\n DEV MODE: NO AUTHENTICATION. Requests without credentials act as any "
            f"user they name.\n Listening on {settings.host} (loopback) only. Never use this "
            f"in production.\n{banner}",
            err=True,
            fg=typer.colors.YELLOW,
            bold=True,
        )
    modes = [m for m, on in (("API keys", settings.api_keys), ("JWT", settings.jwt_enabled)) if on]
    typer.echo(
        f"convodb serving {_redacted(settings.database_url)} on "
        f"http://{settings.host}:{settings.port} (auth: {', '.join(modes) or 'none'})",
        err=True,
    )
    sys.stderr.flush()
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_keep_alive=settings.keep_alive_timeout,
    )


async def _ready(db: Database) -> None:
    """Nothing more to do: the database answered and has convodb's tables."""


def _redacted(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable URL>"
