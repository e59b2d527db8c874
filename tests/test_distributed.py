"""How several training processes share a batch, and what a checkpoint keeps per process (no processes started)."""

from __future__ import annotations

import pytest
import torch

from turkclip_train import checkpoint
from turkclip_train.distributed import local_batches


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n_items", [2, 5, 9, 16, 17, 23])
def test_every_process_gets_a_share_of_every_global_batch(world, n_items):
    """Shares rebuild each global batch in order (what one process with the global batch sees), differ in size by at
    most one, and every process runs the same number of steps; only a last batch smaller than `world` is dropped."""
    per_process = 3
    items = list(range(n_items))
    global_batches = [items[s : s + per_process * world] for s in range(0, n_items, per_process * world)]
    shares = [local_batches(global_batches, rank, world) for rank in range(world)]
    assert len({len(s) for s in shares}) == 1  # same number of steps on every process
    kept = [b for b in global_batches if len(b) >= world]
    assert len(shares[0]) == len(kept)
    for step, batch in enumerate(kept):
        parts = [s[step] for s in shares]
        assert sum(parts, []) == batch
        assert max(map(len, parts)) - min(map(len, parts)) <= 1 and min(map(len, parts)) >= 1


def test_checkpoint_restores_each_process_its_own_rng_state(tmp_path):
    """With dropout on, each process draws its own masks: a resumed process must continue its own stream."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    states = []
    for rank in range(2):
        torch.manual_seed(rank)
        states.append({"cpu": torch.get_rng_state(), "cuda": []})
    checkpoint.save(tmp_path, model, optimizer, scheduler, {"epoch": 0, "step": 1, "global_step": 1}, states)
    for rank in range(2):
        torch.manual_seed(99)
        checkpoint.load(tmp_path, model, optimizer, scheduler, rank)
        torch.manual_seed(rank)
        expected = torch.rand(4)
        checkpoint.load(tmp_path, model, optimizer, scheduler, rank)
        assert torch.equal(torch.rand(4), expected), rank


def test_evaluate_and_index_processes_take_their_own_gpu():
    """Under torchrun each process of `evaluate`/`index` uses cuda:LOCAL_RANK; naming one GPU would put every process
    on it (NCCL refuses that), so it is one line of error. (Only the flag is read: no GPU is needed.)"""
    from turkclip.errors import TurkclipError
    from turkclip_train.distributed import _process_device

    assert _process_device("cuda", 1) == torch.device("cuda", 1)
    assert _process_device("cpu", 1) == torch.device("cpu")
    with pytest.raises(TurkclipError, match="cuda:LOCAL_RANK"):
        _process_device("cuda:1", 0)
