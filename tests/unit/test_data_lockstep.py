"""orchestrator.data.lockstep: workers with unequal shares step together (threads, no Ray)."""

from __future__ import annotations

from orchestrator.data.images import DataError
from orchestrator.data.lockstep import empty_batch, merge_short_tail, synced_batches


class _Board:
    """Two workers as threads: all_reduce_sum waits for both and returns the sum."""

    def __init__(self, world: int):
        import threading

        self.world, self.vals = world, {}
        self.barrier = threading.Barrier(world)

    def sess(self, rank: int):
        board = self

        class S:
            def all_reduce_sum(self, values):
                board.vals[rank] = values
                board.barrier.wait()
                out = [sum(v) for v in zip(*board.vals.values(), strict=True)]
                board.barrier.wait()
                return out

        s = S()
        s.rank = rank
        return s


def test_synced_batches_pads_short_worker_with_zero_weight():
    import threading

    import torch

    def batches(sizes, start):
        i = start
        for n in sizes:
            yield {
                "label": torch.zeros(n, dtype=torch.int64),
                "weight": torch.ones(n),
                "index": torch.arange(i, i + n),
                "bad": torch.zeros(n, dtype=torch.int64),
            }
            i += n

    board = _Board(2)
    out: dict[int, list] = {}

    def run(rank, sizes, start):
        out[rank] = list(synced_batches(batches(sizes, start), board.sess(rank)))

    ts = [
        threading.Thread(target=run, args=(0, [4, 4, 4], 0)),
        threading.Thread(target=run, args=(1, [4, 3], 100)),
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert len(out[0]) == len(out[1]) == 3  # lockstep: same number of steps
    assert [t for _, t in out[0]] == [8.0, 7.0, 4.0]  # real samples across both, per step
    pad, _ = out[1][2]
    assert pad.get("dummy") and float(pad["weight"].sum()) == 0.0 and pad["index"].numel() == 0
    seen = [int(i) for rank in (0, 1) for b, _ in out[rank] for i in b["index"]]
    assert sorted(seen) == list(range(12)) + list(range(100, 107))


def test_synced_batches_feeds_a_worker_with_no_data_an_empty_batch():
    import threading

    import torch

    def batches(sizes):
        for n in sizes:
            yield {
                "label": torch.zeros(n, dtype=torch.int64),
                "weight": torch.ones(n),
                "index": torch.arange(n),
                "bad": torch.zeros(n, dtype=torch.int64),
            }

    board = _Board(2)
    out: dict[int, object] = {}

    def run(rank, sizes, empty):
        try:
            out[rank] = list(synced_batches(batches(sizes), board.sess(rank), empty))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out[rank] = exc

    ts = [
        threading.Thread(target=run, args=(0, [4, 4], None)),
        threading.Thread(target=run, args=(1, [], lambda: empty_batch(8))),
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert len(out[0]) == len(out[1]) == 2 and [t for _, t in out[1]] == [4.0, 4.0]
    pad, _ = out[1][0]
    assert pad["image"].shape == (2, 3, 8, 8) and float(pad["weight"].sum()) == 0.0
    assert pad["index"].numel() == 0
    # without an `empty` factory the starved worker is a named error
    board = _Board(2)
    ts = [
        threading.Thread(target=run, args=(0, [4], None), daemon=True),
        threading.Thread(target=run, args=(1, [], None), daemon=True),
    ]
    for t in ts:
        t.start()
    ts[1].join(10)
    board.barrier.abort()  # rank 0 waits on a step rank 1 will never take: release it
    ts[0].join(10)
    assert isinstance(out[1], DataError) and "no data at all" in str(out[1])


def test_merge_short_tail_folds_a_tiny_last_batch_into_the_one_before():
    import torch

    def batches(sizes):
        i = 0
        for n in sizes:
            yield {"label": torch.zeros(n, dtype=torch.int64), "index": torch.arange(i, i + n)}
            i += n

    sizes = lambda out: [len(b["label"]) for b in out]  # noqa: E731
    merged = list(merge_short_tail(batches([16, 16, 2]), 8))
    assert sizes(merged) == [16, 18]
    assert torch.equal(torch.cat([b["index"] for b in merged]), torch.arange(34))
    assert sizes(merge_short_tail(batches([16, 16, 8]), 8)) == [16, 16, 8]  # not short
    assert sizes(merge_short_tail(batches([3]), 8)) == [3]  # nothing to fold into
    assert sizes(merge_short_tail(batches([]), 8)) == []
    assert sizes(merge_short_tail(batches([16, 1]), 8)) == [17]
