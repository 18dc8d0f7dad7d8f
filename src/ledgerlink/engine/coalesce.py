"""Group commit: many concurrent callers' store steps done in one transaction, a few statements for all.

A process that syncs hundreds of connections at once (an Open Dental office per connection, each held to
one request a second) would otherwise spend its time on the store, not the network: every sync starts,
claims, marks its intents and records its outcomes in transactions of its own, and on SQLite each statement
costs a thread hop (about half a millisecond) whatever it does. Five hundred syncs starting together meant
several seconds before the last one sent its first payment.

A `Coalescer` queues the requests of one kind of step. While no batch of that kind is running, the first
request starts one at the next turn of the event loop, so every sync that asked in the meantime joins it;
requests arriving while a batch runs form the next one. The handler does the whole batch in one
transaction and answers each request. A caller's `await` returns only after that transaction committed, so
"committed before the next step" holds exactly as it does for a step run alone: batching changes how many
commits there are, never what a commit means.

One bad request must not fail the others: a handler that raises for a batch of several is run again one
request at a time (handlers are all-or-nothing transactions, so a failed batch left nothing behind), and
only the request that still fails gets the error. A handler may also answer a single request with an
exception (a lease another process holds) without failing the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")

Handler = Callable[[Sequence[Req]], Awaitable[Sequence[Res | BaseException]]]


class Coalescer(Generic[Req, Res]):
    def __init__(self, handler: Handler[Req, Res], *, max_batch: int = 500) -> None:
        self._handler = handler
        self._max_batch = max_batch
        self._queue: list[tuple[Req, asyncio.Future[Res]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, request: Req) -> Res:
        """Do `request` in the next batch; returns once its transaction committed (or raises its error).

        If the caller is cancelled before its batch started, the request is dropped. If the batch already
        runs, it completes (a transaction is not abandoned halfway) and the caller then sees the
        cancellation: whatever it does to clean up comes after that commit.
        """
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        entry = (request, future)
        self._queue.append(entry)
        if self._runner is None:
            self._runner = asyncio.create_task(self._drain())
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if entry in self._queue:
                self._queue.remove(entry)
            else:
                await asyncio.wait([future])  # let the running batch finish before cleaning up
                if not future.cancelled():
                    future.exception()  # seen: the caller's cancellation is what it gets
            raise

    async def _drain(self) -> None:
        try:
            while self._queue:
                await asyncio.sleep(0)  # let everyone who is about to ask join this batch
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._run(batch)
        finally:
            self._runner = None

    async def _run(self, batch: list[tuple[Req, asyncio.Future[Res]]]) -> None:
        try:
            results = await self._handler([request for request, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            for entry in batch:  # isolate the request that fails; the others succeed on their own
                await self._run([entry])
            return
        except BaseException as exc:  # cancelled (shutdown): nobody's request is done
            for _, future in batch:
                _settle(future, exc)
            raise
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)


def _settle(future: asyncio.Future[Res], result: Res | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
