"""Dynamic batching: concurrent requests share one forward pass, up to a batch size, within a wait."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger("lobell.serve")


@dataclass
class _Job:
    items: list
    future: asyncio.Future


@dataclass
class BatchStats:
    """What the batcher did: forward calls, the items they carried, the largest batch (GET /info)."""

    forward_calls: int = 0
    items: int = 0
    largest_batch: int = 0
    failed_calls: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many forward calls had it

    def record(self, size: int) -> None:
        self.forward_calls += 1
        self.items += size
        self.largest_batch = max(self.largest_batch, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1

    def as_dict(self) -> dict:
        mean = self.items / self.forward_calls if self.forward_calls else 0.0
        return {"forward_calls": self.forward_calls, "items": self.items, "largest_batch": self.largest_batch,
                "mean_batch": round(mean, 3), "failed_calls": self.failed_calls,
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())}}


class DynamicBatcher:
    """Groups the items of concurrent `submit` calls into batches of at most `max_batch` for `predict`.

    The first waiting request opens a batch; whatever else is queued joins at once, and the batch then
    waits up to `max_wait_s` for more (0: no waiting, only what queued while the model was busy).
    `predict(items) -> results` runs on one worker thread, so the model is never called concurrently
    and the event loop keeps accepting requests meanwhile. When a batch of several requests fails,
    each request is retried on its own, so one bad request cannot fail its neighbours.
    """

    def __init__(self, predict: Callable[[list], list], max_batch: int, max_wait_s: float):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.predict, self.max_batch, self.max_wait_s = predict, max_batch, max(0.0, max_wait_s)
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lobell-model")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="lobell-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def submit(self, items: list) -> list:
        """The results for `items`, in order, once a forward pass has carried them."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(list(items), future))
        return await future

    async def _run(self) -> None:
        while True:
            jobs = await self._collect()
            try:
                await self._answer(jobs)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one batch stop the loop: its requests already got their error
                log.exception("lobell serve: batch bookkeeping failed")

    async def _collect(self) -> list[_Job]:
        """One batch's jobs: the first to arrive, everything already queued, then more until the wait ends."""
        queue = self._queue
        jobs = [await queue.get()]
        size = len(jobs[0].items)
        while size < self.max_batch and not queue.empty():
            jobs.append(queue.get_nowait())
            size += len(jobs[-1].items)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                job = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                break
            jobs.append(job)
            size += len(job.items)
        return jobs

    async def _answer(self, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if not job.future.done()]  # a client that left needs no answer
        if not jobs:
            return
        try:
            results = await self._forward([item for job in jobs for item in job.items])
        except Exception as exc:
            if len(jobs) == 1:
                _settle(jobs[0].future, exc=exc)
                return
            for job in jobs:  # find the request that fails; the others still get their answers
                try:
                    _settle(job.future, await self._forward(job.items))
                except Exception as single:
                    _settle(job.future, exc=single)
            return
        start = 0
        for job in jobs:
            _settle(job.future, results[start: start + len(job.items)])
            start += len(job.items)

    async def _forward(self, items: list) -> list:
        """`predict` over `items` in chunks of `max_batch`, on the model thread."""
        loop = asyncio.get_running_loop()
        results: list = []
        for start in range(0, len(items), self.max_batch):
            chunk = items[start: start + self.max_batch]
            try:
                out = await loop.run_in_executor(self._executor, self.predict, chunk)
            except Exception:
                self.stats.failed_calls += 1
                raise
            if len(out) != len(chunk):
                raise RuntimeError(f"the model returned {len(out)} results for {len(chunk)} inputs")
            self.stats.record(len(chunk))
            results.extend(out)
        return results


def _settle(future: asyncio.Future, result=None, exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
