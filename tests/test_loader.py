import torch

from torchkeel.data.loader import TensorLoader


def _loader(n=103, bs=10, **kw):
    x = torch.arange(n).float().unsqueeze(1)
    y = torch.arange(n)
    return TensorLoader(x, y, bs, **kw)


def test_every_sample_once_per_epoch():
    loader = _loader()
    for epoch in range(3):
        seen = torch.cat([y for _, y in loader.epoch(epoch)])
        assert sorted(seen.tolist()) == list(range(103))
        assert len(list(loader.epoch(epoch))) == len(loader) == 11


def test_inputs_and_targets_stay_paired():
    for x, y in _loader().epoch(1):
        assert torch.equal(x.squeeze(1).long(), y)


def test_order_is_seeded_and_changes_per_epoch():
    a, b, c = _loader(seed=5), _loader(seed=5), _loader(seed=6)
    assert torch.equal(a.order(0), b.order(0))
    assert not torch.equal(a.order(0), a.order(1))
    assert not torch.equal(a.order(0), c.order(0))
    assert torch.equal(_loader(shuffle=False).order(0), torch.arange(103))


def test_start_skips_batches_already_done():
    loader = _loader()
    full = [y for _, y in loader.epoch(2)]
    rest = [y for _, y in loader.epoch(2, start=4)]
    assert all(torch.equal(p, q) for p, q in zip(full[4:], rest, strict=True))


def test_drop_last():
    loader = _loader(drop_last=True)
    assert len(loader) == 10 and all(len(y) == 10 for _, y in loader.epoch(0))


def test_ranks_partition_the_epoch():
    shards = [_loader(rank=r, world_size=4) for r in range(4)]
    orders = [s.order(3) for s in shards]
    assert all(len(o) == 26 for o in orders)  # ceil(103 / 4), padded by wrapping
    assert set(torch.cat(orders).tolist()) == set(range(103))
    assert len(shards[0]) == len(shards[3])  # every rank runs the same number of steps
