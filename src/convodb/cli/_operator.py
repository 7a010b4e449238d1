"""The operator's commands: export and import, conversations list and show, purge, erase-user,
stats.

Each is a thin translation into ``AdminService`` or ``ConversationService`` calls. Output is
rich (tables, colour, a progress bar on stderr) on a terminal and plain text on a pipe, so
that scripts can read it; data (an export) goes to stdout or ``-o FILE``, messages to stderr.
"""

import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from convodb import (
    DEFAULT_DATABASE_URL,
    AdminService,
    AudioPart,
    ConversationService,
    Database,
    FilePart,
    ImagePart,
    ImportReport,
    Part,
    ReasoningPart,
    StoredConversation,
    StoredMessage,
    TextPart,
    ThinkingPart,
)

from ._common import DatabaseUrl, app, fail, run, table, when, with_database

__all__ = ["conversations_app"]

conversations_app = typer.Typer(
    help="List a user's conversations and show one.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(conversations_app, name="conversations")

User = Annotated[str, typer.Option("--user", "-u", help="The user (owner).")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def _terminal(stream: IO[str]) -> bool:
    return stream.isatty()


@contextmanager
def _progress(description: str, total: int | None, *, bytes_: bool = False) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal; otherwise nothing is drawn."""
    if not _terminal(sys.stderr):
        yield None
        return
    counter = DownloadColumn() if bytes_ else MofNCompleteColumn()
    columns = (TextColumn("{task.description}"), BarColumn(), counter, TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        bar.add_task(description, total=total)
        yield bar


# -- export and import ----------------------------------------------------------------------


@app.command("export")
def export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Only this user's conversations.")
    ] = None,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Export conversations, messages and summaries as JSON Lines (format: convodb-export 1).

    Streams in constant memory. `convodb import` reads the file back, into any database.
    """

    async def work(db: Database) -> tuple[int, int]:
        async with db.session() as session:
            admin = AdminService(session)
            conversations, messages = await admin.count(user_id=user)
            stream = sys.stdout if output is None else output.open("w", encoding="utf-8")
            written = [0, 0]
            try:
                with _progress("exporting", messages) as bar:
                    async for record in admin.export(user_id=user):
                        stream.write(AdminService.export_line(record))
                        if record["type"] == "message":
                            written[1] += 1
                            if bar is not None:
                                bar.advance(bar.task_ids[0])
                        elif record["type"] == "conversation":
                            written[0] += 1
            finally:
                if output is not None:
                    stream.close()
                else:
                    stream.flush()
            return written[0], written[1]

    conversations, messages = run(lambda: with_database(database_url, work))
    where = "stdout" if output is None else str(output)
    typer.echo(f"exported {conversations} conversations, {messages} messages to {where}", err=True)


@app.command("import")
def import_(
    file: Annotated[
        Path, typer.Argument(help="An export (JSON Lines), as `convodb export` writes.")
    ],
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Import an export: idempotent (importing a file twice changes nothing) and streamed.

    Ids, seqs, timestamps and token counts are kept. A conversation that exists with the same
    owner and a prefix of the file's messages gets the rest; any other difference is a
    conflict: reported, skipped, never overwritten. Every line is checked before anything
    is written: a file with a bad line stores nothing.
    """
    if not file.is_file():
        raise fail(f"{file}: no such file")

    async def work(db: Database) -> ImportReport:
        async with db.session() as session:
            with _progress("checking", file.stat().st_size, bytes_=True) as bar:
                phases: dict[str, int] = {}

                def progress(phase: str, done: int, size: int) -> None:
                    if bar is None:
                        return
                    if phase not in phases:
                        phases[phase] = bar.task_ids[0]
                        bar.update(phases[phase], description=phase + "ing", completed=0)
                    bar.update(phases[phase], completed=done, total=size)

                return await AdminService(session).import_file(file, progress=progress)

    report = run(lambda: with_database(database_url, work, create=True))
    typer.echo(
        f"imported: {report.created} conversations created, {report.extended} extended, "
        f"{report.unchanged} unchanged; {report.messages} messages, {report.summaries} "
        f"summaries; {report.conflict_count} conflicts"
    )
    for conflict in report.conflicts:
        typer.echo(
            f"conflict: conversation {conflict.conversation_id} (line {conflict.line}): "
            f"{conflict.reason}",
            err=True,
        )
    if report.cut_short_at is not None:
        typer.echo(
            f"line {report.cut_short_at} is incomplete (an interrupted export?) and was left "
            "out; import the whole export when you have it to add the rest",
            err=True,
        )
    if report.conflict_count > len(report.conflicts):
        typer.echo(f"... and {report.conflict_count - len(report.conflicts)} more", err=True)
    if report.conflict_count:
        raise typer.Exit(2)


# -- conversations --------------------------------------------------------------------------


@conversations_app.command("list")
def conversations_list(
    user: User,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 50,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """The user's conversations, most recently active first."""

    async def work(db: Database) -> tuple[list[StoredConversation], bool]:
        found: list[StoredConversation] = []
        cursor = None
        async with db.session() as session:
            service = ConversationService(session)
            while len(found) < limit:
                page_size = min(limit - len(found), service.limits.max_page_size)
                page = await service.list_conversations(user, limit=page_size, cursor=cursor)
                found.extend(page.items)
                if (cursor := page.next_cursor) is None:
                    return found, False
        return found, True

    found, more = run(lambda: with_database(database_url, work))
    if not found:
        typer.echo(f"No conversations of user {user!r}.", err=True)
        return
    header = ("ID", "TITLE", "MESSAGES", "LAST ACTIVE")
    rows = [(c.id, c.title or "", str(c.message_count), when(c.updated_at)) for c in found]
    _print_table(header, rows)
    if more:
        typer.echo(f"(the first {limit}; --limit N shows more)", err=True)


@conversations_app.command("show")
def conversations_show(
    conversation_id: Annotated[str, typer.Argument(metavar="ID", help="The conversation's id.")],
    user: User,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """The conversation, readably: its messages with their roles, tool calls and results,
    and parts; its newest summary."""

    async def work(db: Database) -> None:
        async with db.session() as session:
            service = ConversationService(session)
            conversation = await service.get_conversation(conversation_id, user)
            summary = await service.get_summary(conversation_id, user)
            console = Console(highlight=False, soft_wrap=True)
            console.print(
                f"[bold]{conversation.title or '(untitled)'}[/bold]  {conversation.id}\n"
                f"user {conversation.user_id}, {conversation.message_count} messages, created "
                f"{when(conversation.created_at)}, last active {when(conversation.updated_at)}",
                markup=True,
            )
            if summary is not None:
                console.print(f"\n[dim]summary of 1..{summary.upto_seq}:[/dim] {summary.content}")
            cursor = None
            while True:
                page = await service.list_messages(
                    conversation_id, user, limit=service.limits.max_page_size, cursor=cursor
                )
                for message in page.items:
                    console.print(_render(message), markup=False)
                if (cursor := page.next_cursor) is None:
                    return

    run(lambda: with_database(database_url, work))


def _render(message: StoredMessage) -> str:
    head = f"\n#{message.seq} {message.role}"
    if message.role == "tool":
        head += f" <- {message.tool_name or 'result'} [{message.tool_call_id}]"
    lines = [f"{head}  ({when(message.created_at)})"]
    if isinstance(message.content, str):
        lines.append(message.content)
    elif message.content is not None:
        lines.extend(_part(p) for p in message.content)
    for call in message.tool_calls or ():
        lines.append(f"-> {call.name}({call.arguments}) [{call.id}]")
    return "\n".join(lines)


def _part(part: Part) -> str:
    if isinstance(part, TextPart):
        return part.text
    if isinstance(part, ImagePart | FilePart | AudioPart):
        described = [
            str(value)
            for name in ("media_type", "format", "filename", "url", "file_id")
            if (value := getattr(part, name, None)) is not None
        ]
        if isinstance(part, ImagePart) and part.width:
            described.append(f"{part.width}x{part.height}")
        if isinstance(part, FilePart) and part.pages:
            described.append(f"{part.pages} pages")
        if part.size is not None:
            described.append(f"{part.size:,} bytes")
        return f"[{part.type}: {', '.join(described)}]"
    if isinstance(part, ThinkingPart):
        return f"[thinking] {part.thinking}"
    if isinstance(part, ReasoningPart):
        return f"[reasoning] {' '.join(part.summary)}".rstrip()
    return f"[{part.type}]"


# -- retention, erasure, statistics ---------------------------------------------------------

_DURATION = re.compile(r"(\d+)\s*([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def _cutoff(value: str) -> datetime:
    """Now, less ``value`` (90d, 12h, 30m)."""
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise typer.BadParameter("a number of days, hours or minutes: 90d, 12h, 30m")
    try:
        return datetime.now(UTC) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    except OverflowError:
        raise typer.BadParameter(f"{value} goes back further than any date") from None


@app.command("purge")
def purge(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="Delete conversations with no activity for this long: 90d, 12h, 30m.",
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    yes: Yes = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Delete conversations (with their messages, summaries and attachments) that had no
    activity for a while, in bounded batches: no long locks."""
    cutoff = _cutoff(older_than)

    async def count(db: Database) -> tuple[int, int]:
        async with db.session() as session:
            report = await AdminService(session).purge(cutoff, dry_run=True)
            return report.conversations, report.messages

    async def delete(db: Database) -> tuple[int, int]:
        async with db.session() as session:
            report = await AdminService(session).purge(cutoff)
            return report.conversations, report.messages

    conversations, messages = run(lambda: with_database(database_url, count))
    subject = f"{conversations} conversations ({messages} messages) inactive since {when(cutoff)}"
    if dry_run or not conversations:
        typer.echo(f"would delete {subject}" if dry_run else f"nothing to delete: {subject}")
        return
    _confirm(f"Delete {subject}?", yes)
    conversations, messages = run(lambda: with_database(database_url, delete))
    typer.echo(f"deleted {conversations} conversations, {messages} messages")


@app.command("erase-user")
def erase_user(
    user: Annotated[str, typer.Argument(metavar="USER", help="The user to forget.")],
    yes: Yes = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Delete everything of a user (GDPR Art. 17): conversations, messages, summaries,
    attachments, idempotency keys and API keys."""
    _confirm(f"Erase everything of user {user!r}? This cannot be undone.", yes)

    async def work(db: Database) -> dict[str, Any]:
        async with db.session() as session:
            return (await AdminService(session).erase_user(user)).to_dict()

    counts = run(lambda: with_database(database_url, work))
    erased = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items() if k != "user_id")
    typer.echo(f"erased user {user!r}: {erased}")


@app.command("stats")
def stats(database_url: DatabaseUrl = DEFAULT_DATABASE_URL) -> None:
    """Rows and size of each table, and the schema version."""

    async def work(db: Database) -> Any:
        async with db.session() as session:
            return await AdminService(session).stats()

    found = run(lambda: with_database(database_url, work))
    rows = [
        (t.name, f"{t.rows:,}", "-" if t.bytes is None else _size(t.bytes)) for t in found.tables
    ]
    _print_table(("TABLE", "ROWS", "SIZE"), rows)
    typer.echo(f"schema: {found.schema_version or 'none'} (head: {found.schema_head})")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not _terminal(sys.stdin):
        raise fail(f"{question.rstrip('?')}: pass --yes to confirm (stdin is not a terminal)")
    if not typer.confirm(question, default=False):
        raise typer.Exit(1)


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if not _terminal(sys.stdout):
        typer.echo(table(header, rows))
        return
    view = Table(*header, header_style="bold", box=None)
    for row in rows:
        view.add_row(*row)
    Console().print(view)
