"""LangGraph's own conformance suite for checkpoint savers, at level FULL, on every database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from convodb import Database
from convodb.integrations.langgraph import ConvodbSaver


async def test_conformance_full_with_every_capability(db: Database) -> None:

    @checkpointer_test(name="ConvodbSaver")
    async def saver() -> AsyncIterator[ConvodbSaver]:
        # A user of its own per suite: the suites reuse thread ids ("thread-0") and list
        # every thread of the saver's user.
        yield ConvodbSaver(database=db, user_id=f"conformance-{uuid.uuid4().hex}")

    report = await validate(saver)

    assert {name for name, result in report.results.items() if result.detected} == {
        c.value for c in ALL_CAPABILITIES
    }
    failures = {name: r.failures for name, r in report.results.items() if not r.passed}
    assert failures == {}
    assert report.conformance_level() == "FULL"
