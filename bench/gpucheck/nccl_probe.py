"""``torchrun --standalone --nproc_per_node=N -m bench.gpucheck.nccl_probe``: NCCL and DDP as the trainer uses them.

The trainer (``train.distributed``) opens a process group only when torchrun starts more than one process, so a
one-GPU machine never reaches NCCL through it. This program does, with any number of processes (one per GPU):
``init_process_group("nccl")``, ``all_reduce``, ``all_gather_object`` (the trainer's metric gathering) and one
DistributedDataParallel training step of a small CNN with float16 autocast and a GradScaler. Prints one JSON line
from rank 0; exits non-zero on any failure.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    """Run the probe on this rank; rank 0 prints the result."""
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    x = torch.full((8,), float(rank + 1), device="cuda")
    dist.all_reduce(x)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, {"rank": rank})
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    ).cuda()
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank])
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        loss = torch.nn.functional.cross_entropy(
            ddp(torch.randn(4, 3, 32, 32, device="cuda")), torch.tensor([0, 1, 2, 3], device="cuda")
        )
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    dist.barrier()
    result = {
        "backend": dist.get_backend(),
        "world_size": world,
        "all_reduce_ok": bool(torch.allclose(x, torch.full_like(x, world * (world + 1) / 2))),
        "all_gather_ok": [g["rank"] for g in gathered] == list(range(world)),
        "ddp_loss": float(loss),
        "ddp_loss_finite": bool(torch.isfinite(loss)),
    }
    dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(result))
    ok = result["all_reduce_ok"] and result["all_gather_ok"] and result["ddp_loss_finite"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
