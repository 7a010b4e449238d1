"""API keys: shown once, stored as a digest only, verified in constant time, revocable."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from convodb import ApiKeyService, Database, ValidationError
from convodb._cursor import encode_cursor
from convodb._keys import api_keys


async def test_created_key_verifies_as_its_user(db: Database) -> None:
    async with db.session() as session:
        keys = ApiKeyService(session)
        created = await keys.create("alice", name="support bot")
        verified = await keys.verify(created.token)
    assert created.token.startswith(f"cdb_{created.key.id}_")
    assert verified == created.key
    assert verified is not None and verified.user_id == "alice" and not verified.is_service_key


async def test_service_key_has_no_user(db: Database) -> None:
    async with db.session() as session:
        created = await ApiKeyService(session).create(None, name="backend")
        verified = await ApiKeyService(session).verify(created.token)
    assert verified is not None and verified.is_service_key and verified.user_id is None


async def test_only_a_digest_of_the_secret_is_stored(db: Database) -> None:
    async with db.session() as session:
        created = await ApiKeyService(session).create("alice")
    secret = created.token.removeprefix(f"cdb_{created.key.id}_")
    assert len(secret) >= 43  # the secret itself may contain "_"
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(api_keys))).one()
    assert secret not in str(tuple(row))
    assert created.token not in str(tuple(row))
    assert len(row.secret_hash) == 64


async def test_wrong_secret_unknown_id_and_garbage_do_not_verify(db: Database) -> None:
    async with db.session() as session:
        keys = ApiKeyService(session)
        created = await keys.create("alice")
        prefix = f"cdb_{created.key.id}"
        secret = created.token.removeprefix(f"{prefix}_")
        other = await keys.create("bob")
        wrong_secret = f"{prefix}_{'A' * len(secret)}"
        unknown_id = f"cdb_{'0' * 32}_{secret}"
        swapped = f"cdb_{other.key.id}_{secret}"
        for token in (wrong_secret, unknown_id, swapped, "cdb_", "cdb_x_y", "", "Bearer x"):
            assert await keys.verify(token) is None, token


async def test_revoked_key_stops_verifying_and_revoking_twice_keeps_the_first_time(
    db: Database,
) -> None:
    async with db.session() as session:
        keys = ApiKeyService(session)
        created = await keys.create("alice")
        revoked = await keys.revoke(created.key.id)
        again = await keys.revoke(created.key.id)
        assert await keys.verify(created.token) is None
        assert await keys.revoke("no-such-key") is None
    assert revoked is not None and revoked.revoked_at is not None
    assert again == revoked


async def test_list_pages_oldest_first_and_hides_revoked_keys_unless_asked(db: Database) -> None:
    async with db.session() as session:
        keys = ApiKeyService(session)
        created = [await keys.create(f"user{i}") for i in range(5)]
        await keys.revoke(created[1].key.id)
        first = await keys.list_keys(limit=2)
        second = await keys.list_keys(limit=2, cursor=first.next_cursor)
        everything = await keys.list_keys(include_revoked=True)
    active = [c.key.id for c in created if c is not created[1]]
    assert [k.id for k in first.items + second.items] == active[:4]
    assert second.next_cursor is None
    assert [k.id for k in everything.items] == [c.key.id for c in created]


@pytest.mark.parametrize("at", ["2025-01-01T00:00:00", "yesterday", 7])
async def test_a_cursor_without_a_utc_time_is_a_validation_error(db: Database, at: object) -> None:
    # A naive time compared with the aware column was a TypeError (HTTP 500), not a 422.
    async with db.session() as session:
        with pytest.raises(ValidationError) as error:
            await ApiKeyService(session).list_keys(cursor=encode_cursor("api-keys", t=at, i="k"))
    assert error.value.field == "cursor"


async def test_invalid_user_or_name_is_a_validation_error(db: Database) -> None:
    async with db.session() as session:
        keys = ApiKeyService(session)
        for user, name in (("", None), ("a\x00b", None), ("alice", "x" * 300)):
            try:
                await keys.create(user, name=name)
            except ValidationError:
                continue
            raise AssertionError(f"accepted {user!r}, {name!r}")
        assert (await keys.list_keys(include_revoked=True)).items == []


async def test_verify_inside_the_callers_transaction_sees_its_uncommitted_key(
    db: Database,
) -> None:
    async with db.session() as session, session.begin():
        keys = ApiKeyService(session, commit=False)
        created = await keys.create("alice")
        assert await keys.verify(created.token) == created.key
        await keys.revoke(created.key.id)
        assert await keys.verify(created.token) is None
