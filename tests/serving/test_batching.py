"""The micro-batcher: concurrent requests share one batch; results go back to each request."""

from __future__ import annotations

import asyncio
import threading
import time

from polymodal.serving.batching import Job, MicroBatcher


class Recorder:
    """A `process` that doubles each job's number; remembers batch sizes and threads."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.seconds = seconds
        self.batcher: MicroBatcher | None = None

    def model_work(self, values: list[float]) -> list[float]:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        return [2 * value for value in values]

    async def __call__(self, batch: list[Job]) -> None:
        self.batches.append(sum(job.rows for job in batch))
        values = [value for job in batch for value in job.payload]
        doubled = await self.batcher.in_model_thread(self.model_work, values)
        start = 0
        for job in batch:
            job.future.set_result(doubled[start : start + job.rows])
            start += job.rows


def batcher_for(recorder: Recorder, **options) -> MicroBatcher:
    recorder.batcher = MicroBatcher(recorder, **options)
    return recorder.batcher


async def run(batcher: MicroBatcher, jobs: list[list[float]]) -> list:
    await batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(job, len(job)) for job in jobs))
    finally:
        await batcher.stop()


def test_concurrent_requests_share_one_batch():
    recorder = Recorder()
    batcher = batcher_for(recorder, max_batch=32, max_wait_s=0.05)
    results = asyncio.run(run(batcher, [[float(i)] for i in range(8)]))
    assert recorder.batches == [8]
    assert results == [[2.0 * i] for i in range(8)]
    assert len(recorder.threads) == 1
    assert next(iter(recorder.threads)).startswith("polymodal-model")  # off the event loop


def test_batches_never_exceed_max_batch_and_multi_row_requests_stay_whole():
    recorder = Recorder()
    batcher = batcher_for(recorder, max_batch=4, max_wait_s=0.05)
    jobs = [[1.0] * 3, [2.0] * 2, [3.0], [4.0] * 2]
    results = asyncio.run(run(batcher, jobs))
    assert all(size <= 4 for size in recorder.batches) and sum(recorder.batches) == 8
    assert results == [[2.0] * 3, [4.0] * 2, [6.0], [8.0] * 2]


def test_without_batching_each_request_runs_alone():
    recorder = Recorder()
    batcher = batcher_for(recorder, max_batch=1, max_wait_s=0.0)
    asyncio.run(run(batcher, [[float(i)] for i in range(5)]))
    assert recorder.batches == [1] * 5


def test_requests_arriving_while_batches_run_form_the_next_batch():
    recorder = Recorder(seconds=0.3)
    batcher = batcher_for(recorder, max_batch=32, max_wait_s=0.0, concurrency=1)

    async def scenario() -> None:
        await batcher.start()
        first = asyncio.create_task(batcher.submit([0.0], 1))
        await asyncio.sleep(0.1)  # the first batch is running now
        rest = [asyncio.create_task(batcher.submit([float(i)], 1)) for i in range(1, 7)]
        await asyncio.gather(first, *rest)
        await batcher.stop()

    asyncio.run(scenario())
    assert recorder.batches == [1, 6]


def test_a_lone_request_does_not_wait_for_company():
    recorder = Recorder()
    batcher = batcher_for(recorder, max_batch=32, max_wait_s=2.0)

    async def scenario() -> float:
        await batcher.start()
        started = time.perf_counter()
        await batcher.submit([1.0], 1)
        with batcher.preparing():  # another request on its way: now a batch waits for it
            waiting = asyncio.create_task(batcher.submit([2.0], 1))
            await asyncio.sleep(0.1)
        late = asyncio.create_task(batcher.submit([3.0], 1))  # ... which arrives
        await asyncio.gather(waiting, late)
        await batcher.stop()
        return time.perf_counter() - started

    assert asyncio.run(scenario()) < 1.5
    assert recorder.batches == [1, 2]


def test_a_failing_batch_fails_its_requests_only():
    calls = []

    async def flaky(batch: list[Job]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("boom")
        for job in batch:
            job.future.set_result(job.payload)

    batcher = MicroBatcher(flaky, max_batch=1, max_wait_s=0.0)

    async def scenario() -> list:
        await batcher.start()
        try:
            return await asyncio.gather(
                batcher.submit([1.0], 1), batcher.submit([2.0], 1), return_exceptions=True
            )
        finally:
            await batcher.stop()

    failed, fine = asyncio.run(scenario())
    assert isinstance(failed, RuntimeError) and fine == [2.0]
