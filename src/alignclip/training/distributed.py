"""torch.distributed set-up from torchrun / SLURM environment variables, and small collective helpers.

One process per device (PyTorch DDP). The losses all-gather features themselves, so the trainer only needs the
world layout, a process group, and a few scalar reductions for logging and for stopping every rank together.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from alignclip.losses.distributed import dist_ready


class DistributedTimeout(RuntimeError):
    """Another rank did not answer within runtime.dist_timeout_s (stalled, crashed or unreachable)."""


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK, else SLURM's SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return DistInfo(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return DistInfo()


def device_for_rank(requested: str, info: DistInfo) -> torch.device:
    """runtime.device for this process: CPU, or the CUDA device of its local rank (one process per device)."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("runtime.device is 'cuda' but no CUDA device is available (use runtime.device=cpu)")
    return torch.device("cuda", info.local_rank % torch.cuda.device_count())


def init_distributed(info: DistInfo, device: torch.device, timeout_s: float = 600.0) -> None:
    """Join the process group: gloo on CPU, nccl on GPU. SLURM launches need MASTER_ADDR/MASTER_PORT set.

    `timeout_s` bounds the rendezvous and every later collective (gloo's default is 30 minutes, so one stalled rank
    used to hang the whole job silently)."""
    if not info.enabled or dist_ready():
        return
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise ValueError(f"distributed run (world size {info.world_size}) needs MASTER_ADDR and MASTER_PORT; "
                         "launch with torchrun, or export them in the SLURM script")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # On SLURM the env vars are SLURM's: hand rank/world to the env:// rendezvous explicitly.
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=info.rank,
                                world_size=info.world_size, timeout=datetime.timedelta(seconds=timeout_s))
    except dist.DistError as e:
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        raise DistributedTimeout(
            f"rank {info.rank}: the {info.world_size} ranks did not all join within runtime.dist_timeout_s="
            f"{timeout_s:g}s at {where} (a rank is stalled, crashed or cannot reach it): {first_line(e)}") from None


def is_timeout(error: BaseException) -> bool:
    """A collective that waited past the process group's timeout (gloo raises a bare RuntimeError saying so)."""
    return dist_ready() and "timed out" in str(error).lower()


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def cleanup_distributed() -> None:
    if dist_ready():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist_ready():
        dist.barrier()


def all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    """Reduce a few Python scalars across ranks (one collective); identity when not distributed."""
    if not dist_ready():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return tensor.tolist()


def broadcast_object(obj: object, src: int = 0) -> object:
    if not dist_ready():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]
