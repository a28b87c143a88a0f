"""`train(config)`: the entry point every process calls, under torchrun or alone. It owns the process group (set up
before the Trainer, torn down after it, destroyed without a barrier when a rank fails) and turns a collective that
timed out into one error line that names runtime.dist_timeout_s; trainer.py keeps only the loop."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from .config import TrainConfig
from .resolve import from_dict
from .distributed import (DistributedTimeout, cleanup_distributed, device_for_rank, dist_ready, env_info, first_line,
                          init_distributed, is_timeout)
from .result import TrainResult
from .trainer import Trainer


def train(config: TrainConfig | Mapping[str, Any] | None = None,
          dataset: torch.utils.data.Dataset | None = None) -> TrainResult:
    """Train per `config` (a TrainConfig, a nested dict, or None for the defaults); `dataset` replaces data.train.

    Under torchrun (or SLURM) every process calls this; the process group is set up and torn down here.
    `resume` may be unresolved ("latest", a run folder): checkpoint.resolve_resume resolves it, and a
    path the CLI already resolved passes through it unchanged.
    """
    if config is None:
        config = TrainConfig()
    elif isinstance(config, Mapping):
        config = from_dict(config)
    config.validate()
    info = env_info()
    device = device_for_rank(config.runtime.device, info)
    if config.runtime.threads is not None:
        torch.set_num_threads(config.runtime.threads)
    init_distributed(info, device, config.runtime.dist_timeout_s)
    ok, trainer = False, None
    try:
        trainer = Trainer(config, info, device, dataset)
        result = trainer.run()
        cleanup_distributed()  # its barrier may time out too
        ok = True
        return result
    except RuntimeError as e:
        if not is_timeout(e):
            raise
        raise DistributedTimeout(f"rank {info.rank}: another rank did not answer within runtime.dist_timeout_s="
                                 f"{config.runtime.dist_timeout_s:g}s (stalled, crashed or unreachable); stopping: "
                                 f"{first_line(e)}") from None
    finally:
        if trainer is not None and not ok:
            trainer.discard_failed_start()
        if not ok and dist_ready():
            torch.distributed.destroy_process_group()  # no barrier: the other ranks may be gone already
