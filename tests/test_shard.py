"""`turkclip.embedding.shard` without processes: who takes which items, how the padded shares go back together, and that
one process is the plain path (one call on the items themselves). tests/test_multiprocess_embed.py runs it for real."""

from __future__ import annotations

import pytest
import torch

from turkclip.embedding import shard


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 7, 16])
def test_shares_are_contiguous_in_rank_order_and_gather_back_in_item_order(world, n):
    items = torch.arange(n * 3, dtype=torch.float32).view(n, 3)  # row i is item i's "embedding"
    parts = [shard.share(n, rank, world) for rank in range(world)]
    sizes = [p.stop - p.start for p in parts]
    assert [i for p in parts for i in range(p.start, p.stop)] == list(range(n))  # every item once, in order
    assert max(sizes) - min(sizes) <= 1  # fewer items than processes: some take none
    # what gather_rows does with what every rank embedded: pad to the longest, all_gather, cut the padding off
    longest = max(sizes)
    padded = [torch.cat([items[p], torch.full((longest - (p.stop - p.start), 3), -1.0)]) for p in parts]
    assert torch.equal(shard.join(padded, sizes), items)


def test_a_share_reads_only_contiguous_slices_of_its_items():
    items = list(range(10))
    part = shard.Share(items, shard.share(10, 1, 3))  # items 4..6
    assert len(part) == 3 and part[0:2] == [4, 5] and part[1:99] == [5, 6] and part[:] == [4, 5, 6]
    with pytest.raises(TypeError):
        part[::2]


def test_one_process_is_the_plain_path():
    pixels = torch.zeros(5, 3, 2, 2, dtype=torch.uint8)
    seen = []
    rows = shard.embed(pixels, lambda part: seen.append(part) or torch.ones(len(part), 4))
    assert len(seen) == 1 and seen[0] is pixels  # the items themselves, not a copy or a Share
    assert rows.shape == (5, 4)
    assert shard.rank_and_world() == (0, 1) and shard.is_writer()
    assert shard.gather_objects("x") == ["x"] and shard.once(lambda: 7) == 7
