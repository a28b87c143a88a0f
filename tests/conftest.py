"""Shared test setup: caption-embedding caches go to a temporary folder (never the user's ~/.cache), the micro
model config that the training tests share, and the launcher of multi-rank (gloo) training runs."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from typing import Sequence

import matplotlib
import pytest

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
