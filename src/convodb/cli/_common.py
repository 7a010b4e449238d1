"""What every command of the ``convodb`` CLI shares: the Typer applications, the database
option, the one error handler, and plain or rich output."""

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime
from importlib.metadata import version
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from convodb import ConvodbError, Database

__all__ = [
    "API_KEY_PREFIX",
    "DatabaseUrl",
    "app",
    "db_app",
    "fail",
    "keys_app",
    "run",
    "table",
    "when",
    "with_database",
]

T = TypeVar("T")

# rich_markup_mode=None: Typer's rich help shows a type (``<bool>``) beside every flag, --help
# included, and cuts long environment variable names at 80 columns; Click's plain layout has
# neither fault.
app = typer.Typer(
    name="convodb",
    help="Conversation storage for LLM agents: the HTTP service, its API keys, and the "
    "store's operations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
keys_app = typer.Typer(
    help="Create, list and revoke API keys.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(keys_app, name="keys")
db_app = typer.Typer(
    help="The database's schema: its version, and the migration to the one this convodb needs.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(db_app, name="db")

API_KEY_PREFIX = "cdb_"
"""Tokens start with this (``cdb_<key id>_<secret>``): an argument that does is a token."""


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"convodb {version('convodb')}")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print convodb's version and exit.",
        ),
    ] = False,
) -> None:
    """Conversation storage for LLM agents: the HTTP service, its API keys, and the store's
    operations."""


DatabaseUrl = Annotated[
    str,
    typer.Option(
        "--database-url",
        envvar=["CONVODB_DATABASE_URL", "DATABASE_URL"],
        help="sqlite:///path.db, postgresql://user@host/db or mariadb://user@host/db.",
        show_default=True,
    ),
]


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(1)


def run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; the CLI's one error handler turns convodb's errors into exit 1."""
    try:
        return asyncio.run(work())
    except (ConvodbError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    except DBAPIError as exc:  # a driver error convodb has no type for: say it, no traceback
        raise fail(f"database error: {exc.orig}") from None
    except SQLAlchemyError as exc:  # e.g. a value the driver could not convert
        raise fail(f"database error: {exc}") from None


async def with_database(
    url: str | Database,
    work: Callable[[Database], Awaitable[T]],
    *,
    create: bool = False,
    api_keys: bool = False,
) -> T:
    """``work(database)``. ``create``: first create or upgrade the schema (idempotent), for
    the commands that set a database up or fill it; the others use the schema as it is, and
    a database behind the code's (or without convodb's tables) is an error that names
    ``convodb db upgrade``. ``api_keys``: create the HTTP service's table too."""
    async with Database(url) if isinstance(url, str) else url as db:
        if create:
            await db.create_all(api_keys=api_keys)
        return await work(db)


def when(at: datetime | None) -> str:
    return "-" if at is None else at.strftime("%Y-%m-%d %H:%M:%S UTC")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
