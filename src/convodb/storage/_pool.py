"""The hot path's own driver connections: a small pool, per event loop, with a pool's
guarantees and none of its per-checkout costs.

The drivers' own pools (asyncpg's ``Pool``, asyncmy's) and SQLAlchemy's pool cost more per
checkout than the statements they serve (a task per release and a timeout per acquire; or a
greenlet and a reset round trip): see ``benchmarks/results``. :class:`DriverPool` keeps the
guarantees those pools give:

- at most ``max_size`` connections; a caller waits up to ``Timeouts.pool`` for one to come
  free (``StoreBusyError`` then), and ``Timeouts.connect`` for a new one to open;
- a connection is reused only after a clean exit or an error the server answered with (the
  connection is then idle). One that saw anything else -- a cancellation, a timeout, a lost
  connection, a driver error after the statement was sent -- is terminated, never reused: it
  may be mid-protocol, or inside a transaction holding locks;
- idle connections are closed after ``Timeouts.idle``, newest reused first;
- connections belong to the event loop that opened them: on another loop (``asyncio.run``
  twice) the pool starts afresh; in a forked child (a pre-forking server) the parent's
  connections are kept unused -- closing them, even by the garbage collector, would end the
  parent's sessions -- and the child opens its own;
- :meth:`close` closes the idle ones, and the ones in use when they come back.

It sends no reset query: the hot path leaves no session state behind, and a connection that
comes back inside a transaction is terminated. Errors of the connection, not of the
statement, are raised as ``StoreUnavailableError``. A database's module supplies the driver
(:meth:`DriverPool._open` and the other hooks).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from ..errors import StoreBusyError, StoreUnavailableError
from ._base import Timeouts

__all__ = ["DriverPool"]


class DriverPool:
    """A pool of one driver's connections (see the module's docstring)."""

    def __init__(self, *, max_size: int, timeouts: Timeouts) -> None:
        self._max_size, self._timeouts = max_size, timeouts
        self._pid = os.getpid()
        self._inherited: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(max_size)
        self._idle: list[tuple[Any, float]] = []  # (connection, when it came back), newest last
        self._reaper: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._generation = 0  # moves on close and on a new loop: older connections retire
        self.on_connect: list[Callable[[Any], None]] = []
        """Called with each new driver connection (tests log its queries so)."""

    # -- the driver: what a database's pool supplies -----------------------------------------

    async def _open(self) -> Any:
        """A new connection, set up; ``StoreUnavailableError`` when it cannot be opened."""
        raise NotImplementedError

    def _is_closed(self, connection: Any) -> bool:
        raise NotImplementedError

    def _in_transaction(self, connection: Any) -> bool:
        raise NotImplementedError

    def _terminate(self, connection: Any) -> None:
        """Close at once, without a word to the server."""
        raise NotImplementedError

    async def _close(self, connection: Any) -> None:
        """Close gracefully: the server ends the session at once."""
        raise NotImplementedError

    def _server_answered(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the server's answer to a statement: the connection is idle."""
        raise NotImplementedError

    def _lost(self, connection: Any, exc: BaseException) -> bool:
        """Whether ``exc`` means the connection is gone (or hung)."""
        raise NotImplementedError

    # -- the pool ------------------------------------------------------------------------------

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A connection, returned to the pool after the block.

        Raises:
            StoreBusyError: every connection stayed in use for ``Timeouts.pool``.
            StoreUnavailableError: a new connection could not be opened, or the connection was
                lost or timed out during the block.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._pid != os.getpid():
            self._restart(loop)
        slots, generation = self._slots, self._generation
        if slots.locked():
            try:
                async with asyncio.timeout(self._timeouts.pool):
                    await slots.acquire()
            except TimeoutError:
                raise StoreBusyError(
                    f"all {self._max_size} database connections stayed in use for "
                    f"{self._timeouts.pool:g} s; retry the operation"
                ) from None
        else:
            await slots.acquire()  # a free slot: returns at once
        try:
            connection = await self._take()
        except BaseException:
            slots.release()
            raise
        reusable = False
        try:
            yield connection
            reusable = True
        except BaseException as exc:
            if self._server_answered(exc):
                reusable = True
                raise
            if self._lost(connection, exc) and isinstance(exc, Exception):
                raise StoreUnavailableError(self._lost_message(exc)) from exc
            raise
        finally:
            self._give(connection, generation, reusable=reusable)
            slots.release()

    def _lost_message(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError) and self._timeouts.command is not None:
            return f"the database did not answer within {self._timeouts.command:g} s"
        return f"the database connection was lost ({type(exc).__name__})"

    def _restart(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._pid != os.getpid():
            # Another process's connections and timer: keep them, untouched (see above).
            self._pid = os.getpid()
            self._inherited.extend(connection for connection, _ in self._idle)
        else:
            # Another loop's: unusable here. Marking them closed is all that can be done;
            # their sockets go with the garbage collector.
            for connection, _ in self._idle:
                with contextlib.suppress(Exception):
                    self._terminate(connection)
            if self._reaper is not None:
                self._reaper.cancel()
        self._loop, self._idle, self._reaper = loop, [], None
        self._generation += 1
        self._slots = asyncio.Semaphore(self._max_size)

    async def _take(self) -> Any:
        while self._idle:
            connection, _ = self._idle.pop()
            if not self._is_closed(connection):
                return connection
        connection = await self._open()
        try:
            for listener in self.on_connect:
                listener(connection)
        except BaseException:
            self._terminate(connection)
            raise
        return connection

    def _give(self, connection: Any, generation: int, *, reusable: bool) -> None:
        if (
            reusable
            and generation == self._generation
            and not self._is_closed(connection)
            and not self._in_transaction(connection)
        ):
            assert self._loop is not None
            self._idle.append((connection, self._loop.time()))
            if self._reaper is None:
                self._reaper = self._loop.call_later(self._timeouts.idle, self._reap)
        else:
            self._terminate(connection)

    def _reap(self) -> None:
        """Close the connections idle for ``Timeouts.idle``; look again when the next is due."""
        assert self._loop is not None
        self._reaper = None
        expired_before = self._loop.time() - self._timeouts.idle
        expired = [c for c, at in self._idle if at <= expired_before]
        self._idle = [(c, at) for c, at in self._idle if at > expired_before]
        for connection in expired:
            self._close_later(connection)
        if self._idle:
            due = self._idle[0][1] + self._timeouts.idle - self._loop.time()
            self._reaper = self._loop.call_later(max(due, 0.0), self._reap)

    def _close_later(self, connection: Any) -> None:
        task = asyncio.ensure_future(self._close_or_terminate(connection))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_or_terminate(self, connection: Any) -> None:
        try:
            await asyncio.wait_for(self._close(connection), timeout=self._timeouts.pool)
        except Exception:  # another loop's, hung, or already lost
            with contextlib.suppress(Exception):
                self._terminate(connection)

    async def close(self) -> None:
        """Close the idle connections; ones in use are closed when they come back."""
        idle = [connection for connection, _ in self._idle]
        self._idle, self._generation = [], self._generation + 1
        if self._reaper is not None and self._pid == os.getpid():
            self._reaper.cancel()
        self._reaper, self._loop = None, None
        if self._pid != os.getpid():
            self._inherited.extend(idle)
            return
        await asyncio.gather(*(self._close_or_terminate(c) for c in idle), *self._closing)
