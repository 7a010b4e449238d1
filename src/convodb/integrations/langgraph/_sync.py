"""``ConvodbSaver``'s sync methods: the async ones, run on an event loop thread of the
saver's own, on a clone of its database."""

from __future__ import annotations

import builtins
import contextlib
import copy
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)

from ..._db import Database
from ._loop import LoopThread

__all__ = ["SyncMethods"]


class SyncMethods(BaseCheckpointSaver[str]):
    """The sync half of ``ConvodbSaver``: each method runs its async twin on the saver's
    event loop thread (:class:`LoopThread`), so it works outside any event loop; called
    from that thread itself, it raises ``asyncio.InvalidStateError``."""

    database: Database
    _loop: LoopThread
    _twin: SyncMethods | None
    _twin_lock: threading.Lock

    async def _list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> builtins.list[CheckpointTuple]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the event loop thread of the sync methods (started by the first of them),
        and close the connections they opened."""
        twin, self._twin = self._twin, None
        if twin is not None and twin.database is not self.database:
            self._loop.run(twin.database.dispose())
        self._loop.stop()

    def _sync_twin(self) -> SyncMethods:
        """This saver on a clone of its database, for the sync methods: they run on the
        saver's own event loop, and a ``Database``'s connections belong to one loop, which
        may be the application's, busy meanwhile (an in-memory SQLite database, which
        cannot be cloned, is shared)."""
        with self._twin_lock:
            if self._twin is None:
                twin = copy.copy(self)
                with contextlib.suppress(ValueError):
                    twin.database = self.database.clone()
                self._twin = twin
            return self._twin

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._loop.run(self._sync_twin().aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        return iter(
            self._loop.run(
                self._sync_twin()._list(config, filter=filter, before=before, limit=limit)
            )
        )

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._loop.run(self._sync_twin().aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._loop.run(self._sync_twin().aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._loop.run(self._sync_twin().adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._loop.run(self._sync_twin().adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._loop.run(self._sync_twin().acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._loop.run(self._sync_twin().aprune(thread_ids, strategy=strategy))
