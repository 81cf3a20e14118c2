"""DynamicBatcher: concurrent submissions share a forward pass, results stay in order and
equal to unbatched inference, failures reach the requests without stopping the batcher."""

from __future__ import annotations

import asyncio

import pytest
import torch

import torchkeel as keel
from torchkeel.serve.batching import DynamicBatcher
from torchkeel.serve.predictor import Predictor


def _run(coroutine):
    return asyncio.run(coroutine)


def test_requests_that_arrive_together_share_batches():
    sizes = []

    def infer(xs):
        sizes.append(len(xs))
        return [x * 10 for x in xs]

    async def main():
        batcher = DynamicBatcher(infer, max_batch=4, max_wait_ms=50)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.stop()
        return results, batcher.stats.to_dict()

    results, stats = _run(main())
    assert results == [i * 10 for i in range(10)]
    assert sizes == [4, 4, 2]
    assert stats == {"batches": 3, "samples": 10, "mean_batch": pytest.approx(10 / 3, abs=1e-3), "largest": 4}


def test_a_lone_request_waits_at_most_max_wait():
    async def main():
        batcher = DynamicBatcher(lambda xs: xs, max_batch=32, max_wait_ms=20)
        await batcher.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await batcher.submit(1)
        waited = loop.time() - t0
        await batcher.stop()
        return waited

    assert _run(main()) < 5.0  # bounded: not waiting for a full batch (a loose bound for a busy machine)


def test_a_failing_batch_fails_its_requests_and_the_batcher_goes_on():
    def infer(xs):
        if "bad" in xs:
            raise ValueError("boom")
        return xs

    async def main():
        batcher = DynamicBatcher(infer, max_batch=8, max_wait_ms=30)
        await batcher.start()
        first = await asyncio.gather(batcher.submit("bad"), batcher.submit("ok"), return_exceptions=True)
        second = await batcher.submit("fine")
        await batcher.stop()
        return first, second

    first, second = _run(main())
    assert all(isinstance(r, ValueError) for r in first) and second == "fine"


def test_batched_predictions_equal_one_by_one():
    data = keel.data.load("digits")
    torch.manual_seed(0)
    predictor = Predictor(keel.models.build("simple_cnn", data.spec), data.spec, top_k=10)
    x = data.test.x[:12]
    alone = [predictor.predict_batch(x[i : i + 1], [str(i)])[0] for i in range(12)]

    async def main():
        batcher = DynamicBatcher(
            lambda idx: predictor.predict_batch(x[list(idx)], [str(i) for i in idx]), max_batch=12, max_wait_ms=50
        )
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(12)))
        await batcher.stop()
        return results, batcher.stats.batches

    batched, batches = _run(main())
    assert batches == 1
    for a, b in zip(alone, batched, strict=True):
        assert [c for c, _ in a.top] == [c for c, _ in b.top] and a.source == b.source
        assert [p for _, p in a.top] == pytest.approx([p for _, p in b.top], abs=1e-6)
