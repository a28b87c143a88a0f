"""Shared test setup: caption-embedding caches go to a temporary folder (never the user's ~/.cache), the micro
model config that the training tests share, and the launcher of multi-rank (gloo) training runs."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
os.environ.setdefault("ALIGNCLIP_CACHE", tempfile.mkdtemp(prefix="alignclip-test-cache-"))

# The smallest model config that still has every part (two heads, one layer per tower): training tests take seconds.
MICRO = {"embed_dim": 32,
         "vision_cfg": {"image_size": 16, "patch_size": 4, "width": 32, "layers": 1, "heads": 2},
         "text_cfg": {"context_length": 16, "width": 32, "layers": 1, "heads": 2}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_train_ranks(cli: Sequence[str], overrides: Sequence[str] = (), world_size: int = 2
                      ) -> list[subprocess.Popen]:
    """`alignclip.cli.train CLI --set OVERRIDE ...` as `world_size` gloo ranks on this machine, as torchrun would
    start them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT; one thread each); stdout and stderr together."""
    args = [sys.executable, "-m", "alignclip.cli.train", *cli]
    for item in overrides:
        args += ["--set", item]
    port = free_port()
    return [subprocess.Popen(args, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env={**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world_size),
                                  "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                  "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
            for rank in range(world_size)]


def _gloo_worker(rank: int, world: int, store: str, result: str, fn: Callable, args: tuple) -> None:
    import torch.distributed as dist
    # A file rendezvous: no TCP port to race for with other tests.
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        loss, model = fn(rank, world, *args)
        loss = loss.detach().clone()
        dist.all_reduce(loss)  # the mean over ranks is the global loss (also with local_loss)
        if rank == 0:
            torch.save((loss.item() / world, {n: p.grad.clone() for n, p in model.module.named_parameters()}),
                       result)
        dist.barrier()  # tear down together: a rank destroying its gloo group while the other still uses it aborts
        Path(f"{result}.done{rank}").touch()  # this rank's work is complete; what follows is gloo's teardown
    finally:
        dist.destroy_process_group()


def gloo_loss_and_grads(fn: Callable[..., tuple[torch.Tensor, Any]], args: tuple, tmp_path: Path,
                        world: int = 2) -> tuple[float, dict[str, torch.Tensor]]:
    """Run `fn(rank, world, *args) -> (this rank's loss after backward, the DDP model)` on `world` gloo processes;
    returns the global (rank-averaged) loss and rank 0's gradients, to compare with one process and the whole batch.
    `fn` must be a module-level function (the processes are spawned)."""
    import torch.multiprocessing as mp
    result = str(tmp_path / "rank0.pt")
    try:
        mp.start_processes(_gloo_worker, args=(world, str(tmp_path / "store"), result, fn, args), nprocs=world,
                           join=True, start_method="spawn")
    except mp.ProcessExitedException as e:
        # gloo can abort a process in its own teardown when the peer has already closed its sockets (~1 run in 6
        # on a loaded 2-core machine). That is after every rank passed the final barrier: only then is it ignored.
        if not all(Path(f"{result}.done{r}").is_file() for r in range(world)):
            raise
        print(f"ignored a gloo teardown failure after the work finished: {e}")
    return torch.load(result)


@pytest.fixture(scope="session")
def micro_preset(tmp_path_factory) -> str:
    """MICRO as a JSON model-config file, for `model.preset` / `--preset`."""
    path = tmp_path_factory.mktemp("model") / "micro.json"
    path.write_text(json.dumps(MICRO))
    return str(path)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """An untrained tiny `clip` checkpoint in our format, for the evaluation and CLI tests."""
    import alignclip

    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    alignclip.save_checkpoint(alignclip.create_model("tiny", seed=0), path)
    return path
