"""Dynamic batching: requests that arrive together share one forward pass.

Each request submits its samples and awaits their results. One background task takes the
first waiting sample, gathers whatever else arrives within ``max_wait_ms`` (or is already
queued) up to ``max_batch``, and runs the batch on a single inference thread, so the event
loop keeps accepting and decoding requests meanwhile. Under load the queue fills while a batch
runs and the next batch is larger; when idle a request waits at most ``max_wait_ms``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# infer(samples) -> one result per sample, in order; runs on the inference thread
Infer = Callable[[Sequence[Any]], Sequence[Any]]


@dataclass
class BatchStats:
    batches: int = 0
    samples: int = 0
    largest: int = 0

    def to_dict(self) -> dict[str, float]:
        mean = self.samples / self.batches if self.batches else 0.0
        return {"batches": self.batches, "samples": self.samples, "mean_batch": round(mean, 3), "largest": self.largest}


class DynamicBatcher:
    def __init__(self, infer: Infer, max_batch: int = 32, max_wait_ms: float = 2.0):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_ms >= 0")
        self.infer, self.max_batch, self.max_wait = infer, max_batch, max_wait_ms / 1e3
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        # one thread: torch parallelises inside an op; two batches at once would only contend
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="keel-infer")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="keel-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._executor.shutdown(wait=True)

    async def submit(self, sample: Any) -> Any:
        """The result for one sample, computed in a batch with whatever arrives with it."""
        if self._queue is None:
            raise RuntimeError("DynamicBatcher.start() was not awaited")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((sample, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            pending = [(s, f) for s, f in batch if not f.cancelled()]  # clients that hung up
            if not pending:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self.infer, [s for s, _ in pending])
            except Exception as e:  # noqa: BLE001 - the error belongs to the requests, not the server
                for _, future in pending:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), result in zip(pending, results, strict=True):
                if not future.done():
                    future.set_result(result)
            self.stats.batches += 1
            self.stats.samples += len(pending)
            self.stats.largest = max(self.stats.largest, len(pending))

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:  # noqa: UP041 - a distinct class before Python 3.11
                break
        return batch
