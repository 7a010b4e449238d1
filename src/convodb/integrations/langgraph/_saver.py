"""``ConvodbSaver``: a LangGraph checkpoint saver whose threads are convodb conversations."""

from __future__ import annotations

import builtins
import json
import random
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar, cast

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from ..._db import Database
from ..._models import (
    CHANNEL_LENGTH,
    CHECKPOINT_ID_LENGTH,
    RUN_ID_LENGTH,
    TASK_ID_LENGTH,
    VERSION_LENGTH,
    checkpoint_blobs,
    checkpoint_writes,
    checkpoints,
)
from ..._records import StoredConversation, StoredMessage
from ..._service import ConversationService
from ..._service import _checkpoints as store
from ..._validation import Limits
from ...errors import ConflictError, ConversationNotFoundError, ValidationError
from .._ids import conversation_id_for
from ._loop import LoopThread
from ._messages import from_stored, to_new_messages
from ._mirror import mirror
from ._support import (
    PAGE,
    address,
    as_new,
    check_length,
    dump_metadata,
    expand_ranges,
    live_messages,
    load_metadata,
    seq_ranges,
    thread_config,
)
from ._sync import SyncMethods

__all__ = ["ConvodbSaver"]

T = TypeVar("T")

NAMESPACE = "lg"
"""The prefix of the saver's conversation ids (``convodb.integrations._ids``)."""
THREAD_KEY = "langgraph"
"""The conversation metadata key holding ``{"thread_id": ...}``."""
MESSAGES = "messages"
MANIFEST_TYPE = "convodb.messages"
"""The blob type of a ``messages`` value stored as the conversation's messages: the blob
is ``{"seqs": [[first, last], ...]}``, inclusive ranges of their seqs, in order."""
_LIMITS = Limits()  # what the service checks appends against by default
_MIRRORED_THREADS = 256  # threads whose messages a saver remembers between puts


class ConvodbSaver(SyncMethods):
    """A LangGraph checkpointer storing each thread as a convodb conversation of one user.

    ```python
    from convodb import Database
    from convodb.integrations.langgraph import ConvodbSaver

    db = Database("sqlite:///chat.db")
    await db.create_all()
    graph = builder.compile(checkpointer=ConvodbSaver(database=db, user_id="alice"))
    await graph.ainvoke({"messages": [("user", "hi")]}, {"configurable": {"thread_id": "t1"}})
    ```

    A thread id names a conversation of ``user_id`` (two users' ``"t1"`` are two
    conversations). The root namespace's ``messages`` channel, when it holds LangChain
    messages, is stored as the conversation's messages: ``put`` appends the new ones,
    removes the ones the list no longer has (``RemoveMessage``) and re-appends the ones
    after a message replaced in place, in one transaction; each checkpoint keeps the list
    of their ``seq`` numbers, and a message removed later is kept as a copy for the older
    checkpoints that list it. Every other value is a serialized blob, as in LangGraph's own
    savers. ``delete_thread`` deletes the conversation. Remove a thread's messages through the
    graph (``RemoveMessage``): removed some other way (``ConversationService.remove_messages``,
    the HTTP API), they are gone from the checkpoints that listed them too.

    Every write of a thread holds its conversation's lock, so concurrent writers (two runs of
    one thread, a put beside ``prune``) apply one after the other.

    The async methods run on the caller's event loop. The sync ones run them on an event
    loop thread of the saver's own, on a clone of the database (``Database.clone``), so they
    work outside any event loop and beside your application's own use of the database;
    calling one from inside that thread raises ``asyncio.InvalidStateError``. :meth:`close`
    stops the thread and closes the clone's connections.

    Args:
        database: where the conversations are, with the saver's tables (``create_all``).
        user_id: the owner of every thread this saver reads and writes.
        serde: LangGraph's serializer for checkpoints, writes and blobs (default
            ``JsonPlusSerializer``).
    """

    def __init__(
        self,
        *,
        database: Database,
        user_id: str,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        if not isinstance(user_id, str) or not user_id:
            raise ValidationError("user_id", "must be a non-empty string")
        self.database = database
        self.user_id = user_id
        self._loop = LoopThread()
        self._known: set[str] = set()  # conversation ids this saver found or created
        self._twin: ConvodbSaver | None = None
        self._twin_lock = threading.Lock()
        # The messages each recent thread's conversation held after this saver's last put,
        # keyed by conversation id, with its (last_seq, message_count) then. Those two change
        # with every append and removal by anyone, so when the locked conversation still
        # shows them, the list is current and the put's diff reads nothing.
        self._mirrored: OrderedDict[str, tuple[int, int, builtins.list[StoredMessage]]] = (
            OrderedDict()
        )

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Versions as ``InMemorySaver`` makes them: a zero-padded counter and a random
        fraction, which sort as strings in the order they were made."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # -- reading ----------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id, ns, checkpoint_id = address(config)
        cid = self.conversation_id(thread_id)
        async with self.database.session() as session:
            service = ConversationService(session, commit=False)
            rows = await store.select_checkpoints(
                session,
                self.user_id,
                thread_key=THREAD_KEY,
                cid=cid,
                checkpoint_ns=ns,
                checkpoint_id=checkpoint_id,
                limit=1,
            )
            if not rows:
                return None
            (found,) = await self._tuples(session, service, cid, rows)
        if checkpoint_id is not None:
            return found._replace(config=config)
        return found

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in await self._list(config, filter=filter, before=before, limit=limit):
            yield item

    async def _list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> builtins.list[CheckpointTuple]:
        cid = ns = checkpoint_id = None
        if config is not None:
            configurable = config.get("configurable", {})
            if configurable.get("thread_id") is not None:
                cid = self.conversation_id(str(configurable["thread_id"]))
            ns = configurable.get("checkpoint_ns")
            checkpoint_id = configurable.get("checkpoint_id")
        before_id = get_checkpoint_id(before) if before is not None else None
        if limit is not None and limit <= 0:
            return []
        found: builtins.list[CheckpointTuple] = []
        async with self.database.session() as session:
            service = ConversationService(session, commit=False)
            offset = 0
            while True:
                # Without a metadata filter the database applies the limit; with one, pages
                # are read until enough match.
                page_size = limit if limit is not None and not filter else PAGE
                rows = await store.select_checkpoints(
                    session,
                    self.user_id,
                    thread_key=THREAD_KEY,
                    cid=cid,
                    checkpoint_ns=ns,
                    checkpoint_id=checkpoint_id,
                    before=before_id,
                    limit=page_size,
                    offset=offset,
                )
                offset += len(rows)
                matching = [
                    r
                    for r in rows
                    if not filter
                    or all(
                        load_metadata(self.serde, r.metadata).get(k) == v for k, v in filter.items()
                    )
                ]
                if limit is not None:
                    matching = matching[: limit - len(found)]
                for conversation_id in dict.fromkeys(r.conversation_id for r in matching):
                    of_thread = [r for r in matching if r.conversation_id == conversation_id]
                    found.extend(await self._tuples(session, service, conversation_id, of_thread))
                if len(rows) < page_size or (limit is not None and len(found) >= limit):
                    break
        return found

    async def _tuples(
        self,
        session: Any,
        service: ConversationService,
        cid: str,
        rows: Sequence[store.CheckpointRow],
    ) -> builtins.list[CheckpointTuple]:
        """The tuples of checkpoints of one conversation: three queries for all of them,
        and the conversation's messages when a manifest lists them."""
        loaded = [(row, self.serde.loads_typed((row.type, row.checkpoint))) for row in rows]
        blob_keys = [
            (row.checkpoint_ns, channel, str(version))
            for row, checkpoint in loaded
            for channel, version in checkpoint["channel_versions"].items()
        ]
        blobs = await store.load_blobs(session, cid, blob_keys)
        writes = await store.load_writes(
            session, cid, [(r.checkpoint_ns, r.checkpoint_id) for r in rows]
        )
        manifests = [json.loads(b.blob or b"{}") for b in blobs.values() if b.type == MANIFEST_TYPE]
        messages = await self._messages(session, service, cid, manifests) if manifests else {}
        tuples = []
        for row, checkpoint in loaded:
            values: dict[str, Any] = {}
            for channel, version in checkpoint["channel_versions"].items():
                blob = blobs.get((row.checkpoint_ns, channel, str(version)))
                if blob is None or blob.type == "empty":
                    continue
                if blob.type == MANIFEST_TYPE:
                    seqs = expand_ranges(json.loads(blob.blob or b"{}"))
                    values[channel] = [messages[seq] for seq in seqs if seq in messages]
                else:
                    values[channel] = self.serde.loads_typed((blob.type, blob.blob or b""))
            config = thread_config(row.thread_id, row.checkpoint_ns, row.checkpoint_id)
            parent = (
                thread_config(row.thread_id, row.checkpoint_ns, row.parent_checkpoint_id)
                if row.parent_checkpoint_id
                else None
            )
            pending = [
                (w.task_id, w.channel, self.serde.loads_typed((w.type, w.blob or b"")))
                for w in writes.get((row.checkpoint_ns, row.checkpoint_id), [])
            ]
            tuples.append(
                CheckpointTuple(
                    config=config,
                    checkpoint=cast(Checkpoint, {**checkpoint, "channel_values": values}),
                    metadata=load_metadata(self.serde, row.metadata),  # type: ignore[arg-type]
                    parent_config=parent,
                    pending_writes=pending,
                )
            )
        return tuples

    async def _messages(
        self,
        session: Any,
        service: ConversationService,
        cid: str,
        manifests: builtins.list[dict[str, Any]],
    ) -> dict[int, BaseMessage]:
        """The messages the manifests list, by seq: the conversation's, and copies of the
        ones removed from it since."""
        wanted = sorted({seq for manifest in manifests for seq in expand_ranges(manifest)})
        if not wanted:
            return {}
        found: dict[int, BaseMessage] = {}
        for message in await live_messages(
            service, cid, self.user_id, after=wanted[0] - 1, upto=wanted[-1]
        ):
            found[message.seq] = from_stored(message)
        missing = [seq for seq in wanted if seq not in found]
        if missing:
            for seq, typed in (await store.copies(session, cid, missing)).items():
                found[seq] = self.serde.loads_typed(typed)
        return found

    # -- writing ----------------------------------------------------------------------------

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id, ns, parent_id = address(config)
        cid = self.conversation_id(thread_id)
        check_length("checkpoint.id", checkpoint["id"], CHECKPOINT_ID_LENGTH)
        saved: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = saved.pop("channel_values")
        type_, blob = self.serde.dumps_typed(saved)
        full_metadata = get_checkpoint_metadata(config, metadata)
        run_id = full_metadata.get("run_id")
        run_id = str(run_id)[:RUN_ID_LENGTH] if run_id is not None else None
        blobs: builtins.list[store.BlobRow] = []
        mirrored = None
        for channel, version in new_versions.items():
            check_length("new_versions", channel, CHANNEL_LENGTH)
            check_length(f"new_versions[{channel!r}]", str(version), VERSION_LENGTH)
            if channel not in values:
                blobs.append(store.BlobRow(ns, channel, str(version), "empty", None))
                continue
            value = values[channel]
            if ns == "" and channel == MESSAGES:
                mirrored = to_new_messages(value, _LIMITS)
                if mirrored is not None:
                    messages_version = str(version)
                    continue
            blobs.append(store.BlobRow(ns, channel, str(version), *self.serde.dumps_typed(value)))
        async with self.database.session() as session, session.begin():
            service = ConversationService(session, commit=False)
            conversation = await self._conversation(service, cid, thread_id)
            if mirrored is not None:
                known = self._mirrored.pop(cid, None)
                held = await mirror(
                    session,
                    service,
                    cid,
                    self.user_id,
                    mirrored,
                    self.serde,
                    current=known[2]
                    if known and known[:2] == (conversation.last_seq, conversation.message_count)
                    else None,
                )
                seqs = [m.seq for m in held]
                newest = max(conversation.last_seq, seqs[-1] if seqs else 0)
                manifest = json.dumps({"seqs": seq_ranges(seqs)}, separators=(",", ":")).encode()
                blobs.append(store.BlobRow(ns, MESSAGES, messages_version, MANIFEST_TYPE, manifest))
            await store.put_blobs(session, cid, blobs)
            await store.put_checkpoint(
                session,
                cid,
                checkpoint_ns=ns,
                checkpoint_id=checkpoint["id"],
                parent_checkpoint_id=parent_id,
                run_id=run_id,
                type_=type_,
                checkpoint=blob,
                metadata=dump_metadata(self.serde, full_metadata),
            )
        if mirrored is not None:  # committed: remember what the conversation holds now
            self._mirrored[cid] = (newest, len(held), held)
            while len(self._mirrored) > _MIRRORED_THREADS:
                self._mirrored.popitem(last=False)
        return thread_config(thread_id, ns, checkpoint["id"])

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        thread_id, ns, checkpoint_id = address(config)
        if checkpoint_id is None:
            raise ValidationError(
                "config.configurable.checkpoint_id", "is required to store writes"
            )
        check_length("task_id", task_id, TASK_ID_LENGTH)
        cid = self.conversation_id(thread_id)
        rows = []
        for idx, (channel, value) in enumerate(writes):
            check_length("writes", channel, CHANNEL_LENGTH)
            type_, blob = self.serde.dumps_typed(value)
            index = WRITES_IDX_MAP.get(channel, idx)
            rows.append(
                store.WriteRow(ns, checkpoint_id, task_id, index, channel, type_, blob, task_path)
            )
        async with self.database.session() as session, session.begin():
            service = ConversationService(session, commit=False)
            await self._conversation(service, cid, thread_id)
            await store.put_writes(session, cid, rows)

    # -- threads ----------------------------------------------------------------------------

    async def adelete_thread(self, thread_id: str) -> None:
        cid = self.conversation_id(str(thread_id))
        async with self.database.session() as session, session.begin():
            service = ConversationService(session, commit=False)
            try:
                await service.lock_conversation(cid, self.user_id)
            except ConversationNotFoundError:
                return
            await store.delete_thread_rows(session, cid, self.user_id)
            await service.delete_conversation(cid, self.user_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return
        async with self.database.session() as session, session.begin():
            service = ConversationService(session, commit=False)
            runs = [str(r) for r in run_ids]
            cids = sorted(
                {c for c, _, _ in await store.runs_checkpoints(session, self.user_id, runs)}
            )
            for cid in cids:  # locked in one order: concurrent callers cannot deadlock
                await service.lock_conversation(cid, self.user_id)
            # Read again under the locks: a put may have committed meanwhile.
            found = await store.runs_checkpoints(session, self.user_id, runs)
            for cid in cids:
                keys = [(ns, ckpt) for c, ns, ckpt in found if c == cid]
                await store.delete_checkpoints(session, cid, keys)
                await self._collect_garbage(session, cid)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if strategy not in ("keep_latest", "delete"):
            raise ValidationError(
                "strategy", f"must be 'keep_latest' or 'delete'; got {strategy!r}"
            )
        for thread_id in thread_ids:
            if strategy == "delete":
                await self.adelete_thread(thread_id)
                continue
            cid = self.conversation_id(str(thread_id))
            async with self.database.session() as session, session.begin():
                service = ConversationService(session, commit=False)
                try:
                    await service.lock_conversation(cid, self.user_id)
                except ConversationNotFoundError:
                    continue
                latest = await store.latest_per_namespace(session, cid, self.user_id)
                if not latest:
                    continue
                rows = await store.select_checkpoints(
                    session, self.user_id, thread_key=THREAD_KEY, cid=cid
                )
                stale = [
                    (r.checkpoint_ns, r.checkpoint_id)
                    for r in rows
                    if latest[r.checkpoint_ns] != r.checkpoint_id
                ]
                await store.delete_checkpoints(session, cid, stale)
                await self._collect_garbage(session, cid)

    async def _collect_garbage(self, session: Any, cid: str) -> None:
        """Delete the blobs and message copies no remaining checkpoint of ``cid`` uses."""
        used: set[tuple[str, str, str]] = set()
        for ns, type_, blob in await store.remaining_checkpoints(session, cid):
            checkpoint = self.serde.loads_typed((type_, blob))
            used.update((ns, ch, str(v)) for ch, v in checkpoint["channel_versions"].items())
        unused = [
            (b.checkpoint_ns, b.channel, b.version)
            for b in await store.blob_keys(session, cid)
            if (b.checkpoint_ns, b.channel, b.version) not in used
        ]
        await store.delete_unreferenced(session, cid, blobs=unused, copies_kept=None)
        listed = {
            seq
            for manifest in await store.manifest_blobs(session, cid, MANIFEST_TYPE)
            for seq in expand_ranges(json.loads(manifest))
        }
        await store.delete_unreferenced(session, cid, blobs=[], copies_kept=listed)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        source = self.conversation_id(str(source_thread_id))
        target = self.conversation_id(str(target_thread_id))
        if source == target:
            return
        async with self.database.session() as session, session.begin():
            service = ConversationService(session, commit=False)
            try:
                await service.lock_conversation(source, self.user_id)
            except ConversationNotFoundError:
                return
            rows, blobs, writes, copies = await store.thread_rows(session, source, self.user_id)
            if not rows:
                return
            existing = await store.select_checkpoints(
                session, self.user_id, thread_key=THREAD_KEY, cid=target, limit=1
            )
            if existing:
                raise ConflictError(
                    f"thread {target_thread_id!r} has checkpoints already: copy_thread copies "
                    "into a thread that has none"
                )
            # In this transaction, which holds the source's lock (SQLite: the write lock).
            await service.get_or_create_conversation(
                target, self.user_id, metadata={THREAD_KEY: {"thread_id": str(target_thread_id)}}
            )
            await service.lock_conversation(target, self.user_id)
            # The target's messages get new seqs: the ones the source still holds are
            # appended in order, and each manifest is rewritten to their new seqs, or (when
            # it lists a message the source removed) replaced by the serialized list.
            live = await live_messages(service, source, self.user_id, with_data=True)
            renumbered: dict[int, int] = {}
            await service.clear_messages(target, self.user_id)
            for start in range(0, len(live), service.limits.max_batch_messages):
                chunk = live[start : start + service.limits.max_batch_messages]
                stored = await service.save_conversation_messages(
                    target, self.user_id, [as_new(m) for m in chunk]
                )
                renumbered.update(
                    (old.seq, new.seq) for old, new in zip(chunk, stored, strict=True)
                )
            by_seq = {m.seq: m for m in live}
            copied = {
                seq: (type_, blob)
                for seq, type_, blob in ((c["seq"], c["type"], c["blob"]) for c in copies)
            }
            for blob in blobs:
                if blob["type"] != MANIFEST_TYPE:
                    continue
                seqs = expand_ranges(json.loads(blob["blob"]))
                if all(seq in renumbered for seq in seqs):
                    ranges = seq_ranges([renumbered[seq] for seq in seqs])
                    blob["blob"] = json.dumps({"seqs": ranges}, separators=(",", ":")).encode()
                    continue
                listed = [
                    from_stored(by_seq[seq])
                    if seq in by_seq
                    else self.serde.loads_typed(copied[seq])
                    for seq in seqs
                    if seq in by_seq or seq in copied
                ]
                blob["type"], blob["blob"] = self.serde.dumps_typed(listed)
            await store.insert_rows(session, target, checkpoints, rows)
            await store.insert_rows(session, target, checkpoint_blobs, blobs)
            await store.insert_rows(session, target, checkpoint_writes, writes)

    # -- helpers ----------------------------------------------------------------------------

    def conversation_id(self, thread_id: str) -> str:
        """The id of the convodb conversation that is the user's thread ``thread_id``."""
        return conversation_id_for(NAMESPACE, self.user_id, str(thread_id))

    async def _conversation(
        self, service: ConversationService, cid: str, thread_id: str
    ) -> StoredConversation:
        """The user's thread, created if new, locked until the transaction ends: every write
        of a thread holds its lock, so concurrent writes (two runs, a put beside a prune)
        apply one after the other and see each other's rows."""
        metadata = {THREAD_KEY: {"thread_id": thread_id}}
        if cid not in self._known:
            # Created in a transaction of its own, committed before the lock is taken: two
            # writers of a new thread inserting it in their transactions would both hold a
            # shared lock on the row (MariaDB's duplicate-key check) and deadlock upgrading.
            async with self.database.session() as session:
                own = ConversationService(session)
                await own.get_or_create_conversation(cid, self.user_id, metadata=metadata)
            self._known.add(cid)
        try:  # the lock proves it exists and is the user's
            return await service.lock_conversation(cid, self.user_id)
        except ConversationNotFoundError:  # deleted since: created again, in this transaction
            await service.get_or_create_conversation(cid, self.user_id, metadata=metadata)
            return await service.lock_conversation(cid, self.user_id)
