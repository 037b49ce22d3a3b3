"""Micro-batching: requests that arrive together are decoded and run through the model together.

A forward pass over 32 rows costs little more than over one, and decoding a table of 32 rows
costs less per row than 32 one-row tables, so under concurrent load the server gathers waiting
requests (up to `max_batch` rows, waiting at most `max_wait` after the first, but only while
other requests are on their way: a lone request is never delayed) and hands them to
`process` as one batch. At most `concurrency` batches are in flight (one decoding while the
previous one runs the model, by default), so requests that arrive meanwhile pile up into the
next batch. Model work runs on a single thread, off the event loop. With `max_batch=1` every
request runs alone, through the same code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

Features = dict[str, dict[str, torch.Tensor]]


@dataclass
class Job:
    """One request's rows, waiting for a batch; `future` gets its result or its error."""

    payload: Any
    rows: int
    future: asyncio.Future


Process = Callable[[list[Job]], Awaitable[None]]


def concatenate(parts: list[Features]) -> Features:
    """Row-wise concatenation of features (shapes are fixed per input)."""
    if len(parts) == 1:
        return parts[0]
    return {
        name: {key: torch.cat([part[name][key] for part in parts]) for key in item}
        for name, item in parts[0].items()
    }


class MicroBatcher:
    """Gathers `submit`ted jobs into batches for `process`, which resolves their futures."""

    def __init__(
        self,
        process: Process,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        concurrency: int = 2,
    ) -> None:
        self.process = process
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.concurrency = concurrency
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="polymodal-model")
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.carried: Job | None = None  # a job that did not fit into the last batch
        self.arriving = 0  # requests being read, which will submit soon
        self.task: asyncio.Task | None = None
        self.running: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.slots = asyncio.Semaphore(self.concurrency)
        self.task = asyncio.create_task(self.run_forever(), name="polymodal-batcher")

    async def stop(self) -> None:
        for pending in [self.task, *self.running]:
            if pending:
                pending.cancel()
        await asyncio.gather(*[t for t in [self.task, *self.running] if t], return_exceptions=True)
        self.model_thread.shutdown(wait=False, cancel_futures=True)

    @contextmanager
    def preparing(self) -> Iterator[None]:
        """Mark a request on its way (being read): a batch may wait for it."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    async def submit(self, payload: Any, rows: int) -> Any:
        """What `process` sets for this job, once its batch has run."""
        job = Job(payload, rows, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def in_model_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run model work on the one model thread (forward passes never overlap)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.model_thread, function, *args)

    async def run_forever(self) -> None:
        while True:
            await self.slots.acquire()  # while all slots are busy, requests pile up
            batch = await self.gather()
            task = asyncio.create_task(self.run(batch))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def gather(self) -> list[Job]:
        """The next batch: the first waiting job, then more until full or the wait is over."""
        first, self.carried = self.carried or await self.queue.get(), None
        batch, rows = [first], first.rows
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_batch:
            try:
                job = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.arriving:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), remaining)
                except TimeoutError:
                    break
            if rows + job.rows > self.max_batch:
                self.carried = job
                break
            batch.append(job)
            rows += job.rows
        return batch

    async def run(self, batch: list[Job]) -> None:
        try:
            live = [job for job in batch if not job.future.done()]  # drop requests gone away
            if live:
                await self.process(live)
        except Exception as error:  # a server fault: every request in the batch learns of it
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(error)
        finally:
            self.slots.release()
