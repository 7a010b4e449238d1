"""The operator's commands, run as an operator runs them (Typer's CliRunner on the real
application), each checked against what the database holds afterwards, on every database:
export and import, conversations list and show, purge, erase-user, stats."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from convodb import (
    AdminService,
    ApiKeyService,
    ConversationNotFoundError,
    ConversationService,
    Database,
    ValidationError,
)
from convodb._models import api_keys, attachments, conversations, messages, summaries
from convodb.cli._app import app
from convodb.migrations import HEAD

runner = CliRunner()

# A 1x1 PNG: real image data, checked by the same validation as an append.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


async def invoke(database_url: str, *args: str) -> tuple[int, str, str]:
    """Run ``convodb ARGS`` as an operator would, in a thread: the command runs its own event
    loop, which cannot nest in the test's."""

    def command() -> tuple[int, str, str]:
        result = runner.invoke(app, [*args, "--database-url", database_url])
        return result.exit_code, result.stdout, result.stderr

    return await asyncio.to_thread(command)


async def seed(db: Database, *, plain: int = 30) -> dict[str, str]:
    """alice: a conversation with parts, a tool loop, keys and a summary; bob: one of his own."""
    async with db.session() as session:
        service = ConversationService(session)
        trip = await service.create_conversation(
            "alice", title="Trip ✈️", metadata={"b": 1, "a": [1, {"z": 2, "y": 3}]}
        )
        await service.save_conversation_messages(
            trip.id,
            "alice",
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image", "data": PNG, "media_type": "image/png"},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "call_1", "name": "look", "arguments": '{"x": 1}'}],
                },
                {
                    "role": "tool",
                    "content": "a pixel",
                    "tool_call_id": "call_1",
                    "tool_name": "look",
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig=="},
                        {"type": "text", "text": "A 1x1 PNG 🖼"},
                    ],
                    "metadata": {"model": "claude"},
                },
            ],
            idempotency_key="turn-1",
        )
        await service.save_message(trip.id, "user", "keyed", user_id="alice", key="k1")
        for i in range(plain):
            role = "user" if i % 2 else "assistant"
            await service.save_message(trip.id, role, f"message {i}", user_id="alice")
        await service.save_summary(trip.id, "alice", "They looked at a PNG.", upto_seq=4)
        other = await service.create_conversation("bob", title="bob's")
        await service.save_message(other.id, "user", "hello from bob", user_id="bob")
    return {"trip": trip.id, "other": other.id}


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def export(database_url: str, path: Path, *args: str) -> list[dict[str, Any]]:
    code, out, err = await invoke(database_url, "export", "-o", str(path), *args)
    assert code == 0, out + err
    return records(path)


async def counts(db: Database) -> dict[str, int]:
    async with db.engine.connect() as conn:
        return {
            t.name: int((await conn.execute(select(func.count()).select_from(t))).scalar_one())
            for t in (conversations, messages, summaries, attachments)
        }


# -- export and import ----------------------------------------------------------------------


async def test_export_writes_the_documented_records_in_order(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    ids = await seed(db)
    lines = await export(database_url, tmp_path / "out.jsonl")
    header, *body = lines
    assert header["type"] == "header" and header["format"] == "convodb-export"
    assert header["version"] == 1 and header["schema"] == HEAD and header["user_id"] is None
    kinds = [r["type"] for r in body]
    trip = [
        r for r in body if r.get("conversation_id") == ids["trip"] or r.get("id") == ids["trip"]
    ]
    assert [r["type"] for r in trip] == ["conversation"] + ["message"] * 35 + ["summary"]
    assert kinds.count("conversation") == 2
    first = trip[1]
    assert first["seq"] == 1 and first["key"] == "idem:turn-1:0"
    assert first["content"][1]["type"] == "image" and first["content"][1]["data"] == PNG
    assert trip[2]["tool_calls"] == [{"id": "call_1", "name": "look", "arguments": '{"x": 1}'}]
    assert trip[4]["content"][0] == {"type": "thinking", "thinking": "hmm", "signature": "sig=="}
    assert [m["seq"] for m in trip[1:-1]] == list(range(1, 36))
    assert trip[0]["metadata"] == {"a": [1, {"y": 3, "z": 2}], "b": 1}
    assert trip[-1]["upto_seq"] == 4

    alice = await export(database_url, tmp_path / "alice.jsonl", "--user", "alice")
    assert {r["user_id"] for r in alice if r["type"] == "conversation"} == {"alice"}
    assert alice[0]["user_id"] == "alice"


async def test_sqlite_export_imports_anywhere_and_exports_the_same_records(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    async with Database(source) as origin:
        await origin.create_all()
        await seed(origin)
    exported = await export(source, tmp_path / "a.jsonl")

    code, out, err = await invoke(database_url, "import", str(tmp_path / "a.jsonl"))
    assert code == 0, err
    assert out.startswith("imported: 2 conversations created, 0 extended, 0 unchanged; 36 messages")
    assert await counts(db) == {
        "conversations": 2,
        "messages": 36,
        "summaries": 1,
        "attachments": 1,
    }
    again = await export(database_url, tmp_path / "b.jsonl")
    assert again[1:] == exported[1:]  # all but the header's exported_at

    # The data is usable as any other: its attachment, its idempotency keys, its seqs.
    trip = exported[1]["id"]
    async with db.session() as session:
        service = ConversationService(session)
        digest = exported[2]["content"][1]["attachment"]
        attachment = await service.get_attachment(trip, "alice", digest)
        assert attachment.data == base64.b64decode(PNG)
        retried = await service.save_message(trip, "user", "keyed", user_id="alice", key="k1")
        assert retried.seq == 5  # the key came along: no second copy
        after = await service.save_message(trip, "user", "new", user_id="alice")
        assert after.seq == 36


async def test_importing_twice_changes_nothing(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    await seed(db)
    path = tmp_path / "a.jsonl"
    before = await export(database_url, path)
    code, out, err = await invoke(database_url, "import", str(path))
    assert code == 0, err
    assert (
        "0 conversations created, 0 extended, 2 unchanged; 0 messages, 0 summaries; 0 conflicts"
        in out
    )
    assert (await export(database_url, tmp_path / "b.jsonl"))[1:] == before[1:]


async def test_a_resumed_export_appends_the_rest(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    await seed(db)
    full = await export(database_url, tmp_path / "full.jsonl")
    async with db.engine.begin() as conn:
        for table in (messages, summaries, attachments, conversations):
            await conn.execute(table.delete())
    cut = tmp_path / "cut.jsonl"
    lines = (tmp_path / "full.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    cut.write_text("".join(lines[:12]), encoding="utf-8")
    code, out, err = await invoke(database_url, "import", str(cut))  # header, trip, 10 messages
    assert code == 0, err
    assert (await counts(db))["messages"] == 10

    code, out, err = await invoke(database_url, "import", str(tmp_path / "full.jsonl"))
    assert code == 0, err
    assert "1 conversations created, 1 extended, 0 unchanged; 26 messages, 1 summaries" in out
    assert (await export(database_url, tmp_path / "again.jsonl"))[1:] == full[1:]


async def test_conflicts_are_reported_skipped_and_never_overwrite(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    ids = await seed(db)
    path = tmp_path / "a.jsonl"
    exported = await export(database_url, path)
    changed = [
        {**r, "content": "rewritten"} if r.get("seq") == 7 and r["type"] == "message" else r
        for r in exported
    ]
    changed = [{**r, "user_id": "mallory"} if r.get("id") == ids["other"] else r for r in changed]
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in changed))

    code, out, err = await invoke(database_url, "import", str(edited))
    assert code == 2
    assert "0 conversations created, 0 extended, 0 unchanged" in out and "2 conflicts" in out
    assert f"conversation {ids['trip']} (line 9): message seq 7 differs" in err
    assert f"conversation {ids['other']} (line" in err and "another user" in err
    assert (await export(database_url, tmp_path / "after.jsonl"))[1:] == exported[1:]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: {**r, "role": "robot"} if r.get("seq") == 3 else r, "line 5: message.role"),
        (lambda r: {**r, "seq": 1} if r.get("seq") == 3 else r, "line 5: seq: must be above"),
        (
            lambda r: {**r, "created_at": "yesterday"} if r.get("seq") == 3 else r,
            "line 5: created_at: is not an ISO 8601 timestamp",
        ),
        (lambda r: {**r, "version": 2} if r["type"] == "header" else r, "line 1: version: is 2"),
        (lambda r: {**r, "extra": 1} if r.get("seq") == 3 else r, "line 5: has unknown field(s)"),
        (
            lambda r: {**r, "token_count": 3_000_000_000} if r.get("seq") == 3 else r,
            "line 5: token_count: is 3000000000; the limit is 2147483647",
        ),
        (
            lambda r: {**r, "created_at": "0001-01-01T00:00:00+01:00"} if r.get("seq") == 3 else r,
            "line 5: created_at: must be in the years 1000 to 9999",
        ),
    ],
    ids=["role", "seq-order", "timestamp", "version", "unknown-field", "int32", "year-1"],
)
async def test_a_bad_line_is_named_and_nothing_is_stored(
    db: Database, database_url: str, tmp_path: Path, edit: Any, message: str
) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    async with Database(source) as origin:
        await origin.create_all()
        await seed(origin)
    exported = await export(source, tmp_path / "a.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(edit(r)) + "\n" for r in exported))
    code, out, err = await invoke(database_url, "import", str(bad))
    assert code == 1
    assert err.startswith(f"error: {message}"), err
    assert await counts(db) == {"conversations": 0, "messages": 0, "summaries": 0, "attachments": 0}


async def test_an_export_cut_short_imports_up_to_its_last_whole_line_then_resumes(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    await seed(db)
    full = tmp_path / "full.jsonl"
    exported = await export(database_url, full)
    async with db.engine.begin() as conn:
        for table in (messages, summaries, attachments, conversations):
            await conn.execute(table.delete())
    data = full.read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(data[: data.index(b'"message 20"')])  # killed in the middle of a line
    code, out, err = await invoke(database_url, "import", str(cut))
    assert code == 0, err
    assert "1 conversations created" in out and "25 messages" in out  # seqs 1..25 whole
    assert "is incomplete (an interrupted export?) and was left out" in err
    code, out, err = await invoke(database_url, "import", str(full))
    assert code == 0, err
    assert "1 extended" in out
    assert (await export(database_url, tmp_path / "again.jsonl"))[1:] == exported[1:]


async def test_a_file_with_a_key_twice_is_a_conflict_not_a_crash(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    async with Database(source) as origin:
        await origin.create_all()
        await seed(origin, plain=2)
    exported = await export(source, tmp_path / "a.jsonl")
    twice = [{**r, "key": "k1"} if r.get("seq") == 6 else r for r in exported]
    path = tmp_path / "twice.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in twice))
    code, out, err = await invoke(database_url, "import", str(path))
    assert code == 2, err
    assert "1 conflicts" in out and "repeats the key or seq" in err and "Traceback" not in err


async def test_a_summary_saved_during_an_export_stays_out_of_it(db: Database) -> None:
    ids = await seed(db, plain=0)
    async with db.session() as session:
        records = AdminService(session).export(user_id="alice")
        _header, conversation = await anext(records), await anext(records)
        assert conversation["last_seq"] == 5
        async with db.session() as other:  # meanwhile: the conversation goes on
            service = ConversationService(other)
            await service.save_message(ids["trip"], "user", "later", user_id="alice")
            await service.save_summary(ids["trip"], "alice", "Up to six.", upto_seq=6)
        rest = [r async for r in records]
    assert [r["seq"] for r in rest if r["type"] == "message"] == [1, 2, 3, 4, 5]
    assert [r["upto_seq"] for r in rest if r["type"] == "summary"] == [4]


async def test_read_only_commands_neither_create_nor_migrate_a_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'typo.db'}"
    for command in (["stats"], ["export"], ["conversations", "list", "--user", "alice"]):
        code, _, err = await invoke(url, *command)
        assert code == 1 and "convodb db upgrade" in err, (command, err)
    async with Database(url) as database:
        assert await database.schema_version() == (None, HEAD)  # still nothing there


async def test_bad_options_are_clear_errors(db: Database, database_url: str) -> None:
    code, _, err = await invoke(database_url, "purge", "--older-than", "99999999d")
    assert code == 2 and "goes back further than any date" in err
    code, _, err = await invoke(database_url, "conversations", "list", "--user", "a", "-n", "0")
    assert code == 2 and "--limit" in err


async def test_a_line_that_is_not_json_is_named(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"type": "header", "format": "convodb-export", "version": 1}\n{"type": \n')
    code, _, err = await invoke(database_url, "import", str(path))
    assert code == 1 and err.startswith("error: line 2: is not JSON")


# -- conversations --------------------------------------------------------------------------


async def test_conversations_list_and_show(db: Database, database_url: str) -> None:
    ids = await seed(db, plain=2)
    code, out, err = await invoke(database_url, "conversations", "list", "--user", "alice")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == ["ID", "TITLE", "MESSAGES", "LAST", "ACTIVE"]
    assert row.startswith(ids["trip"]) and "Trip ✈️" in row and " 7 " in row and "UTC" in row

    code, out, err = await invoke(
        database_url, "conversations", "show", ids["trip"], "--user", "alice"
    )
    assert code == 0, err
    assert "Trip ✈️" in out and "7 messages" in out
    assert "summary of 1..4: They looked at a PNG." in out
    assert "#1 user" in out and "[image: image/png, 1x1, 66 bytes]" in out
    assert '-> look({"x": 1}) [call_1]' in out
    assert "#3 tool <- look [call_1]" in out and "a pixel" in out
    assert "[thinking] hmm" in out and "A 1x1 PNG 🖼" in out

    code, _, err = await invoke(database_url, "conversations", "show", ids["trip"], "--user", "bob")
    assert code == 1 and "not found" in err  # another user's is not found, not forbidden


# -- purge, erase-user, stats ---------------------------------------------------------------


async def _age(db: Database, cid: str, days: int) -> None:
    async with db.engine.begin() as conn:
        at = datetime.now(UTC) - timedelta(days=days)
        await conn.execute(
            update(conversations).where(conversations.c.id == cid).values(updated_at=at)
        )


async def test_purge_deletes_only_inactive_conversations(db: Database, database_url: str) -> None:
    ids = await seed(db)
    await _age(db, ids["trip"], 100)

    code, out, _ = await invoke(database_url, "purge", "--older-than", "90d", "--dry-run")
    assert code == 0 and out.startswith("would delete 1 conversations (35 messages)")
    code, _, err = await invoke(
        database_url, "purge", "--older-than", "90d"
    )  # stdin: not a terminal
    assert code == 1 and "pass --yes" in err
    assert (await counts(db))["conversations"] == 2

    code, out, err = await invoke(database_url, "purge", "--older-than", "90d", "--yes")
    assert code == 0, err
    assert out == "deleted 1 conversations, 35 messages\n"
    assert await counts(db) == {"conversations": 1, "messages": 1, "summaries": 0, "attachments": 0}
    code, out, _ = await invoke(database_url, "purge", "--older-than", "90d", "--yes")
    assert out.startswith("nothing to delete: 0 conversations")
    code, _, err = await invoke(database_url, "purge", "--older-than", "soon")
    assert code == 2 and "90d, 12h, 30m" in err


async def test_erase_user_deletes_everything_of_that_user_only(
    db: Database, database_url: str
) -> None:
    ids = await seed(db)
    async with db.session() as session:
        keys = ApiKeyService(session)
        await keys.create("alice")
        await keys.create("bob")
        await keys.create(None)  # a service key: nobody's

    code, out, err = await invoke(database_url, "erase-user", "alice", "--yes")
    assert code == 0, err
    assert out == (
        "erased user 'alice': 1 conversations, 35 messages, 1 summaries, 1 attachments, "
        "5 idempotency keys, 1 api keys\n"
    )
    assert await counts(db) == {"conversations": 1, "messages": 1, "summaries": 0, "attachments": 0}
    async with db.engine.connect() as conn:
        owners = (await conn.execute(select(api_keys.c.user_id))).scalars().all()
    assert sorted(owners, key=str) == [None, "bob"]
    async with db.session() as session:
        with pytest.raises(ConversationNotFoundError):
            await ConversationService(session).get_conversation(ids["trip"], "alice")
        assert (await ConversationService(session).get_conversation(ids["other"], "bob")).id

    code, out, _ = await invoke(database_url, "erase-user", "alice", "--yes")
    assert code == 0 and "0 conversations, 0 messages" in out
    code, _, err = await invoke(database_url, "erase-user", "bob")
    assert code == 1 and "pass --yes" in err


async def test_stats_counts_rows_and_names_the_schema(db: Database, database_url: str) -> None:
    await seed(db, plain=3)
    code, out, err = await invoke(database_url, "stats")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["TABLE", "ROWS", "SIZE"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:-1]}
    assert rows == {
        "conversations": "2",
        "messages": "9",
        "summaries": "1",
        "attachments": "1",
        "langgraph_checkpoints": "0",
        "langgraph_checkpoint_blobs": "0",
        "langgraph_checkpoint_writes": "0",
        "langgraph_message_copies": "0",
        "api_keys": "0",
    }
    assert lines[-1] == f"schema: {HEAD} (head: {HEAD})"
    assert all("B" in line for line in lines[1:-1])  # every database reports a size here


# -- the library calls behind them ----------------------------------------------------------


async def test_admin_checks_its_arguments(db: Database) -> None:
    async with db.session() as session:
        admin = AdminService(session)
        with pytest.raises(ValidationError, match="inactive_since: must be a timezone-aware"):
            await admin.purge(datetime(2020, 1, 1))  # noqa: DTZ001 (the naive datetime under test)
        with pytest.raises(ValidationError, match="inactive_since: must not be in the future"):
            await admin.purge(datetime.now(UTC) + timedelta(days=1))
        with pytest.raises(ValidationError, match="user_id"):
            await admin.erase_user("")


async def test_purge_measures_activity_by_the_last_append(db: Database) -> None:
    ids = await seed(db, plain=0)
    await _age(db, ids["trip"], 100)
    await _age(db, ids["other"], 100)
    async with db.session() as session:
        await ConversationService(session).save_message(ids["other"], "user", "back", user_id="bob")
        report = await AdminService(session).purge(datetime.now(UTC) - timedelta(days=90))
    assert (report.conversations, report.messages) == (1, 5)
    assert (await counts(db))["conversations"] == 1
